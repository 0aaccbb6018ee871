"""train.feature_cache: the cached rows are the frozen backbone on the seeded views, a run on
them equals the run that computes them every step, resumes bit-exactly, and refuses the settings
under which a cache would not be exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY, interrupted_and_resumed

CACHE = ["--set", "model.freeze_backbone=1.0", "--set", "loss.rot_weight=0.0",
         "--set", "train.feature_cache=3"]  # fmt: skip


def _trainer(layout, out, **train):
    from udml_cli.config import Config
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.training import Trainer

    cfg = Config.model_validate({
        "model": {"backbone": "tiny-test", "weights": "none", "dim": 16, "freeze_backbone": 1.0},
        "data": {"image_size": 16, "resize": 18},
        "cluster": {"num_clusters": 6}, "loss": {"rot_weight": 0.0, "rot_batch": 4},
        "train": {"batch_size": 8, "instances": 2, "epochs": 1, "feature_cache": 3} | train,
        "engine": {"workers": 0},
    })  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    return Trainer(cfg, resolve_dataset(str(layout)), out, resolve_engine(cfg.engine))


def test_cached_rows_are_the_backbone_on_each_seeded_view(layout, tmp_path):
    from udml_cli.data.feature_cache import view_seed

    trainer = _trainer(layout, tmp_path / "r")
    cache = trainer.feature_cache()
    model, aug = trainer.model.eval(), trainer.images.augmented
    n = len(trainer.images)
    assert cache.views.shape == (3 * n, 16) and cache.plain.shape == (n, 16)
    with torch.no_grad():
        for i, v in [(0, 0), (5, 2), (n - 1, 1)]:
            torch.manual_seed(view_seed(0, v, i))
            want = model.features(aug.transform(aug.image(i))[None])[0]
            torch.testing.assert_close(cache.rows([(i, v)])[0], want, atol=1e-5, rtol=1e-5)
        plain = torch.stack([trainer.images.plain[i][0] for i in range(n)])
        torch.testing.assert_close(torch.from_numpy(cache.plain), model.features(plain),
                                   atol=1e-5, rtol=1e-5)  # fmt: skip
    views = trainer.out / "feature_cache" / "views.npy"
    stamp = views.stat().st_mtime_ns
    again = _trainer(layout, tmp_path / "r").feature_cache()  # same key: read, not rebuilt
    assert views.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(np.asarray(again.views), np.asarray(cache.views))
    other = _trainer(layout, tmp_path / "r", seed=1).feature_cache()  # another seed: rebuilt
    assert not np.array_equal(np.asarray(other.views), np.asarray(cache.views))


def test_training_on_the_cache_equals_running_the_backbone(cli, layout, tmp_path):
    """With views that do not depend on the draw, the heads see the same features either way:
    the same losses and the same weights."""
    args = ["--dataset", layout, *TINY, "--epochs", "2", "--set", "model.freeze_backbone=1.0",
            "--set", "loss.rot_weight=0.0", "--set", "train.method=fixed-view-udml-ss"]  # fmt: skip
    assert cli("train", "--out", tmp_path / "a", *args).code == 0
    r = cli("train", "--out", tmp_path / "b", *args, "--set", "train.feature_cache=2")
    assert r.code == 0, r.err
    assert "feature cache: 2 views × 48 images" in r.err

    def losses(run):
        events = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        return [e["loss"] for e in events if e["event"] == "step"]

    np.testing.assert_allclose(losses(tmp_path / "b"), losses(tmp_path / "a"), rtol=1e-5)
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method, extra", [
    ("faulty-udml-ss", []),
    ("faulty-invariance", ["--set", "train.method=invariance", "--set", "invariance.views=3"]),
])  # fmt: skip
def test_cached_run_resumes_bit_exactly(cli, layout, tmp_path, monkeypatch, method, extra):
    args = [
        "--dataset",
        layout,
        *TINY,
        *CACHE,
        *extra,
        "--epochs",
        "3",
        "--set",
        "train.iters_per_epoch=3",
    ]
    interrupted_and_resumed(cli, args, method, "step:5:interrupt", tmp_path / "a",
                            tmp_path / "b", monkeypatch)  # fmt: skip


@pytest.mark.parametrize("sets, says", [
    (["model.freeze_backbone=0.5"], "needs model.freeze_backbone = 1"),
    (["model.dropout=true"], "needs model.dropout = false"),
    (["model.freeze_bn=false"], "needs model.freeze_bn = true"),
    (["loss.rot_weight=0.1"], "set loss.rot_weight = 0"),
    (["train.method=stml"], "train.method = stml does not train on cached features"),
    (["train.method=invariance", "invariance.views=4"], "must hold at least invariance.views"),
])  # fmt: skip
def test_settings_a_cache_cannot_serve_are_refused(cli, layout, tmp_path, sets, says):
    base = {"model.freeze_backbone": "1.0", "loss.rot_weight": "0.0", "train.feature_cache": "3"}
    base |= dict(s.split("=", 1) for s in sets)
    flags = [x for k, v in base.items() for x in ("--set", f"{k}={v}")]
    r = cli("train", "--dataset", layout, "--out", tmp_path / "r", *TINY, *flags)
    assert r.code == 2 and says in r.err and "Traceback" not in r.err, r.err
    assert not (tmp_path / "r").exists()
