"""Local-feature verification of possible copies: what ``udml duplicates`` adds to the embedding
and the perceptual hashes.

A copy shares many points with its original that one similarity transform (rotation, scale,
shift: a crop, a rotation, a resize) maps onto each other — or, for a mirrored copy, onto the
mirror image. Two pictures of one scene, or two photographs under the same caption, share
textures but few such points, or only inside a strip. So a candidate pair is checked by SIFT
keypoints (OpenCV; grey, contrast-equalised, longer side ``SIDE`` px; a smooth picture with
fewer than ``RICH`` gets those a much harder equalisation finds added), RootSIFT descriptors
matched one-to-one with Lowe's ratio test, and a RANSAC fit of a similarity transform (its
scale within 1/8…8): the pair is a copy when at least ``MIN_INLIERS`` matches agree, they
span at least ``MIN_COVERAGE`` of one picture's area (``benchmarks/copies.py`` measures both),
and ``MIN_MIDDLE`` of them lie inside one picture's middle (not all on a frame an edit added).
The other way round, a pair the embedding or the hashes join is overruled when both pictures
are textured (at least ``TEXTURED`` keypoints at SIFT's own contrast threshold, before any
equalisation, inside the middle ``1 - 2 INSET`` of each side) and none of the above holds: two
halves of one photograph of grass can be as close as copies to a global descriptor, never to
their keypoints. Equalised keypoints do not count for it (on a smooth rendering they are mostly
amplified banding and JPEG noise, which no copy repeats), nor do those near the edges (a
rotation's corners and a caption add a hundred a picture): either would overrule true copies.
Where keypoints cannot judge, a link stands only when the embedding calls the two at least
``FLOOR`` alike: two smooth pictures under one caption, or turned alike, have near hashes.

Only candidates are checked (``candidate_pairs``): each image's ``NEIGHBOURS`` nearest others
with embedding similarity ≥ ``FLOOR``, and hashes at most ``HASH_DISTANCE`` bits apart. Images
are read again from the indexed folder (a file gone or unreadable is simply not verified).
"""

from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIDE = 512  # longer side the keypoints are found at (px)
FEATURES = 500  # keypoints per image, the strongest
CONTRAST = 0.003  # SIFT's contrast threshold, after CLAHE: smooth photographs keep keypoints
CLIP = 2.0  # CLAHE's clip limit
# a picture with fewer than RICH keypoints is smooth (sky, mist, a gradient): looked at again with
# contrast equalised much harder and a lower threshold, it shows the structure it has (on the copy
# benchmark: original-to-copy pairs confirmed 82 -> 86 %, look-alike halves confirmed still none)
SMOOTH_CLIP, SMOOTH_CONTRAST = 32.0, 0.0002
RATIO = 0.8  # Lowe's ratio test
REPROJECTION = 6.0  # px at SIDE: how far a point may land from where the transform puts it
MIN_INLIERS = 10
MIN_COVERAGE = 0.2  # of one picture's area: the box around the agreeing points
RICH = 200  # fewer keypoints at the ordinary settings: a smooth picture, looked at again
# keypoints SIFT finds at its own contrast threshold (0.04) on the plain grey picture, away from its
# edges, in each of the two, for their disagreement to overrule the embedding's: real texture (the
# copy benchmark's smooth renderings have 0-14 except a few shrunk to a quarter and JPEG'd at q30,
# its photographs of grass and rock 90-330, their blurred copies 28 and more). Counting equalised
# keypoints misled: smooth renderings reach 200 on banding, and 320 true copies were overruled
TEXTURED = 25
INSET = 0.2  # of each side: where a rotation's corners and a caption put their own keypoints
# agreeing points a copy has inside one picture's middle: two smooth pictures rotated alike, or
# under one caption, agree on the corners' or the caption's points alone (the copy benchmark's
# rotated and captioned renderings of different scenes joined four families into one)
MIN_MIDDLE = 4
FLOOR = 0.5  # candidates: embedding similarity at least this …
NEIGHBOURS = 24  # … among each image's nearest others
NPROBE = 8  # cells an IVF index (large folders) looks in for them
HASH_DISTANCE = 12  # and hashes at most this many bits apart
CACHED = 4096  # images whose keypoints stay in memory (about 130 KB each)
# looser candidates checked at most, the most similar first (the links are always checked). On 2
# cores a picture's keypoints take ~55 ms and a match ~7 ms: the copy benchmark's 782 pictures
# and 11,481 pairs ~2 min; at worst (every pair two new pictures) 10,000 pairs ~20 min
CHECK_LIMIT = 10_000


