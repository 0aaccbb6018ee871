"""Descriptors beyond the last pooled layer: GeM, intermediate stages, every backbone."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import TINY
from torch.nn import functional as F

from udml_cli.config import ModelConfig
from udml_cli.errors import UsageError
from udml_cli.models.backbones import create_backbone, names
from udml_cli.models.descriptor import GeM
from udml_cli.models.net import build_model


def test_gem_against_a_plain_loop():
    x = torch.rand(2, 3, 4, 5) + 0.01
    gem = GeM(p=3.0)
    out = gem(x).detach()
    assert out.shape == (2, 3, 1, 1)
    for n in range(2):
        for c in range(3):
            values = [float(v) for v in x[n, c].flatten()]
            expected = (sum(v**3 for v in values) / len(values)) ** (1 / 3)
            assert abs(float(out[n, c, 0, 0]) - expected) < 1e-5
    with torch.no_grad():
        gem.p.fill_(1.0)
    torch.testing.assert_close(gem(x), F.adaptive_avg_pool2d(x, 1))


def _tiny(**kw):
    torch.manual_seed(0)
    return build_model(ModelConfig(backbone="tiny-test", weights="none", dim=16, **kw)).eval()


def test_stages_are_pooled_normalised_and_concatenated_as_by_hand():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 16, 16)
    plain = _tiny()  # the same random start for every variant (seeded)
    body = plain.backbone.body
    z = (x - plain.mean) / plain.std
    conv1 = body[:3](z).mean((2, 3))
    final = body(z).flatten(1)
    both = _tiny(layers=["conv1", "last"])
    assert both.feat_dim == 8 + 16
    with torch.no_grad():
        expected = torch.cat([F.normalize(conv1, dim=1), F.normalize(final, dim=1)], 1)
        torch.testing.assert_close(both.features(x), expected)
        only = _tiny(layers=["conv1"])
        torch.testing.assert_close(only.features(x), F.normalize(conv1, dim=1))
        gem = _tiny(pool="gem")  # the final average pooling is now GeM (p = 3)
        by_hand = body[:6](z).clamp(min=1e-6).pow(3).mean((2, 3)).pow(1 / 3)
        torch.testing.assert_close(gem.features(x), by_hand)


def test_identity_head_starts_at_the_descriptor_metric():
    model = _tiny(layers=["conv1", "conv2"])
    model.head = type(model.head)(24, 24)
    model.head.init_identity()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(model.embed(x), F.normalize(model.features(x), dim=1))


def test_wrong_stage_names_are_one_line():
    with pytest.raises(UsageError, match=r"no stage 'block99' \(valid: conv1, conv2, last\)"):
        _tiny(layers=["block99"])
    with pytest.raises(ValueError, match="names 'last' twice"):
        ModelConfig(layers=["last", "last"])


@pytest.mark.parametrize("name", names())
def test_every_backbone_pools_its_stages(name):
    from udml_cli.models.descriptor import describe

    backbone = create_backbone(name, "none", quiet=True)  # built once: some take seconds
    assert backbone.stages, f"{name} names no stages"
    stages = list(backbone.stages)
    desc = describe(backbone, "gem", [stages[0], stages[-1]], name).module.eval()
    sizes = {}
    for i, path in enumerate(desc.paths):
        desc.body.get_submodule(path).register_forward_hook(
            lambda m, a, o, i=i: sizes.__setitem__(i, o.shape[1])
        )
    with torch.no_grad():
        feat = desc(torch.rand(2, 3, 64, 64))
    assert feat.shape == (2, sizes[0] + sizes[1]) and torch.isfinite(feat).all()
    for part in feat.split([sizes[0], sizes[1]], dim=1):  # each stage's part L2-normalised
        torch.testing.assert_close(part.norm(dim=1), torch.ones(2))


def test_a_run_with_gem_and_stages_trains_saves_and_evaluates(cli, layout, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "2",
            "--set", 'model.layers=["conv1", "last"]', "--set", "model.pool=gem")  # fmt: skip
    assert r.code == 0, r.err
    saved = torch.load(out / "last.pt", weights_only=True)["model"]
    ps = [k for k in saved if k.endswith(".p")]
    assert len(ps) == 2 and all(float(saved[k]) != 3.0 for k in ps)  # both exponents trained
    r = cli("eval", "--checkpoint", out / "last.pt", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["dim"] == 512


def test_a_grid_pools_each_region_as_by_hand():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    plain = _tiny()
    z = (x - plain.mean) / plain.std
    conv1 = plain.backbone.body[:3](z)  # (2, 8, 8, 8): 2x2 regions of 4x4
    regions = conv1.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))  # (2, 8, 2, 2)
    model = _tiny(layers=["conv1"], grid=2)
    assert model.feat_dim == 8 * 4
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), F.normalize(regions.flatten(1), dim=1))
    gem = _tiny(layers=["conv1"], grid=2, pool="gem")
    by_hand = conv1.clamp(min=1e-6).pow(3).unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2))
    with torch.no_grad():
        expected = F.normalize(by_hand.pow(1 / 3).flatten(1), dim=1)
        torch.testing.assert_close(gem.features(x), expected)


def test_a_pyramid_is_the_whole_map_and_the_grid_side_by_side():
    """model.grid = [1, 2]: each stage pooled over the whole map and over the 2x2 grid, each part
    L2-normalised on its own, in that order (by hand from the stage's map); an int grid's
    parameters keep their names, so its checkpoints still load."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 16, 16)
    plain = _tiny()
    conv1 = plain.backbone.body[:3]((x - plain.mean) / plain.std)  # (2, 8, 8, 8)
    whole = F.normalize(conv1.mean((2, 3)), dim=1)
    regions = F.normalize(conv1.unfold(2, 4, 4).unfold(3, 4, 4).mean((-1, -2)).flatten(1), dim=1)
    model = _tiny(layers=["conv1"], grid=[1, 2])
    assert model.feat_dim == 8 + 8 * 4
    with torch.no_grad():
        torch.testing.assert_close(model.features(x), torch.cat([whole, regions], 1))
    gem = _tiny(layers=["conv1", "last"], grid=[1, 2], pool="gem")
    assert sorted(k for k in gem.state_dict() if "pools" in k) == [
        "backbone.pools.0.p", "backbone.pools.1.p"]  # fmt: skip
    one = _tiny(layers=["conv1"], grid=2, pool="gem")
    assert [k for k in one.state_dict() if "pools" in k] == ["backbone.pools.0.p"]


def test_a_grid_named_twice_or_out_of_range_is_one_line(cli, tmp_path):
    for value, says in (("[1, 1]", "names a grid twice"), ("[1, 9]", "model.grid.1: Input "
                        "should be less than or equal to 8"), ("[]", "at least 1 item")):  # fmt: skip
        r = cli("train", "--dataset", tmp_path, "--set", f"model.grid={value}", "--out",
                tmp_path / "run")  # fmt: skip
        assert r.code == 2 and says in r.err and "Traceback" not in r.err, r.err
        assert len(r.err.strip().splitlines()) == 1


def test_all_names_every_stage():
    x = torch.rand(3, 3, 16, 16)
    with torch.no_grad():
        every = _tiny(layers=["all"], grid=[1, 4]).eval().features(x)
        named = _tiny(layers=["conv1", "conv2"], grid=[1, 4]).eval().features(x)
    torch.testing.assert_close(every, named, rtol=0, atol=0)
    with pytest.raises(ValueError, match="'all' stands alone"):
        ModelConfig(layers=["all", "last"])
