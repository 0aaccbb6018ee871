"""STML's pieces beside the UDML-SS loop (``training.Trainer`` runs both): the EMA teacher, the
neighbour search that makes its batches, and one training step.

As STML's code (tjddus9597/STML-CVPR22): the teacher is a copy of the student updated as an
exponential moving average of its weights (after the backward pass, before the optimiser step);
every ``train.up_step`` epochs (the code: every epoch) each image's nearest neighbours in the
student's g embedding are found again; a batch is ``batch_size / neighbors`` random queries with
their neighbours, each image in ``stml.views`` augmented views.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from udml_cli.losses import stml_loss


def make_teacher(model: nn.Module) -> nn.Module:
    teacher = copy.deepcopy(model)
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher ← m·teacher + (1 − m)·student over every weight and buffer; integer buffers
    (BatchNorm's batch counter) are copied."""
    for t, s in zip(teacher.state_dict().values(), student.state_dict().values(), strict=True):
        if t.is_floating_point():
            t.mul_(momentum).add_(s.detach(), alpha=1 - momentum)
        else:
            t.copy_(s)


def nearest(x: np.ndarray, k: int) -> np.ndarray:
    """Each row's ``k`` nearest rows by Euclidean distance (itself first, ties aside); exact."""
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    return index.search(x, k)[1].astype(np.int64)


def neighbour_precision(neighbours: np.ndarray, truth: np.ndarray) -> float:
    """The share of each query's other neighbours that have its true class (a diagnostic)."""
    if neighbours.shape[1] < 2:
        return 1.0
    return float((truth[neighbours[:, 1:]] == truth[neighbours[:, :1]]).mean())


class StudentForward(nn.Module):
    """The student's f (the embedding, before normalisation) and g embeddings of a batch: the
    backbone under the engine's autocast, the heads in fp32. What DDP wraps."""

    def __init__(self, model: nn.Module, engine) -> None:
        super().__init__()
        self.model, self.engine = model, engine

    def forward(self, x: torch.Tensor):
        m = self.model
        with self.engine.autocast():
            feat = m.features(x)
        with torch.autocast(x.device.type, enabled=False):
            feat = feat.float()
            return m.head.fc(feat), m.aux_head(feat)


def stml_step(trainer, images: torch.Tensor, idx: torch.Tensor) -> tuple[dict, torch.Tensor]:
    """The losses of one batch (``images``: this rank's views; ``idx``: the image each row of
    the global batch is a view of) and the loss to back-propagate on this rank."""
    cfg, eng = trainer.cfg, trainer.engine
    x = eng.to_device(images)
    with torch.no_grad():
        with eng.autocast():
            feat = trainer.teacher.features(x)
        t_g = trainer.teacher.aux_head(feat.float())
    s_f, s_g = trainer.step_forward(x)
    if eng.processes > 1:  # the whole global batch on every rank, gradients into this rank's rows,
        # view by view: the rows in the single-process order (all images' view 1, then view 2 …)
        views = cfg.stml.views

        def gather(x):
            return torch.cat([eng.gather_batch(part) for part in x.chunk(views)])

        s_f, s_g, t_g = gather(s_f), gather(s_g), gather(t_g)
    c = cfg.stml
    with torch.autocast(eng.device.type, enabled=False):
        parts = stml_loss(s_f, s_g, t_g, idx.to(x.device), c.sigma, c.delta, c.neighbors * c.views)
    return {k: v.item() for k, v in parts.items()}, parts["loss"]
