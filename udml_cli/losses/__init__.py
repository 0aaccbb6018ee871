"""Training losses: the Weight (multi-similarity) loss and the rotation-prediction loss
(UDML-SS); the relaxed contrastive loss and self-distillation (STML); NT-Xent and SSCD's entropy
regulariser (the invariance method)."""

from udml_cli.losses.nce import koleo, nt_xent
from udml_cli.losses.rotation import rotate_batch, rotation_draw, rotation_loss
from udml_cli.losses.stml import stml_loss
from udml_cli.losses.weight import weight_loss

__all__ = [
    "koleo",
    "nt_xent",
    "rotate_batch",
    "rotation_draw",
    "rotation_loss",
    "stml_loss",
    "weight_loss",
]
