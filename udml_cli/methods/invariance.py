"""Invariance: an instance-level method for copies and near-duplicates. Every image of a batch
comes in ``invariance.views`` edited views (``data/edits.py``: the edits real copies carry); the
views of one image are pulled together against every other image of the batch (NT-Xent, SimCLR),
optionally spread apart where they crowd (SSCD's entropy regulariser), and optionally grouped by
k-means pseudo-classes with the UDML-SS Weight loss (instance and cluster signals are
complementary): one weighted sum, each part switchable. Its settings: ``[invariance]``, and with
``cluster_weight`` > 0 the Weight loss's α β base margin, ``[cluster]`` and ``train.instances``.

Batches: random images (without clustering) or P×K pseudo-classes (with it), every image in all
its views; under DDP the embeddings are gathered view by view (the single-process row order), so
the loss each rank computes is the single-process one.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from udml_cli.errors import UsageError
from udml_cli.losses import koleo, nt_xent, weight_loss
from udml_cli.methods.base import TrainingForward
from udml_cli.methods.udml_ss import UdmlSS
from udml_cli.models.heads import FITTED


class Invariance(UdmlSS):
    name = "invariance"
    sections: ClassVar[dict] = {
        "invariance": None, "cluster": None, "train": {"instances"},
        "loss": {"alpha", "beta", "base", "margin"},
    }  # fmt: skip
    losses = ("loss", "nce_loss", "entropy_loss", "cluster_loss")

    @classmethod
    def check_config(cls, cfg) -> None:
        c, t = cfg.invariance, cfg.train
        if c.nce_weight == 0 and c.cluster_weight == 0:
            raise ValueError(
                "invariance.nce_weight and invariance.cluster_weight are both 0: nothing pulls "
                "any images together"
            )
        if c.cluster_weight and t.batch_size % t.instances:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be a multiple of train.instances "
                f"({t.instances}) when invariance.cluster_weight > 0"
            )
        if t.feature_cache and t.feature_cache < c.views:
            raise ValueError(
                f"train.feature_cache ({t.feature_cache}) must hold at least invariance.views "
                f"({c.views}) views of each image"
            )
        if t.batch_size < 2:
            raise ValueError("train.batch_size must be at least 2 images for the invariance method")

    @classmethod
    def heads(cls, cfg, feat_dim: int) -> dict[str, nn.Module]:
        return {}

    @classmethod
    def augmentation(cls, cfg):
        if cfg.invariance.edits == "copies":
            from udml_cli.data.edits import CopyEdits

            return CopyEdits(cfg.data.image_size)
        return super().augmentation(cfg)

    @classmethod
    def adapt(cls, cfg, n_train: int, ref) -> None:
        if cfg.invariance.cluster_weight:
            super().adapt(cfg, n_train, ref)

    @classmethod
    def check_data(cls, cfg, n_train: int) -> None:
        if cfg.invariance.cluster_weight:
            super().check_data(cfg, n_train)
        elif cfg.train.batch_size > n_train:
            raise UsageError(
                f"train.batch_size ({cfg.train.batch_size}) exceeds the {n_train} training "
                "images; lower it"
            )

    @property
    def clustering(self) -> bool:
        return self.cfg.invariance.cluster_weight > 0

    def param_groups(self) -> list[dict]:
        return []

    @property
    def all_parameters_used(self) -> bool:
        return True

    @property
    def views(self) -> int:
        return self.cfg.invariance.views

    def refresh(self, epoch: int, first: bool) -> None:
        if self.clustering:
            return super().refresh(epoch, first)
        if first and self.cfg.model.head_init in FITTED:
            self.run.model.head.init_from(self.run.trainer.features(), self.cfg.model.head_init)
        n = len(self.run.trainer.images)
        # one pseudo-class: the checkpoint keeps UDML-SS's fields
        self.pseudo_labels, self.centroids = np.zeros(n, np.int64), np.zeros((1, 1), np.float32)
        self.refreshed_at = epoch

    def sampler(self):
        if self.clustering:
            return super().sampler()
        return RandomBatches(len(self.run.trainer.images), self.cfg.train)

    def targets(self, batch: list[int]) -> torch.Tensor:
        """Per row of the global batch (all first views, then all second …): the image it is a
        view of, and that image's pseudo-class."""
        idx = np.tile(np.asarray(batch), self.views)
        return torch.from_numpy(np.stack([idx, self.pseudo_labels[idx]], 1))

    def forward_module(self) -> nn.Module:
        return InvarianceForward(self.run.model, self.engine)

    def step(self, images: torch.Tensor, targets: torch.Tensor):
        cfg, eng, c = self.cfg, self.engine, self.cfg.invariance
        x = eng.to_device(images)
        emb = self.run.trainer.step_forward(x)
        if eng.processes > 1:  # view by view: the single-process row order
            emb = torch.cat([eng.gather_batch(part) for part in emb.chunk(self.views)])
        targets = targets.to(x.device)
        instance, labels = targets[:, 0], targets[:, 1]
        zero = torch.zeros((), device=x.device)
        with torch.autocast(eng.device.type, enabled=False):
            nce = nt_xent(emb, instance, c.temperature) if c.nce_weight else zero
            ent = koleo(emb, instance) if c.entropy_weight else zero
            clu = zero
            if c.cluster_weight:
                loss = cfg.loss
                clu = weight_loss(emb, labels, loss.alpha, loss.beta, loss.base, loss.margin)
            local = c.nce_weight * nce + c.entropy_weight * ent + c.cluster_weight * clu
        out = {"nce_loss": nce.item()}
        if c.entropy_weight:
            out["entropy_loss"] = ent.item()
        if c.cluster_weight:
            out["cluster_loss"] = clu.item()
        out["loss"] = local.item()
        return out, local

    def load_state_dict(self, payload: dict, n_train: int) -> None:
        if self.clustering:
            return super().load_state_dict(payload, n_train)
        self.check_images(payload["pseudo_labels"].numpy(), n_train)
        self.pseudo_labels = payload["pseudo_labels"].numpy()
        self.centroids = payload["centroids"].numpy()
        self.refreshed_at = int(payload["clustered_at"])

    def refresh_note(self, epoch: int, iteration: int, per_epoch: int) -> str:
        return super().refresh_note(epoch, iteration, per_epoch) if self.clustering else ""


class RandomBatches:
    """Each epoch a permutation of the images (a function of (seed, epoch)), cut into batches of
    ``train.batch_size`` (``train.iters_per_epoch`` of them, else as many as fit)."""

    def __init__(self, n: int, t) -> None:
        self.n, self.size, self.seed = n, t.batch_size, t.seed
        self.per_epoch = t.iters_per_epoch or max(1, n // t.batch_size)

    def __len__(self) -> int:
        return self.per_epoch

    def epoch(self, e: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, e, 7])
        batches, order = [], []
        for _ in range(self.per_epoch):
            if len(order) < self.size:  # a new permutation: no image twice in one batch
                order = rng.permutation(self.n).tolist()
            batches.append(order[: self.size])
            order = order[self.size :]
        return batches


class InvarianceForward(TrainingForward):
    def heads(self, feat: torch.Tensor):
        return self.model.project(feat)
