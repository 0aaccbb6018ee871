"""The Python API under the CLI: the same results, no terminal needed."""

import json
import subprocess
import sys

import numpy as np
import pytest

import udml_cli as udml
from udml_cli.errors import ConfigError, UsageError

TINY = {
    "model": {"backbone": "tiny-test", "weights": "none", "dim": 16},
    "data": {"image_size": 16, "resize": 18},
    "cluster": {"num_clusters": 6},
    "train": {"batch_size": 8, "instances": 2, "epochs": 2, "up_step": 1},
    "loss": {"rot_batch": 4},
    "engine": {"workers": 0},
}


def test_settings_layers_and_validates():
    cfg = udml.settings("demo", train={"epochs": 3})
    assert cfg.train.epochs == 3 and cfg.model.backbone == "efficientnet_lite0"
    assert udml.settings(cfg, loss={"alpha": 10}).train.epochs == 3
    with pytest.raises(ConfigError, match=r"train\.lr"):
        udml.settings(train={"lr": float("inf")})


def test_train_embed_index_search(layout, tmp_path):
    out = tmp_path / "run"
    last = udml.train(out, dataset=str(layout), **TINY)
    assert last == out / "last.pt"
    with pytest.raises(UsageError, match="already holds a run"):
        udml.train(out, dataset=str(layout), **TINY)
    assert udml.train(out, resume=True, train={"epochs": 3}) == last
    # the summary agrees with the records it reads (a plain pass over metrics.jsonl)
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = udml.run_summary(out)
    epochs = [r for r in records if r["event"] == "epoch_summary"]
    evals = [r for r in records if r["event"] == "eval"]
    assert summary["epochs"] == 3 and summary["steps"] == records[-1]["step"]
    assert summary["mean_loss"] == epochs[-1]["mean_loss"]
    assert summary["start"] == evals[0] and summary["start"]["at"] == "start"
    assert summary["end"] == evals[-1] and summary["end"]["epoch"] == 3
    # replacing through the API: the old run goes, the new one starts empty
    other = tmp_path / "other"
    udml.train(other, dataset=str(layout), **TINY)
    udml.train(other, dataset=str(layout), replace=True, **TINY)
    assert udml.run_summary(other)["epochs"] == 2 and not (tmp_path / ".other.replaced").exists()
    model, cfg = udml.load_model(checkpoint=last)
    assert cfg.train.epochs == 3 and model.dim == 16
    x, paths = udml.embed_folder(layout / "test", checkpoint=last)
    assert x.shape == (32, 16) and len(paths) == 32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1, rtol=1e-5)
    index = udml.build_index(layout / "test", tmp_path / "idx", checkpoint=last)
    sims, rows = index.search(x[:2], 3)
    assert rows[:, 0].tolist() == [0, 1] and np.allclose(sims[:, 0], 1, atol=1e-5)
    assert udml.Index.load(tmp_path / "idx").paths == index.paths
    # eval and cluster: the same request path as the commands; scores checked against a plain
    # recall loop over the embedded split, clusters against the vectors they were given
    scores = udml.evaluate(checkpoint=last, dataset=str(layout))
    xs, files = udml.embed_folder(layout / "test", checkpoint=last)
    labels = np.array([int(f.parent.name[1:]) for f in files])
    sim = xs @ xs.T
    np.fill_diagonal(sim, -np.inf)
    r1 = np.mean(labels[sim.argmax(1)] == labels)
    assert scores["recall_at"]["1"] == pytest.approx(r1, abs=1e-6)
    assert scores["model"] == str(last) and scores["num_queries"] == 32
    rows, best = udml.evaluate_run(out, dataset=str(layout))
    assert [r["model"] for r in rows][-1].endswith("epoch_0003.pt") and 0 <= best < len(rows)
    found = udml.cluster(udml.settings(cluster={"num_clusters": 4}), index_dir=tmp_path / "idx")
    assert found.paths == index.paths and sorted(found.diagnostics["sizes"], reverse=True)[0] > 0
    assert np.bincount(found.result.labels, minlength=4).tolist() == found.diagnostics["sizes"]
    assert len(found.assignment_csv().splitlines()) == 33


def test_importing_udml_cli_does_not_import_torch():
    code = "import sys, udml_cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False"


def test_the_backbone_argument_is_the_backbone_scored(layout):
    """``udml.evaluate(backbone=…)`` / ``udml.label_free(backbone=…)`` score that backbone, not
    the config's default (googlenet)."""
    cfg = udml.settings(None, model={"weights": "none"}, data={"image_size": 16, "resize": 18},
                        engine={"workers": 0})  # fmt: skip
    result = udml.evaluate(cfg, backbone="tiny-test", dataset=str(layout))
    assert result["dim"] == 16 and result["model"] == "tiny-test:none"
    rows = udml.label_free(cfg, backbone="tiny-test", dataset=str(layout), each_layer=True)
    assert {r["layer"] for r in rows} == {"conv1", "conv2", "last"}
    assert cfg.model.backbone == "googlenet"  # the caller's config is left alone
