"""The method contract (``udml_cli/methods/base.py``) is the seam: a method registered from here,
in no other file, trains, resumes bit-exactly, evaluates and shows in the report and summary."""

from __future__ import annotations

import json
from typing import ClassVar

import numpy as np
import pytest
import torch
from conftest import TINY
from conftest import inproc as run
from test_hostile import ok

from udml_cli.methods import METHODS
from udml_cli.methods.base import Method


class TwoViews(Method):
    """A test method: two augmented views of each image should be each other's nearest
    (InfoNCE over the batch, temperature ``1 / scale``); no targets to refresh but a seen count."""

    name = "two-views-test"
    losses = ("loss", "nce_loss")
    checkpoint_fields: ClassVar[dict] = {"refreshes": int}

    def __init__(self, run) -> None:
        super().__init__(run)
        self.refreshes = 0

    @property
    def ready(self) -> bool:
        return self.refreshes > 0

    def refresh(self, epoch: int, first: bool) -> None:
        self.refreshes, self.refreshed_at = self.refreshes + 1, epoch
        self.run.log("refresh", count=self.refreshes)

    def sampler(self):
        n, t = len(self.run.trainer.images), self.cfg.train

        class Batches:
            def __len__(self) -> int:
                return t.iters_per_epoch or 2

            def epoch(self, e: int) -> list[list[int]]:
                rng = np.random.default_rng([t.seed, e])
                return [
                    rng.choice(n, t.batch_size, replace=False).tolist() for _ in range(len(self))
                ]

        return Batches()

    @property
    def views(self) -> int:
        return 2

    def targets(self, batch):
        return torch.as_tensor(np.tile(batch, 2))

    def step(self, images, targets):
        emb = self.run.trainer.step_forward(self.engine.to_device(images))
        a, b = emb.chunk(2)
        loss = torch.nn.functional.cross_entropy(10 * a @ b.T, torch.arange(len(a)))
        return {"nce_loss": loss.item(), "loss": loss.item()}, loss

    def state_dict(self) -> dict:
        return {"refreshes": self.refreshes, "clustered_at": self.refreshed_at}

    def load_state_dict(self, payload: dict, n_train: int) -> None:
        self.refreshes, self.refreshed_at = payload["refreshes"], payload["clustered_at"]


@pytest.fixture(autouse=True)
def registered():
    METHODS.add(TwoViews.name, TwoViews, hidden=True)
    yield
    METHODS.pop(TwoViews.name)
    METHODS.hidden.discard(TwoViews.name)


ARGS = [*TINY, "--set", f"train.method={TwoViews.name}", "--set", "train.save_step=1",
        "--set", "train.iters_per_epoch=3", "--set", "engine.threads=1"]  # fmt: skip


def test_a_method_registered_from_a_test_trains_resumes_evaluates_and_reports(layout, tmp_path):
    straight, cut = tmp_path / "a", tmp_path / "b"
    err = ok(run("train", "--dataset", layout, "--out", straight, *ARGS, "--epochs", "4"))
    assert "nce_loss" in err and "weight" not in err  # the summary names its losses, only
    ok(run("train", "--dataset", layout, "--out", cut, *ARGS, "--epochs", "2"))
    ok(run("train", "--out", cut, "--resume", "--epochs", "4"))
    a = torch.load(straight / "last.pt", weights_only=True)
    b = torch.load(cut / "last.pt", weights_only=True)
    assert a["method"] == {"name": TwoViews.name, "version": 1} and a["refreshes"] == 2
    assert a["step"] == b["step"] == 12
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=0, atol=0)
    records = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    assert [r["count"] for r in records if r["event"] == "refresh"] == [1, 2]  # up_step = 2
    assert all("nce_loss" in r for r in records if r["event"] == "step")
    proc = run("eval", straight / "last.pt", "--json")
    ok(proc)
    assert json.loads(proc.stdout)["num_queries"] > 0
    ok(run("report", straight, "-o", tmp_path / "r.html"))
    html = (tmp_path / "r.html").read_text()
    assert "nce_loss" in html and "weight_loss" not in html
    config = (straight / "config.toml").read_text()
    assert f'method = "{TwoViews.name}"' in config
    assert "[loss]" not in config and "[stml]" not in config and "instances" not in config


def test_an_unknown_method_is_one_line(layout, tmp_path):
    from test_hostile import refused

    proc = run("train", "--dataset", layout, "--out", tmp_path / "r", *TINY,
               "--set", "train.method=nope")  # fmt: skip
    line = refused(proc, "unknown method 'nope'", 2)
    assert "udml-ss" in line and "stml" in line and TwoViews.name not in line
