"""The tests' plug-in (loaded through ``UDML_PLUGINS``, as any user's plug-in is; conftest sets
it for this process and every udml process a test starts):

- ``tiny-test``: a 2-layer CNN backbone (16-d), so a training run takes seconds;
- ``faulty-udml-ss`` / ``faulty-stml`` / ``faulty-invariance``: the methods, unchanged, except that they fail where
  ``UDML_TEST_FAULT`` says — ``HOOK:N:KIND`` with HOOK ``step`` or ``sampler`` (the contract's
  calls), N the call of this run that fails, KIND ``interrupt`` (Ctrl-C) or ``nan`` (the step's
  loss). Unset, they train exactly as the methods they wrap;
- ``UDML_TEST_FAULT=index-save:interrupt``: Ctrl-C as an index is being written (in every
  process ``--nproc`` starts: the plug-in loads in each);
- ``fixed-view-udml-ss``: UDML-SS with every training view the plain (evaluation) view, so a run
  does not depend on which augmentation each step draws (the feature cache's reference).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from udml_cli.methods import METHODS
from udml_cli.methods.invariance import Invariance
from udml_cli.methods.stml import Stml
from udml_cli.methods.udml_ss import UdmlSS
from udml_cli.models.backbones import IMAGENET_MEAN, IMAGENET_STD, Backbone, register


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
        )

    def forward(self, x):
        return self.body(x).flatten(1)


@register("tiny-test", "a 2-layer CNN for tests only (16-d)", hidden=True, pretrained=False)
def tiny(weights: str) -> Backbone:
    with torch.random.fork_rng():  # the same network in every process ("weights none" included)
        torch.manual_seed(0)
        net = Tiny()
    return Backbone(net, 16, IMAGENET_MEAN, IMAGENET_STD, {"conv1": "body.2", "conv2": "body.5"})


class Faults:
    """Counts this run's calls of ``step`` and ``sampler``; fails the one ``UDML_TEST_FAULT``
    names."""

    def __init__(self, run) -> None:
        super().__init__(run)
        hook, n, self.fault_kind = (os.environ.get("UDML_TEST_FAULT") or "none:0:none").split(":")
        self.fault_at, self.calls = (hook, int(n)), {"step": 0, "sampler": 0}

    def _due(self, hook: str) -> bool:
        self.calls[hook] += 1
        if (hook, self.calls[hook]) != self.fault_at:
            return False
        if self.fault_kind == "interrupt":
            raise KeyboardInterrupt
        return True

    def sampler(self):
        self._due("sampler")
        return super().sampler()

    def step(self, images, targets):
        nan = self._due("step")
        out, local = super().step(images, targets)
        if nan:
            out = {k: float("nan") for k in out}
            local = local * torch.tensor(float("nan"))
        return out, local


class FaultyUdmlSS(Faults, UdmlSS):
    name = "faulty-udml-ss"


class FaultyStml(Faults, Stml):
    name = "faulty-stml"


class FaultyInvariance(Faults, Invariance):
    name = "faulty-invariance"


class FixedViewUdmlSS(UdmlSS):
    name = "fixed-view-udml-ss"

    @classmethod
    def augmentation(cls, cfg):
        from udml_cli.data.transforms import eval_transform

        return eval_transform(cfg.data)


for cls in (FaultyUdmlSS, FaultyStml, FaultyInvariance, FixedViewUdmlSS):
    METHODS.add(cls.name, cls, hidden=True)


if os.environ.get("UDML_TEST_FAULT") == "index-save:interrupt":
    import faiss

    def _stop(*args, **kwargs):
        raise KeyboardInterrupt

    faiss.serialize_index = _stop
