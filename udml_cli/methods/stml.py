"""STML (Kim et al., CVPR 2022): self-taught metric learning with an EMA teacher. Its settings:
the ``[stml]`` section.

As STML's code (tjddus9597/STML-CVPR22): the teacher is a copy of the student updated as an
exponential moving average of its weights (after the backward pass, before the optimiser step);
every ``train.up_step`` epochs (the code: every epoch) each image's nearest neighbours in the
student's g embedding are found again; a batch is ``batch_size / neighbors`` random queries with
their neighbours, each image in ``stml.views`` augmented views; the loss is the relaxed
contrastive loss on f and g against the teacher's contextual similarity, plus self-distillation.
"""

from __future__ import annotations

import copy
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from udml_cli.data.sampler import NeighbourSampler
from udml_cli.errors import CheckpointError, UsageError
from udml_cli.losses import stml_loss
from udml_cli.methods.base import Method, TrainingForward
from udml_cli.models.heads import FITTED


class Stml(Method):
    name = "stml"
    sections: ClassVar[dict] = {"stml": None}
    losses = ("loss", "rc_loss", "kl_loss")
    checkpoint_fields: ClassVar[dict] = {"neighbours": torch.Tensor, "teacher": dict}

    @classmethod
    def check_config(cls, cfg) -> None:
        if cfg.train.batch_size % cfg.stml.neighbors:
            raise ValueError(
                f"train.batch_size ({cfg.train.batch_size}) must be a multiple of "
                f"stml.neighbors ({cfg.stml.neighbors})"
            )
        if cfg.model.head_init in FITTED:
            raise ValueError(
                f"model.head_init = {cfg.model.head_init} is for udml-ss and invariance; use "
                "orthogonal or identity"
            )

    @classmethod
    def heads(cls, cfg, feat_dim: int) -> dict[str, nn.Module]:
        g = nn.Linear(feat_dim, cfg.stml.aux_dim)  # the g embedding the teacher's targets use
        if cfg.model.head_init == "orthogonal":  # STML's code, for both of its heads
            nn.init.orthogonal_(g.weight)
            nn.init.zeros_(g.bias)
        return {"aux_head": g}

    @classmethod
    def check_checkpoint(cls, payload: dict) -> str | None:
        return "neighbour state" if payload["neighbours"].dim() != 2 else None

    def __init__(self, run) -> None:
        super().__init__(run)
        self.teacher = make_teacher(run.model, self.heads(self.cfg, run.model.feat_dim))
        self.neighbours: np.ndarray | None = None  # every image's nearest neighbours (n, k)

    @classmethod
    def check_data(cls, cfg, n_train: int) -> None:
        queries, k = cfg.train.batch_size // cfg.stml.neighbors, cfg.stml.neighbors
        if max(queries, k) > n_train:
            raise UsageError(
                f"a batch of {cfg.train.batch_size} = {queries} queries × {k} neighbours "
                f"needs more than the {n_train} training images; lower train.batch_size"
            )

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.run.model.aux_head.parameters())

    @property
    def ready(self) -> bool:
        return self.neighbours is not None

    @property
    def views(self) -> int:
        return self.cfg.stml.views

    def refresh(self, epoch: int, first: bool) -> None:
        """Every image's ``stml.neighbors`` nearest (itself included) in the student's g
        embedding, found on rank 0 and sent to the others."""
        run = self.run
        raw = run.trainer.features("squash")  # STML's Transform_for_Sampler: no crop
        with torch.no_grad():
            g = run.model.aux_head(torch.from_numpy(raw).to(self.engine.device))
        x = g.float().cpu().numpy()
        found = nearest(x, self.cfg.stml.neighbors) if run.trainer.main else None
        self.neighbours, self.refreshed_at = self.engine.from_main(found), epoch
        extra = {}
        if run.trainer.labelled:
            truth = np.asarray(run.trainer.images.plain.labels)
            extra["precision"] = neighbour_precision(self.neighbours, truth)
        run.log("neighbours", k=self.cfg.stml.neighbors, **extra)

    def sampler(self):
        t = self.cfg.train
        return NeighbourSampler(self.neighbours, t.batch_size, t.seed, t.iters_per_epoch)

    def targets(self, batch: list[int]) -> torch.Tensor:
        """Which image each row is a view of: all images' first view, then the second …"""
        return torch.from_numpy(np.tile(np.asarray(batch), self.views))

    def forward_module(self) -> nn.Module:
        return StudentForward(self.run.model, self.engine)

    def step(self, images: torch.Tensor, idx: torch.Tensor):
        """The losses of one batch (``images``: this rank's views; ``idx``: the image each row of
        the global batch is a view of) and the loss to back-propagate on this rank."""
        cfg, eng = self.cfg, self.engine
        x = eng.to_device(images)
        with torch.no_grad():
            with eng.autocast():
                feat = self.teacher.features(x)
            t_g = self.teacher.aux_head(feat.float())
        s_f, s_g = self.run.trainer.step_forward(x)
        if eng.processes > 1:  # the whole global batch on every rank, gradients into this
            # rank's rows, view by view: the single-process row order (all view 1, then view 2 …)
            def gather(x):
                return torch.cat([eng.gather_batch(part) for part in x.chunk(self.views)])

            s_f, s_g, t_g = gather(s_f), gather(s_g), gather(t_g)
        c = cfg.stml
        with torch.autocast(eng.device.type, enabled=False):
            parts = stml_loss(s_f, s_g, t_g, idx.to(x.device), c.sigma, c.delta,
                              c.neighbors * c.views)  # fmt: skip
        return {k: v.item() for k, v in parts.items()}, parts["loss"]

    def after_backward(self) -> None:
        ema_update(self.teacher, self.run.model, self.cfg.stml.momentum)  # before the step

    def state_dict(self) -> dict:
        return {
            "neighbours": torch.from_numpy(self.neighbours),
            "teacher": self.teacher.state_dict(),
            "clustered_at": self.refreshed_at,
        }

    def load_state_dict(self, payload: dict, n_train: int) -> None:
        neighbours = payload["neighbours"].numpy()
        self.check_images(neighbours, n_train)
        if neighbours.min(initial=0) < 0 or neighbours.max(initial=0) >= n_train:
            raise CheckpointError("damaged: neighbours out of range")
        try:
            self.teacher.load_state_dict(payload["teacher"])
        except (RuntimeError, KeyError, ValueError) as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(
                f"the teacher does not fit this run's network ({first})"
            ) from None
        self.neighbours, self.refreshed_at = neighbours, int(payload["clustered_at"])


def make_teacher(model: nn.Module, heads: dict[str, nn.Module]) -> nn.Module:
    """A second network as STML's code builds it: the student's (pretrained) backbone, and
    heads of its own, initialised afresh (``heads``), not copies of the student's."""
    teacher = copy.deepcopy(model)
    for name, head in heads.items():
        setattr(teacher, name, head.to(next(model.parameters()).device))
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


class StudentForward(TrainingForward):
    """The student's f (the embedding, before normalisation) and g embeddings of a batch."""

    def heads(self, feat: torch.Tensor):
        return self.model.head.fc(feat), self.model.aux_head(feat)
