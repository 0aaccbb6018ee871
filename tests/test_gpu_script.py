"""benchmarks/gpu.py stays runnable between device loans: its --quick CPU run completes and its
records have the shape BENCHMARKS.md quotes (the device figures are recorded when one is lent)."""

import json
import os
import subprocess
import sys

from conftest import REPO


def test_gpu_benchmark_runs_on_the_cpu(tmp_path):
    env = {**os.environ, "UDML_BENCH_RESULTS": str(tmp_path), "UDML_HOME": str(tmp_path / "h")}
    proc = subprocess.run(
        [sys.executable, REPO / "benchmarks" / "gpu.py", "--quick", "--device", "cpu", "--iters", "3"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    records = json.loads((tmp_path / "gpu-quick.json").read_text())
    cases = [r["case"] for r in records]
    assert any(c.startswith("udml train vs") for c in cases)
    assert any(c.startswith("udml embed vs") for c in cases)
    assert all(r["ours"] > 0 for r in records)