def available() -> bool:
    try:
        import cv2  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass
class Local:
    """One picture's keypoints: ``points`` (n, 2) px, ``desc`` (n, 128) uint8 SIFT, ``size``;
    ``plain``: how many the ordinary settings found (fewer than ``RICH``: a smooth picture,
    found again harder); ``texture``: how many SIFT finds without equalisation at its own
    contrast threshold (whether the picture can overrule the embedding: ``TEXTURED``)."""

    points: np.ndarray
    desc: np.ndarray
    size: tuple[int, int]
    plain: int = -1  # -1: len(points)
    texture: int = 0

    def __post_init__(self) -> None:
        if self.plain < 0:
            self.plain = len(self.points)


def local_features(image) -> tuple[Local, Local]:
    """Keypoints of a PIL image and of its mirror image (``mirrored``)."""
    import cv2

    grey = image.convert("L")
    grey.thumbnail((SIDE, SIDE))
    a = np.ascontiguousarray(np.asarray(grey))

    def sift(clip: float, contrast: float):
        clahe = cv2.createCLAHE(clipLimit=clip, tileGridSize=(8, 8))
        found = cv2.SIFT_create(nfeatures=FEATURES, contrastThreshold=contrast)
        return found.detectAndCompute(clahe.apply(a), None)

    texture = _texture(cv2.SIFT_create(nfeatures=FEATURES).detect(a, None), a.shape)
    kp, desc = sift(CLIP, CONTRAST)
    pts = np.array([k.pt for k in kp], np.float32).reshape(-1, 2)
    desc = np.zeros((0, 128), np.float32) if desc is None else desc
    plain = len(pts)
    if plain < RICH:  # smooth: harder equalisation and a lower threshold add what they find …
        again, more = sift(SMOOTH_CLIP, SMOOTH_CONTRAST)
        if more is not None:
            extra = np.array([k.pt for k in again], np.float32).reshape(-1, 2)
            if plain:  # … away from the ordinary ones (a point twice would fail the ratio test)
                near = np.linalg.norm(extra[:, None] - pts[None], axis=2).min(1) < 3
                extra, more = extra[~near], more[~near]
            pts = np.concatenate([pts, extra])[:FEATURES]
            desc = np.concatenate([desc, more])[:FEATURES]
    f = Local(pts, np.clip(desc, 0, 255).astype(np.uint8), grey.size, plain, texture)
    return f, mirrored(f)


def _texture(keypoints, shape: tuple[int, ...]) -> int:
    """How many of ``keypoints`` lie inside the picture's middle (``INSET`` off each side)."""
    return _middle(np.array([k.pt for k in keypoints], np.float32).reshape(-1, 2), shape[1::-1])


def _middle(points: np.ndarray, size: tuple[int, int]) -> int:
    """How many of ``points`` lie inside a picture of ``size`` (w, h), ``INSET`` off each side."""
    w, h = size
    return int(((np.abs(points[:, 0] - w / 2) < (0.5 - INSET) * w) &
                (np.abs(points[:, 1] - h / 2) < (0.5 - INSET) * h)).sum())  # fmt: skip


def mirrored(f: Local) -> Local:
    """The keypoints of the mirror image, without finding them again: each point's x reflected
    and its SIFT descriptor permuted (the 4×4 grid's rows reversed, orientation bin o → −o mod
    8, for OpenCV's layout; tests/test_verify.py checks it against SIFT on the mirror image)."""
    pts = f.points.copy()
    pts[:, 0] = f.size[0] - 1 - pts[:, 0]
    desc = f.desc.reshape(-1, 4, 4, 8)[:, ::-1][..., (-np.arange(8)) % 8]
    return Local(pts, np.ascontiguousarray(desc.reshape(-1, 128)), f.size, f.plain, f.texture)


def path_features(path: Path) -> tuple[Local, Local] | None:
    """``local_features`` of an image file; None when it cannot be read."""
    from udml_cli.data.images import ImageError, load_rgb

    try:
        return local_features(load_rgb(path, at_least=SIDE))
    except ImageError:
        return None


def _root(desc: np.ndarray) -> np.ndarray:
    """RootSIFT: L1-normalised, square-rooted (Arandjelović & Zisserman, 2012)."""
    d = desc.astype(np.float32)
    return np.sqrt(d / (d.sum(1, keepdims=True) + 1e-7))


