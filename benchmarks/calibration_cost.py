"""What duplicate calibration adds to ``udml index``, by folder size: the index without it
(embedding + perceptual hashes, ``calibrate=False``) against the calibration run on its vectors
(edited copies embedded + the look-alike walk's keypoints), in one process.

Pictures: random crops (35–70 % of each side) of the desktop photographs Debian ships
(mate-backgrounds, ukui-wallpapers), 640 px on the longer side, JPEG q90: photo-sized work for
both the embedding and the keypoints. A few dozen photographs cut into thousands of crops is a
folder dense with overlapping pictures, so the walk meets its picture budget: the costly case.
The pretrained Lite0 at its default image size.
    apt-get install mate-backgrounds ukui-wallpapers
    python benchmarks/calibration_cost.py [--sizes 2000 10000]  → results/calibration_cost.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer
from copies import SOURCES


def make_crops(root: Path, count: int, seed: int = 0) -> list[Path]:
    import glob

    from PIL import Image

    photos = sorted(p for pattern in SOURCES for p in glob.glob(pattern))
    if not photos:
        sys.exit("no photographs: apt-get install mate-backgrounds ukui-wallpapers")
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    paths = []
    per = -(-count // len(photos))
    for j, photo in enumerate(photos):
        im = Image.open(photo).convert("RGB")
        w, h = im.size
        for i in range(min(per, count - len(paths))):
            cw, ch = (rng.uniform(0.35, 0.7, 2) * (w, h)).astype(int)
            x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
            crop = im.crop((int(x), int(y), int(x + cw), int(y + ch)))
            crop.thumbnail((640, 640))
            path = root / f"{j:02d}-{i:04d}.jpg"
            crop.save(path, quality=90)
            paths.append(path)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 10000])
    args = ap.parse_args()

    import udml_cli as udml
    from udml_cli import calibration, inference, verify
    from udml_cli.api import load_model

    res = Results("calibration_cost")
    parts: dict[str, float] = {}

    def timed(module, name: str, key: str) -> None:  # wraps a function to add up its seconds
        inner = getattr(module, name)

        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return inner(*a, **k)
            finally:
                parts[key] = parts.get(key, 0.0) + time.perf_counter() - t0

        setattr(module, name, wrapper)

    timed(inference, "embed_dataset", "edited copies embedded")
    timed(verify, "verify_pairs", "look-alike walk (keypoints + matches)")
    counted = verify.verify_pairs

    def counting(paths, rows, *a, **k):  # the walk's pairs and pictures
        parts["pairs checked"] = parts.get("pairs checked", 0) + len(rows)
        parts["pictures"] = len(np.unique(np.concatenate([rows, a[0] if a else k["cols"]])))
        return counted(paths, rows, *a, **k)

    verify.verify_pairs = counting
    with tempfile.TemporaryDirectory() as tmp:
        every = make_crops(Path(tmp) / "all", max(args.sizes))
        for size in sorted(args.sizes):
            folder = Path(tmp) / f"photos-{size}"
            folder.mkdir()
            for p in every[:size]:
                os.link(p, folder / p.name)
            with Timer() as t_index:
                idx = udml.build_index(folder, Path(tmp) / f"idx-{size}", backbone="efficientnet_lite0",
                                       device="cpu",
                                       calibrate=False)  # fmt: skip
            model, cfg = load_model(None, "efficientnet_lite0", "imagenet", None, "cpu")
            paths = [folder / f for f in idx.paths]
            parts.clear()
            with Timer() as t_cal:
                cal = calibration.calibrate(model, cfg, idx.vectors, paths, 0.99)
            case = f"{size} photo crops, Lite0 {cfg.data.image_size} px"
            res.add(case, "udml index without calibration", t_index.seconds, unit="s")
            res.add(case, "calibration", t_cal.seconds, unit="s")
            res.add(case, "calibration / index", t_cal.seconds / t_index.seconds, target=0.10)
            for key, seconds in parts.items():
                res.add(
                    case, key, seconds, unit="" if key in ("pairs checked", "pictures") else "s"
                )
            res.add(case, "originals edited", cal.sample)
            res.add(case, "threshold", cal.threshold)
            res.add(case, "look-alikes judged", cal.judged)
    res.write()


if __name__ == "__main__":
    main()
