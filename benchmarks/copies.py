"""Copy detection: udml's duplicate finder against perceptual hashes, on photo-sized pictures with
the edits people make, in one process.

Originals: the desktop photographs Debian ships (mate-backgrounds' nature set, ukui-wallpapers),
each cut into its two halves (no pixel in common: look-alike distractors of one another, same
scene and light), shortened to 800 px on the longer side. Each original gets every named edit
(``udml_cli/data/named_edits.py``: crop, flip, bright, grey, rotate, blur, small (+JPEG),
caption) at two strengths. A pair is a copy pair when both images come from one original.

Finders: udml's pretrained start at the 0.95 default, at the threshold ``udml index`` calibrates
on this folder (``--precision 0.99``) and at the best threshold in hindsight; descriptor
variants for copies (flip-averaged; an intermediate stage pooled on a grid); imagededup's PHash,
DHash, WHash at their default distance (10) and at their best; imagehash's pHash. Writes
results/copies.json and copies.md: pairs precision / recall / F1, recall of original→copy per
edit kind, and time.
    apt-get install mate-backgrounds ukui-wallpapers; pip install -e '.[bench]'
    python benchmarks/copies.py [--originals 50] [--size 800]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS, Results

SOURCES = ["/usr/share/backgrounds/mate/nature/*.jpg", "/usr/share/backgrounds/*.jpg",
           "/usr/share/backgrounds/*.png"]  # fmt: skip


def make_folder(root: Path, originals: int, size: int) -> tuple[list[Path], np.ndarray, list]:
    """The benchmark's images: ``(paths, family of each, (kind, strength) of each or None)``."""
    import glob

    from PIL import Image

    from udml_cli.data.named_edits import KINDS, STRENGTHS, apply, halves

    photos = sorted(p for pattern in SOURCES for p in glob.glob(pattern))
    if not photos:
        sys.exit("no photographs: apt-get install mate-backgrounds ukui-wallpapers")
    paths, family, edit = [], [], []
    n = 0
    for photo in photos:
        im = Image.open(photo).convert("RGB")
        if mirror_halves(*halves(im)):
            print(
                f"left out {photo}: its halves are mirror images of each other (a mirrored "
                "copy, not a look-alike)",
                file=sys.stderr,
            )
            continue
        for half in halves(im):
            if n >= originals:
                break
            half.thumbnail((size, size))
            base = root / f"{n:03d}"
            base.mkdir(parents=True)
            items = [("original", None, half)] + [
                (f"{k}-{s}", (k, s), apply(half, k, s)) for k in KINDS for s in STRENGTHS
            ]
            for name, what, picture in items:
                path = base / f"{name}.jpg"
                picture.save(path, quality=95)
                paths.append(path)
                family.append(n)
                edit.append(what)
            n += 1
    return paths, np.array(family), edit


def mirror_halves(a, b) -> bool:
    """Whether ``b`` mirrored is ``a`` (a symmetric picture: its halves are mirrored copies of
    each other, which the flip edit makes too): grey 64×64, correlation > 0.9."""
    from PIL import ImageOps

    x = np.asarray(a.convert("L").resize((64, 64)), float).ravel()
    y = np.asarray(ImageOps.mirror(b.convert("L")).resize((64, 64)), float).ravel()
    return bool(np.corrcoef(x, y)[0, 1] > 0.9)


