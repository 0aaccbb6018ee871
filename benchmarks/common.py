"""Shared by the benchmark scripts: timing, peak memory, the results-file record format."""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

# results/ beside this file; $UDML_BENCH_RESULTS elsewhere (tests run scripts without touching it)
RESULTS = Path(os.environ.get("UDML_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def machine() -> str:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), ""
            )
    except OSError:
        pass
    return f"{platform.machine()} {cpus} cores {model}".strip()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Timer:
    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start


class Results:
    """Collects records ``{benchmark, case, metric, ours, baseline, ratio, ...}`` and writes JSON."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.records: list[dict] = []
        self.command = "python " + " ".join([os.path.relpath(sys.argv[0]), *sys.argv[1:]])

    def add(self, case, metric, ours, baseline=None, higher_is_better=False, target=None, unit=""):
        ratio = None
        if baseline is not None and ours:
            ratio = (ours / baseline) if higher_is_better else (baseline / ours)
        rec = {
            "benchmark": self.name,
            "case": case,
            "metric": metric,
            "ours": ours,
            "baseline": baseline,
            "ratio": ratio,
            "higher_is_better": higher_is_better,
            "target": target,
            "unit": unit,
            "command": self.command,
            "machine": machine(),
            "date": datetime.date.today().isoformat(),
        }
        self.records.append(rec)
        shown = f"{ours:.4g}" if isinstance(ours, float) else ours
        extra = f" baseline {baseline:.4g} ratio {ratio:.3g}" if ratio is not None else ""
        print(f"[{self.name}] {case} {metric}: {shown} {unit}{extra}", file=sys.stderr, flush=True)
        return rec

    def write(self) -> Path:
        path = RESULTS / f"{self.name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)  # a name may hold a folder: explore/x
        path.write_text(json.dumps(self.records, indent=2) + "\n")
        print(f"wrote {path}", file=sys.stderr)
        return path


def clustered_unit_vectors(n: int, d: int, k: int, seed: int = 0, spread: float = 0.6):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    labels = rng.integers(0, k, n)
    x = centres[labels] + spread * rng.normal(size=(n, d)).astype(np.float32) / np.sqrt(d)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), labels
