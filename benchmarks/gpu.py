"""GPU readiness: udml's own training and embedding throughput vs the same network's pure work.

On a CUDA device (run when one is lent): the CUB recipe (templates/cub.toml: BVLC GoogLeNet,
227 px, batch 80 + 16 rotations, bf16 autocast for the backbone, fp32 heads and losses,
channels_last, pinned memory) on synthetic CUB-size data (5,864 training images of 256 px):
    1. `udml.train` images/s over --iters batches vs the same train step on a batch already on
       the device (target ≥ 0.85);
    2. `udml.embed_files` images/s vs the pure forward on device tensors (target ≥ 0.85);
    3. the time of one full recipe epoch including a re-clustering (extraction + k-means).
On the CPU it runs the same code at toy size, so it stays working between device loans:
    python benchmarks/gpu.py                      # the device run → results/gpu.json
    python benchmarks/gpu.py --quick --device cpu # tiny network, 96 images: the plumbing only
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer

ROOT = Path(__file__).resolve().parents[1]


def make_images(root: Path, n: int, size: int, classes: int = 100) -> Path:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, (classes, 3))
    lines = []
    for i in range(n):
        rel = f"train/c{i % classes:03d}/{i}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(colours[i % classes] + rng.normal(0, 30, (size, size, 3)), 0, 255)
        Image.fromarray(pixels.astype(np.uint8)).save(root / rel, quality=90)
        lines.append(f"{rel} {i % classes}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "test.txt").write_text("\n".join(lines[: max(classes, n // 10)]) + "\n")
    return root


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="tiny network and data (CPU check)")
    args = ap.parse_args()
    import torch

    import udml_cli as udml
    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.data.sampler import PKSampler
    from udml_cli.engine import resolve_engine
    from udml_cli.runs import read_metrics
    from udml_cli.training import Trainer

    n, size = (96, 24) if args.quick else (5864, 256)
    sets = [f"engine.device={args.device}", f"train.iters_per_epoch={args.iters}",
            "train.epochs=1", "train.final_eval=false", "cluster.n_init=1", "cluster.niter=20"]  # fmt: skip
    if args.quick:
        sets += ["model.backbone=tiny-test", "model.weights=none", "data.image_size=16",
                 "data.resize=18", "cluster.num_clusters=12", "train.batch_size=16",
                 "train.instances=2", "loss.rot_batch=4", "model.dim=16", "eval.batch_size=32"]  # fmt: skip
    else:
        # throughput does not depend on the weights' values; bf16 autocast for the backbone on
        # CUDA (the paper template pins fp32 for fidelity; here the GPU path is what is measured)
        sets += ["model.weights=none", "engine.precision=auto"]
    res = Results("gpu" if not args.quick else "gpu-quick")
    with tempfile.TemporaryDirectory() as tmp:
        data = make_images(Path(tmp) / "data", n, size)
        template = ROOT / "templates" / "cub.toml"
        run = Path(tmp) / "run"
        with Timer() as t_run:
            udml.train(run, template, set_values=sets, flags={"data.dataset": str(data)})
        records = read_metrics(run)
        summary = next(r for r in records if r["event"] == "epoch_summary")
        cfg = load_config(template, [*sets, f"data.dataset={data}"])
        engine = resolve_engine(cfg.engine)
        trainer = Trainer(cfg, resolve_dataset(str(data)), Path(tmp) / "ref", engine)
        trainer.method.pseudo_labels = torch.randint(0, cfg.cluster.num_clusters, (n,)).numpy()
        t = cfg.train
        sampler = PKSampler(trainer.method.pseudo_labels, t.batch_size, t.instances, 0, 2)
        batch = [(i, j) for j, i in enumerate(sampler.epoch(0)[0])]
        trainer.images.augmented.labels = trainer.method.pseudo_labels
        trainer.model.train(True, freeze_bn=True)
        images, labels = next(iter(engine.batch_loader(trainer.images.augmented, [batch])))
        images = engine.to_device(images)
        trainer.train_step(images, labels)  # warm-up
        _sync(engine)
        with Timer() as t_mem:
            for _ in range(args.iters):
                trainer.train_step(images, labels)
            _sync(engine)
        pure = args.iters * len(images) / t_mem.seconds
        res.add("udml train vs the step on device tensors", "images_per_s",
                summary["images_per_s"], pure, higher_is_better=True, target=0.85, unit="img/s")  # fmt: skip
        files = sorted((data / "train").rglob("*.jpg"))[: 20 * cfg.eval.batch_size]
        model = trainer.model.eval()
        with Timer() as t_emb:
            udml.embed_files(model, cfg, files)
        batch_x = engine.to_device(torch.rand(cfg.eval.batch_size, 3, *(2 * [cfg.data.image_size])))
        with torch.no_grad(), engine.autocast():
            model.embed(batch_x)
            _sync(engine)
            start = time.perf_counter()
            for _ in range(len(files) // cfg.eval.batch_size):
                model.embed(batch_x)
            _sync(engine)
        fwd = (
            (len(files) // cfg.eval.batch_size)
            * cfg.eval.batch_size
            / (time.perf_counter() - start)
        )
        res.add("udml embed vs the pure forward", "images_per_s", len(files) / t_emb.seconds, fwd,
                higher_is_better=True, target=0.85, unit="img/s")  # fmt: skip
        res.add(f"one epoch of {args.iters} batches incl. the first clustering", "seconds",
                t_run.seconds, unit="s")  # fmt: skip
    hot_loops(res, args.device, args.quick)
    res.write()


def hot_loops(res, device: str, quick: bool) -> None:
    """k-means (k-means++ and Lloyd), the evaluation kNN and the duplicate pair search: torch on
    ``device`` (what udml runs when CUDA is present) against faiss on the CPU, same data."""
    import numpy as np
    import torch

    from udml_cli.clustering import kmeans
    from udml_cli.index import duplicate_pairs
    from udml_cli.metrics import retrieval_metrics

    on = torch.device(device)
    n, d, k = (2_000, 64, 50) if quick else (60_000, 512, 1_000)  # SOP-size clustering
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, n // 5, n)
    cases = [
        ("k-means++ and 20 Lloyd iterations", lambda dev: kmeans(x, k, 20, device=dev)),
        ("evaluation kNN + metrics", lambda dev: retrieval_metrics(x, labels, [1, 10, 100],
                                                                   device=dev)),
        ("duplicate pairs ≥ 0.5", lambda dev: duplicate_pairs(x, 0.5, device=dev)),
    ]  # fmt: skip
    for name, run in cases:
        with Timer() as cpu:
            run(False)  # faiss on the CPU, whatever is present
        with Timer() as dev:
            run(on)
            if on.type == "cuda":
                torch.cuda.synchronize()
        res.add(f"{name}, {n} × {d} (faiss CPU = baseline)", "seconds", dev.seconds,
                cpu.seconds, unit="s")  # fmt: skip


def _sync(engine) -> None:
    import torch

    if engine.device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    main()
