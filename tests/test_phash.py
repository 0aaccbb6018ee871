"""Perceptual hashes beside the embedding: the hash against ImageHash's, the pairs against a
plain loop, stored in the index (checked like its other files) and joined by udml duplicates."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from udml_cli.index import Index
from udml_cli.phash import hash_pairs, phash

MODEL = {"backbone": "tiny-test", "weights": "none", "image_size": 16}


def test_phash_is_imagehash_phash():
    imagehash = pytest.importorskip("imagehash")
    rng = np.random.default_rng(0)
    for i in range(20):
        a = rng.integers(0, 255, (40 + i, 60, 3), dtype=np.uint8)
        a[: 10 + i] //= 3  # some structure, not only noise
        im = Image.fromarray(a)
        want = int(str(imagehash.phash(im)), 16)
        assert phash(im) == want


def test_hash_pairs_against_a_loop():
    rng = np.random.default_rng(1)
    h = rng.integers(0, 2**63, 80, dtype=np.uint64)
    h[10] = h[3] ^ np.uint64(0b1011)  # 3 bits apart
    h[20] = h[3]  # identical
    for d in (0, 3, 25):
        r, c = hash_pairs(h, d)
        want = {(i, j) for i in range(80) for j in range(i + 1, 80)
                if bin(int(h[i]) ^ int(h[j])).count("1") <= d}  # fmt: skip
        assert set(zip(r.tolist(), c.tolist(), strict=True)) == want


def _index(tmp_path, hashes):
    folder = tmp_path / "photos"
    folder.mkdir()
    files = []
    for i in range(4):
        Image.new("RGB", (20, 20), (60 * i, 0, 0)).save(folder / f"{i}.png")
        files.append((f"{i}.png", 1, 1))
    x = np.eye(4, 8, dtype=np.float32)  # no two images alike to the embedding
    Index(folder, MODEL, x, files, hashes=hashes).save(tmp_path / "idx")
    return tmp_path / "idx"


def test_duplicates_join_the_pairs_hashes_find(cli, tmp_path):
    # without local features (which would undo these: flat squares they cannot confirm, that the
    # embedding calls unlike; tests/test_verify.py)
    idx = _index(tmp_path, np.array([5, 5 ^ 0b111, 2**64 - 1, 7], np.uint64))
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--json", "--no-verify")
    assert r.code == 0 and "perceptual hashes at most 6 bits apart" in r.err, r.err
    out = json.loads(r.out)
    assert [g["paths"] for g in out["groups"]] == [["0.png", "1.png", "3.png"]]
    assert {(p["a"], p["b"]): p["similarity"] for p in out["groups"][0]["pairs"]} == {
        ("0.png", "1.png"): 0.0, ("0.png", "3.png"): 0.0, ("1.png", "3.png"): 0.0}  # fmt: skip
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--hash-distance", "1", "--json",
            "--no-verify")  # fmt: skip
    assert [g["paths"] for g in json.loads(r.out)["groups"]] == [["0.png", "3.png"]]
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--no-hash", "--json",
            "--no-verify")  # fmt: skip
    assert json.loads(r.out)["groups"] == [] and "the embedding alone" in r.err


def test_hashes_are_checked_and_optional(cli, tmp_path):
    idx = _index(tmp_path, None)
    r = cli("duplicates", "--index", idx, "--hash-distance", "3")
    assert r.code == 2 and "holds no perceptual hashes" in r.err
    folder = tmp_path / "photos"
    r = cli("index", folder, "--out", tmp_path / "made", "--backbone", "tiny-test",
            "--weights", "none", "--image-size", "16", "--no-calibrate")  # fmt: skip
    assert r.code == 0, r.err
    made = Index.load(tmp_path / "made")
    want = [phash(Image.open(folder / p).convert("RGB")) for p in made.paths]
    assert made.hashes.tolist() == want
    meta = json.loads((tmp_path / "made" / "index.json").read_text())
    stored = tmp_path / "made" / meta["generation"] / "hashes.npy"
    np.save(stored, np.zeros(4, np.uint64))  # changed behind the index's back
    r = cli("duplicates", "--index", tmp_path / "made")
    assert r.code != 0 and "does not match its checksum" in r.err
    r = cli("index", folder, "--out", tmp_path / "plain", "--backbone", "tiny-test",
            "--weights", "none", "--image-size", "16", "--no-calibrate", "--no-hashes")  # fmt: skip
    assert r.code == 0 and Index.load(tmp_path / "plain").hashes is None
