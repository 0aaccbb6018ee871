"""The contract every training method keeps: the loop in ``training.py`` calls these, and only
these; it never asks which method runs.

A method is one class (a module under ``udml_cli/methods/``) registered by name in
``udml_cli/methods/__init__.py``. Per run, one instance is made with the ``Run`` it trains in (the
config, the network, the engine and the loop's services: the training images, feature
extraction, the metrics log).

What a method says, in the order the loop needs it:
- class level: ``name``, ``sections`` (the config keys it reads beyond the shared
  ones), ``losses`` (the loss parts its step returns, in the order logs and the report show
  them), ``check_config`` (settings no data can fix), ``augmentation`` (how views are made),
  ``heads`` (modules it adds to the network,
  saved with it), ``checkpoint_fields`` (what a resumable checkpoint of it holds), ``adapt``
  and ``check_data`` (settings that follow from the data, or that it makes impossible);
- per run: ``head_parameters`` and ``param_groups`` (its heads'
  learning rates), ``refresh`` (the targets batches are drawn from: k-means pseudo-labels,
  neighbour sets …), ``sampler``, ``views``, ``targets`` (what the loss needs of a batch),
  ``forward_module`` (what DDP wraps), ``step`` (one batch's losses), ``after_backward``,
  ``state_dict`` / ``load_state_dict`` (its own checkpoint keys, versioned), ``describe`` and
  ``refresh_note`` (its part of the progress line).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn


@dataclass
class Run:
    """What a method trains in: set up by ``training.Trainer``, shared by reference."""

    cfg: Any  # udml_cli.config.Config
    model: nn.Module  # the student network (EmbeddingNet), with the method's heads
    engine: Any  # udml_cli.engine.Engine
    trainer: Any  # the loop: .images (.plain: the training images), .features(view), .log(…),
    # .step_forward (the DDP-wrapped forward_module), .labelled, .main

    def log(self, event: str, **fields) -> None:
        self.trainer.log(event, **fields)


class Method(ABC):
    name: ClassVar[str]
    version: ClassVar[int] = 1  # of the keys ``state_dict`` writes
    # config keys this method reads beyond the shared ones: {section: None (all of it) or keys};
    # shown in its configs, hidden from other methods'
    sections: ClassVar[dict[str, set[str] | None]] = {}
    losses: ClassVar[tuple[str, ...]] = ("loss",)
    checkpoint_fields: ClassVar[dict[str, type]] = {}  # resumable checkpoints hold these
    # its step takes cached backbone features in place of images (train.feature_cache): it
    # passes ``images`` only to ``run.trainer.step_forward`` (a ``TrainingForward``)
    feature_cache: ClassVar[bool] = False

    # ---- no data needed ------------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg) -> None:
        """Raise ``ValueError`` (naming the keys) for settings no data can make right."""
        return None

    @classmethod
    def heads(cls, cfg, feat_dim: int) -> dict[str, nn.Module]:
        """Modules this method adds to the network, by attribute name (saved in the checkpoint
        with it, so ``udml eval`` rebuilds the same network)."""
        return {}

    @classmethod
    def adapt(cls, cfg, n_train: int, ref) -> None:
        """Settle what follows from the training data (``"auto"`` values), saying so."""
        return None

    @classmethod
    def check_data(cls, cfg, n_train: int) -> None:
        """Raise ``UsageError`` for settings these ``n_train`` images make impossible."""
        return None

    @classmethod
    def augmentation(cls, cfg):
        """The transform that makes a batch's views of an image (PIL → [0, 1] tensor, drawing
        from torch's RNG): the paper's random-resized crop and flip unless the method edits
        otherwise."""
        from udml_cli.data.transforms import train_transform

        return train_transform(cfg.data)

    @classmethod
    def check_checkpoint(cls, payload: dict) -> str | None:
        """What is damaged in a resumable checkpoint's method state (None: nothing)."""
        return None

    # ---- per run ------------------------------------------------------------------------------
    def __init__(self, run: Run) -> None:
        self.run, self.cfg, self.engine = run, run.cfg, run.engine
        self.refreshed_at = -1  # the epoch whose refresh is in use

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of its heads trained with the embedding head (``train.head_lr``)."""
        return []

    def param_groups(self) -> list[dict]:
        """Optimiser groups of its own: ``{"params", "lr", "name"}`` (``name`` is how a resume
        matches them)."""
        return []

    @property
    def all_parameters_used(self) -> bool:
        """Every trained parameter gets a gradient each step (else DDP must look for unused
        ones)."""
        return True

    @property
    @abstractmethod
    def ready(self) -> bool:
        """Whether batches can be drawn (the first refresh is done)."""

    @abstractmethod
    def refresh(self, epoch: int, first: bool) -> None:
        """Compute the targets batches are drawn from (every ``train.up_step`` epochs)."""
        return None

    @abstractmethod
    def sampler(self):
        """An object with ``epoch(e) -> list of batches`` (lists of training image indexes) and
        ``len()``: the batches of each epoch, a function of (seed, epoch) only."""

    @property
    def views(self) -> int:
        """Augmented views of every image in a batch."""
        return 1

    def targets(self, batch: list[int]) -> torch.Tensor:
        """What the loss needs of the global batch (every rank gets the same)."""
        return torch.as_tensor(np.asarray(batch))

    def forward_module(self) -> nn.Module:
        """The module that runs the trained parameters (what DDP wraps); ``run.trainer
        .step_forward`` calls it in ``step``."""
        return self.run.model

    @abstractmethod
    def step(self, images: torch.Tensor, targets: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """One batch: ``({loss part: float, "loss": total}, loss to back-propagate on this
        rank)``; ``images`` are this rank's share of the batch's rows."""

    def after_backward(self) -> None:
        """After the backward pass, before the optimiser step (an EMA teacher's update)."""
        return None

    def state_dict(self) -> dict:
        """This method's own checkpoint keys (resumable checkpoints only)."""
        return {}

    def load_state_dict(self, payload: dict, n_train: int) -> None:
        """Restore ``state_dict``'s keys; raise ``CheckpointError`` when they do not fit."""
        return None

    @staticmethod
    def check_images(rows: np.ndarray, n_train: int) -> None:
        """Refuse per-image state (pseudo-labels, neighbour lists) saved for another number of
        training images than the run has now (``load_state_dict``'s first check)."""
        from udml_cli.errors import UsageError

        if len(rows) != n_train:
            raise UsageError(
                f"the run was trained on {len(rows)} images but the dataset now has {n_train} "
                "training images; the dataset changed: start a new run (--out)"
            )

    def describe(self, parts: dict) -> str:
        """Its loss parts on the progress line: ``weight 0.7012 rot 1.386``."""
        return " ".join(f"{k.removesuffix('_loss')} {short(parts[k])}" for k in self.losses[1:]
                        if k in parts)  # fmt: skip

    def refresh_note(self, epoch: int, iteration: int, per_epoch: int) -> str:
        """What the progress line says comes next (``, re-cluster in 21 it``), if anything."""
        return ""


def short(value: float) -> str:
    """A loss for the progress line: 4 significant digits, in any range (1e-4 is not 0.000)."""
    return f"{value:.4g}"


class TrainingForward(nn.Module):
    """What a method's ``forward_module`` returns and DDP wraps (so every trained parameter's
    use is inside it): the backbone under the engine's autocast, then the method's ``heads`` on
    the pooled feature in fp32 with autocast off (losses on bf16 similarities are unstable)."""

    def __init__(self, model: nn.Module, engine) -> None:
        super().__init__()
        self.model, self.engine = model, engine

    def forward(self, x: torch.Tensor, *args):
        if x.dim() == 2:  # train.feature_cache: the frozen backbone's features of the images
            feat = x
        else:
            with self.engine.autocast():
                feat = self.model.features(x)
        with torch.autocast(x.device.type, enabled=False):
            return self.heads(feat.float(), *args)

    def heads(self, feat: torch.Tensor, *args):
        raise NotImplementedError
