"""The Weight loss of UDML-SS (multi-similarity with hard mining), vectorised over anchors.

Per anchor i, with s = x·xᵀ on L2-normalised rows: positives share its label (j ≠ i), negatives do
not. Keep negatives with s + margin > min positive similarity and positives with
s − margin < max negative similarity; an anchor with no kept positive or negative contributes 0.
    L_i = 1/β·log(1 + Σ_P exp(−β(s − base))) + 1/α·log(1 + Σ_N exp(α(s − base)))
    loss = Σ_i L_i / batch size
α scales negatives (official 40), β positives (official 2). pytorch-metric-learning's
MultiSimilarityLoss names them the other way round.

Always computed in fp32 with autocast off: under bf16 autocast the similarity matmul would be cast
down, and exp(α·s) with α = 40 turns its rounding into percent-level gradient errors.
"""

from __future__ import annotations

import torch


def _log1p_sum_exp(z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + Σ_{mask} exp(z)) per row, stably."""
    z = z.masked_fill(~mask, float("-inf"))
    zero = torch.zeros(z.shape[0], 1, dtype=z.dtype, device=z.device)
    return torch.logsumexp(torch.cat([zero, z], dim=1), dim=1)


def weight_loss(
    emb: torch.Tensor,
    labels: torch.Tensor,
    alpha: float = 40.0,
    beta: float = 2.0,
    base: float = 0.5,
    margin: float = 0.1,
) -> torch.Tensor:
    with torch.autocast(emb.device.type, enabled=False):
        return _weight_loss(emb.float(), labels, alpha, beta, base, margin)


def _weight_loss(emb, labels, alpha, beta, base, margin) -> torch.Tensor:
    n = emb.shape[0]
    sim = emb @ emb.T
    same = labels[:, None] == labels[None, :]
    eye = torch.eye(n, dtype=torch.bool, device=emb.device)
    pos, neg = same & ~eye, ~same
    s = sim.detach()
    inf = torch.tensor(float("inf"), dtype=s.dtype, device=s.device)
    min_pos = torch.where(pos, s, inf).amin(1, keepdim=True)
    max_neg = torch.where(neg, s, -inf).amax(1, keepdim=True)
    keep_neg = neg & (s + margin > min_pos)
    keep_pos = pos & (s - margin < max_neg)
    active = keep_pos.any(1) & keep_neg.any(1)
    pos_term = _log1p_sum_exp(-beta * (sim - base), keep_pos) / beta
    neg_term = _log1p_sum_exp(alpha * (sim - base), keep_neg) / alpha
    per_anchor = torch.where(active, pos_term + neg_term, torch.zeros_like(pos_term))
    return per_anchor.sum() / n
