"""Local-feature verification of possible copies (``udml_cli/verify.py``): the match count
against a hand-built case with a known transform, real edited photographs (Debian's
mate-backgrounds) against their halves and against other photos under one caption, the
candidates against a brute-force search, the group links against a plain triangle loop, and
``udml duplicates`` joining a strong crop only with ``--verify``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from udml_cli import verify
from udml_cli.data.named_edits import apply, halves
from udml_cli.review import supported
from udml_cli.verify import Local

PHOTOS = Path("/usr/share/backgrounds/mate/nature")  # scripts/setup.sh: apt mate-backgrounds


def photo(name: str, side: int = 640) -> Image.Image:
    path = PHOTOS / name
    assert path.is_file(), f"{path}: apt-get install mate-backgrounds (scripts/setup.sh)"
    im = Image.open(path).convert("RGB")
    im.thumbnail((side, side))
    return im


def test_match_counts_the_points_one_similarity_transform_maps():
    rng = np.random.default_rng(0)
    pts = rng.uniform([20, 20], [380, 280], (40, 2)).astype(np.float32)
    desc = rng.integers(0, 256, (40, 128)).astype(np.uint8)
    a = Local(pts, desc, (400, 300))
    # b: 30 of a's points turned 20°, scaled 0.6, shifted; 15 unrelated points
    th, sc = math.radians(20), 0.6
    rot = sc * np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
    moved = pts[:30] @ rot.T + np.array([50.0, 10.0])
    extra = rng.uniform(0, 300, (15, 2))
    b = Local(np.concatenate([moved, extra]).astype(np.float32),
              np.concatenate([desc[:30], rng.integers(0, 256, (15, 128))]).astype(np.uint8),
              (300, 250))  # fmt: skip
    inliers, coverage = verify.match(a, b)
    assert inliers == 30
    box = lambda p, w, h: np.ptp(p[:, 0]) * np.ptp(p[:, 1]) / (w * h)  # noqa: E731
    assert coverage == pytest.approx(max(box(pts[:30], 400, 300), box(moved, 300, 250)), rel=1e-5)
    # everything onto one point is no transform: a's 40 points all matched to one of b's
    one = Local(np.array([[10.0, 10.0]] * 40, np.float32), desc.copy(), (100, 100))
    assert verify.match(a, one) == (0, 0.0)
    assert verify.match(a, Local(pts[:2], desc[:2], (400, 300))) == (0, 0.0)  # too few points
    # points that agree only along the edges (a rotation's corners, a caption): no copy
    edge = np.concatenate([rng.uniform([0, 0], [400, 50], (15, 2)),
                           rng.uniform([0, 250], [400, 300], (15, 2))]).astype(np.float32)  # fmt: skip
    framed = Local(edge, desc[:30], (400, 300))
    inliers, coverage = verify.match(
        framed, Local(edge + np.float32([3, 0]), desc[:30], (400, 300))
    )
    assert inliers == 30 and coverage == 0.0
    middle = edge.copy()
    middle[:4] = [[150, 120], [250, 130], [200, 170], [180, 160]]  # MIN_MIDDLE of them inside
    assert verify.match(Local(middle, desc[:30], (400, 300)),
                        Local(middle + np.float32([3, 0]), desc[:30], (400, 300)))[1] > 0.2  # fmt: skip


def test_mirrored_keypoints_are_what_sift_finds_on_the_mirror_image():
    import cv2

    grey = photo("LadyBird.jpg").convert("L")
    grey.thumbnail((verify.SIDE, verify.SIDE))
    a = np.asarray(grey)
    sift = cv2.SIFT_create(nfeatures=200)
    kp, desc = sift.detectAndCompute(a, None)
    f = Local(np.array([k.pt for k in kp], np.float32), desc.astype(np.uint8), grey.size)
    m = verify.mirrored(f)
    w = a.shape[1]
    # the reference: SIFT describing the mirrored keypoints (angle reflected) on the mirror image
    flipped = [cv2.KeyPoint(w - 1 - k.pt[0], k.pt[1], k.size, (180 - k.angle) % 360, k.response,
                            k.octave, k.class_id) for k in kp]  # fmt: skip
    _, want = sift.compute(np.ascontiguousarray(a[:, ::-1]), flipped)
    assert np.allclose(m.points[:, 0], [k.pt[0] for k in flipped])
    err = np.abs(m.desc.astype(float) - want).mean()
    assert err < 0.15 * np.abs(want).mean()  # interpolation differs a little; unpermuted: ~100 %
    assert np.abs(f.desc.astype(float) - want).mean() > 0.8 * np.abs(want).mean()


def test_edited_copies_are_confirmed_and_look_alikes_are_not():
    left, right = halves(photo("LadyBird.jpg"))
    feats = verify.local_features(left)
    for kind in ("crop", "flip", "rotate", "small", "caption", "grey"):
        copy = verify.local_features(apply(left, kind, "strong"))
        assert verify.is_copy(*verify.verify(feats, copy)), kind
    # the other half of the same photograph: same scene and light, no pixel in common
    assert not verify.is_copy(*verify.verify(feats, verify.local_features(right)))
    # two different photographs under the same caption: the banner alone matches
    other = apply(photo("Garden.jpg"), "caption", "strong")
    captioned = verify.local_features(apply(left, "caption", "strong"))
    assert not verify.is_copy(*verify.verify(captioned, verify.local_features(other)))


def test_a_smooth_picture_is_looked_at_again_and_counts_as_what_it_plainly_has(monkeypatch):
    import cv2

    path = Path("/usr/share/backgrounds/focal-ubuntukylin.png")  # scripts/setup.sh: ukui-wallpapers
    assert path.is_file(), f"{path}: apt-get install ukui-wallpapers (scripts/setup.sh)"
    im = Image.open(path).convert("RGB")
    im.thumbnail((640, 640))
    left, right = halves(im)  # a smooth rendering: few keypoints at the ordinary settings
    grey = left.convert("L")
    grey.thumbnail((verify.SIDE, verify.SIDE))
    clahe = cv2.createCLAHE(clipLimit=verify.CLIP, tileGridSize=(8, 8))
    sift = cv2.SIFT_create(nfeatures=verify.FEATURES, contrastThreshold=verify.CONTRAST)
    plain = len(sift.detect(clahe.apply(np.asarray(grey)), None))
    feats = verify.local_features(left)
    assert feats[0].plain == feats[1].plain == plain < verify.RICH < len(feats[0].points)
    rich = verify.local_features(photo("LadyBird.jpg"))[0]
    assert rich.plain == len(rich.points) >= verify.RICH  # a rich picture: looked at once
    copy = verify.local_features(apply(left, "crop", "mild"))
    assert verify.is_copy(*verify.verify(feats, copy))
    assert not verify.is_copy(*verify.verify(feats, verify.local_features(right)))
    # without the second look the same crop goes unconfirmed
    monkeypatch.setattr(verify, "SMOOTH_CLIP", verify.CLIP)
    monkeypatch.setattr(verify, "SMOOTH_CONTRAST", verify.CONTRAST)
    once = verify.local_features(left)
    assert len(once[0].points) == plain
    assert not verify.is_copy(
        *verify.verify(once, verify.local_features(apply(left, "crop", "mild")))
    )


def test_candidates_match_a_brute_force_search():
    from udml_cli.phash import BITS

    rng = np.random.default_rng(1)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[1::3] = x[0::3][: len(x[1::3])] + 0.3 * rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    hashes = rng.integers(0, 2**63, 60, dtype=np.uint64)
    hashes[7] = hashes[40] ^ np.uint64(0b1011)  # 3 bits apart
    r, c = verify.candidate_pairs(x, hashes, floor=0.5, neighbours=4, hash_distance=3)
    sim = x @ x.T
    want = set()
    for i in range(60):
        others = sorted((j for j in range(60) if j != i), key=lambda j: -sim[i, j])[:4]
        want |= {(min(i, j), max(i, j)) for j in others if sim[i, j] >= 0.5}
    bits = lambda v: bin(int(v)).count("1")  # noqa: E731
    want |= {(i, j) for i in range(60) for j in range(i + 1, 60)
             if bits(hashes[i] ^ hashes[j]) <= 3}  # fmt: skip
    assert BITS == 64 and (7, 40) in want
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == want
    # on an IVF index (a large folder's) looking in every cell (nprobe ≥ its 4 cells): the same
    import faiss

    ivf = faiss.IndexIVFFlat(faiss.IndexFlatIP(8), 8, 4, faiss.METRIC_INNER_PRODUCT)
    ivf.train(x)
    ivf.add(x)
    assert verify.NPROBE >= 4
    r, c = verify.candidate_pairs(x, hashes, floor=0.5, neighbours=4, hash_distance=3, index=ivf)
    assert set(zip(r.tolist(), c.tolist(), strict=True)) == want and ivf.nprobe == 4


def test_links_that_alone_bridge_two_groups_are_left_out():
    rng = np.random.default_rng(2)
    n = 30
    edges = {(a, b) for a in range(n) for b in range(a + 1, n) if rng.random() < 0.12}
    edges |= {(0, 1), (0, 2), (1, 2), (2, 3), (25, 26)}  # a triangle, a tail, a lone pair
    r, c = (np.array(v) for v in zip(*sorted(edges), strict=True))
    (kr, kc, ks), dropped = supported((r, c, np.arange(len(r), dtype=np.float32)), n)
    nbr = {i: {b for a, b in edges if a == i} | {a for a, b in edges if b == i} for i in range(n)}
    want = [(a, b) for a, b in sorted(edges)
            if nbr[a] & nbr[b] or min(len(nbr[a]), len(nbr[b])) <= 1]  # fmt: skip
    assert list(zip(kr.tolist(), kc.tolist(), strict=True)) == want
    assert dropped == len(edges) - len(want) > 0
    assert ks.tolist() == [float(i) for i, e in enumerate(sorted(edges)) if e in set(want)]
    # two triangles joined by one link: the link goes, each triangle stays whole
    two = (np.array([0, 0, 1, 3, 3, 4, 2]), np.array([1, 2, 2, 4, 5, 5, 3]), np.ones(7))
    (kr, kc, _), dropped = supported(two, 6)
    assert dropped == 1 and (2, 3) not in set(zip(kr.tolist(), kc.tolist(), strict=True))


def test_duplicates_joins_a_strong_crop_only_when_verifying(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    left, _ = halves(photo("LadyBird.jpg"))
    left.save(folder / "ladybird.jpg", quality=95)
    apply(left, "crop", "strong").save(folder / "ladybird-crop.jpg", quality=95)
    for name in ("Garden.jpg", "Dune.jpg", "Storm.jpg"):
        photo(name).save(folder / name.lower(), quality=95)
    idx = tmp_path / "idx"
    model = ["--backbone", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "128"]
    assert cli("index", folder, "--out", idx, *model, "--no-calibrate").code == 0

    def groups(*extra) -> list[list[str]]:
        r = cli("duplicates", "--index", idx, "--threshold", "0.99", "--json", *extra)
        assert r.code == 0, r.err
        return [g["paths"] for g in json.loads(r.out)["groups"]], r.err

    plain, said = groups("--no-verify")
    assert plain == [] and "--no-verify" in said
    found, said = groups()
    assert found == [["ladybird-crop.jpg", "ladybird.jpg"]]
    assert "1 more confirmed" in said
    doc = json.loads(cli("duplicates", "--index", idx, "--threshold", "0.99", "--json").out)
    assert doc["confirmed_by_local_features"] == 1 and doc["checked_by_local_features"] >= 1
    assert doc["candidates_left_unchecked"] == 0
    capped, said = groups("--verify-limit", "0")  # no candidate checked: the crop stays apart
    assert capped == [] and "left unchecked (--verify-limit 0 allowed" in said
    for ignored in (["--no-verify", "--verify-limit", "5"], ["--no-hash", "--hash-distance", "3"]):
        r = cli("duplicates", "--index", idx, *ignored)  # one would be silently ignored
        assert r.code == 2 and r.out == "" and "Traceback" not in r.err, r.err
        assert f"{ignored[1]} has no effect with {ignored[0]}" in r.err
        assert len(r.err.strip().splitlines()) == 1


def test_the_candidates_checked_are_the_most_similar_within_the_limit(monkeypatch):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    seen = {}

    def record(paths, rows, cols, progress=None):
        seen["pairs"] = list(zip(rows.tolist(), cols.tolist(), strict=True))
        return (np.zeros(len(rows), np.int32), np.zeros(len(rows), np.float32),
                np.zeros(len(rows), np.int32))  # fmt: skip

    monkeypatch.setattr(verify, "verify_pairs", record)
    links = (np.array([0]), np.array([1]))
    every = verify.check_links([Path("none")] * 40, x, None, *links, limit=10**6)
    cands = seen["pairs"][1:]
    assert every["unchecked"] == 0 and len(cands) > 12 and (0, 1) not in cands
    got = verify.check_links([Path("none")] * 40, x, None, *links, limit=12)
    sim = {(a, b): float(x[a] @ x[b]) for a, b in cands}
    want = sorted(cands, key=lambda p: -sim[p])[:12]
    assert seen["pairs"][0] == (0, 1) and set(seen["pairs"][1:]) == set(want)
    assert got["unchecked"] == len(cands) - 12 and got["checked"] == 13


def test_keypoints_overrule_the_embedding_on_two_halves_of_one_photograph(cli, tmp_path):
    from udml_cli.index import Index

    folder = tmp_path / "photos"
    folder.mkdir()
    left, right = halves(photo("LadyBird.jpg"))
    left.save(folder / "left.jpg", quality=95)
    right.save(folder / "right.jpg", quality=95)
    apply(left, "bright", "mild").save(folder / "left-bright.jpg", quality=95)
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())]
    x = np.ones((3, 4), np.float32) / 2  # the embedding calls all three the same picture
    Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16}, x,
          files).save(tmp_path / "idx")  # fmt: skip
    assert [f[0] for f in files] == ["left-bright.jpg", "left.jpg", "right.jpg"]
    r = cli("duplicates", "--index", tmp_path / "idx", "--json", "--no-verify")
    assert [g["paths"] for g in json.loads(r.out)["groups"]] == [[f[0] for f in files]]
    r = cli("duplicates", "--index", tmp_path / "idx", "--json")
    doc = json.loads(r.out)
    assert [g["paths"] for g in doc["groups"]] == [["left-bright.jpg", "left.jpg"]]
    assert doc["overruled_by_local_features"] == 2 and "2 overruled" in r.err
    textured = [verify.local_features(im)[0].texture for im in (left, right)]
    assert min(textured) >= verify.TEXTURED  # both have texture to disagree with


def test_a_smooth_rendering_cannot_overrule_its_own_copies(cli, tmp_path):
    """Equalised, a smooth rendering has hundreds of keypoints (banding, JPEG noise) that no
    copy repeats, and a rotation's corners add their own: counted as texture, they overruled
    true copies. Only SIFT's own keypoints in the picture's middle count."""
    import cv2

    from udml_cli.index import Index

    path = Path("/usr/share/backgrounds/focal-ubuntukylin.png")  # scripts/setup.sh: ukui-wallpapers
    assert path.is_file(), f"{path}: apt-get install ukui-wallpapers (scripts/setup.sh)"
    im = Image.open(path).convert("RGB")
    im.thumbnail((800, 800))
    left = halves(im)[0]
    turned = apply(left, "rotate", "mild")
    a, b = verify.local_features(left), verify.local_features(turned)
    assert min(a[0].plain, b[0].plain) >= verify.RICH  # what the old rule counted
    assert not verify.is_copy(*verify.verify(a, b))  # too little structure to confirm it
    for picture, f in ((left, a), (turned, b)):  # texture by hand: SIFT's defaults, the middle
        grey = picture.convert("L")
        grey.thumbnail((verify.SIDE, verify.SIDE))
        w, h = grey.size
        kp = cv2.SIFT_create(nfeatures=verify.FEATURES).detect(np.asarray(grey), None)
        inside = [k for k in kp if verify.INSET * w < k.pt[0] < (1 - verify.INSET) * w
                  and verify.INSET * h < k.pt[1] < (1 - verify.INSET) * h]  # fmt: skip
        assert f[0].texture == f[1].texture == len(inside) < verify.TEXTURED
    folder = tmp_path / "photos"
    folder.mkdir()
    left.save(folder / "a.jpg", quality=95)
    turned.save(folder / "b.jpg", quality=95)
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())]
    Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16},
          np.ones((2, 4), np.float32) / 2, files).save(tmp_path / "idx")  # fmt: skip
    doc = json.loads(cli("duplicates", "--index", tmp_path / "idx", "--json").out)
    assert [g["paths"] for g in doc["groups"]] == [["a.jpg", "b.jpg"]]
    assert doc["overruled_by_local_features"] == 0


def test_verify_without_opencv_says_what_to_install(cli, monkeypatch, tmp_path):
    from udml_cli.index import Index

    x = np.eye(3, dtype=np.float32)
    folder = tmp_path / "f"
    folder.mkdir()
    Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16}, x,
          [(f"{i}.png", 1, 1) for i in range(3)]).save(tmp_path / "idx")  # fmt: skip
    monkeypatch.setattr(verify, "available", lambda: False)
    r = cli("duplicates", "--index", tmp_path / "idx", "--verify")
    assert r.code != 0 and "pip install opencv-python-headless" in r.err
    assert len(r.err.strip().splitlines()) == 1
    r = cli("duplicates", "--index", tmp_path / "idx")
    assert r.code == 0 and "OpenCV is not installed" in r.err


def test_near_hashes_of_two_smooth_pictures_under_one_caption_are_not_a_copy(cli, tmp_path):
    """Two different smooth renderings under the same caption: their hashes agree (the white
    bar), their keypoints agree on the caption alone, the embedding calls them unlike. Too
    smooth for keypoints to overrule a link, but the embedding's doubt and no confirmation do."""
    from udml_cli.index import Index

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("city.png", "desert.png"):
        im = Image.open(Path("/usr/share/backgrounds") / name).convert("RGB")
        im.thumbnail((800, 800))
        apply(halves(im)[0], "caption", "strong").save(folder / f"{name[:-4]}.jpg", quality=95)
    files = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir())]
    a, b = (verify.path_features(folder / f[0]) for f in files)
    assert max(a[0].texture, b[0].texture) < verify.TEXTURED
    inliers, coverage = verify.verify(a, b)
    assert inliers >= verify.MIN_INLIERS and coverage == 0.0  # the caption's points alone

    def index(x, name):
        Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16}, x, files,
              hashes=np.zeros(2, np.uint64)).save(tmp_path / name)  # fmt: skip
        return tmp_path / name

    unlike = index(np.eye(2, 4, dtype=np.float32), "unlike")  # similarity 0, hashes equal
    doc = json.loads(cli("duplicates", "--index", unlike, "--json", "--no-verify").out)
    assert [g["paths"] for g in doc["groups"]] == [["city.jpg", "desert.jpg"]]
    doc = json.loads(cli("duplicates", "--index", unlike, "--json").out)
    assert doc["groups"] == [] and doc["overruled_by_local_features"] == 1
    alike = index(np.full((2, 4), 0.5, np.float32), "alike")  # the embedding agrees: it stands
    doc = json.loads(cli("duplicates", "--index", alike, "--json").out)
    assert [g["paths"] for g in doc["groups"]] == [["city.jpg", "desert.jpg"]]