def match(a: Local, b: Local) -> tuple[int, float]:
    """``(inliers, coverage)``: how many of ``a``'s keypoints one similarity transform maps onto
    their one-to-one matches in ``b``, and the larger share of either picture's area the box
    around those points covers."""
    import cv2

    if len(a.desc) < 3 or len(b.desc) < 3:
        return 0, 0.0
    knn = cv2.BFMatcher(cv2.NORM_L2).knnMatch(_root(a.desc), _root(b.desc), k=2)
    best: dict[int, tuple[float, int]] = {}  # b's keypoint -> (distance, a's keypoint)
    for m in knn:
        if len(m) == 2 and m[0].distance < RATIO * m[1].distance:
            t = m[0].trainIdx
            if t not in best or m[0].distance < best[t][0]:
                best[t] = (m[0].distance, m[0].queryIdx)
    if len(best) < 4:
        return 0, 0.0
    dst = b.points[list(best)]
    src = a.points[[q for _, q in best.values()]]
    fit, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                            ransacReprojThreshold=REPROJECTION)  # fmt: skip
    if fit is None or mask is None:
        return 0, 0.0
    scale = float(np.sqrt(abs(np.linalg.det(fit[:, :2]))))
    if not 1 / 8 < scale < 8:  # everything onto one point (or from one): no copy
        return 0, 0.0
    agree = mask.ravel().astype(bool)
    if max(_middle(src[agree], a.size), _middle(dst[agree], b.size)) < MIN_MIDDLE:
        return int(agree.sum()), 0.0  # only a frame the edits added: no copy of the picture

    def cover(p: np.ndarray, size: tuple[int, int]) -> float:
        q = p[agree]
        return float(np.ptp(q[:, 0]) * np.ptp(q[:, 1]) / (size[0] * size[1]))

    return int(agree.sum()), max(cover(src, a.size), cover(dst, b.size))


def verify(a: tuple[Local, Local], b: tuple[Local, Local]) -> tuple[int, float]:
    """``match`` of ``a`` against ``b`` and against ``b``'s mirror image: the better."""
    return max(match(a[0], b[0]), match(a[0], b[1]))


def is_copy(inliers, coverage):
    """The copy rule on one pair's ``match`` (a bool) or on arrays of them (a mask)."""
    return (inliers >= MIN_INLIERS) & (coverage >= MIN_COVERAGE)


def is_other(inliers, coverage, texture):
    """Another picture, as local features can say it: both textured (``texture``: the less
    textured one's, as ``verify_pairs`` gives it) and no copy."""
    return ~is_copy(inliers, coverage) & (texture >= TEXTURED)


