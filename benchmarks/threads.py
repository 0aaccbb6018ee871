"""Training step rate on a shared machine: engine.threads = "auto" vs torch's default (one
intra-op thread per core), alone and with one competing busy process.

The demo recipe (templates/demo.toml: Lite0, 64 px, batch 60 + rotations, one DataLoader worker
on 2 cores) for one epoch of --iters batches through `udml train` in a fresh process; images/s
from the epoch summary in metrics.jsonl. The competitor is a pure-Python busy loop (one core).
    python benchmarks/threads.py [--iters 12]   → results/threads.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results

ROOT = Path(__file__).resolve().parents[1]


def step_rate(threads: str, iters: int, dataset: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [
            sys.executable, "-m", "udml_cli", "train", "--dataset", dataset, "--config",
            str(ROOT / "templates" / "demo.toml"), "--out", str(out), "--epochs", "1",
            "--set", f"train.iters_per_epoch={iters}", "--set", "train.final_eval=false",
            "--set", f"engine.threads={threads}",
        ]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        from udml_cli.runs import read_metrics

        records = read_metrics(out)
        return next(r for r in records if r["event"] == "epoch_summary")["images_per_s"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--dataset", default="emoji")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    res = Results("threads")
    for busy in (False, True):
        hog = None
        if busy:
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            auto = step_rate("auto", args.iters, args.dataset)
            default = step_rate(str(cores), args.iters, args.dataset)
        finally:
            if hog is not None:
                hog.kill()
                hog.wait()
        case = "train step, demo recipe" + (", one competing busy process" if busy else ", alone")
        res.add(f"{case}: threads auto vs {cores} (torch's default)", "images_per_s", auto,
                default, higher_is_better=True, unit="img/s")  # fmt: skip
    res.write()


if __name__ == "__main__":
    main()
