"""Training and evaluation transforms (the paper's: random-resized-crop + flip / resize + centre).

They output float tensors in [0, 1]; each backbone applies its own normalisation inside the model.
Geometry runs on the PIL image (Pillow's resampling is the fastest path on small images, measured
in benchmarks/pipeline.py); the tensor is made last.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import v2

from udml_cli.config import DataConfig


def to_tensor(im: Image.Image) -> torch.Tensor:
    """uint8 RGB PIL image → float CHW tensor in [0, 1]."""
    return torch.from_numpy(np.array(im, dtype=np.uint8)).permute(2, 0, 1).float().div_(255)


class ResizeCenterCrop:
    """Shorter side to ``resize`` (bilinear, antialiased), then the centre ``size``×``size``."""

    def __init__(self, resize: int, size: int) -> None:
        self.resize, self.size = resize, size

    def __call__(self, im: Image.Image) -> torch.Tensor:
        w, h = im.size
        short = min(w, h)
        if short != self.resize:  # torchvision's rounding, so both give the same geometry
            size = (
                (self.resize, int(self.resize * h / w))
                if w == short
                else (int(self.resize * w / h), self.resize)
            )
            im = im.resize(size, Image.BILINEAR)
        left = round((im.width - self.size) / 2.0)
        top = round((im.height - self.size) / 2.0)
        return to_tensor(im.crop((left, top, left + self.size, top + self.size)))


class Squash:
    """The whole image resized to ``size``×``size`` (aspect not kept, nothing cropped): STML's
    ``Transform_for_Sampler``, what its neighbour search sees."""

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, im: Image.Image) -> torch.Tensor:
        return to_tensor(im.resize((self.size, self.size), Image.BILINEAR))


def eval_transform(cfg: DataConfig):
    return ResizeCenterCrop(cfg.resize, cfg.image_size)


def train_transform(cfg: DataConfig):
    steps = [v2.RandomResizedCrop(cfg.image_size, scale=(cfg.crop_scale_min, 1.0), antialias=True)]
    if cfg.flip:
        steps.append(v2.RandomHorizontalFlip())
    steps.append(to_tensor)
    return v2.Compose(steps)
