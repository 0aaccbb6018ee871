"""DDP equivalence: `udml train --nproc 2` (two gloo processes, the global batch split) vs one
process with the same global batch, on the demo recipe (templates/demo.toml: Lite0, 64 px, batch
60 + 16 rotated images, a re-clustering at epoch 5's start when --epochs > 5).

Records the largest difference of the per-step losses and of the final weights, whether the
pseudo-labels agree, and each run's wall-clock (2 processes on 2 cores share the same cores:
this is the equivalence check, not a speed-up).
    python benchmarks/ddp.py [--epochs 6] [--dataset emoji]   → results/ddp.json
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, nproc: int, epochs: int, dataset: str) -> float:
    cmd = [
        sys.executable, "-m", "udml_cli", "train", "--dataset", dataset, "--config",
        str(ROOT / "templates" / "demo.toml"), "--out", str(out), "--epochs", str(epochs),
        "--set", "train.final_eval=false", "--set", "train.log_every=1", "--nproc", str(nproc),
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def losses(out: Path) -> list[float]:
    from udml_cli.runs import read_metrics

    records = read_metrics(out)
    return [r["loss"] for r in records if r["event"] == "step"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--dataset", default="emoji")
    args = ap.parse_args()
    res = Results("ddp")
    with tempfile.TemporaryDirectory() as tmp:
        one, two = Path(tmp) / "one", Path(tmp) / "two"
        t1 = run(one, 1, args.epochs, args.dataset)
        t2 = run(two, 2, args.epochs, args.dataset)
        a, b = losses(one), losses(two)
        assert len(a) == len(b), (len(a), len(b))
        wa = torch.load(one / "last.pt", weights_only=True)
        wb = torch.load(two / "last.pt", weights_only=True)
    case = f"demo recipe, {args.dataset}, {args.epochs} epochs ({len(a)} steps): 2 processes vs 1"
    gaps = [abs(x - y) for x, y in zip(a, b, strict=True)]
    res.add(case, "max |loss difference| over steps", max(gaps))
    res.add(case, "|loss difference| at steps 1, 2, 5, 10, 20, 40, last",
            [gaps[i - 1] for i in (1, 2, 5, 10, 20, 40) if i <= len(gaps)] + [gaps[-1]])  # fmt: skip
    res.add(
        case,
        "max relative loss difference",
        max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True)),
    )
    diff = max((wa["model"][k].float() - wb["model"][k].float()).abs().max().item()
               for k in wa["model"])  # fmt: skip
    res.add(case, "max |weight difference| at the end", diff)
    same = bool(torch.equal(wa["pseudo_labels"], wb["pseudo_labels"]))
    res.add(case, "pseudo-labels identical", same)
    res.add(case, "wall-clock s, 2 processes (baseline: 1)", t2, baseline=t1, unit="s")
    res.write()


if __name__ == "__main__":
    main()
