"""Training and evaluation transforms (the paper's: random-resized-crop + flip / resize + centre).

They output float tensors in [0, 1]; each backbone applies its own normalisation inside the model.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from udml_cli.config import DataConfig


def eval_transform(cfg: DataConfig):
    return v2.Compose(
        [
            v2.PILToTensor(),
            v2.Resize(cfg.resize, antialias=True),
            v2.CenterCrop(cfg.image_size),
            v2.ToDtype(torch.float32, scale=True),
        ]
    )


def train_transform(cfg: DataConfig):
    steps = [
        v2.PILToTensor(),
        v2.RandomResizedCrop(cfg.image_size, scale=(cfg.crop_scale_min, 1.0), antialias=True),
    ]
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(v2.ToDtype(torch.float32, scale=True))
    return v2.Compose(steps)
