"""udml train / eval / cluster end to end on tiny synthetic images with the tiny backbone."""

import json
import pickle

import pytest
import torch
from conftest import TINY, interrupted_and_resumed


def _train(cli, layout, out, *extra):
    return cli("train", "--dataset", layout, "--out", out, *TINY, *extra)


def test_train_writes_run_and_eval_reads_it(cli, layout, tmp_path):
    out = tmp_path / "run"
    r = _train(cli, layout, out, "--epochs", "4", "--set", "train.eval_step=2")
    assert r.code == 0, r.err
    names = {p.name for p in out.iterdir()}
    assert {"config.toml", "metrics.jsonl", "last.pt", "epoch_0002.pt", "epoch_0004.pt"} <= names
    # epoch files hold what eval/embed need, last.pt the full state to resume from
    slim = torch.load(out / "epoch_0004.pt", weights_only=True)
    full = torch.load(out / "last.pt", weights_only=True)
    assert "optimizer" not in slim and "pseudo_labels" not in slim and "optimizer" in full
    for key in full["model"]:
        torch.testing.assert_close(slim["model"][key], full["model"][key], rtol=0, atol=0)
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("cluster") == 2  # initial + re-clustering at epoch 2
    # the start (step 0), every eval_step epochs, and the end
    assert [(e["at"], e["epoch"]) for e in events if e["event"] == "eval"] == [
        ("start", 0),
        ("epoch", 2),
        ("end", 4),
    ] and "step" in kinds
    # the closing summary: where, how long, the loss, the scores against the start in percent
    end = next(e for e in events if e.get("at") == "end")
    start = next(e for e in events if e.get("at") == "start")
    change = 100 * (end["recall_at"]["1"] - start["recall_at"]["1"])
    assert "done: " in r.err and "after 4 epochs, 4 steps" in r.err and "start vs end" in r.err
    assert f"{change:+.2f}" in r.err
    steps = [e["step"] for e in events if e["event"] == "step"]
    per_epoch = 1  # 6 clusters x 2 instances // batch 8 (the official epoch), logged every step
    assert steps == list(range(1, 4 * per_epoch + 1))  # every step once, none lost or repeated
    r = cli("eval", out / "last.pt", "--json")
    assert r.code == 0, r.err
    result = json.loads(r.out)
    assert result["dataset"] == "syn" and result["split"] == "test" and result["num_classes"] == 4
    assert set(result["recall_at"]) == {"1", "2", "4", "8", "16", "32"}
    # the start is kept: epoch_0000.pt scores what training measured before its first step
    kept = json.loads(cli("eval", out / "epoch_0000.pt", "--json").out)
    assert kept["recall_at"] == pytest.approx(start["recall_at"], abs=1e-9)
    assert kept["nmi"] == pytest.approx(start["nmi"], abs=1e-9)
    r = cli("cluster", "--checkpoint", out / "last.pt", "--k", "4", "--split", "test", "--json",
            "--write-labels", tmp_path / "pseudo.txt")  # fmt: skip
    assert r.code == 0, r.err
    diag = json.loads(r.out)
    assert sum(diag["sizes"]) == 32 and {"nmi", "ari", "purity"} <= set(diag)
    lines = (tmp_path / "pseudo.txt").read_text().splitlines()
    assert len(lines) == 32 and lines[0].startswith("test/c06/0.png ")


def test_resume_gives_identical_weights(cli, layout, tmp_path):
    straight, split = tmp_path / "a", tmp_path / "b"
    assert _train(cli, layout, straight, "--epochs", "4").code == 0
    assert _train(cli, layout, split, "--epochs", "2").code == 0
    r = cli("train", "--out", split, "--resume", "--epochs", "4")
    assert r.code == 0, r.err
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 4
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    torch.testing.assert_close(a["pseudo_labels"], b["pseudo_labels"], rtol=0, atol=0)


def test_existing_run_needs_resume_or_yes(cli, layout, tmp_path):
    out = tmp_path / "run"
    assert _train(cli, layout, out, "--epochs", "1").code == 0
    r = _train(cli, layout, out, "--epochs", "1")
    assert r.code == 2 and "--resume" in r.err
    assert _train(cli, layout, out, "--epochs", "1", "--yes").code == 0


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--set", "cluster.num_clusters=0"], "cluster.num_clusters"),
        (["--set", "cluster.num_clusters=500"], "exceeds the 48 training images"),
        (["--set", "train.batch_size=9"], "multiple of train.instances"),
        (["--set", "train.batch_size=16"], "needs at least 8 clusters"),
    ],
)
def test_bad_settings_fail_before_work(cli, layout, tmp_path, extra, needle):
    out = tmp_path / "run"
    r = _train(cli, layout, out, "--epochs", "1", *extra)
    assert r.code == 2, r.err
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], r.err
    assert not (out / "last.pt").exists() and "Traceback" not in r.err


