"""Quality: pretrained start vs UDML (λ = 0) vs UDML-SS (λ = 0.1) vs STML, same seeds.

Held-out classes of Fashion-MNIST and of the cross-vendor emoji set (identity labels; the emoji
subgroup as a second, coarser view). Writes benchmarks/results/quality-<dataset>.json and a markdown
table (quality-<dataset>.md) per dataset, with mean ± spread (min–max over seeds) and the
wall-clock of each run (training + scoring).
    python benchmarks/quality.py [--datasets fashion-mnist emoji] [--seeds 0 1 2] [--set k=v ...]
        [--modes UDML UDML-SS STML INV INV+UDML]
`--set 'model.layers=["auto"]'` (the `photos` template's) starts from the stage the label-free
score picks on the training images, as each run does: on each seed's own sample of them (drawn
by `cluster.seed`; before 2026-12-03 the start was seed 0's pick for every seed), so the start
row is a mean over seeds and the JSON names each seed's stage. `--modes` with no name scores
the starts only. INV is the invariance method alone,
INV+UDML with the UDML-SS Weight loss on pseudo-classes (both on the UDML-SS demo template's
start, steps and learning rate). `--template photos` runs that template as shipped instead (its
own start, k and steps; only the data named), for the start and every mode but STML.
`--set` is applied last, so it overrides a mode's own settings (before 2026-12-03 INV's
`train.head_lr=1e-5` and `invariance.cluster_weight` silently won over a `--set` of the same key).
The datasets must be prepared first (benchmarks/run_all.sh does it): `udml dataset prepare emoji
--out data/emoji` (scripts/demo.sh does this one too) and `udml dataset prepare fashion-mnist
--out data/fashion-mnist --limit 6000`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, Results

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = {"fashion-mnist": "demo-fashion-mnist.toml", "emoji": "demo.toml",
             "icons": "demo.toml"}  # fmt: skip
STML_TEMPLATES = {"fashion-mnist": "stml-demo-fashion-mnist.toml", "emoji": "stml-demo.toml",
                  "icons": "stml-demo.toml"}  # fmt: skip
# the icon set (udml dataset prepare icons) runs the emoji recipes: 64 px pictograms, 3-6 per
# class; k for its 621 training images as the emoji demo's 700 for 2,772
DATASET_SETS = {"icons": ["data.dataset=icons", "cluster.num_clusters=160"]}
INV = ["train.method=invariance", "train.head_lr=1e-5"]
MODES = {
    "UDML": ["loss.rot_weight=0"],
    "UDML-SS": ["loss.rot_weight=0.1"],
    "STML": [],
    "INV": [*INV, "invariance.cluster_weight=0"],
    "INV+UDML": [*INV, "invariance.cluster_weight=1"],
}


def template(dataset: str, mode: str, shipped: str | None = None) -> Path:
    """``shipped`` (--template): that template as shipped, for every mode but STML."""
    if shipped and mode != "STML":
        return ROOT / "templates" / f"{shipped}.toml"
    return ROOT / "templates" / (STML_TEMPLATES if mode == "STML" else TEMPLATES)[dataset]


def dataset_sets(dataset: str, mode: str, shipped: str | None = None) -> list[str]:
    if shipped and mode != "STML":  # as shipped: only the data named (k etc. its own)
        return [f"data.dataset={dataset}"]
    sets = list(DATASET_SETS.get(dataset, []))
    if mode == "STML":  # no [cluster] section in STML's config
        sets = [x for x in sets if not x.startswith("cluster.")]
    return sets


METRICS = [("R@1", "1"), ("R@2", "2"), ("R@4", "4"), ("R@8", "8")]


def flat(result: dict) -> dict:
    out = {name: 100 * result["recall_at"][k] for name, k in METRICS}
    out.update(NMI=100 * result["nmi"], **{"MAP@R": 100 * result["map_at_r"]})
    return out


def score(model, cfg, ref, engine, t0: float, subgroups: bool) -> dict:
    """Held-out metrics of ``model``, ``seconds`` since ``t0``; with ``subgroups`` the same
    embeddings scored again with the subgroup (second label column) as the class."""
    import numpy as np

    from udml_cli.data.layout import read_split
    from udml_cli.inference import embed_split
    from udml_cli.metrics import evaluate_embeddings

    x, labels = embed_split(model, cfg, ref, "test", engine)  # once for both views
    metrics = flat(evaluate_embeddings(x, labels, cfg.eval.recall_at, seed=cfg.cluster.seed))
    metrics["seconds"] = time.perf_counter() - t0
    if subgroups:
        coarse = np.array([s.label2 for s in read_split(ref, "test")])
        sub = flat(evaluate_embeddings(x, coarse, cfg.eval.recall_at))
        metrics.update({f"subgroup {k}": v for k, v in sub.items()})
    return metrics


def selection(run: Path) -> tuple[dict, list[dict]]:
    """With ``train.eval_step`` set: the R@1 and NMI of the evaluation the label-free score ranks
    highest, the best of the run's evaluations, and the label-free score's rank correlation with
    each over them; and every evaluation's R@1, NMI, MAP@R and label-free score (the trace
    written to ``<name>-<set>-evals.json``; nothing reads it yet)."""
    from udml_cli.runs import read_metrics

    records = read_metrics(run)
    evals = [r for r in records if r["event"] == "eval" and "recall_at" in r and "label_free" in r]
    trace = [{"epoch": e["epoch"], "R@1": 100 * e["recall_at"]["1"], "NMI": 100 * e["nmi"],
              "MAP@R": 100 * e["map_at_r"], "label_free": e["label_free"]["score"]}
             for e in evals]  # fmt: skip
    if len(evals) < 2:
        return {}, trace
    from scipy.stats import spearmanr

    free = [t["label_free"] for t in trace]
    pick = max(range(len(trace)), key=lambda i: free[i])
    out = {}
    for m in ("R@1", "NMI"):
        values = [t[m] for t in trace]
        rho = spearmanr(free, values).statistic  # nan when every value ties
        out.update({f"label-free pick {m}": values[pick], f"best eval {m}": max(values),
                    "label-free rho" + ("" if m == "R@1" else f" {m}"): float(rho)})  # fmt: skip
    return out, trace


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=list(TEMPLATES))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--modes", nargs="*", default=list(MODES),
                    help="methods to train (none: score the starts only)")  # fmt: skip
    ap.add_argument("--set", dest="sets", action="append", default=[])
    ap.add_argument(
        "--name", default="quality", help="results file prefix (explore/NAME for probes)"
    )
    ap.add_argument("--template", help="a template as shipped (e.g. photos) instead of each "
                    "set's demo template, for the start and every mode but STML")  # fmt: skip
    args = ap.parse_args()

    import udml_cli as udml
    from udml_cli.config import load_config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.models.net import build_model

    for dataset in args.datasets:
        res = Results(f"{args.name}-{dataset}")
        table: dict[tuple, list[dict]] = {}
        traces: list[dict] = []
        start_sets = [*dataset_sets(dataset, "start", args.template), *args.sets]
        base = load_config(template(dataset, "start", args.template), start_sets)
        ref = resolve_dataset(base.data.dataset)
        engine = resolve_engine(base.engine)
        subgroups = dataset == "emoji"
        if base.model.layers == ["auto"]:
            # the start is the stage each run picks itself, on its own sample of the training
            # images (drawn by cluster.seed): one start per seed, scored once per stage picked
            from udml_cli.data.layout import read_split
            from udml_cli.selection import choose_layers

            train, by_stage, starts = read_split(ref, "train"), {}, []
            for seed in args.seeds:
                cfg = load_config(template(dataset, "start", args.template),
                                  [*start_sets, f"cluster.seed={seed}"])  # fmt: skip
                choose_layers(cfg, train, engine)
                stage = ", ".join(cfg.model.layers)
                if stage not in by_stage:
                    start = build_model(cfg.model, head=False)
                    by_stage[stage] = score(start, cfg, ref, engine, time.perf_counter(), subgroups)
                starts.append(by_stage[stage])
                res.add(f"{dataset} start, seed {seed}", "stage picked", stage)
            table[(dataset, "start")] = starts
        else:
            start = build_model(base.model, head=False)
            table[(dataset, "start")] = [score(start, base, ref, engine, time.perf_counter(),
                                               subgroups)]  # fmt: skip
        for mode in args.modes:
            for seed in args.seeds:
                # --set last: what the user names wins over the mode's own settings
                sets = [*dataset_sets(dataset, mode, args.template), *MODES[mode], *args.sets,
                        f"train.seed={seed}", f"cluster.seed={seed}",
                        "train.final_eval=false"]  # scored below, with the subgroup metrics  # fmt: skip
                cfg = load_config(template(dataset, mode, args.template), sets)
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as tmp:
                    last = udml.train(Path(tmp) / "run", cfg)  # the same call as `udml train`
                    model, _ = udml.load_model(checkpoint=last)
                    picked, trace = selection(Path(tmp) / "run")
                if trace:
                    traces.append({"dataset": dataset, "mode": mode, "seed": seed, "evals": trace})
                metrics = score(model, cfg, ref, engine, t0, subgroups)
                metrics.update(picked)
                table.setdefault((dataset, mode), []).append(metrics)
                print(f"{dataset} {mode} seed {seed}: {metrics}", file=sys.stderr, flush=True)
        for (ds, mode), runs in table.items():
            for metric in runs[0]:
                values = [r[metric] for r in runs]
                mean = statistics.fmean(values)
                start = [r.get(metric) for r in table[(ds, "start")]]
                # the start has no checkpoints: no label-free pick to compare against
                baseline = None if mode == "start" or None in start else statistics.fmean(start)
                res.add(f"{ds} {mode} (n={len(values)})", metric, mean, baseline,
                        higher_is_better=metric != "seconds", unit="%" if metric != "seconds" else "s")  # fmt: skip
                res.records[-1]["spread"] = [min(values), max(values)]
                res.records[-1]["values"] = values
        res.write()
        if traces:  # every evaluation of every run: what the label-free score is judged on
            (RESULTS / f"{args.name}-{dataset}-evals.json").write_text(
                json.dumps({"command": res.command, "runs": traces}, indent=1) + "\n"
            )
        write_markdown(table, RESULTS / f"{args.name}-{dataset}.md")


def write_markdown(table: dict, path: Path) -> None:
    metrics = [m for m in next(iter(table.values()))[0] if m != "seconds"]
    lines = [
        "| dataset | model | " + " | ".join(metrics) + " | time/run |",
        "|" + "---|" * (len(metrics) + 3),
    ]
    for (ds, mode), runs in table.items():
        cells = []
        for m in metrics:
            values = [r[m] for r in runs if m in r]
            if not values:
                cells.append("")
                continue
            mean = statistics.fmean(values)
            cells.append(
                f"{mean:.2f}"
                if len(values) == 1
                else f"{mean:.2f} ({min(values):.2f}–{max(values):.2f})"
            )
        secs = statistics.fmean(r["seconds"] for r in runs)
        lines.append(
            f"| {ds} | {mode} (n={len(runs)}) | " + " | ".join(cells) + f" | {secs:.0f} s |"
        )
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    from udml_cli.errors import UdmlError

    try:
        main()
    except UdmlError as e:  # e.g. a dataset not prepared yet: one line, no traceback
        sys.exit(f"error: {e}")
