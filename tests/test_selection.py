"""Label-free model selection: the scores by hand, logged per evaluation, ranked by eval."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import TINY

from udml_cli.selection import copy_scores, sample_rows


def test_copy_scores_by_hand():
    x = np.eye(4, dtype=np.float32)  # four originals, orthogonal
    y = np.array([[1, 0, 0, 0],  # copy 0: its own original first
                  [0, 0.6, 0.8, 0],  # copy 1: original 2 first, its own second
                  [0, 0, 1, 0],
                  [0.8, 0, 0, 0.6]], dtype=np.float32)  # copy 3: own second  # fmt: skip
    s = copy_scores(x, y, knn=1)
    assert s["copy_r1"] == pytest.approx(0.5)
    assert s["copy_mrr"] == pytest.approx((1 + 0.5 + 1 + 0.5) / 4)
    # 1-NN of each original among the others: all ties at 0 → the lowest other index (0→1,
    # 1→0, 2→0, 3→0); of each copy (own row excluded): 0→1 (ties), 1→2, 2→0, 3→0
    assert s["knn_overlap"] == pytest.approx(3 / 4)
    assert s["score"] == pytest.approx(np.mean([0.5, 0.75, 0.75]))


def test_several_copies_of_each_image_count_each_copy_once():
    """Copies stacked copy by copy score as the mean over each copy set alone (every score is
    a mean over copies), checked against the one-copy scores, which are checked by hand above."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sets = []
    for noise in (0.3, 0.8, 1.5):
        y = x + noise * rng.normal(size=x.shape)
        sets.append(y / np.linalg.norm(y, axis=1, keepdims=True))
    alone = [copy_scores(x, y) for y in sets]
    together = copy_scores(x, np.concatenate(sets))
    for key in ("copy_r1", "copy_mrr", "knn_overlap", "score"):
        assert together[key] == pytest.approx(np.mean([a[key] for a in alone]))
    assert alone[0]["copy_r1"] > alone[2]["copy_r1"]  # the noisier copies do find less
    with pytest.raises(ValueError, match="whole number"):
        copy_scores(x, sets[0][:-1])


def test_the_sample_is_fixed_and_bounded():
    assert sample_rows(5, 10, 0).tolist() == [0, 1, 2, 3, 4]
    a, b = sample_rows(1000, 50, 3), sample_rows(1000, 50, 3)
    assert np.array_equal(a, b) and len(set(a.tolist())) == 50 and np.all(np.diff(a) > 0)


def test_training_logs_label_free_scores_and_eval_ranks_checkpoints(cli, layout, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "2",
            "--set", "train.eval_step=1", "--set", "train.save_step=1")  # fmt: skip
    assert r.code == 0, r.err
    assert "label-free score" in r.err
    evals = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [e for e in evals if e["event"] == "eval"]
    assert len(evals) == 3  # start, epoch 1, end
    for e in evals:
        lf = e["label_free"]
        assert 0 <= lf["copy_r1"] <= 1 and lf["images"] > 10
        assert lf["score"] == pytest.approx(
            (lf["copy_r1"] + lf["copy_mrr"] + lf["knn_overlap"]) / 3
        )
    r = cli("eval", out, "--label-free", "--json")
    assert r.code == 0, r.err
    ranked = json.loads(r.out)
    scores = [c["score"] for c in ranked["checkpoints"]]
    assert ranked["best_label_free"] == ranked["checkpoints"][int(np.argmax(scores))]["model"]
    # the last checkpoint scored again gives what training logged at the end (same copies)
    last = next(c for c in ranked["checkpoints"] if c["model"].endswith("epoch_0002.pt"))
    assert last["score"] == pytest.approx(evals[-1]["label_free"]["score"], abs=1e-6)
    for flags in (["--each-layer"], ["--label-free", "--each-layer"]):  # not for a run folder
        r = cli("eval", out, *flags)
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert ("goes with --label-free" if len(flags) == 1 else "not a checkpoint") in r.err


def test_label_free_needs_no_labels(cli, tmp_path):
    from conftest import write_image

    folder = tmp_path / "photos"
    for i in range(12):
        write_image(folder / f"p{i:02d}.png", (20 * i, 255 - 20 * i, 90), seed=i)
    r = cli("eval", "--backbone", "tiny-test", "--weights", "none", "--dataset", folder,
            "--image-size", "16", "--label-free", "--json")  # fmt: skip
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["images"] == 12 and result["split"] == "train" and 0 <= result["score"] <= 1