def test_unregistered_dataset(cli, tmp_path):
    r = cli("train", "--dataset", "nosuch", "--out", tmp_path / "r", *TINY)
    assert r.code == 1 and "unknown dataset 'nosuch'" in r.err


class _Evil:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_bad_checkpoints_are_one_line(cli, layout, tmp_path):
    out = tmp_path / "run"
    assert _train(cli, layout, out, "--epochs", "1").code == 0
    good = (out / "last.pt").read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good[: len(good) // 2])
    text = tmp_path / "notes.pt"
    text.write_text("this is not a checkpoint\n")
    evil = tmp_path / "evil.pt"
    marker = tmp_path / "pwned"
    torch.save({"format": "udml-checkpoint", "x": _Evil(str(marker))}, evil)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"a": 1}))
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    for path, needle in [
        (foreign, "not a udml checkpoint"),
        (truncated, "unreadable or truncated"),
        (text, "not a checkpoint"),
        (evil, "refused"),
        (plain, "not a checkpoint"),
        (tmp_path / "missing.pt", "not found"),
    ]:
        r = cli("eval", path, "--dataset", layout)
        assert r.code != 0, path
        errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
        assert len(errors) == 1 and needle in errors[0], (path, r.err)
        assert "Traceback" not in r.err
    assert not marker.exists()


def test_ctrl_c_mid_epoch_saves_and_resume_matches(cli, layout, tmp_path, monkeypatch):
    args = ["--dataset", layout, *TINY, "--epochs", "3", "--set", "train.iters_per_epoch=3"]
    interrupted_and_resumed(cli, args, "faulty-udml-ss", "step:5:interrupt", tmp_path / "a",
                            tmp_path / "b", monkeypatch, at=(1, 1))  # epoch 2, second batch  # fmt: skip


def test_nan_loss_stops_and_keeps_last_good_checkpoint(cli, layout, tmp_path, monkeypatch):
    out = tmp_path / "run"
    r = _train(cli, layout, out, "--epochs", "2", "--set", "train.method=faulty-udml-ss")
    assert r.code == 0, r.err
    before = (out / "last.pt").read_bytes()
    monkeypatch.setenv("UDML_TEST_FAULT", "step:1:nan")
    r = cli("train", "--out", out, "--resume", "--epochs", "4")
    assert r.code == 3
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert (
        len(errors) == 1 and "loss became nan" in errors[0] and "epoch 3, step 3;" in errors[0]
    ), errors
    assert (out / "last.pt").read_bytes() == before


def test_freeze_backbone_keeps_the_early_layers_fixed(cli, layout, tmp_path):
    from udml_cli.config import ModelConfig
    from udml_cli.engine import seed_everything
    from udml_cli.models.net import build_model

    seed_everything(0)  # as the trainer does before it builds the model: the same random start
    start = build_model(ModelConfig(backbone="tiny-test", weights="none", dim=512))
    names = [n for n, _ in start.backbone.named_parameters()]
    out = tmp_path / "run"
    r = _train(cli, layout, out, "--epochs", "2", "--set", "model.freeze_backbone=0.5")
    assert r.code == 0, r.err
    trained = torch.load(out / "last.pt", weights_only=True)["model"]
    frozen = round(0.5 * len(names))
    assert 0 < frozen < len(names)
    moved = [
        not torch.equal(trained[f"backbone.{n}"], start.backbone.state_dict()[n]) for n in names
    ]
    assert moved[:frozen] == [False] * frozen  # the input side did not move
    assert all(moved[frozen:])  # the rest trained


def test_epoch_summaries_and_no_repeated_steps_after_an_older_checkpoint(cli, layout, tmp_path):
    out = tmp_path / "run"
    extra = ["--epochs", "3", "--set", "train.save_step=1", "--set", "train.iters_per_epoch=2",
             "--set", "train.full_epoch_checkpoints=true"]  # fmt: skip
    assert _train(cli, layout, out, *extra).code == 0
    good = (out / "last.pt").read_bytes()
    (out / "last.pt").write_bytes(good[:100])  # damaged: resume falls back to epoch_0003.pt
    (out / "epoch_0003.pt").unlink()  # … to epoch_0002.pt, whose step 4 the log has passed
    r = cli("train", "--out", out, "--resume", "--yes")
    assert r.code == 0, r.err
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [e["step"] for e in events if e["event"] == "step"]
    assert steps == list(range(1, 7))  # each step once, the redone epoch's records replaced
    summaries = [e for e in events if e["event"] == "epoch_summary"]
    assert [e["completed"] for e in summaries] == [1, 2, 3]
    assert all(e["steps"] == 2 and not e["partial"] and e["mean_loss"] > 0 for e in summaries)


