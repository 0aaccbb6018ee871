"""The invariance method's losses, on L2-normalised embeddings, in fp32 with autocast off.

NT-Xent (SimCLR, Chen et al. 2020), for V ≥ 2 views: ``instance[i]`` names the image row i is a
view of. Per row i, with s = x·xᵀ / τ, and P(i) the other rows of the same image:
    ℓ_i = −1/|P(i)| Σ_{p∈P(i)} log( exp(s_ip) / Σ_{k≠i} exp(s_ik) );   loss = mean_i ℓ_i
(for V = 2, SimCLR's loss exactly).

The differential-entropy regulariser of SSCD (Pizzi et al., CVPR 2022; the Kozachenko–Leonenko
estimator): the distance of each row to its nearest row of *another* image,
    loss = −mean_i log √(min_{j: instance_j ≠ instance_i} ‖x_i − x_j‖² + ε)
which pushes the embeddings apart where they crowd.
"""

from __future__ import annotations

import torch


def nt_xent(emb: torch.Tensor, instance: torch.Tensor, temperature: float) -> torch.Tensor:
    with torch.autocast(emb.device.type, enabled=False):
        emb = emb.float()
        n = len(emb)
        eye = torch.eye(n, dtype=torch.bool, device=emb.device)
        logits = (emb @ emb.T / temperature).masked_fill(eye, float("-inf"))
        log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)
        pos = (instance[:, None] == instance[None, :]) & ~eye
        if not pos.any(1).all():
            raise ValueError("nt_xent: a row has no other view of its image in the batch")
        per_row = -(log_prob.masked_fill(~pos, 0).sum(1) / pos.sum(1))
        return per_row.mean()


def koleo(emb: torch.Tensor, instance: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    with torch.autocast(emb.device.type, enabled=False):
        emb = emb.float()
        other = instance[:, None] != instance[None, :]
        sq = (emb * emb).sum(1)
        d2 = (sq[:, None] + sq[None, :] - 2 * emb @ emb.T).clamp(min=0)
        nearest = d2.masked_fill(~other, float("inf")).amin(1)
        return -torch.log((nearest + eps).sqrt()).mean()  # no infinite gradient at a duplicate
