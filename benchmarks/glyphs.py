"""A shape-identity probe set: the same character drawn in every DejaVu style is one class.

Issue 21 says the `photos` template will be judged on kept-back sets, one of them a shape-identity
set on which raw pixels beat the network. This builds a stand-in from fonts already on the
machine (Debian `fonts-dejavu-core` and `fonts-dejavu-extra`: Sans, Serif and Mono, each plain,
bold, oblique/italic and condensed; 20 styles): 91 characters with no look-alike among them
(Latin capitals, digits 2-9, Greek small letters and Cyrillic capitals that do not share a
shape with a Latin one, and symbols), each drawn black on white, centred, 64 x 64. Classes
alternate between train/ and test/ (held-out classes, as every set here).
    python benchmarks/glyphs.py [--out data/glyphs]
then (benchmarks/run_all.sh; BENCHMARKS.md "A shape-identity stand-in")
    udml dataset add glyphs data/glyphs --yes
    python benchmarks/baselines.py --datasets glyphs
    python benchmarks/quality.py --datasets glyphs --modes INV --template photos --set train.eval_step=5
"""

from __future__ import annotations

import argparse
from pathlib import Path

FONTS = Path("/usr/share/fonts/truetype/dejavu")
CHARS = (
    "ABCDEFGHIJKLMNOPQRSTUVWXYZ"  # Latin capitals
    "23456789"  # digits, without 0 and 1 (O, I)
    "αβγδεζηθλμξπρσφχψω"  # Greek small letters unlike any Latin capital
    "БГДЖЗИЙЛПФЦЧШЩЪЫЬЭЮЯ"  # Cyrillic capitals unlike any Latin one
    "&@#%§¶?!$€£¥+=<>*~^"  # symbols
)
SIDE = 64


def styles() -> list[Path]:
    """The DejaVu Sans, Serif and Mono files (not ExtraLight or the maths font: they lack
    some of the characters)."""
    keep = [p for p in sorted(FONTS.glob("DejaVu*.ttf"))
            if "ExtraLight" not in p.name and "Math" not in p.name]  # fmt: skip
    if len(keep) < 4:
        raise SystemExit(f"glyphs: {len(keep)} DejaVu fonts under {FONTS}; need 4 or more: "
                         "apt-get install fonts-dejavu-core fonts-dejavu-extra")  # fmt: skip
    return keep


def draw(char: str, font_path: Path):
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(str(font_path), 40)
    image = Image.new("L", (SIDE, SIDE), 255)
    pen = ImageDraw.Draw(image)
    left, top, right, bottom = pen.textbbox((0, 0), char, font=font)
    pen.text(((SIDE - (right - left)) / 2 - left, (SIDE - (bottom - top)) / 2 - top), char,
             font=font, fill=0)  # fmt: skip
    return image


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("data/glyphs"))
    args = ap.parse_args()
    fonts = styles()
    assert len(set(CHARS)) == len(CHARS)
    for i, char in enumerate(CHARS):
        folder = args.out / ("train" if i % 2 == 0 else "test") / f"{i:03d}_U{ord(char):04X}"
        folder.mkdir(parents=True, exist_ok=True)
        for font in fonts:
            draw(char, font).save(folder / f"{font.stem}.png")
    print(f"glyphs: {len(CHARS)} characters x {len(fonts)} styles in {args.out}")


if __name__ == "__main__":
    main()
