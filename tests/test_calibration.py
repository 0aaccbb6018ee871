"""The duplicate threshold calibrated on the user's own images: the threshold rule against a
brute-force search and a hand-worked case, the named edits, the per-edit recall against a plain
loop that embeds every edited copy by itself, and the index/duplicates round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_image
from PIL import Image

from udml_cli.calibration import calibrate, choose_threshold
from udml_cli.data.named_edits import KINDS, STRENGTHS, apply, halves

TINY_MODEL = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "16"]


def _brute(pos, neg, precision):
    for t in sorted(set(pos) | set(neg)):
        r = np.mean(np.asarray(pos) >= t)
        f = np.mean(np.asarray(neg) >= t) if len(neg) else 0.0
        if r > 0 and r >= precision * (r + f):
            return t
    return None


def test_threshold_rule_by_hand_and_against_a_search():
    # at 0.8: recall 2/3, no negative above → precision 1; at 0.75 the negative joins (0.57)
    assert choose_threshold(np.float32([0.9, 0.8, 0.7]), np.float32([0.75, 0.5]), 0.99) == \
        pytest.approx(0.8)  # fmt: skip
    rng = np.random.default_rng(0)
    for trial in range(50):
        pos = rng.normal(0.8, 0.1, 40).astype(np.float32)
        neg = rng.normal(0.6, 0.1, 30).astype(np.float32)
        p = [0.9, 0.99, 0.5][trial % 3]
        want = _brute(pos.tolist(), neg.tolist(), p)
        got = choose_threshold(pos, neg, p)
        assert got == pytest.approx(want if want is not None else np.nextafter(neg.max(), 2))


def test_named_edits_are_deterministic_and_change_the_picture():
    rng = np.random.default_rng(1)
    im = Image.fromarray(rng.integers(0, 255, (60, 90, 3), dtype=np.uint8))
    for kind in KINDS:
        for s in STRENGTHS:
            a, b = np.asarray(apply(im, kind, s)), np.asarray(apply(im, kind, s))
            assert np.array_equal(a, b)
            assert a.shape != np.asarray(im).shape or not np.array_equal(a, np.asarray(im))
    left, right = halves(im)
    assert left.size == right.size == (45, 60)
    assert np.array_equal(np.hstack([np.asarray(left), np.asarray(right)]), np.asarray(im))


def _folder(root, n=14):
    rng = np.random.default_rng(2)
    for i in range(n):
        write_image(root / f"p{i:02d}.png", rng.integers(0, 255, 3), size=40, seed=i)
    return root


def test_recall_per_edit_matches_a_plain_loop(tmp_path):
    from udml_cli.api import load_model
    from udml_cli.data.transforms import eval_transform

    folder = _folder(tmp_path / "photos")
    paths = sorted(folder.iterdir())
    model, cfg = load_model(None, "tiny-test", "none", 16, "cpu")
    t = eval_transform(cfg.data)
    with torch.no_grad():
        embed = lambda im: model.eval().embed(t(im)[None])[0].numpy()  # noqa: E731
        vectors = np.stack([embed(Image.open(p).convert("RGB")) for p in paths])
        got = calibrate(model, cfg, vectors, paths, 0.99)
        # every image is in the sample (fewer than 30); the i-th gets each kind once, the j-th
        # kind mild when i + j is even, strong when odd
        sims = {k: [float(embed(apply(Image.open(p).convert("RGB"), k, STRENGTHS[(i + j) % 2]))
                          @ vectors[i]) for i, p in enumerate(paths)]
                for j, k in enumerate(KINDS)}  # fmt: skip
    assert got.sample == len(paths)
    for k in KINDS:
        assert got.recall[k] == pytest.approx(np.mean(np.array(sims[k]) >= got.threshold), abs=1e-4)
    every = np.array([s for v in sims.values() for s in v]).reshape(-1)
    assert got.threshold >= got.hardest_negative or got.false_match_rate > 0
    assert every.min() - 1e-6 <= got.threshold <= 1.0001


def test_index_stores_it_and_duplicates_uses_it_and_says_so(cli, tmp_path):
    folder = _folder(tmp_path / "photos")
    idx = tmp_path / "idx"
    r = cli("index", folder, "--out", idx, *TINY_MODEL)
    assert r.code == 0 and "calibrated on edited copies of 14 of these images" in r.err, r.err
    stored = json.loads((idx / "index.json").read_text())["duplicates"]
    assert stored["precision"] == 0.99 and set(stored["recall"]) == set(KINDS)
    r = cli("duplicates", "--index", idx, "--json")
    assert r.code == 0 and "calibrated on 14 of these images" in r.err
    assert json.loads(r.out)["threshold"] == pytest.approx(stored["threshold"])
    r = cli("duplicates", "--index", idx, "--threshold", "0.5", "--json")
    assert json.loads(r.out)["threshold"] == 0.5 and "using --threshold 0.5" in r.err
    r = cli("index", folder, "--out", idx, *TINY_MODEL)  # an update: the same calibration kept
    assert r.code == 0 and "kept from the last run" in r.err
    assert json.loads((idx / "index.json").read_text())["duplicates"] == stored
    r = cli("index", folder, "--out", idx, *TINY_MODEL, "--precision", "0.9")
    assert r.code == 0 and "for precision 0.9," in r.err and "kept from" not in r.err
    r = cli("index", folder, "--out", tmp_path / "plain", *TINY_MODEL, "--no-calibrate")
    assert r.code == 0 and "calibrated" not in r.err
    r = cli("duplicates", "--index", tmp_path / "plain")
    assert r.code == 0 and "the default threshold 0.95" in r.err


def test_a_damaged_calibration_is_one_line(cli, tmp_path):
    folder = _folder(tmp_path / "photos")
    idx = tmp_path / "idx"
    assert cli("index", folder, "--out", idx, *TINY_MODEL).code == 0
    meta = json.loads((idx / "index.json").read_text())
    meta["duplicates"]["threshold"] = "high"
    (idx / "index.json").write_text(json.dumps(meta))
    r = cli("duplicates", "--index", idx)
    assert r.code != 0 and "duplicates entry is malformed" in r.err and "Traceback" not in r.err


def test_nearest_other_against_a_loop():
    from udml_cli.calibration import nearest_other

    rng = np.random.default_rng(3)
    x = rng.normal(size=(60, 8)).astype(np.float32)
    x[7] = x[3]  # an exact duplicate: its nearest other is the twin (1.0), never itself
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    got = nearest_other(x, np.random.default_rng(0))
    want = [max(float(x[i] @ x[j]) for j in range(60) if j != i) for i in range(60)]
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert len(nearest_other(x, np.random.default_rng(0), most=10)) == 10


def test_weighted_threshold_rule_against_a_search():
    # false-match rate = weight of the look-alikes at least t similar, per image
    rng = np.random.default_rng(4)
    for trial in range(40):
        pos = rng.normal(0.8, 0.1, 30).astype(np.float32)
        neg = rng.normal(0.65, 0.12, 25).astype(np.float32)
        w = rng.choice([1.0, 2.5], 25)
        images = 20 + trial
        p = [0.9, 0.99][trial % 2]
        want = None
        for t in sorted(set(pos.tolist()) | set(neg.tolist())):
            r = np.mean(pos >= t)
            f = w[neg >= t].sum() / images
            if r > 0 and r >= p * (r + f):
                want = t
                break
        got = choose_threshold(pos, neg, p, w, images)
        assert got == pytest.approx(want if want is not None else np.nextafter(neg.max(), 2))
    # unweighted, it is the rule above
    assert choose_threshold(pos, neg, 0.9) == choose_threshold(pos, neg, 0.9, np.ones(25), 25)


def test_look_alikes_as_close_as_copies_are_judged_by_local_features(monkeypatch):
    """``negatives`` against a plain loop over each image's neighbours, with local features
    replaced by a table of which pairs are copies (same family) and which pictures are textured."""
    from udml_cli import calibration, verify

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(12, 16))
    family = np.repeat(np.arange(12), 4)  # 12 pictures, each with 3 copies
    x = centres[family] + 0.15 * rng.normal(size=(48, 16))
    x[4:8] = x[0:4] + 0.05 * rng.normal(size=(4, 16))  # family 1: a look-alike of family 0
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    textured = np.arange(48) % 4 != 3  # each family's last image is smooth
    paths = [Path(str(i)) for i in range(48)]

    def pairs(p, rows, cols, progress=None, what=""):
        rows, cols = np.asarray(rows), np.asarray(cols)
        copy = family[rows] == family[cols]
        tex = np.where(textured[rows] & textured[cols], verify.TEXTURED, 0)
        return np.where(copy, 50, 0), np.where(copy, 0.9, 0.0), tex

    monkeypatch.setattr(verify, "verify_pairs", pairs)
    floor = 0.9
    got = calibration.negatives(x, paths, floor, np.random.default_rng(0))
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    cheap, close = [], []
    for i in range(48):
        (cheap if sim[i].max() < floor else close).append(i)
    want = [sim[i].max() for i in cheap]
    for i in close:  # every close image is walked (fewer than walk_size)
        order = np.argsort(-sim[i], kind="stable")[: verify.NEIGHBOURS]
        for j in order:
            if sim[i, j] >= floor:
                if family[i] != family[j] and textured[i] and textured[j]:
                    want.append(sim[i, j])
            else:
                want.append(sim[i, j])
                break
    assert got.images == 48 and len(close) > 0
    assert sorted(got.sims.tolist()) == pytest.approx(sorted(want), abs=1e-5)
    assert got.judged == sum(1 for s in want if s >= floor) > 0
    assert np.all(got.weights == 1)  # all walked: nothing to stand for
    # without local features, the close ones are left out (the rule before)
    plain = calibration.negatives(x, paths, floor, np.random.default_rng(0), judge=False)
    assert plain.images == len(cheap) and sorted(plain.sims.tolist()) == pytest.approx(
        sorted(sim[i].max() for i in cheap), abs=1e-5
    )


def test_a_calibration_stored_before_judged_look_alikes_still_loads():
    from udml_cli.calibration import Calibration

    old = {"threshold": 0.92, "precision": 0.99, "sample": 30, "recall": {"crop": 0.5},
           "false_match_rate": 0.01, "hardest_negative": 0.9, "negatives": 200}  # fmt: skip
    c = Calibration.from_dict(old)
    assert c is not None and c.judged == 0 and "told apart" not in c.summary()


def test_walk_prefix_by_hand():
    from udml_cli.calibration import walk_prefix

    # rows 0, 1, 2 in walking order; neighbours (itself first) with similarities
    found = np.array([[0, 5, 6, 7], [1, 5, 8, 9], [2, 10, 11, 12]])
    sim = np.array([[1, 0.95, 0.93, 0.5], [1, 0.97, 0.92, 0.4], [1, 0.99, 0.98, 0.97]])
    rows = np.array([0, 1, 2])
    # pictures: row 0 brings {0, 5, 6}; row 1 adds {1, 8} (5 seen): 5; row 2 adds 4: 9
    assert walk_prefix(rows, sim, found, 0.9, 9) == 3
    assert walk_prefix(rows, sim, found, 0.9, 8) == 2
    assert walk_prefix(rows, sim, found, 0.9, 5) == 2
    assert walk_prefix(rows, sim, found, 0.9, 4) == 1
    assert walk_prefix(rows, sim, found, 0.9, 1) == 1  # the first always walks
    # at 0.96 row 0 brings {0}, row 1 {1, 5}, row 2 {2, 10, 11, 12}: 7 pictures in all
    assert walk_prefix(rows, sim, found, 0.96, 7) == 3
    assert walk_prefix(rows, sim, found, 0.96, 6) == 2


def test_the_walk_keeps_to_its_picture_budget(monkeypatch):
    """With a budget of pictures smaller than the close images' neighbourhoods, the walk stops
    within it; what it found is what a plain loop over the images it walked finds, weighted for
    the close images it did not walk."""
    from udml_cli import calibration, verify

    rng = np.random.default_rng(6)
    family = np.repeat(np.arange(30), 4)
    x = rng.normal(size=(30, 16))[family] + 0.1 * rng.normal(size=(120, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    seen = {}

    def pairs(p, rows, cols, progress=None, what=""):
        rows, cols = np.asarray(rows), np.asarray(cols)
        seen["rows"], seen["pictures"] = set(rows.tolist()), set(rows.tolist()) | set(cols.tolist())
        copy = (family[rows] == family[cols]) | (rows % 7 == 0)  # some look-alikes, judged not
        return np.where(copy, 50, 0), np.where(copy, 0.9, 0.0), np.full(len(rows), 99)

    monkeypatch.setattr(verify, "verify_pairs", pairs)
    monkeypatch.setattr(calibration, "walk_pictures", lambda n: 20)
    floor = 0.9
    got = calibration.negatives(x, [Path(str(i)) for i in range(120)], floor,
                                np.random.default_rng(0))  # fmt: skip
    sim = x @ x.T
    np.fill_diagonal(sim, -np.inf)
    close = [i for i in range(120) if sim[i].max() >= floor]
    walked = sorted(seen["rows"])
    assert len(close) > 20 and 0 < len(walked) < len(close)
    assert len(seen["pictures"]) <= 20
    want = []
    for i in walked:
        for j in np.argsort(-sim[i], kind="stable")[: verify.NEIGHBOURS]:
            if sim[i, j] < floor:
                want.append(sim[i, j])
                break
            if family[i] != family[j] and i % 7:
                want.append(sim[i, j])
    far = [sim[i].max() for i in range(120) if sim[i].max() < floor]
    assert sorted(got.sims.tolist()) == pytest.approx(sorted(far + want), abs=1e-5)
    assert np.allclose(got.weights[len(far) :], len(close) / len(walked))
