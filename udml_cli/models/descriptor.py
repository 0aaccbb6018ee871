"""Descriptors beyond the last pooled layer (``model.pool``, ``model.layers``).

A backbone maps images to its final pooled feature. ``pool = "gem"`` replaces its final global
average pooling with generalised-mean pooling (a learnable exponent p, starting at 3; Radenović
et al., TPAMI 2018). ``layers`` names the stages to pool (``Backbone.stages``: ``layer3`` of a
ResNet, ``block10`` of EfficientNet-Lite …, ``last`` for the final feature; ``all``: every
stage): each is pooled, L2-normalised, and the parts are concatenated, so every stage counts
alike whatever its scale.
``grid = g`` pools each named stage over a g×g grid of regions instead of the whole map (C·g²
values: where things are in the picture counts, as in raw pixels; ``last`` stays global);
``grid = [1, 4]`` pools each stage both ways, each part L2-normalised (a spatial pyramid: the
layout counts, and a picture whose subject moved still matches on the whole-map part).
The head then starts on that descriptor (``identity``/``pca`` start exactly at its metric).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from udml_cli.errors import UsageError


class GeM(nn.Module):
    """``(mean x^p)^(1/p)`` over the spatial positions (x clamped at ``eps``: maps after a ReLU
    are ≥ 0 already); shaped as ``AdaptiveAvgPool2d(1)``'s output, so it can take its place."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, grid: int = 1) -> None:
        super().__init__()
        self.p, self.eps, self.grid = nn.Parameter(torch.tensor(float(p))), eps, grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.float()
        x = x.float().clamp(min=self.eps).pow(p)
        return regions(x, self.grid).pow(1.0 / p)


def _bins(n: int, g: int, like: torch.Tensor) -> torch.Tensor:
    """``(g, n)``: row i averages positions floor(i·n/g) … ceil((i+1)·n/g) − 1, the bins
    ``adaptive_avg_pool2d`` uses."""
    m = torch.zeros(g, n, dtype=like.dtype, device=like.device)
    for i in range(g):
        lo, hi = (i * n) // g, -((-(i + 1) * n) // g)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def regions(x: torch.Tensor, g: int) -> torch.Tensor:
    """The mean of each of a g×g grid of regions of ``x`` (N, C, H, W) → (N, C, g, g), as
    ``adaptive_avg_pool2d(x, g)`` — but as two matrix products over the map's sizes, so the ONNX
    exporter (which cannot see the size an adaptive pooling starts from) takes it too; g = 1:
    the plain mean."""
    if g == 1:
        return x.mean((2, 3), keepdim=True)
    h, w = int(x.shape[2]), int(x.shape[3])
    return torch.einsum("nchw,ih,jw->ncij", x, _bins(h, g, x), _bins(w, g, x))


class _Regions(nn.Module):
    def __init__(self, grid: int) -> None:
        super().__init__()
        self.grid = grid

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return regions(x, self.grid)


def _pool(kind: str, grid: int = 1) -> nn.Module:
    return GeM(grid=grid) if kind == "gem" else _Regions(grid)


def _use_gem_at_the_end(module: nn.Module, name: str) -> None:
    """Replace the backbone's final global average pooling (the last ``AdaptiveAvgPool2d``
    defined) with GeM."""
    found = [n for n, m in module.named_modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not found:
        raise UsageError(f"model.pool=gem: backbone {name} has no global pooling to replace")
    parent, _, attr = found[-1].rpartition(".")
    setattr(module.get_submodule(parent) if parent else module, attr, GeM())


class _Enough(Exception):
    """Raised by the last needed stage's hook: the layers after it need not run."""


class Descriptor(nn.Module):
    """Pools the named stages of ``body`` (and its final feature with ``last``), each part
    L2-normalised, concatenated."""

    def __init__(self, body: nn.Module, paths: list[str], pool: str, last: bool,
                 grid: int | list[int] = 1) -> None:  # fmt: skip
        super().__init__()
        self.body, self.paths, self.last = body, list(paths), last
        self.grids = [grid] if isinstance(grid, int) else list(grid)
        # stage-major: stage 0 at each grid, then stage 1 … (one grid: one pool per stage)
        self.pools = nn.ModuleList(_pool(pool, g) for _ in self.paths for g in self.grids)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        maps: dict[int, torch.Tensor] = {}

        def grab(i):
            def hook(module, args, out):
                maps[i] = out
                if not self.last and len(maps) == len(self.paths):
                    raise _Enough

            return hook

        # hooks live for this call only: a deep copy (a teacher) or DDP sees a plain module
        handles = [self.body.get_submodule(p).register_forward_hook(grab(i))
                   for i, p in enumerate(self.paths)]  # fmt: skip
        try:
            final = self.body(x)
        except _Enough:
            final = None
        finally:
            for h in handles:
                h.remove()
        per = len(self.grids)
        parts = [F.normalize(pool(maps[i // per]).flatten(1).float(), dim=1)
                 for i, pool in enumerate(self.pools)]  # fmt: skip
        if self.last:
            parts.append(F.normalize(final.float(), dim=1))
        return torch.cat(parts, 1)

    @torch.no_grad()
    def part_sizes(self, size: int = 64) -> list[int]:
        """The width of each stage's part of the output (the stages in order, then ``last``;
        a stage pooled at several grids: their parts together)."""
        was, channels = self.training, {}
        self.eval()
        handles = [self.body.get_submodule(p).register_forward_hook(
            lambda m, a, o, i=i: channels.__setitem__(i, o.shape[1]))
            for i, p in enumerate(self.paths)]  # fmt: skip
        try:
            total = self(torch.zeros(1, 3, size, size)).shape[1]
        finally:
            for h in handles:
                h.remove()
            self.train(was)
        cells = sum(g * g for g in self.grids)
        sizes = [channels[i] * cells for i in range(len(self.paths))]
        return sizes + ([total - sum(sizes)] if self.last else [])


def describe(backbone, pool: str, layers: list[str], name: str, grid: int | list[int] = 1):
    """``backbone`` (``backbones.Backbone``) with the descriptor ``pool``/``layers``/``grid`` ask
    for; the plain backbone when they ask for its final average-pooled feature."""
    from dataclasses import replace

    if list(layers) == ["auto"]:
        raise UsageError(
            "model.layers = ['auto'] is chosen by udml train on its training images; for a "
            "start, name the stages (udml eval --label-free --each-layer ranks them)"
        )
    if list(layers) == ["all"]:
        if not backbone.stages:
            raise UsageError(f"model.layers = ['all']: backbone {name} names no stages")
        layers = list(backbone.stages)
    if pool == "gem" and "last" in layers:
        _use_gem_at_the_end(backbone.module, name)
    if list(layers) == ["last"]:
        return backbone
    unknown = [x for x in layers if x != "last" and x not in backbone.stages]
    if unknown:
        valid = ", ".join([*backbone.stages, "last"]) or "last (this backbone names no stages)"
        raise UsageError(f"model.layers: {name} has no stage '{unknown[0]}' (valid: {valid})")
    paths = [backbone.stages[x] for x in layers if x != "last"]
    module = Descriptor(backbone.module, paths, pool, "last" in layers, grid)
    return replace(backbone, module=module, feat_dim=sum(module.part_sizes()))
