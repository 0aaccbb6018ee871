"""The edits copies of a picture carry (what people do to the photos they share): a crop,
a mirror, brightness/contrast/saturation, greyscale, a small rotation, blur, JPEG re-compression.
``CopyEdits`` draws a random mixture of them per call from torch's RNG (``SeededImages`` seeds it
per draw, so a resumed run sees the same views) and returns a square float tensor in [0, 1], as the
other training transforms do. Each edit works on the PIL image (Pillow is the fast path here)."""

from __future__ import annotations

import io
import math

import torch
from PIL import Image, ImageEnhance, ImageFilter

from udml_cli.data.transforms import to_tensor


def _u(lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand(()))


def _crop(im: Image.Image, scale: tuple[float, float], ratio=(3 / 4, 4 / 3)) -> Image.Image:
    """A random box of ``scale`` of the area and ``ratio`` aspect (10 tries, then the centre
    square), as RandomResizedCrop draws it."""
    w, h = im.size
    for _ in range(10):
        area = _u(*scale) * w * h
        aspect = math.exp(_u(math.log(ratio[0]), math.log(ratio[1])))
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = round(_u(0, w - cw)), round(_u(0, h - ch))
            return im.crop((left, top, left + cw, top + ch))
    side = min(w, h)
    return im.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))


def jpeg(im: Image.Image, quality: int) -> Image.Image:
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    buf.seek(0)
    return Image.open(buf).convert("RGB")


class CopyEdits:
    """A random copy of an image at ``size``×``size``: always a crop (``scale`` of the area) and
    resize; each other edit with its own probability."""

    def __init__(self, size: int, scale: tuple[float, float] = (0.25, 1.0)) -> None:
        self.size, self.scale = size, scale

    def __call__(self, im: Image.Image) -> torch.Tensor:
        im = _crop(im.convert("RGB"), self.scale).resize((self.size, self.size), Image.BILINEAR)
        if _u(0, 1) < 0.5:
            im = im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        if _u(0, 1) < 0.8:
            for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
                im = enhance(im).enhance(_u(0.6, 1.4))
        if _u(0, 1) < 0.2:
            im = im.convert("L").convert("RGB")
        if _u(0, 1) < 0.3:
            im = im.rotate(_u(-15, 15), Image.BILINEAR)
        if _u(0, 1) < 0.3:
            im = im.filter(ImageFilter.GaussianBlur(_u(0.1, 1.5) * self.size / 64))
        if _u(0, 1) < 0.3:
            im = jpeg(im, round(_u(20, 80)))
        return to_tensor(im)
