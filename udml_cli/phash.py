"""Perceptual hashes beside the embedding: the two find opposite edits (BENCHMARKS "Copy
detection": hashes find brightness, greyscale, blur and re-compression, which the embedding's
threshold misses; the embedding finds crops, mirrors, rotations and captions, which hashes
miss), so ``udml duplicates`` joins a pair when either says so.

The hash is the classic DCT one (Krawetz's pHash, as imagehash and imagededup compute it): the
greyscale picture at 32 × 32, its 2-D DCT, the 8 × 8 lowest frequencies, each bit whether a
coefficient is above their median: 64 bits, compared by Hamming distance.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

BITS = 64
DEFAULT_DISTANCE = 6  # at most this many bits apart: a copy (BENCHMARKS "Copy detection")


def phash(im) -> int:
    """The 64-bit pHash of a PIL image, bit 63 = the first coefficient."""
    from PIL import Image
    from scipy.fft import dct

    grey = np.asarray(im.convert("L").resize((32, 32), Image.LANCZOS), dtype=np.float64)
    low = dct(dct(grey, axis=0), axis=1)[:8, :8]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def file_hashes(paths: list[Path], progress=None, where: str = "images") -> np.ndarray:
    """``(n,)`` uint64 hashes of image files; 0 for one that cannot be read (it was left out of
    the index anyway: callers pass readable files)."""
    from udml_cli.data.images import ImageError, load_rgb

    out = np.zeros(len(paths), np.uint64)
    task = progress.add_task(f"hashing {where}", total=len(paths)) if progress else None
    for i, path in enumerate(paths):
        with contextlib.suppress(ImageError):
            out[i] = phash(load_rgb(path))
        if progress:
            progress.advance(task)
    return out


def hash_pairs(hashes: np.ndarray, distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``a < b`` of rows at most ``distance`` bits apart (faiss binary range search)."""
    import faiss

    codes = np.ascontiguousarray(hashes.astype(">u8").view(np.uint8).reshape(-1, 8))
    index = faiss.IndexBinaryFlat(BITS)
    index.add(codes)
    rows, cols = [], []
    for start in range(0, len(codes), 8192):
        lims, _, found = index.range_search(codes[start : start + 8192], distance + 1)
        counts = np.diff(lims).astype(np.int64)
        q = np.repeat(np.arange(start, start + len(counts)), counts)
        found = found.astype(np.int64)
        keep = found > q
        rows.append(q[keep])
        cols.append(found[keep])
    cat = lambda a: np.concatenate(a) if a else np.zeros(0, np.int64)  # noqa: E731
    return cat(rows), cat(cols)
