"""The invariance method: its losses against element-by-element loops, its edits, and a run
that trains, resumes bit-exactly, evaluates and reports (with and without pseudo-classes)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY, interrupted_and_resumed
from PIL import Image

from udml_cli.data.edits import CopyEdits
from udml_cli.losses import koleo, nt_xent


def _emb(n, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def _nt_xent_loop(x, inst, t):
    n, total = len(x), 0.0
    for i in range(n):
        denom = sum(math.exp(float(x[i] @ x[k]) / t) for k in range(n) if k != i)
        pos = [p for p in range(n) if p != i and inst[p] == inst[i]]
        total += -sum(math.log(math.exp(float(x[i] @ x[p]) / t) / denom) for p in pos) / len(pos)
    return total / n


@pytest.mark.parametrize("views, t", [(2, 0.1), (3, 0.5)])
def test_nt_xent_against_a_loop(views, t):
    x = _emb(4 * views)
    inst = torch.arange(4).repeat(views)  # rows: all first views, then all second …
    assert abs(float(nt_xent(x, inst, t)) - _nt_xent_loop(x, inst.tolist(), t)) < 1e-4


def test_nt_xent_for_two_views_is_simclr():
    """SimCLR's formulation: 2N rows, the positive of row i is i ± N, cross-entropy over the
    other 2N − 1 rows."""
    x, n, t = _emb(8), 4, 0.2
    sim = x @ x.T / t
    sim.fill_diagonal_(float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(n)])
    ref = torch.nn.functional.cross_entropy(sim, target)
    torch.testing.assert_close(nt_xent(x, torch.arange(n).repeat(2), t), ref)


def test_nt_xent_needs_a_second_view():
    with pytest.raises(ValueError, match="no other view"):
        nt_xent(_emb(3), torch.tensor([0, 0, 1]), 0.1)


def test_entropy_regulariser_against_a_loop():
    x, inst = _emb(6, seed=1), [0, 1, 2, 0, 1, 2]
    expected = 0.0
    for i in range(6):
        nearest = min(float((x[i] - x[j]).norm()) for j in range(6) if inst[j] != inst[i])
        expected -= math.log(nearest) / 6
    assert abs(float(koleo(x, torch.tensor(inst))) - expected) < 1e-4
    y = x.clone().requires_grad_(True)
    koleo(torch.cat([y, y[:1]]), torch.tensor([*inst, 9])).backward()  # an exact duplicate
    assert torch.isfinite(y.grad).all()


def test_copy_edits_are_a_function_of_the_seed():
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    edit = CopyEdits(32)
    torch.manual_seed(3)
    a = edit(im)
    torch.manual_seed(3)
    b = edit(im)
    torch.manual_seed(4)
    c = edit(im)
    assert a.shape == (3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


INV = ["--set", "train.method=invariance", "--set", "train.iters_per_epoch=3",
       "--set", "invariance.temperature=0.2"]  # fmt: skip


def test_invariance_trains_resumes_bit_exactly_evaluates_and_reports(cli, layout, tmp_path,
                                                                     monkeypatch):  # fmt: skip
    straight, cut = tmp_path / "a", tmp_path / "b"
    # k left "auto", as the photos template leaves it: nothing clusters, nothing resolves it
    args = ["--dataset", layout, *TINY, *INV, "--epochs", "3", "--set", "cluster.num_clusters=auto"]
    interrupted_and_resumed(cli, args, "faulty-invariance", "step:5:interrupt", straight, cut,
                            monkeypatch)  # fmt: skip
    events = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert len(steps) == 9 and all("nce_loss" in e and "cluster_loss" not in e for e in steps)
    assert not [e for e in events if e["event"] == "cluster"]  # no k-means without its loss
    toml = (straight / "config.toml").read_text()
    assert "[invariance]" in toml and "rot_weight" not in toml and "[stml]" not in toml
    r = cli("eval", straight / "last.pt", "--json")
    assert r.code == 0, r.err
    r = cli("report", straight, "-o", tmp_path / "r.html")
    assert r.code == 0, r.err
    page = (tmp_path / "r.html").read_text()
    assert "nce_loss" in page and "Pseudo-class sizes" not in page  # one pseudo-class: no chart


def test_invariance_with_pseudo_classes_and_entropy(cli, layout, tmp_path):
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, *INV, "--epochs", "2",
            "--set", "invariance.cluster_weight=0.5", "--set", "invariance.entropy_weight=0.1",
            "--set", "invariance.edits=train")  # fmt: skip
    assert r.code == 0, r.err
    events = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [e for e in events if e["event"] == "step"]
    assert steps and all({"nce_loss", "entropy_loss", "cluster_loss"} <= set(e) for e in steps)
    for e in steps:  # the total is the weighted sum of its parts
        total = e["nce_loss"] + 0.1 * e["entropy_loss"] + 0.5 * e["cluster_loss"]
        assert abs(e["loss"] - total) < 1e-4 * max(1, abs(total))
    assert [e["epoch"] for e in events if e["event"] == "cluster"] == [0]
    toml = (out / "config.toml").read_text()
    assert "alpha" in toml and "num_clusters" in toml and "rot_weight" not in toml
    r = cli("report", out, "-o", tmp_path / "r.html")
    assert r.code == 0, r.err
    assert "Pseudo-class sizes" in (tmp_path / "r.html").read_text()


def test_invariance_settings_are_checked(cli, layout, tmp_path):
    r = cli("train", "--dataset", layout, "--out", tmp_path / "r", *TINY, *INV,
            "--set", "invariance.nce_weight=0")  # fmt: skip
    assert r.code == 2 and "nothing pulls any images together" in r.err
