"""Pipeline efficiency: end-to-end images/s through the DataLoader ÷ the same model step on tensors
already in memory. Training (templates/demo.toml's step: Lite0, 64 px, batch 60 + rotations) and
``udml embed``'s extraction (Lite0, 64 px, 2,000 test images). Target ≥ 0.85.
    python benchmarks/pipeline.py [--dataset emoji] [--iters 20]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="emoji")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--workers", default=None, help="override engine.workers")
    ap.add_argument("--cache", default=None, choices=["true", "false"])
    args = ap.parse_args()

    import numpy as np
    import torch

    from udml_cli.config import load_config
    from udml_cli.data.images import FolderDataset, list_images
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.data.sampler import PKSampler
    from udml_cli.data.transforms import eval_transform
    from udml_cli.engine import extract, resolve_engine
    from udml_cli.training import Trainer

    sets = [f"data.dataset={args.dataset}"]
    if args.workers is not None:
        sets.append(f"engine.workers={args.workers}")
    if args.cache is not None:
        sets.append(f"data.cache={args.cache}")
    cfg = load_config(ROOT / "templates" / "demo.toml", sets)
    ref = resolve_dataset(args.dataset)
    engine = resolve_engine(cfg.engine)
    res = Results("pipeline")
    tag = f"workers={engine.workers}/{engine.extract_workers} cache={cfg.data.cache}"

    # ---- training step ------------------------------------------------------------------------
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, ref, Path(tmp), engine)
    rng = np.random.default_rng(0)
    trainer.state.pseudo_labels = rng.integers(0, cfg.cluster.num_clusters, len(trainer.plain))
    t = cfg.train
    sampler = PKSampler(trainer.state.pseudo_labels, t.batch_size, t.instances, 0, args.iters)
    batches = [[(i, k * 1000 + j) for j, i in enumerate(b)] for k, b in enumerate(sampler.epoch(0))]
    trainer.augmented.labels = trainer.state.pseudo_labels
    trainer.model.train(True, freeze_bn=True)
    loader = engine.batch_loader(trainer.augmented, batches)
    it = iter(loader)
    first = next(it)  # worker start-up is not throughput
    trainer.train_step(*first)
    with Timer() as t_e2e:
        n = 0
        for images, labels in it:
            trainer.train_step(images, labels)
            n += len(images)
    e2e = n / t_e2e.seconds
    memory = [first] * (args.iters - 1)
    with Timer() as t_mem:
        for images, labels in memory:
            trainer.train_step(images, labels)
    mem = len(memory) * len(first[0]) / t_mem.seconds
    res.add(f"train step demo recipe, {tag}", "images_per_s", e2e, mem, higher_is_better=True,
            target=0.85, unit="img/s")  # fmt: skip

    # ---- embed ---------------------------------------------------------------------------------
    files = list_images(ref.root / "test", recursive=True)[:2000]
    model = trainer.model.eval()
    dataset = FolderDataset(files, eval_transform(cfg.data), cfg.data.image_size)
    bs = cfg.eval.batch_size
    extract(model.embed, torch.utils.data.Subset(dataset, range(bs)), engine, bs)  # warm-up
    tensors = [
        torch.stack([dataset[i][0] for i in range(j, j + bs)]) for j in range(0, 2000 - bs, bs)
    ]
    e2e_best = fwd_best = 0.0
    for _ in range(2):  # alternate, best of two: the machine's own noise is ±10 %
        with Timer() as t_emb:
            extract(model.embed, dataset, engine, bs)
        with Timer() as t_fwd, torch.no_grad():
            for batch in tensors:
                model.embed(batch)
        e2e_best = max(e2e_best, len(files) / t_emb.seconds)
        fwd_best = max(fwd_best, len(tensors) * bs / t_fwd.seconds)
    res.add(f"embed 2000 images, {tag}", "images_per_s", e2e_best, fwd_best,
            higher_is_better=True, target=0.85, unit="img/s")  # fmt: skip
    out = res.write()
    if args.workers is not None or args.cache is not None:
        out.rename(out.with_name(f"pipeline_w{args.workers}_cache{args.cache}.json"))


if __name__ == "__main__":
    main()
