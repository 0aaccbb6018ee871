"""The network trained and evaluated: normalise → backbone → pooled feature → heads."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from udml_cli.config import ModelConfig
from udml_cli.models.backbones import create_backbone
from udml_cli.models.descriptor import describe
from udml_cli.models.heads import EmbeddingHead


class EmbeddingNet(nn.Module):
    """``features(x)``: pooled backbone feature; ``embed(x)``: the L2-normalised embedding.

    With ``dim=None`` (backbone evaluation) the embedding is the normalised pooled feature.
    """

    def __init__(self, backbone, dim: int | None, dropout: bool = False, heads=None) -> None:
        super().__init__()
        self.dropout = dropout
        self.backbone = backbone.module
        self.feat_dim = backbone.feat_dim
        self.register_buffer("mean", torch.tensor(backbone.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(backbone.std).view(1, 3, 1, 1))
        self.head = EmbeddingHead(self.feat_dim, dim) if dim else None
        # a training method's own heads (UDML-SS's rotation head, STML's g embedding): trained
        # and saved with the network, not part of the embedding
        for name, module in (heads(self.feat_dim) if heads else {}).items():
            setattr(self, name, module)

    @property
    def dim(self) -> int:
        return self.head.fc.out_features if self.head is not None else self.feat_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone((x - self.mean) / self.std).float()

    def project(self, feat: torch.Tensor) -> torch.Tensor:
        return self.head(feat) if self.head is not None else F.normalize(feat, dim=1)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.features(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(x)

    def train(self, mode: bool = True, freeze_bn: bool = False):
        super().train(mode)
        if mode and freeze_bn:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        if mode and not self.dropout:
            for m in self.modules():
                if _is_stochastic(m):
                    m.training = False  # this module only: a block's BatchNorm keeps its mode
        return self


def _is_stochastic(m: nn.Module) -> bool:
    """Dropout and its relatives: torchvision's StochasticDepth, EfficientNet-Lite's drop-connect
    (applied by each ``MBConvBlock`` while it is in training mode)."""
    if isinstance(m, nn.modules.dropout._DropoutNd):
        return True
    return type(m).__name__ in ("StochasticDepth", "MBConvBlock")


def build_model(
    cfg: ModelConfig, head: bool = True, weights: str | None = None, quiet: bool = False,
    heads=None,
) -> EmbeddingNet:  # fmt: skip
    """The model of a config; ``weights`` overrides ``cfg.weights`` (checkpoints pass ``none``
    with ``quiet``: their weights come from the file); ``heads(feat_dim) -> {name: module}``:
    a training method's own heads (see ``build_network``)."""
    backbone = create_backbone(cfg.backbone, weights or cfg.weights, quiet=quiet)
    backbone = describe(backbone, cfg.pool, cfg.layers, cfg.backbone, cfg.grid)
    dim = backbone.feat_dim if cfg.dim == "auto" else cfg.dim
    said = head_size_note(backbone.feat_dim, dim) if head and not quiet else None
    if said:
        from udml_cli.errors import note

        note(said)
    return EmbeddingNet(backbone, dim if head else None, dropout=cfg.dropout,
                        heads=heads if head else None)  # fmt: skip


HEAD_NOTE_BYTES = 2**30  # a head of 1 GiB of float32 weights or more is said before it is built


def head_size_note(feat_dim: int, dim: int) -> str | None:
    """What to tell a user whose embedding head is very large (``model.dim = "auto"`` on a wide
    descriptor, e.g. every stage's pyramid: 30,736 x 30,736 values), else None."""
    size = 4 * feat_dim * dim
    if size < HEAD_NOTE_BYTES:
        return None
    return (
        f"the embedding head is {feat_dim:,} x {dim:,} values ({size / 2**30:.1f} GiB, and "
        "training keeps about as much again per optimiser state); a smaller model.dim "
        "(e.g. --set model.dim=256 with model.head_init = whiten or pca) keeps it small"
    )


def build_network(cfg, weights: str | None = None, quiet: bool = False) -> EmbeddingNet:
    """The network a whole config trains: the embedding model with its method's heads."""
    from udml_cli.methods import method_class

    kind = method_class(cfg.train.method)
    return build_model(cfg.model, True, weights, quiet, lambda d: kind.heads(cfg, d))


def trainable_backbone(model, fraction: float) -> list:
    """Fix the first ``fraction`` of the backbone's parameter tensors (definition order runs from
    the input side) and return the rest, the ones the optimiser updates."""
    params = list(model.backbone.parameters())
    frozen = round(fraction * len(params))
    for p in params[:frozen]:
        p.requires_grad_(False)
    return params[frozen:]


def init_head(model, cfg) -> None:
    """The embedding head's start that needs no data: ``identity`` (training starts at the
    pretrained metric) or ``random`` (as built). ``pca`` and ``whiten`` are set from the first
    clustering's features by the trainer (``head.init_from``)."""
    if cfg.head_init == "identity":
        model.head.init_identity()
    elif cfg.head_init == "orthogonal":  # STML's code (a method's heads init their own)
        nn.init.orthogonal_(model.head.fc.weight)
        nn.init.zeros_(model.head.fc.bias)
