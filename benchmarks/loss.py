"""Weight loss forward+backward: ours (vectorised) vs a per-anchor Python loop (the original's way).

Batch 80 × 512 (16 pseudo-classes × 5), L2-normalised, CPU.
    python benchmarks/loss.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer


def per_anchor_loop(emb, labels, alpha=40.0, beta=2.0, base=0.5, margin=0.1):
    """The original implementation's shape: one anchor at a time with masks."""
    import torch

    n = emb.size(0)
    sim = emb @ emb.t()
    losses = []
    for i in range(n):
        pos = sim[i][(labels == labels[i]) & (torch.arange(n) != i)]
        neg = sim[i][labels != labels[i]]
        if len(pos) == 0 or len(neg) == 0:
            continue
        neg = neg[neg + margin > pos.min()]
        pos = pos[pos - margin < neg.max()] if len(neg) else pos[:0]
        if len(neg) == 0 or len(pos) == 0:
            continue
        pos_loss = torch.log(1 + torch.sum(torch.exp(-beta * (pos - base)))) / beta
        neg_loss = torch.log(1 + torch.sum(torch.exp(alpha * (neg - base)))) / alpha
        losses.append(pos_loss + neg_loss)
    return sum(losses) / n if losses else sim.sum() * 0


def bench(fn, emb0, labels, repeats):
    import torch

    best = float("inf")
    for _ in range(repeats):
        emb = emb0.clone().requires_grad_(True)
        with Timer() as t:
            loss = fn(torch.nn.functional.normalize(emb, dim=1), labels)
            loss.backward()
        best = min(best, t.seconds)
    return best, loss.item()


def main() -> None:
    import torch

    from udml_cli.losses import weight_loss

    torch.manual_seed(0)
    emb = torch.randn(80, 512)
    labels = torch.arange(16).repeat_interleave(5)
    res = Results("loss")
    bench(weight_loss, emb, labels, 3)  # warm-up
    ours, v1 = bench(weight_loss, emb, labels, 30)
    ref, v2 = bench(per_anchor_loop, emb, labels, 10)
    assert abs(v1 - v2) < 1e-5, (v1, v2)
    res.add("batch 80x512 fwd+bwd", "seconds", ours, ref, target=20, unit="s")
    res.write()


if __name__ == "__main__":
    main()