def as_shipped(x, t, codes, paths, root) -> tuple[np.ndarray, np.ndarray, dict]:
    """``udml duplicates``' default on one embedding (``review.find_duplicates`` on an index of
    these rows): the threshold ``t`` joined with pHash ≤ 6, local features on its links and on
    looser candidates, links that alone bridge two groups left out. Its links and its groups
    (every pair inside one) as matrices."""
    from udml_cli.index import Index
    from udml_cli.review import find_duplicates

    files = [
        (p.relative_to(root).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in paths
    ]
    index = Index(root, {"backbone": "benchmark"}, x, files, hashes=codes)
    t0 = time.perf_counter()
    found = find_duplicates(index, threshold=t)
    seconds = time.perf_counter() - t0
    links = np.zeros((len(paths), len(paths)), bool)
    groups = np.zeros_like(links)
    for g in found.groups:
        groups[np.ix_(g.members, g.members)] = True
        for a, b, _ in g.pairs:
            links[a, b] = links[b, a] = True
    info = {"verify seconds": seconds, "pairs checked": found.checked,
            "confirmed by local features": found.verified,
            "overruled by local features": found.overruled,
            "links left out": found.unsupported}  # fmt: skip
    return links, groups, info


def pair_scores(found: np.ndarray, family: np.ndarray, edit: list) -> dict:
    """``found``: (n, n) bool, symmetric: which pairs a finder joins."""
    n = len(family)
    upper = np.triu(np.ones((n, n), bool), 1)
    truth = (family[:, None] == family[None, :]) & upper
    hit = found & upper
    tp, fp = int((hit & truth).sum()), int((hit & ~truth).sum())
    precision = tp / (tp + fp) if tp + fp else 1.0
    recall = tp / int(truth.sum())
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    out = {"precision": precision, "recall": recall, "F1": f1, "false pairs": fp}
    originals = {int(f): i for i, (f, e) in enumerate(zip(family, edit, strict=True)) if e is None}
    per: dict[str, list[bool]] = {}
    for i, e in enumerate(edit):
        if e is not None:
            per.setdefault(e[0], []).append(bool(found[originals[int(family[i])], i]))
    out["original-copy recall"] = float(np.mean([x for v in per.values() for x in v]))
    out |= {f"recall {k}": float(np.mean(v)) for k, v in per.items()}
    return out


def best_threshold(score: np.ndarray, family: np.ndarray, higher: bool = True) -> float:
    """The threshold with the highest pairs F1 (hindsight: what no user can know)."""
    n = len(family)
    iu = np.triu_indices(n, 1)
    s = score[iu] if higher else -score[iu]
    truth = family[iu[0]] == family[iu[1]]
    order = np.argsort(-s, kind="stable")
    tp = np.cumsum(truth[order])
    fp = np.cumsum(~truth[order])
    f1 = 2 * tp / (tp + fp + truth.sum())
    best = int(np.argmax(f1))
    t = s[order][best]
    return float(t if higher else -t)


def embedder(variant: str, folder: Path):
    """``(model, cfg)`` of a descriptor variant of the pretrained start; ``copies``: the
    ``copies`` template trained on ``folder`` itself (transductive, no labels)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    from udml_cli.api import load_model
    from udml_cli.config import Config
    from udml_cli.models.net import build_model

    if variant == "last":
        return load_model(None, "efficientnet_lite0", "imagenet", None, "cpu")
    if variant == "copies":
        import udml_cli as udml
        from udml_cli.config import load_config

        root = Path(__file__).resolve().parents[1]
        cfg = load_config(root / "templates" / "copies.toml", [f'data.dataset="{folder}"'])
        last = udml.train(folder.parent / "copies-run", cfg)
        return load_model(last, image_size=None, device="cpu")
    if variant.startswith("flip"):
        model, cfg = load_model(None, "efficientnet_lite0", "imagenet", None, "cpu")

        class FlipAveraged(nn.Module):
            def __init__(self, base):
                super().__init__()
                self.base = base

            def embed(self, x):
                return F.normalize(self.base.embed(x) + self.base.embed(torch.flip(x, [3])), dim=1)

        return FlipAveraged(model), cfg
    stage, grid = variant.split(":")  # e.g. "block11:2"
    cfg = Config.model_validate({"model": {"backbone": "efficientnet_lite0", "layers": [stage],
                                           "grid": int(grid)}})  # fmt: skip
    return build_model(cfg.model, head=False), cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--originals", type=int, default=50)
    ap.add_argument("--size", type=int, default=800, help="longer side of an original (px)")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=["last", "flip", "block11:2", "copies"],
        help="last, flip, STAGE:GRID, copies (the copies template trained here)",
    )
    args = ap.parse_args()

    import imagehash
    from imagededup.methods import DHash, PHash, WHash
    from PIL import Image

    from udml_cli.api import embed_files
    from udml_cli.calibration import calibrate
    from udml_cli.index import DEFAULT_THRESHOLD

    res = Results("copies")
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        paths, family, edit = make_folder(folder, args.originals, args.size)
        print(f"{len(paths)} images, {family.max() + 1} originals", file=sys.stderr)
        sims, xs = {}, {}
        for variant in args.variants:
            t0 = time.perf_counter()
            model, cfg = embedder(variant, folder)
            trained = time.perf_counter() - t0 if variant == "copies" else 0.0
            t0 = time.perf_counter()
            x, ok = embed_files(model, cfg, paths, where=variant)
            seconds = time.perf_counter() - t0
            assert ok.all()
            sim = x @ x.T
            sims[variant], xs[variant] = sim, x
            name = f"udml {variant}"
            rows[f"{name} @ {DEFAULT_THRESHOLD} (default)"] = \
                pair_scores(sim >= DEFAULT_THRESHOLD, family, edit) | {"seconds": seconds,
                                                                        "training seconds": trained}  # fmt: skip
            t0 = time.perf_counter()
            cal = calibrate(model, cfg, x, paths, 0.99)
            cal_s = time.perf_counter() - t0
            rows[f"{name} @ {cal.threshold:.3f} (calibrated, precision 0.99)"] = \
                pair_scores(sim >= cal.threshold, family, edit) | {
                    "seconds": seconds + cal_s, "calibration seconds": cal_s,
                    "calibration negatives": cal.negatives}  # fmt: skip
            t = best_threshold(sim, family)
            rows[f"{name} @ {t:.3f} (best F1, hindsight)"] = pair_scores(sim >= t, family, edit)
        hashers = {"imagededup PHash": PHash(verbose=False), "imagededup DHash": DHash(verbose=False),
                   "imagededup WHash": WHash(verbose=False)}  # fmt: skip
        for name, hasher in hashers.items():
            t0 = time.perf_counter()
            codes = [hasher.encode_image(image_file=str(p)) for p in paths]
            bits = np.array([[int(b) for b in bin(int(c, 16))[2:].zfill(64)] for c in codes])
            dist = (bits[:, None, :] != bits[None, :, :]).sum(-1)
            seconds = time.perf_counter() - t0
            rows[f"{name} ≤ 10 (its default)"] = pair_scores(dist <= 10, family, edit) | \
                {"seconds": seconds}  # fmt: skip
            t = best_threshold(dist.astype(float), family, higher=False)
            rows[f"{name} ≤ {t:.0f} (best F1, hindsight)"] = pair_scores(dist <= t, family, edit)
        t0 = time.perf_counter()
        hashes = [imagehash.phash(Image.open(p)) for p in paths]
        dist = np.array([[a - b for b in hashes] for a in hashes])
        rows["imagehash pHash ≤ 10"] = pair_scores(dist <= 10, family, edit) | \
            {"seconds": time.perf_counter() - t0}  # fmt: skip
        # what `udml duplicates` does by default: the calibrated threshold joined with udml's
        # own perceptual hashes at most 6 bits apart, then candidates checked by local features
        from udml_cli.phash import DEFAULT_DISTANCE, file_hashes

        t0 = time.perf_counter()
        codes = file_hashes(paths)
        hash_s = time.perf_counter() - t0
        bits = np.unpackbits(codes.astype(">u8").view(np.uint8).reshape(-1, 8), axis=1)
        ours = (bits[:, None, :] != bits[None, :, :]).sum(-1)
        for variant in args.variants:
            key = next(k for k in rows if k.startswith(f"udml {variant} @") and "calibrated" in k)
            cal_t = float(key.split("@ ")[1].split(" ")[0])
            rows[f"udml {variant} @ {cal_t:.3f} + pHash ≤ {DEFAULT_DISTANCE} (the default before "
                 "local features)"] = pair_scores((sims[variant] >= cal_t) | (ours <= DEFAULT_DISTANCE),
                                           family, edit) | {"hashing seconds": hash_s}  # fmt: skip
            links, groups, info = as_shipped(xs[variant], cal_t, codes, paths, folder)
            name = f"udml {variant} @ {cal_t:.3f} + pHash + local features"
            rows[f"{name}, links (udml duplicates default)"] = \
                pair_scores(links, family, edit) | info | {
                    "seconds": rows[key]["seconds"] + hash_s + info["verify seconds"]}  # fmt: skip
            rows[f"{name}, groups (udml duplicates default)"] = pair_scores(groups, family, edit)
    for case, metrics in rows.items():
        for metric, value in metrics.items():
            res.add(case, metric, value, higher_is_better=metric != "seconds")
    res.write()
    write_markdown(rows, RESULTS / "copies.md")


def write_markdown(rows: dict, path: Path) -> None:
    kinds = [k for k in next(iter(rows.values())) if k.startswith("recall ")]
    head = ["finder", "precision", "recall", "F1", "original→copy",
            *[k.removeprefix("recall ") for k in kinds], "time"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, m in rows.items():
        cells = [f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['F1']:.3f}",
                 f"{100 * m['original-copy recall']:.1f}%", *[f"{100 * m[k]:.0f}%" for k in kinds],
                 f"{m['seconds']:.0f} s" if "seconds" in m else ""]  # fmt: skip
        lines.append(f"| {case} | " + " | ".join(cells) + " |")
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
