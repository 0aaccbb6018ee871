"""The edits people make to the pictures they duplicate, by name and strength, deterministic:
what duplicate calibration synthesises from a user's own images (``udml_cli/calibration.py``)
and what the copy-detection benchmark (``benchmarks/copies.py``) measures per kind.

``EDITS[kind][strength](image) -> image``; strengths ``mild`` and ``strong``. ``halves`` cuts an
image into two pieces that do not overlap: two pictures of one scene that are *not* copies of
each other (the hard negatives).
"""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageFont, ImageOps

from udml_cli.data.edits import jpeg

STRENGTHS = ("mild", "strong")


def _crop(keep: float, dx: float = 0.3, dy: float = 0.6):
    """Keep ``keep`` of each side, off centre (``dx``, ``dy``: where the box sits)."""

    def edit(im: Image.Image) -> Image.Image:
        w, h = im.size
        cw, ch = max(1, round(w * keep)), max(1, round(h * keep))
        left, top = round((w - cw) * dx), round((h - ch) * dy)
        return im.crop((left, top, left + cw, top + ch))

    return edit


def _flip(extra_crop: float):
    crop = _crop(extra_crop, 0.5, 0.5)
    return lambda im: ImageOps.mirror(crop(im))


def _bright(factor: float):
    return lambda im: ImageEnhance.Brightness(im).enhance(factor)


def _grey(amount: float):
    return lambda im: ImageEnhance.Color(im).enhance(1 - amount)


def _rotate(degrees: float):
    return lambda im: im.rotate(degrees, Image.BILINEAR, expand=False)


def _blur(radius_per_256: float):
    return lambda im: im.filter(ImageFilter.GaussianBlur(radius_per_256 * min(im.size) / 256))


def _small(scale: float, quality: int):
    def edit(im: Image.Image) -> Image.Image:
        w, h = im.size
        return jpeg(im.resize((max(8, round(w * scale)), max(8, round(h * scale))),
                              Image.BILINEAR), quality)  # fmt: skip

    return edit


def _caption(bar: float):
    """A text banner across the bottom ``bar`` of the picture, as memes and watermarks add."""

    def edit(im: Image.Image) -> Image.Image:
        im = im.copy()
        w, h = im.size
        top = round(h * (1 - bar))
        draw = ImageDraw.Draw(im)
        draw.rectangle((0, top, w, h), fill=(255, 255, 255))
        size = max(8, round(h * bar * 0.6))
        font = ImageFont.load_default(size)
        draw.text((w // 20, top + round(h * bar * 0.15)), "holiday 2026 :)", fill=(0, 0, 0),
                  font=font)  # fmt: skip
        return im

    return edit


EDITS = {
    "crop": {"mild": _crop(0.8), "strong": _crop(0.5)},
    "flip": {"mild": _flip(1.0), "strong": _flip(0.85)},
    "bright": {"mild": _bright(1.3), "strong": _bright(1.8)},
    "grey": {"mild": _grey(0.6), "strong": _grey(1.0)},
    "rotate": {"mild": _rotate(5), "strong": _rotate(15)},
    "blur": {"mild": _blur(1.5), "strong": _blur(4)},
    "small": {"mild": _small(0.75, 85), "strong": _small(0.25, 30)},
    "caption": {"mild": _caption(0.12), "strong": _caption(0.25)},
}
KINDS = tuple(EDITS)


def apply(im: Image.Image, kind: str, strength: str) -> Image.Image:
    return EDITS[kind][strength](im.convert("RGB"))


def halves(im: Image.Image) -> tuple[Image.Image, Image.Image]:
    """The two halves across the longer side: no pixel in common."""
    w, h = im.size
    if w >= h:
        return im.crop((0, 0, w // 2, h)), im.crop((w - w // 2, 0, w, h))
    return im.crop((0, 0, w, h // 2)), im.crop((0, h - h // 2, w, h))
