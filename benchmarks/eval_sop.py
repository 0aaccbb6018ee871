"""Evaluation at SOP size: ours (chunked, self excluded by index) vs the dense N×N approach.

Ours runs on 60,502 × 512 random unit vectors with 11,316 classes (each in a fresh subprocess so
peak RSS is its own). The dense baseline (full similarity matrix, as the original code built it)
runs at sizes that fit; its time and memory at SOP size are extrapolated from the measured
scaling (N² for both), and the JSON says so.
    python benchmarks/eval_sop.py
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results

N_SOP, CLASSES_SOP = 60502, 11316

CHILD = r"""
import json, sys, time, numpy as np
sys.path.insert(0, {bench!r})
from common import peak_rss_mb
n, classes, mode = {n}, {classes}, {mode!r}
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 512)).astype(np.float32)
x /= np.linalg.norm(x, axis=1, keepdims=True)
labels = rng.integers(0, classes, n)
base = peak_rss_mb()
t = time.perf_counter()
if mode == "ours":
    from udml_cli.metrics import retrieval_metrics
    out = retrieval_metrics(x, labels, [1, 10, 100, 1000])
    r1 = out["recall_at"]["1"]
else:
    import torch
    xt = torch.from_numpy(x)
    sim = xt @ xt.T - 2 * torch.eye(n)     # the original: subtract an identity, dense N x N
    top = sim.topk(1000, dim=1).indices
    lab = torch.from_numpy(labels)
    r1 = float((lab[top[:, 0]] == lab).float().mean())
print(json.dumps({{"seconds": time.perf_counter() - t, "rss_mb": peak_rss_mb(), "base_mb": base, "r1": r1}}))
"""


def run(n, classes, mode):
    code = CHILD.format(bench=str(Path(__file__).resolve().parent), n=n, classes=classes, mode=mode)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    res = Results("eval_sop")
    ours = run(N_SOP, CLASSES_SOP, "ours")
    res.add("60502x512 ours", "seconds", ours["seconds"], target=60, unit="s")
    res.add("60502x512 ours", "peak_rss", ours["rss_mb"], target=2048, unit="MB")
    dense = {n: run(n, max(2, n * CLASSES_SOP // N_SOP), "dense") for n in (5000, 10000, 20000)}
    for n, d in dense.items():
        res.add(f"{n}x512 dense", "seconds", d["seconds"], unit="s")
        res.add(f"{n}x512 dense", "peak_rss", d["rss_mb"], unit="MB")
    scale = (N_SOP / 20000) ** 2
    big = dense[20000]
    extra_mb = (big["rss_mb"] - big["base_mb"]) * scale + big["base_mb"]
    res.add("60502x512 dense (extrapolated N^2 from 20000)", "seconds", big["seconds"] * scale,
            unit="s")  # fmt: skip
    res.add("60502x512 vs dense extrapolated", "peak_rss", ours["rss_mb"], extra_mb, target=2048,
            unit="MB")  # fmt: skip
    res.add("60502x512 vs dense extrapolated", "seconds", ours["seconds"], big["seconds"] * scale,
            unit="s")  # fmt: skip
    res.write()


if __name__ == "__main__":
    main()
