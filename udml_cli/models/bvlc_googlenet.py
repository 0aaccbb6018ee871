"""The Caffe BVLC GoogLeNet (Inception v1) the paper trained: LRN, 5×5 branches, no BatchNorm.

Layer names follow the original code (xuefeicao/UDML_SS ``models/Inception.py``) so its converted
Caffe weights load unchanged; input is BGR on 0–255 minus the Caffe mean (the channel flip happens
here, the scaling in ``EmbeddingNet`` through the mean/std this backbone declares).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

# Caffe's mean in BGR order is (104, 117, 128): as RGB, scaled to the [0, 1] images we feed.
MEAN_RGB = (128 / 255, 117 / 255, 104 / 255)
STD_RGB = (1 / 255,) * 3


def _conv(cin: int, cout: int, k: int, s: int = 1, p: int = 0) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, (k, k), (s, s), (p, p))


class InceptionModule(nn.Module):
    def __init__(self, cin: int, a: int, b_red: int, b: int, c_red: int, c: int, d: int) -> None:
        super().__init__()
        relu = lambda: nn.ReLU(True)  # noqa: E731
        self.a = nn.Sequential(OrderedDict([("1x1", _conv(cin, a, 1)), ("1x1_relu", relu())]))
        self.b = nn.Sequential(OrderedDict([
            ("3x3_reduce", _conv(cin, b_red, 1)), ("3x3_relu1", relu()),
            ("3x3", _conv(b_red, b, 3, p=1)), ("3x3_relu2", relu()),
        ]))  # fmt: skip
        self.c = nn.Sequential(OrderedDict([
            ("5x5_reduce", _conv(cin, c_red, 1)), ("5x5_relu1", relu()),
            ("5x5", _conv(c_red, c, 5, p=2)), ("5x5_relu2", relu()),
        ]))  # fmt: skip
        self.d = nn.Sequential(OrderedDict([
            ("pool_pool", nn.MaxPool2d(3, 1, 1)), ("pool_proj", _conv(cin, d, 1)),
            ("pool_relu", relu()),
        ]))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.a(x), self.b(x), self.c(x), self.d(x)], 1)


def _lrn() -> nn.Module:
    # Caffe's LRN (local_size 5, alpha 1e-4, beta 0.75, k 1), exactly. The original code used
    # torch's legacy CrossMapLRN2d, whose running window never drops channel 0 (an off-by-one):
    # docs/fidelity.md says what that changes; tests pin both against a plain loop
    return nn.LocalResponseNorm(5, 1e-4, 0.75, 1.0)


class BVLCGoogLeNet(nn.Module):
    """images (normalised, RGB) → 1024-d pool5 feature."""

    def __init__(self) -> None:
        super().__init__()
        pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Sequential(OrderedDict([
                ("7x7_s2", _conv(3, 64, 7, 2, 3)), ("relu1", nn.ReLU(True)),
                ("pool1", pool()), ("lrn1", _lrn()),
            ]))),
            ("conv2", nn.Sequential(OrderedDict([
                ("3x3_reduce", _conv(64, 64, 1)), ("relu1", nn.ReLU(True)),
                ("3x3", _conv(64, 192, 3, p=1)), ("relu2", nn.ReLU(True)),
                ("lrn2", _lrn()), ("pool2", pool()),
            ]))),
            ("inception_3a", InceptionModule(192, 64, 96, 128, 16, 32, 32)),
            ("inception_3b", InceptionModule(256, 128, 128, 192, 32, 96, 64)),
            ("pool3", pool()),
            ("inception_4a", InceptionModule(480, 192, 96, 208, 16, 48, 64)),
            ("inception_4b", InceptionModule(512, 160, 112, 224, 24, 64, 64)),
            ("inception_4c", InceptionModule(512, 128, 128, 256, 24, 64, 64)),
            ("inception_4d", InceptionModule(512, 112, 144, 288, 32, 64, 64)),
            ("inception_4e", InceptionModule(528, 256, 160, 320, 32, 128, 128)),
            ("pool4", pool()),
            ("inception_5a", InceptionModule(832, 256, 160, 320, 32, 128, 128)),
            ("inception_5b", InceptionModule(832, 384, 192, 384, 48, 128, 128)),
            # the original's AvgPool2d(7) is global at 224/227 px; adaptive pooling keeps it global
            # at any size (identical at 227)
            ("pool5", nn.AdaptiveAvgPool2d(1)),
        ]))  # fmt: skip
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # the original's random init (kaiming normal, zero bias)
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.flip(1)).flatten(1)  # RGB → BGR, as Caffe was trained


_BRANCH = {"1x1": "a", "3x3": "b", "5x5": "c", "poo": "d"}


def convert_state_dict(state: dict) -> dict:
    """Accept the original code's converted Caffe file (``conv1.7x7_s2.weight``,
    ``inception_3a.1x1.weight``; numpy arrays or tensors) or our own key names."""
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] != "features":
            if parts[0].startswith("inception") and len(parts) > 2 and parts[1][:3] in _BRANCH:
                parts.insert(1, _BRANCH[parts[1][:3]])
            parts.insert(0, "features")
        out[".".join(parts)] = torch.as_tensor(value)
    return out
