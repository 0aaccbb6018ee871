"""Duplicates: how the default threshold was chosen, and search/duplicate speed at 100,000 rows.

Part 1 (threshold): real images (the prepared emoji and Fashion-MNIST test splits), the
pretrained EfficientNet-Lite0 at 64 px. For each image a near-copy (downscaled to 75 % or half,
JPEG q=75 or 70, upscaled back) is embedded: its similarity to the original is what a duplicate scores; the
similarity of each original to its nearest *other* image is what distinct images score.
Part 2 (speed): 100,000 random 512-d unit vectors with 2,000 planted near-copies; exact top-10
search for 100 queries and the full duplicate pass (IVF index, as udml index builds at this size),
the planted pairs are the ground truth for recall; then what `udml duplicates` adds before it
opens a file: random perceptual hashes joined at 6 bits, and the candidates for the local-feature
check found on the IVF index (--exact adds the brute-force passes, minutes).
    python benchmarks/duplicates.py [--images 1000] [--parts small photo speed] [--exact]
    → results/duplicates.json (duplicates-<parts>.json for a subset of parts)
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results


def threshold_study(
    dataset: str, n: int, scale: float, quality: int, upscale: int = 0, size: int = 64
) -> dict:
    import torch
    from PIL import Image

    from udml_cli.config import load_config, model_flags
    from udml_cli.data.images import load_rgb
    from udml_cli.data.layout import read_split
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.data.transforms import eval_transform
    from udml_cli.inference import load_model

    cfg = load_config(None, None, model_flags("efficientnet_lite0", "imagenet", "cpu", size))
    model, cfg, _ = load_model(cfg, None, "efficientnet_lite0")
    model.eval()
    samples = read_split(resolve_dataset(dataset), "test")[:n]
    tf = eval_transform(cfg.data)

    def near_copy(im):
        w, h = im.size
        small = im.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue())).convert("RGB").resize((w, h))

    originals, copies = [], []
    for s in samples:
        im = load_rgb(s.path)
        if upscale:  # photo-sized: larger than the network's input, as photos are
            im = im.resize((upscale, upscale), Image.BICUBIC)
        originals.append(tf(im))
        copies.append(tf(near_copy(im)))
    with torch.no_grad():
        a = torch.cat([model.embed(torch.stack(originals[i : i + 256])) for i in range(0, n, 256)])
        b = torch.cat([model.embed(torch.stack(copies[i : i + 256])) for i in range(0, n, 256)])
    dup = (a * b).sum(1).numpy()
    sim = (a @ a.T).numpy()
    np.fill_diagonal(sim, -1)
    distinct = sim.max(1)
    q = [0.5, 1, 5, 50]
    return {
        "dataset": dataset, "images": n, "copy": f"resize x{scale}, JPEG q={quality}",
        "original_px": upscale or "as stored", "network_px": size,
        "near_copy_similarity_percentiles": dict(zip(map(str, q), np.percentile(dup, q).round(4).tolist(), strict=True)),
        "nearest_distinct_percentiles": dict(zip(map(str, [50, 95, 99, 99.5]), np.percentile(distinct, [50, 95, 99, 99.5]).round(4).tolist(), strict=True)),
        **{f"at_{t}": {"near_copies_found": round(float((dup >= t).mean()), 4),
                       "distinct_images_joined": round(float((distinct >= t).mean()), 4)}
           for t in (0.8, 0.9, 0.95)},
    }  # fmt: skip


def speed(n: int = 100_000, d: int = 512, planted: int = 2000, exact: bool = False) -> dict:
    from udml_cli.index import Index, duplicate_groups

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    src = rng.choice(n - planted, planted, replace=False)
    x[n - planted :] = x[src] + 0.1 * rng.normal(size=(planted, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    files = [(f"{i}.jpg", 0, 0) for i in range(n)]
    idx = Index(Path("."), {}, x, files)
    t = time.perf_counter()
    index = idx.faiss()
    build = time.perf_counter() - t
    t = time.perf_counter()
    idx.search(x[:100], 10)
    search_s = time.perf_counter() - t
    t = time.perf_counter()
    groups = duplicate_groups(x, 0.95, index)
    dup_s = time.perf_counter() - t
    pairs = {tuple(g) for g, _ in groups if len(g) == 2}
    found = sum((int(s), n - planted + i) in pairs for i, s in enumerate(src))
    out = {
        "rows": n, "dim": d, "planted_pairs": planted,
        "ivf_build_s": round(build, 2), "search_100_queries_s": round(search_s, 3),
        "duplicates_ivf_s": round(dup_s, 2), "planted_found_ivf": found, "groups_ivf": len(groups),
    }  # fmt: skip
    # what `udml duplicates` adds by default before it opens any file: perceptual hashes (random
    # here; each planted copy one bit from its source's) joined at 6 bits, and the candidates its
    # local-feature check looks at (each row's 24 nearest ≥ 0.5, hashes ≤ 12 bits apart)
    from udml_cli.index import joined_pairs
    from udml_cli.verify import candidate_pairs

    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64)
    h[n - planted :] = h[src] ^ (np.uint64(1) << rng.integers(0, 64, planted).astype(np.uint64))
    t = time.perf_counter()
    r, c, s = joined_pairs(x, 0.95, index, h, 6)
    groups = duplicate_groups(x, 0.95, pairs=(r, c, s))
    out["duplicates_with_hashes_s"] = round(time.perf_counter() - t, 2)
    pairs = set(zip(r.tolist(), c.tolist(), strict=True))
    out["planted_found_with_hashes"] = sum(
        (int(a), n - planted + i) in pairs for i, a in enumerate(src)
    )
    t = time.perf_counter()
    cr, cc = candidate_pairs(x, h, index=index)
    out["check_candidates_ivf_s"] = round(time.perf_counter() - t, 2)
    cand = set(zip(cr.tolist(), cc.tolist(), strict=True))
    out["check_candidates_ivf"] = len(cand)
    if exact:  # brute force over all pairs (a flat index): minutes at this size
        t = time.perf_counter()
        out["groups_exact"] = len(duplicate_groups(x, 0.95))
        out["duplicates_exact_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        er, ec = candidate_pairs(x, h)
        out["check_candidates_exact_s"] = round(time.perf_counter() - t, 2)
        every = set(zip(er.tolist(), ec.tolist(), strict=True))
        out["check_candidates_exact"] = len(every)
        out["exact_candidates_found_by_ivf"] = len(every & cand)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1500)
    ap.add_argument("--datasets", nargs="+", default=["emoji", "fashion-mnist"])
    ap.add_argument("--parts", nargs="+", default=["small", "photo", "speed"])
    ap.add_argument("--exact", action="store_true", help="speed: also the brute-force pass")
    args = ap.parse_args()
    res = Results("duplicates" if len(args.parts) == 3 else "duplicates-" + "-".join(args.parts))
    settings = {
        "small": [(0.75, 75, 0, 64), (0.5, 70, 0, 64)],  # the images as stored (28-72 px)
        "photo": [(0.75, 85, 256, 128), (0.5, 70, 256, 128)],  # photo-sized: 256 px originals
    }
    for part in ("small", "photo"):
        if part not in args.parts:
            continue
        for ds in args.datasets:
            for scale, quality, up, size in settings[part]:
                study = threshold_study(ds, args.images, scale, quality, up, size)
                for key, value in study.items():
                    res.add(f"threshold {part} {ds} x{scale} q{quality}", key, value)
    if "speed" in args.parts:
        for key, value in speed(exact=args.exact).items():
            res.add("speed 100k x 512", key, value)
    res.write()


if __name__ == "__main__":
    main()
