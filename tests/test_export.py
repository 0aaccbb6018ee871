"""udml export: the file onnxruntime (or libtorch) runs gives the embeddings udml gives, on 32
real images, for a checkpoint (head + L2) and for pretrained starts and descriptors; any batch
size; the image pipeline in its metadata; one line for a bad --format."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from test_photos import _emoji_pngs, _photo

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")


def _batch(cfg, n=32):
    from udml_cli.data.transforms import eval_transform

    t = eval_transform(cfg.data)
    return torch.stack([t(_photo(p)) for p in _emoji_pngs(n)])


def _udml(model, x):
    with torch.no_grad():
        return model.eval().embed(x).numpy()


def test_onnx_matches_udml_on_real_images(cli, tmp_path):
    args = ["--backbone", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "64"]
    from udml_cli.api import load_model

    out = tmp_path / "m.onnx"
    r = cli("export", "-o", out, *args)
    assert r.code == 0, r.err
    model, cfg = load_model(None, args[1], args[3], 64, "cpu")
    x = _batch(cfg)
    session = ort.InferenceSession(str(out))
    got = session.run(None, {"images": x.numpy()})[0]
    assert got.shape == (32, model.dim)
    assert np.abs(got - _udml(model, x)).max() <= 1e-4
    one = session.run(None, {"images": x[:1].numpy()})[0]  # any batch size
    assert np.abs(one - got[:1]).max() <= 1e-4
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["image_size"] == "64" and meta["resize"] == str(cfg.data.resize)
    assert meta["backbone"] == args[1] and "[0, 1]" in meta["input"]


def test_a_trained_checkpoint_exports_to_onnx_and_torchscript(cli, layout, tmp_path):
    from udml_cli.api import load_model

    run = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1").code == 0
    model, cfg = load_model(run / "last.pt", device="cpu")
    x = _batch(cfg)
    want = _udml(model, x)
    assert cli("export", run / "last.pt", "-o", tmp_path / "m.onnx").code == 0
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - want).max() <= 1e-4
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)  # L2 in the graph
    r = cli("export", run / "last.pt", "-o", tmp_path / "m.pt", "--format", "torchscript")
    assert r.code == 0, r.err
    extra = {"udml.json": ""}
    scripted = torch.jit.load(str(tmp_path / "m.pt"), _extra_files=extra)
    assert np.abs(scripted(x).detach().numpy() - want).max() <= 1e-4
    assert json.loads(extra["udml.json"])["source"] == str(run / "last.pt")


@pytest.mark.parametrize("name", ["resnet18", "googlenet"])
def test_torchvision_backbones_export(tmp_path, name):
    """Every registered backbone exports (all nine were checked by hand, BENCHMARKS "Export");
    two torchvision kinds here, randomly initialised (no weights offline)."""
    from udml_cli.api import load_model
    from udml_cli.export import export

    model, cfg = load_model(None, name, "none", 64, "cpu")
    export(model, cfg, tmp_path / "m.onnx", "onnx", name)
    x = _batch(cfg, 8)
    got = ort.InferenceSession(str(tmp_path / "m.onnx")).run(None, {"images": x.numpy()})[0]
    assert np.abs(got - _udml(model, x)).max() <= 1e-4


def _descriptor(grid):
    from udml_cli.config import Config
    from udml_cli.models.net import build_model

    cfg = Config.model_validate({"data": {"image_size": 64, "resize": 72}, "model": {
        "backbone": "efficientnet_lite0", "layers": ["block11", "last"], "grid": grid,
        "dim": "auto"}})  # fmt: skip
    return build_model(cfg.model, head=False), cfg


def test_an_intermediate_stage_descriptor_exports(tmp_path):
    """model.layers (the hooks that grab a stage) trace into the graph too, and so do grid and
    pyramid descriptors (the photos template's): the same numbers from onnxruntime and
    TorchScript as from udml."""
    from udml_cli.export import export

    x = None
    for grid in (1, 2, [1, 4]):
        model, cfg = _descriptor(grid)
        x = _batch(cfg, 8) if x is None else x
        export(model, cfg, tmp_path / "d.onnx", "onnx", "test")
        got = ort.InferenceSession(str(tmp_path / "d.onnx")).run(None, {"images": x.numpy()})[0]
        assert np.abs(got - _udml(model, x)).max() <= 1e-4, grid
    export(model, cfg, tmp_path / "g.pt", "torchscript", "test")
    got = torch.jit.load(str(tmp_path / "g.pt"))(x).detach().numpy()
    assert np.abs(got - _udml(model, x)).max() <= 1e-4


def test_bad_format_and_output_are_one_line(cli, tmp_path):
    r = cli("export", "--backbone", "tiny-test", "--weights", "none", "-f", "tflite",
            "-o", tmp_path / "m")  # fmt: skip
    assert r.code == 2 and "one of onnx, torchscript" in r.err and "Traceback" not in r.err
    r = cli("export", "--backbone", "tiny-test", "--weights", "none", "-o", tmp_path)
    assert r.code == 2 and "is a folder" in r.err
    assert not list(tmp_path.iterdir())
