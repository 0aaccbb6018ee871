"""Steps per CPU minute with a frozen backbone: one UDML-SS recipe on a labelled offline set
(EfficientNet-Lite0's block11 stage: the photos recipe's start on emoji; the heads only,
``model.freeze_backbone = 1``, ``loss.rot_weight = 0``), with the backbone run at every step
versus on cached features (``train.feature_cache``), in one process. Writes
results/feature_cache-<dataset>.json: steps/s of the training loop, the cache's build time, each
run's wall clock, and held-out R@1 / NMI / MAP@R against the untrained start.
    python benchmarks/feature_cache.py [--dataset emoji] [--steps 60] [--long 3000] [--views 8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results
from quality import ROOT, TEMPLATES, dataset_sets, score

FROZEN = ["model.layers=[\"block11\"]", "model.dim=\"auto\"", "model.freeze_backbone=1.0",
          "loss.rot_weight=0.0", "train.final_eval=false", "train.save_step=100000"]  # fmt: skip


def run(cfg_sets: list[str], dataset: str, steps: int, ref, engine) -> dict:
    import udml_cli as udml
    from udml_cli.config import load_config
    from udml_cli.runs import read_metrics

    sets = [*dataset_sets(dataset, "UDML-SS"), *FROZEN, *cfg_sets,
            f"train.epochs={max(1, steps // 10)}", "train.iters_per_epoch=10"]  # fmt: skip
    cfg = load_config(ROOT / "templates" / TEMPLATES[dataset], sets)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        last = udml.train(out, cfg)
        wall = time.perf_counter() - t0
        records = read_metrics(out)
        model, _ = udml.load_model(checkpoint=last)
    loops = [r for r in records if r["event"] == "epoch_summary"]
    loop_s = sum(r["seconds"] for r in loops)
    n = sum(r["steps"] for r in loops)
    metrics = score(model, cfg, ref, engine, time.perf_counter(), False)
    metrics.pop("seconds")
    return {"steps": n, "loop seconds": loop_s, "steps/s": n / loop_s, "wall seconds": wall,
            **metrics}  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="emoji")
    ap.add_argument("--steps", type=int, default=60, help="steps of both runs compared directly")
    ap.add_argument("--long", type=int, default=3000, help="steps of the long cached run")
    ap.add_argument("--views", type=int, default=8, help="train.feature_cache")
    args = ap.parse_args()

    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.models.net import build_model

    base = load_config(ROOT / "templates" / TEMPLATES[args.dataset],
                       [*dataset_sets(args.dataset, "start"), *FROZEN])  # fmt: skip
    ref, engine = resolve_dataset(base.data.dataset), resolve_engine(base.engine)
    start = score(build_model(base.model, head=False), base, ref, engine, time.perf_counter(),
                  False)  # fmt: skip
    cache = [f"train.feature_cache={args.views}"]
    rows = {
        "start (block11, untrained)": start,
        f"backbone every step, {args.steps} steps": run([], args.dataset, args.steps, ref, engine),
        f"cached features, {args.steps} steps": run(cache, args.dataset, args.steps, ref, engine),
        f"cached features, {args.long} steps": run(cache, args.dataset, args.long, ref, engine),
        f"cached features, {args.long} steps, head_lr 1e-4":
            run([*cache, "train.head_lr=1e-4"], args.dataset, args.long, ref, engine),
    }  # fmt: skip
    res = Results(f"feature_cache-{args.dataset}")
    plain = rows[f"backbone every step, {args.steps} steps"]["steps/s"]
    for case, metrics in rows.items():
        for metric, value in metrics.items():
            base_value = plain if metric == "steps/s" else start.get(metric)
            res.add(case, metric, value, None if case.startswith("start") else base_value,
                    higher_is_better=metric not in ("loop seconds", "wall seconds"))  # fmt: skip
        print(case, {k: round(v, 3) for k, v in metrics.items()}, file=sys.stderr, flush=True)
    res.write()


if __name__ == "__main__":
    main()
