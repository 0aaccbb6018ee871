"""STML (train.method = "stml"): its losses against plain loops written from the paper's
equations, its sampler, and a run on the tiny layout that resumes bit-exactly and serves
eval/embed like a UDML-SS run."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY

STML = [
    "--set", "train.method=stml", "--set", "stml.neighbors=2", "--set", "stml.aux_dim=32",
    "--set", "train.optimizer=adamp", "--set", "train.schedule=cosine",
    "--set", "train.iters_per_epoch=3", "--set", "model.head_init=orthogonal",
    "--set", "train.up_step=1",
]  # fmt: skip


def _reference_similarity(t, idx, sigma, k):
    """The paper's W = (W_P + W_C) / 2, element by element."""
    n = len(t)
    wp = [
        [math.exp(-float(((t[i] - t[j]) ** 2).sum()) / sigma) for j in range(n)] for i in range(n)
    ]
    ranked = [[1.0 if idx[i] == idx[j] else wp[i][j] for j in range(n)] for i in range(n)]
    knn = [sorted(range(n), key=lambda j, i=i: -ranked[i][j])[:k] for i in range(n)]
    half = [knn[i][: max(1, round(k / 2))] for i in range(n)]
    recip = [{j for j in knn[i] if i in knn[j]} for i in range(n)]

    def overlap(i, j):
        return len(recip[i] & recip[j]) / len(recip[i]) if j in recip[i] else 0.0

    hat = [[sum(overlap(q, j) for q in half[i]) / len(half[i]) for j in range(n)] for i in range(n)]
    return [[(wp[i][j] + (hat[i][j] + hat[j][i]) / 2) / 2 for j in range(n)] for i in range(n)]


def _reference_losses(s_f, s_g, w, delta):
    n = len(s_f)

    def scaled(x):
        d = [[float(((x[i] - x[j]) ** 2).sum()) ** 0.5 for j in range(n)] for i in range(n)]
        return [[v / (sum(row) / n) for v in row] for row in d]

    def rc(x):
        d = scaled(x)
        total = sum(
            w[i][j] * d[i][j] ** 2 + (1 - w[i][j]) * max(0.0, delta - d[i][j]) ** 2
            for i in range(n) for j in range(n) if i != j
        )  # fmt: skip
        return total / (n * (n - 1))

    df, dg = scaled(s_f), scaled(s_g)
    kl = 0.0
    for i in range(n):
        zp = sum(math.exp(-v) for v in dg[i])
        zq = sum(math.exp(-v) for v in df[i])
        for j in range(n):
            p, q = math.exp(-dg[i][j]) / zp, math.exp(-df[i][j]) / zq
            kl += p * math.log(p / q)
    return (rc(s_f) + rc(s_g)) / 2, kl / n


@pytest.mark.parametrize("views,neighbors", [(2, 2), (2, 3), (1, 4)])
def test_losses_match_the_papers_equations(views, neighbors):
    from udml_cli.losses.stml import semantic_similarity, stml_loss

    g = torch.Generator().manual_seed(views * 10 + neighbors)
    images = 6
    idx = torch.arange(images).repeat(views)
    n = len(idx)
    s_f = torch.randn(n, 5, generator=g, dtype=torch.float64)
    s_g = torch.randn(n, 7, generator=g, dtype=torch.float64)
    t_g = torch.nn.functional.normalize(torch.randn(n, 7, generator=g, dtype=torch.float64), dim=1)
    k, sigma, delta = neighbors * views, 3.0, 1.0
    w = semantic_similarity(t_g, idx, sigma, k)
    ref = _reference_similarity(t_g.numpy(), idx.tolist(), sigma, k)
    np.testing.assert_allclose(w.numpy(), np.array(ref), rtol=1e-6, atol=1e-9)  # cdist: ~1e-8
    parts = stml_loss(s_f, s_g, t_g, idx, sigma, delta, k)
    rc, kl = _reference_losses(s_f.numpy(), s_g.numpy(), ref, delta)
    assert parts["rc_loss"].item() == pytest.approx(rc, rel=1e-6)
    assert parts["kl_loss"].item() == pytest.approx(kl, rel=1e-6, abs=1e-9)
    assert parts["loss"].item() == pytest.approx(rc + kl, rel=1e-6)


def test_neighbour_sampler_draws_queries_with_their_neighbours():
    from udml_cli.data.sampler import NeighbourSampler

    rng = np.random.default_rng(0)
    neighbours = np.stack([np.arange(20), *rng.integers(0, 20, (2, 20))], axis=1)
    sampler = NeighbourSampler(neighbours, batch_size=12, seed=3)
    assert len(sampler) == 20 // 12
    for batch in sampler.epoch(5):
        rows = np.array(batch).reshape(4, 3)
        queries = rows[:, 0]
        assert len(set(queries.tolist())) == 4  # distinct queries
        assert (rows == neighbours[queries]).all()  # each with its neighbours, itself first
    assert sampler.epoch(5) == NeighbourSampler(neighbours, 12, seed=3).epoch(5)
    assert sampler.epoch(5) != sampler.epoch(6)


def test_ema_update_is_the_moving_average():
    from udml_cli.methods.stml import ema_update

    student, teacher = torch.nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)
    with torch.no_grad():
        student.weight.fill_(2.0)
        teacher.weight.fill_(1.0)
        student.num_batches_tracked.fill_(7)
    ema_update(teacher, student, 0.9)
    torch.testing.assert_close(teacher.weight, torch.full((3,), 0.9 * 1 + 0.1 * 2))
    assert int(teacher.num_batches_tracked) == 7