def candidate_pairs(vectors: np.ndarray, hashes: np.ndarray | None = None,
                    floor: float = FLOOR, neighbours: int = NEIGHBOURS,
                    hash_distance: int = HASH_DISTANCE, index=None) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Rows ``(a, b)``, ``a < b``, worth verifying: among each row's ``neighbours`` nearest (inner
    product) with similarity ≥ ``floor``, or hashes at most ``hash_distance`` bits apart.
    ``index``: the index's own faiss index over ``vectors`` (none: an exact one is built); an
    IVF one (from ``IVF_FROM`` rows) finds the nearest among ``NPROBE`` cells instead of all
    rows (at 100,000 × 512 on 2 cores: 99 s exact, 13 s this way, every exact candidate found;
    BENCHMARKS.md, "Scale")."""
    import faiss

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    keys = []
    if n > 1:
        ivf = faiss.try_extract_index_ivf(index) if index is not None else None
        if ivf is not None:
            ivf.nprobe = min(ivf.nlist, NPROBE)
        elif index is None:
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
        k = min(neighbours + 1, n)
        for start in range(0, n, 8192):
            sim, found = index.search(x[start : start + 8192], k)
            q = np.repeat(np.arange(start, start + len(sim)), k).reshape(len(sim), k)
            ok = (sim >= floor) & (found >= 0) & (found != q)
            a, b = q[ok].astype(np.int64), found[ok].astype(np.int64)
            keys.append(np.minimum(a, b) * n + np.maximum(a, b))
    if hashes is not None and n > 1:
        from udml_cli.phash import hash_pairs

        hr, hc = hash_pairs(hashes, hash_distance)
        keys.append(hr.astype(np.int64) * n + hc.astype(np.int64))
    if not keys:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = np.unique(np.concatenate(keys))
    return k // n, k % n


def verify_pairs(paths: list[Path], rows: np.ndarray, cols: np.ndarray, progress=None,
                 workers: int | None = None, what: str = "checking possible copies",
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """``(inliers, coverage, texture)`` of each pair ``(paths[rows[i]], paths[cols[i]])``
    (``texture``: the less textured picture's ``Local.texture``); keypoints are
    found once per image (at most ``CACHED`` kept at a time) on a pool of threads."""
    import os

    import cv2

    cv2.setNumThreads(1)  # the pool is the parallelism
    workers = workers or min(8, os.cpu_count() or 1)
    inliers = np.zeros(len(rows), np.int32)
    coverage = np.zeros(len(rows), np.float32)
    texture = np.zeros(len(rows), np.int32)
    order = np.lexsort((cols, rows))
    cache: OrderedDict[int, tuple[Local, Local] | None] = OrderedDict()
    task = progress.add_task(what, total=len(rows)) if progress else None
    step = CACHED // 2
    with ThreadPoolExecutor(workers) as pool:
        for start in range(0, len(order), step):
            chunk = order[start : start + step]
            need = np.unique(np.concatenate([rows[chunk], cols[chunk]])).tolist()
            todo = [r for r in need if r not in cache]
            for r in need:
                if r in cache:
                    cache.move_to_end(r)
            while len(cache) + len(todo) > CACHED and cache:
                cache.popitem(last=False)  # the least recently used, never one this chunk needs
            for r, f in zip(todo, pool.map(lambda r: path_features(paths[r]), todo), strict=True):
                cache[r] = f

            def one(i: int) -> tuple[int, float, int]:
                a, b = cache[int(rows[i])], cache[int(cols[i])]
                if a is None or b is None:
                    return 0, 0.0, 0
                return (*verify(a, b), min(a[0].texture, b[0].texture))

            for i, got in zip(chunk.tolist(), pool.map(one, chunk.tolist()), strict=True):
                inliers[i], coverage[i], texture[i] = got
            if progress:
                progress.advance(task, len(chunk))
    return inliers, coverage, texture


def check_links(paths: list[Path], vectors: np.ndarray, hashes: np.ndarray | None,
                rows: np.ndarray, cols: np.ndarray, progress=None, *,
                limit: int, index=None) -> dict:  # fmt: skip
    """Local features on the links ``(rows, cols)`` the embedding and hashes made (one stands
    when confirmed, or when a picture has too little texture to judge and the embedding
    similarity is at least ``FLOOR``) and on the looser ``candidate_pairs`` (at most
    ``limit``, the most similar first; the default, ``CHECK_LIMIT``, is resolved by the
    caller, ``review``): ``{"keep": mask over the links (False: overruled), "rows", "cols":
    candidates confirmed, "checked", "confirmed", "overruled", "unchecked": candidates beyond
    the limit}``."""
    n = len(vectors)
    rows, cols = rows.astype(np.int64), cols.astype(np.int64)
    cr, cc = candidate_pairs(vectors, hashes, index=index)
    new = ~np.isin(cr * n + cc, rows * n + cols)
    cr, cc = cr[new], cc[new]
    unchecked = max(0, len(cr) - limit)
    if unchecked:
        sim = np.einsum("ij,ij->i", vectors[cr], vectors[cc])
        first = np.sort(np.argsort(-sim, kind="stable")[:limit])
        cr, cc = cr[first], cc[first]
    inliers, coverage, texture = verify_pairs(paths, np.concatenate([rows, cr]),
                                                np.concatenate([cols, cc]), progress)  # fmt: skip
    copy = is_copy(inliers, coverage)
    m = len(rows)
    alike = np.einsum("ij,ij->i", vectors[rows], vectors[cols]) >= FLOOR
    # unconfirmed, a link stands only where keypoints cannot judge (too little texture) and the
    # embedding itself calls the two alike: the hashes of two smooth pictures under one caption
    # or turned alike agree on the caption or the corners alone
    keep = copy[:m] | (~is_other(inliers[:m], coverage[:m], texture[:m]) & alike)
    ok = copy[m:]
    return {"keep": keep, "rows": cr[ok], "cols": cc[ok], "checked": m + len(cr),
            "confirmed": int(ok.sum()), "overruled": int((~keep).sum()),
            "unchecked": unchecked}  # fmt: skip