def test_steps_are_logged_every_log_every_and_at_the_last(cli, layout, tmp_path):
    """A run of 6 steps logged every 4 has records at steps 4 and 6: however short a run, its
    report has a loss to draw."""
    out = tmp_path / "run"
    extra = ["--epochs", "2", "--set", "train.iters_per_epoch=3", "--set", "train.log_every=4"]
    assert _train(cli, layout, out, *extra).code == 0
    events = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "step"] == [4, 6]


def test_image_size_with_a_checkpoint_is_applied_and_said(cli, layout, tmp_path):
    out = tmp_path / "run"
    assert _train(cli, layout, out, "--epochs", "1").code == 0
    r = cli("eval", out / "last.pt", "--image-size", "24", "--json")
    assert r.code == 0 and "images at 24 px as asked" in r.err and "trained at 16 px" in r.err
    import numpy as np

    images = layout / "test" / "c06"
    ckpt = ["--checkpoint", out / "last.pt"]
    assert cli("embed", images, *ckpt, "-o", tmp_path / "a.npy").code == 0
    assert cli("embed", images, *ckpt, "--image-size", "24", "-o", tmp_path / "b.npy").code == 0
    assert not np.allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


def test_tensorboard_logs_scalars_and_the_projector(cli, layout, tmp_path):
    """train.log = ["jsonl", "tensorboard"]: event files TensorBoard's own reader loads, with the
    loss, learning-rate, re-clustering and evaluation tags, and the projector's files."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "2",
            "--set", 'train.log=["jsonl", "tensorboard"]', "--set", "train.eval_step=1")  # fmt: skip
    assert r.code == 0, r.err
    acc = EventAccumulator(str(run / "tensorboard"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "train/weight_loss", "train/rot_loss", "train/images_per_s",
            "lr/backbone", "lr/head", "cluster/nmi", "eval/R@1", "eval/nmi",
            "epoch/mean_loss"} <= tags, tags  # fmt: skip
    events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    logged = acc.Scalars("train/loss")
    assert [s.step for s in logged] == [e["step"] for e in steps]
    assert [s.value for s in logged] == pytest.approx([e["loss"] for e in steps], rel=1e-6)
    r1 = [100 * e["recall_at"]["1"] for e in events if e["event"] == "eval"]
    assert [s.value for s in acc.Scalars("eval/R@1")] == pytest.approx(r1, rel=1e-6)
    config = (run / "tensorboard" / "projector_config.pbtxt").read_text()
    assert config.count("embeddings {") == len(r1)  # one projector view per evaluation
    assert "sprite" in config and "metadata_path" in config


def test_tensorboard_asked_for_but_missing_or_without_jsonl(cli, layout, tmp_path, monkeypatch):
    import udml_cli.board as board

    monkeypatch.setattr(board, "available", lambda: False)
    r = cli("train", "--dataset", layout, "--out", tmp_path / "r", *TINY,
            "--set", 'train.log=["jsonl", "tensorboard"]')  # fmt: skip
    assert r.code == 2 and "pip install tensorboard" in r.err and "Traceback" not in r.err
    r = cli("train", "--dataset", layout, "--out", tmp_path / "r", *TINY,
            "--set", 'train.log=["tensorboard"]')  # fmt: skip
    assert r.code == 2 and 'always holds "jsonl"' in r.err


def test_whiten_head_starts_from_the_training_images(cli, layout, tmp_path):
    # lr ~0: the checkpoint keeps the start, the training features' PCA-whitening: orthogonal
    # rows, each scaled by 1/sqrt(its variance + shrinkage), the widest direction first
    out = tmp_path / "run"
    r = _train(cli, layout, out, "--epochs", "1", "--set", "model.head_init=whiten",
               "--set", "model.dim=4", "--set", "train.lr=1e-12", "--set", "train.head_lr=1e-12",
               "--set", "train.rot_lr=1e-12")  # fmt: skip
    assert r.code == 0, r.err
    w = torch.load(out / "last.pt", weights_only=True)["model"]["head.fc.weight"].double()
    gram = w @ w.T
    off = gram - torch.diag(torch.diagonal(gram))
    assert off.abs().max() < 1e-4 * gram.diagonal().max()
    assert (gram.diagonal().diff() > 0).all()  # 1/(λ + s·mean λ), λ falling
    r = cli("train", "--dataset", layout, "--out", tmp_path / "stml", *TINY,
            "--set", "train.method=stml", "--set", "stml.neighbors=4",
            "--set", "model.head_init=whiten")  # fmt: skip
    assert r.code != 0 and "model.head_init = whiten is for udml-ss and invariance" in r.err
    assert "Traceback" not in r.err