def test_stml_trains_resumes_bit_exactly_and_serves_eval(cli, layout, tmp_path, monkeypatch):
    straight, split = tmp_path / "a", tmp_path / "b"
    r = cli("train", "--dataset", layout, "--out", straight, *TINY, *STML, "--epochs", "4")
    assert r.code == 0, r.err
    monkeypatch.setenv("UDML_TEST_FAULT", "step:8:interrupt")  # Ctrl-C in epoch 3, second batch
    r = cli("train", "--dataset", layout, "--out", split, *TINY, *STML, "--epochs", "4",
            "--set", "train.method=faulty-stml")  # fmt: skip
    assert r.code == 130, r.err
    monkeypatch.delenv("UDML_TEST_FAULT")
    r = cli("train", "--out", split, "--resume")
    assert r.code == 0, r.err
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(split / "last.pt", weights_only=True)
    assert a["step"] == b["step"] == 12 and "pseudo_labels" not in a
    for part in ("model", "teacher"):
        for key in a[part]:
            torch.testing.assert_close(a[part][key], b[part][key], rtol=0, atol=0)
    torch.testing.assert_close(a["neighbours"], b["neighbours"], rtol=0, atol=0)
    events = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("neighbours") == 4  # the first search and one per epoch after
    assert all({"rc_loss", "kl_loss"} <= set(e) for e in events if e["event"] == "step")
    # the teacher moved from the student's start by the moving average, not onto the student
    assert any(not torch.equal(a["model"][k], a["teacher"][k]) for k in a["model"])
    r = cli("eval", "--checkpoint", straight / "last.pt", "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["dim"] == 512
    r = cli("embed", layout / "test" / "c06", "--checkpoint", straight / "epoch_0004.pt",
            "--out", tmp_path / "v.npy")  # fmt: skip
    assert r.code == 0, r.err
    assert np.load(tmp_path / "v.npy").shape == (8, 512)


def test_stml_settings_are_checked(cli, layout, tmp_path):
    r = cli("train", "--dataset", layout, "--out", tmp_path / "r", *TINY, *STML,
            "--set", "stml.neighbors=3")  # fmt: skip
    assert r.code == 2 and "multiple of stml.neighbors (3)" in r.err


def test_stml_nan_guard_and_report(cli, layout, tmp_path, monkeypatch):
    out = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", out, *TINY, *STML, "--epochs", "2",
            "--set", "train.method=faulty-stml")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("report", out, "-o", tmp_path / "r.html")  # no pseudo-classes: the other sections
    assert r.code == 0, r.err
    html = (tmp_path / "r.html").read_text()
    assert "rc_loss" in html and "neighbours of the same true class" in html
    assert "Pseudo-class sizes" not in html
    before = (out / "last.pt").read_bytes()

    monkeypatch.setenv("UDML_TEST_FAULT", "step:1:nan")
    r = cli("train", "--out", out, "--resume", "--epochs", "4")
    errors = [ln for ln in r.err.splitlines() if ln.startswith("error:")]
    assert r.code == 3 and len(errors) == 1 and "loss became nan" in errors[0]
    assert (out / "last.pt").read_bytes() == before


def _stml_trainer(layout, tmp_path):
    import udml_cli as udml
    from udml_cli.data.registry import resolve_dataset
    from udml_cli.engine import resolve_engine
    from udml_cli.training import Trainer

    cfg = udml.settings(
        None, model={"backbone": "tiny-test", "weights": "none", "dim": 16,
                     "head_init": "orthogonal"},
        data={"image_size": 16, "resize": 18},
        train={"method": "stml", "batch_size": 8, "epochs": 1, "optimizer": "adamp"},
        stml={"neighbors": 2, "aux_dim": 12}, engine={"device": "cpu", "workers": 0},
    )  # fmt: skip
    return Trainer(cfg, resolve_dataset(str(layout)), tmp_path / "r", resolve_engine(cfg.engine))


def test_the_teacher_has_its_own_g_head(layout, tmp_path):
    """As STML's code builds a second network: the same pretrained backbone, a g head of its own
    (orthogonal, zero bias), not a copy of the student's."""
    trainer = _stml_trainer(layout, tmp_path)
    student, teacher = trainer.model, trainer.method.teacher
    for (name, a), b in zip(student.backbone.state_dict().items(),
                            teacher.backbone.state_dict().values(), strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    w_s, w_t = student.aux_head.weight.detach(), teacher.aux_head.weight.detach()
    assert not torch.allclose(w_s, w_t)
    for w in (w_s, w_t):  # 12 × 16: orthonormal rows
        torch.testing.assert_close(w @ w.T, torch.eye(12), atol=1e-5, rtol=0)
    assert teacher.aux_head.bias.abs().max() == 0
    assert not any(p.requires_grad for p in teacher.parameters())


def test_neighbours_are_searched_on_whole_squashed_images(layout, tmp_path, monkeypatch):
    """STML's Transform_for_Sampler: the whole image resized to data.resize², no crop."""
    from PIL import Image

    from udml_cli.data.transforms import Squash

    trainer = _stml_trainer(layout, tmp_path)
    view = trainer.images.view("squash")
    im = Image.open(view.paths[0]).convert("RGB")
    x = view[0][0]
    assert tuple(x.shape) == (3, 18, 18)
    expected = Squash(18)(im)
    torch.testing.assert_close(x, expected)
    asked = []
    real = trainer.features
    monkeypatch.setattr(trainer, "features", lambda v="eval": asked.append(v) or real(v))
    trainer.out.mkdir()
    trainer.method.refresh(0, first=True)
    assert asked == ["squash"] and trainer.method.neighbours.shape == (len(trainer.images.plain), 2)
