"""Desktop icon themes: the same named icon (freedesktop naming: ``folder``, ``user-trash``,
``printer`` …) drawn by several themes is one class — shape identity across drawing styles.

Sources (offline, Debian packages): Adwaita, GNOME, MATE, Oxygen, elementary-xfce and Tango,
their PNGs at 48 px (Tango: 32 px, its largest). A class needs at least 3 themes; an icon name
that is an alias (the same file) of another kept name in any theme is dropped, so no two
classes share a drawing. Split by a hash of the name (not alphabetically: mimetype icons would
all land on one side): about half the names train, the rest test. Second label column: the
icon's context (apps, places, mimetypes …) as listed in contexts.txt.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from udml_cli.data.prepare.common import track
from udml_cli.errors import DatasetError

# theme → (folder under the source root, size folder); elementary-xfce puts the size last
THEMES = {
    "adwaita": ("Adwaita", "48x48"),
    "gnome": ("gnome", "48x48"),
    "mate": ("mate", "48x48"),
    "oxygen": ("oxygen/base", "48x48"),
    "elementary": ("elementary-xfce", "48"),
    "tango": ("Tango", "32x32"),
}
PACKAGES = ("adwaita-icon-theme gnome-icon-theme mate-icon-theme oxygen-icon-theme "
            "elementary-xfce-icon-theme tango-icon-theme")  # fmt: skip
MIN_THEMES = 3
SIZE = 64
CREDITS = (
    "Icons: Adwaita, GNOME (CC-BY-SA-3.0 / LGPL-3), MATE (CC-BY-SA-3.0, GPL), Oxygen (LGPL-3), "
    "elementary-xfce (GPL-3), Tango (public domain), from their Debian packages.\n"
)


def _theme_icons(root: Path, folder: str, size: str) -> dict[str, tuple[Path, str]]:
    """name → (file, context) of a theme's PNGs at one size (symbolic variants left out)."""
    base = root / folder
    out: dict[str, tuple[Path, str]] = {}
    if not base.is_dir():
        return out
    pattern = f"*/{size}/*.png" if size.isdigit() else f"{size}/*/*.png"
    for path in sorted(base.glob(pattern)):
        if "symbolic" in path.name or "legacy" in path.parts:
            continue
        context = path.parent.name if not size.isdigit() else path.parent.parent.name
        out.setdefault(path.stem, (path, context))
    return out


def _on_white(path: Path):
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGBA")
        scale = (SIZE - 8) / max(im.size)
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))),
                       Image.LANCZOS)  # fmt: skip
    out = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    out.paste(im, ((SIZE - im.width) // 2, (SIZE - im.height) // 2), im)
    return out


def _in_train(name: str) -> bool:
    return hashlib.sha256(name.encode()).digest()[0] % 2 == 0


def convert(source: Path | None, writer, progress=None, limit: int | None = None, **_) -> None:
    root = source
    themes = {t: _theme_icons(root, *where) for t, where in THEMES.items()}
    found = [t for t, icons in themes.items() if icons]
    if len(found) < MIN_THEMES:
        raise DatasetError(
            f"icon themes: {len(found)} of {len(THEMES)} found under {root} ({', '.join(found) or 'none'}); "
            f"need {MIN_THEMES}: apt-get install {PACKAGES}"
        )
    names = sorted({n for icons in themes.values() for n in icons})
    drawn = {n: [t for t in THEMES if n in themes[t]] for n in names}
    # one drawing, one class: a file (after links) used by two kept names drops the later name
    owner: dict[Path, str] = {}
    kept = []
    for n in names:
        if len(drawn[n]) < MIN_THEMES:
            continue
        files = [themes[t][n][0].resolve() for t in drawn[n]]
        if any(f in owner for f in files):
            continue
        owner.update(dict.fromkeys(files, n))
        kept.append(n)
    if limit:
        kept = kept[:limit]
    if len(kept) < 4:
        raise DatasetError(f"only {len(kept)} icon names are drawn by {MIN_THEMES}+ themes")
    contexts = sorted({themes[drawn[n][0]][n][1] for n in kept})
    train = [n for n in kept if _in_train(n)]
    test = [n for n in kept if not _in_train(n)]
    for label, name in enumerate(track(progress, train + test, "drawing icons")):
        split = "train" if label < len(train) else "test"
        context = contexts.index(themes[drawn[name][0]][name][1])
        for theme in drawn[name]:
            writer.add_image(split, f"{label:04d}_{name}/{theme}.png",
                             _on_white(themes[theme][name][0]), label, context)  # fmt: skip
    writer.finish(
        CREDITS + f"{len(kept)} icon names drawn by {MIN_THEMES}+ of {len(found)} themes "
        f"({', '.join(found)}); {len(train)} train, {len(test)} test (split by a hash of the "
        "name). Second label column: context index in contexts.txt.\n"
    )
    (writer.root / "contexts.txt").write_text("\n".join(contexts) + "\n")
