"""Training losses: the Weight (multi-similarity) loss and the rotation-prediction loss."""

from udml_cli.losses.rotation import rotate_batch, rotation_draw, rotation_loss
from udml_cli.losses.weight import weight_loss

__all__ = ["rotate_batch", "rotation_draw", "rotation_loss", "weight_loss"]
