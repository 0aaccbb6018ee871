"""STML's losses (Kim et al., "Self-Taught Metric Learning without Labels", CVPR 2022), written
from the paper and checked against its code (tjddus9597/STML-CVPR22, code/loss.py).

The teacher's semantic similarity of two images is the mean of a Gaussian of their distance and a
contextual similarity (how much their k-reciprocal neighbourhoods overlap, averaged over the
query's nearest neighbours). The student learns it with the relaxed contrastive loss, on both of
its embeddings, and its small embedding f mimics its big one g (self-distillation).
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


@torch.no_grad()
def semantic_similarity(
    t: torch.Tensor, idx: torch.Tensor, sigma: float, topk: int
) -> torch.Tensor:
    """``W = (W_P + W_C) / 2`` for the teacher embeddings ``t`` (L2-normalised rows); ``idx``:
    which image each row is a view of (views of one image count as identical)."""
    n = len(t)
    w_p = torch.exp(-torch.cdist(t, t).pow(2) / sigma)
    ranked = w_p.clone()
    ranked[idx[:, None] == idx[None, :]] = 1
    k = min(topk, n)
    nearest = torch.topk(ranked, k)[1]
    half = nearest[:, : max(1, round(k / 2))]  # round half to even, as numpy.around in the code
    knn = torch.zeros_like(w_p).scatter_(1, nearest, 1.0)
    mutual = ((knn + knn.T) / 2 == 1).float()  # k-reciprocal neighbours (each in the other's k)
    # |R(i) ∩ R(j)| / |R(i)| for j in R(i), else 0
    overlap = mutual * (mutual @ mutual.T) / mutual.sum(1, keepdim=True).clamp_min(1)
    expanded = overlap[half].mean(1)  # query expansion over the nearest half
    w_c = (expanded + expanded.T) / 2
    return (w_p + w_c) / 2


def _scaled_distances(x: torch.Tensor) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d / d.mean(1, keepdim=True)


def relaxed_contrastive(s: torch.Tensor, w: torch.Tensor, delta: float) -> torch.Tensor:
    """Pull by ``w``, push by ``1 - w`` within the margin ``delta``; distances divided by each
    row's mean, the diagonal left out, averaged over the n(n-1) pairs."""
    n = len(s)
    d = _scaled_distances(s)
    off = 1 - torch.eye(n, device=s.device, dtype=s.dtype)
    pull = d.pow(2) * w * off
    push = torch.relu(delta - d).pow(2) * (1 - w) * off
    return (pull.sum() + push.sum()) / (n * (n - 1))


def self_distillation(s_f: torch.Tensor, s_g: torch.Tensor) -> torch.Tensor:
    """KL(softmax(-D_g) ‖ softmax(-D_f)) per row, summed, over the rows; g's side detached."""
    log_q = F.log_softmax(-_scaled_distances(s_f), dim=-1)
    p = F.softmax(-_scaled_distances(s_g).detach(), dim=-1)
    return F.kl_div(log_q, p, reduction="sum") / len(s_f)


def stml_loss(s_f, s_g, t_g, idx, sigma: float, delta: float, topk: int) -> dict:
    """The student's f and g embeddings (not normalised, as the code's default), the teacher's g
    (normalised here); ``{"loss", "rc_loss", "kl_loss"}``."""
    w = semantic_similarity(F.normalize(t_g, dim=1), idx, sigma, topk)
    rc = (relaxed_contrastive(s_f, w, delta) + relaxed_contrastive(s_g, w, delta)) / 2
    kl = self_distillation(s_f, s_g)
    return {"loss": rc + kl, "rc_loss": rc, "kl_loss": kl}
