"""UDML-SS's parts beside the training loop (``training.Trainer`` runs both methods): one
training step (the Weight loss on the gathered global batch, the rotation loss on one draw over
it) and the forward DDP wraps. Its batches come from k-means pseudo-labels (``Trainer.recluster``,
``data/sampler.py:PKSampler``)."""

from __future__ import annotations

import torch
from torch import nn

from udml_cli.losses import rotate_batch, rotation_draw, rotation_loss, weight_loss


def udml_step(trainer, images: torch.Tensor, labels: torch.Tensor):
    """UDML-SS's losses of one batch and the loss to back-propagate on this rank. The backbone
    runs under the engine's autocast; the heads and both losses in fp32 with autocast off (a
    bf16 similarity matrix is amplified by α = 40)."""
    cfg, eng = trainer.cfg, trainer.engine
    x = eng.to_device(images)
    y = labels.to(eng.device)
    n = len(x)
    rb = cfg.loss.rot_batch if cfg.loss.rot_weight > 0 else 0
    rows = 4 * rb  # rotation rows of the whole batch: each picked image and its 3 turns
    pick = turns = None
    if rb:  # the same draw over the global batch on every rank; each rotates its own picks
        drawn = rotation_draw(len(y), rb)
        share = eng.shard(len(y))
        pick = (drawn[(drawn >= share.start) & (drawn < share.stop)] - share.start).to(x.device)
        rotated, turns = rotate_batch(x[pick])
        x = torch.cat([x, rotated])
    emb, logits = trainer.step_forward(x, n, pick)
    with torch.autocast(eng.device.type, enabled=False):
        metric = weight_loss(
            eng.gather_batch(emb) if eng.processes > 1 else emb,
            y, cfg.loss.alpha, cfg.loss.beta, cfg.loss.base, cfg.loss.margin,
        )  # fmt: skip
        local = cfg.loss.metric_weight * metric
        rot = correct = torch.zeros((), device=x.device)
        if rb:
            target = torch.cat([torch.zeros(len(pick), dtype=torch.long, device=x.device), turns])
            rot = rotation_loss(logits, target, rows)  # this rank's share of the batch's mean
            correct = (logits.argmax(1) == target).sum()
            local = local + cfg.loss.rot_weight * rot
    rot_all, correct_all = eng.sum_over_ranks([rot.item(), float(correct)])
    total = cfg.loss.metric_weight * metric.item() + cfg.loss.rot_weight * rot_all
    out = {"weight_loss": metric.item()}
    if rb:
        out |= {"rot_loss": rot_all, "rot_acc": correct_all / rows}
    out["loss"] = total
    return out, local


class UdmlForward(nn.Module):
    """One training forward: the backbone under the engine's autocast, the embedding head on the
    first ``n`` rows and the rotation head on the ``pick``-ed rows and the rotated ones (after
    row ``n``) in fp32. A module of its own so DDP wraps every trained parameter's use."""

    def __init__(self, model: nn.Module, engine) -> None:
        super().__init__()
        self.model, self.engine = model, engine

    def forward(self, x: torch.Tensor, n: int, pick: torch.Tensor | None):
        m = self.model
        with self.engine.autocast():
            feat = m.features(x)
        with torch.autocast(x.device.type, enabled=False):
            feat = feat.float()
            emb = m.project(feat[:n])
            logits = None if pick is None else m.rotation_head(torch.cat([feat[pick], feat[n:]]))
        return emb, logits
