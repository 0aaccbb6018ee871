"""The optimiser of a run: one group for the backbone (``train.lr``), one for the embedding
head (``train.head_lr``, with the heads a method trains alongside it), and a method's own
groups; Adam (UDML-SS) or AdamP (STML's code); constant or cosine learning rates."""

from __future__ import annotations

import math

import torch

from udml_cli.models.net import trainable_backbone


def build_optimizer(cfg, model, method) -> torch.optim.Optimizer:
    t = cfg.train
    groups = [
        {"params": trainable_backbone(model, cfg.model.freeze_backbone), "lr": t.lr,
         "name": "backbone"},
        {"params": [*model.head.parameters(), *method.head_parameters()], "lr": t.head_lr,
         "name": "head"},
        *method.param_groups(),
    ]  # fmt: skip
    groups = [g for g in groups if g["params"]]
    if t.optimizer == "adamp":  # STML's code: AdamP with Nesterov momentum
        from adamp import AdamP

        return AdamP(groups, weight_decay=t.weight_decay, nesterov=True)
    return torch.optim.Adam(groups, weight_decay=t.weight_decay)


def base_rates(cfg, method) -> dict[str, float]:
    """Each group's learning rate in the config, by group name (a resume re-applies them)."""
    rates = {"backbone": cfg.train.lr, "head": cfg.train.head_lr}
    return rates | {g["name"]: g["lr"] for g in method.param_groups()}


def set_rates(optimizer, cfg, method, epoch: int) -> None:
    """The learning rates of ``epoch``: the config's, cosine-annealed over train.epochs
    (``train.schedule``, as torch's CosineAnnealingLR stepped once per epoch); weight decay as
    configured (a resume may change both)."""
    t = cfg.train
    scale = 0.5 * (1 + math.cos(math.pi * epoch / t.epochs)) if t.schedule == "cosine" else 1.0
    rates = base_rates(cfg, method)
    for group in optimizer.param_groups:
        group["lr"] = rates.get(group.get("name") or "", t.lr) * scale
        group["weight_decay"] = t.weight_decay