def test_each_layer_ranks_the_stages_and_its_last_row_is_the_plain_score(cli, tmp_path):
    from conftest import write_image

    folder = tmp_path / "photos"
    for i in range(10):
        write_image(folder / f"p{i:02d}.png", (25 * i, 250 - 25 * i, 60 + 10 * i), seed=i)
    common = ["--backbone", "efficientnet_lite0", "--weights", "imagenet", "--dataset", folder,
              "--image-size", "32", "--label-free", "--json"]  # fmt: skip
    r = cli("eval", *common, "--each-layer", "--set", "model.auto_images=10")  # one copy each
    assert r.code == 0, r.err
    rows = json.loads(r.out)["layers"]
    assert {row["layer"] for row in rows} == {*(f"block{i}" for i in range(16)), "last"}
    scores = [row["score"] for row in rows]
    assert scores == sorted(scores, reverse=True)
    r = cli("eval", *common)  # the final feature alone, through the plain path
    assert r.code == 0, r.err
    plain = json.loads(r.out)
    last = next(row for row in rows if row["layer"] == "last")
    for key in ("copy_r1", "copy_mrr", "knn_overlap", "score"):
        assert last[key] == pytest.approx(plain[key], abs=1e-6)
    r = cli("eval", *common[:-2], "--each-layer")
    assert r.code == 2 and "--each-layer goes with --label-free" in r.err


def test_train_picks_the_layer_by_the_label_free_score(cli, layout, tmp_path):
    """layers = auto: the stage --each-layer ranks first on the training images becomes the
    run's (written in its config: eval and resume rebuild it); dim = auto follows it."""
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1",
            "--set", 'model.layers=["auto"]', "--set", "model.dim=auto",
            "--set", "model.head_init=identity", "--set", "model.auto_images=7")  # fmt: skip
    assert r.code == 0, r.err
    assert "model.layers = auto → " in r.err and "on 7 training images" in r.err, r.err
    chosen = r.err.split("model.layers = auto → ")[1].split(" ")[0]
    import tomllib

    cfg = tomllib.loads((out / "config.toml").read_text())
    assert cfg["model"]["layers"] == [chosen] and cfg["model"]["dim"] == "auto"
    r = cli("eval", out / "last.pt", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["dim"] == {"conv1": 8, "conv2": 16, "last": 16}[chosen]
    r = cli("train", "--out", out, "--resume", "--epochs", "2", "--set", 'model.layers=["auto"]')
    assert r.code == 0 and "model.layers = auto" not in r.err, r.err  # the stage it chose
    r = cli("eval", "--backbone", "tiny-test", "--weights", "none", "--dataset", layout,
            "--set", 'model.layers=["auto"]')  # fmt: skip
    assert r.code == 2 and "chosen by udml train" in r.err
    # settings the data makes impossible fail in one line before the pick spends any time
    r = cli("train", "--dataset", layout, "--out", tmp_path / "small", *TINY, "--epochs", "1",
            "--set", 'model.layers=["auto"]', "--set", "train.method=invariance",
            "--set", "train.batch_size=5000")  # fmt: skip
    assert r.code == 2 and "exceeds the" in r.err and "model.layers = auto" not in r.err, r.err
    assert r.err.count("error:") == 1 and "label-free score" not in r.err, r.err
    assert not (tmp_path / "small").exists()


def test_each_layer_and_the_pick_score_model_auto_images_not_eval_label_free(cli, tmp_path):
    """The stage pick has its own sample size: model.auto_images images (and their copies),
    whatever eval.label_free (the sample of every evaluation) says, even 0 (evaluations off)."""
    from conftest import write_image

    folder = tmp_path / "photos"
    for i in range(12):
        write_image(folder / f"p{i:02d}.png", (20 * i, 255 - 20 * i, 90), seed=i)
    common = ["--backbone", "tiny-test", "--weights", "none", "--dataset", folder,
              "--image-size", "16", "--label-free", "--each-layer", "--json"]  # fmt: skip
    for count, seen in ((5, 5), (7, 7), (50, 12)):
        r = cli("eval", *common, "--set", f"model.auto_images={count}",
                "--set", "eval.label_free=0")  # fmt: skip
        assert r.code == 0, r.err
        rows = json.loads(r.out)["layers"]
        assert {row["layer"] for row in rows} == {"conv1", "conv2", "last"}
        assert all(row["images"] == seen for row in rows)
        # a set smaller than the sample: copies of each image make up the count, 8 at most
        assert all(row["copies"] == min(8, count // seen) for row in rows)
    r = cli("eval", *common, "--set", "model.auto_images=1")
    assert r.code == 2 and "model.auto_images" in r.err and r.err.count("\n") == 1, r.err
