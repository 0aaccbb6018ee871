"""Rotation prediction: rotate images by 0/90/180/270° on the device, classify the rotation."""

from __future__ import annotations

import torch
from torch.nn import functional as F


def rotate_batch(
    images: torch.Tensor, quarter_turns=(1, 2, 3)
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotated copies of ``images`` (N, C, H, W) and their rotation labels (quarter turns)."""
    rotated = torch.cat([torch.rot90(images, k, dims=(2, 3)) for k in quarter_turns])
    labels = torch.arange(len(quarter_turns), device=images.device).repeat_interleave(len(images))
    return rotated, torch.as_tensor(quarter_turns, device=images.device)[labels]


def rotation_loss(
    logits: torch.Tensor, turns: torch.Tensor, rows: int | None = None
) -> torch.Tensor:
    """Cross-entropy in fp32 with autocast off (as the Weight loss), summed and divided by
    ``rows`` (default: these rows, the mean). Under DDP a process holds some of the batch's
    rotation rows: each divides by the whole batch's count, and the shares sum to the mean."""
    with torch.autocast(logits.device.type, enabled=False):
        total = F.cross_entropy(logits.float(), turns, reduction="sum")
        return total / (len(turns) if rows is None else rows)


def rotation_draw(n: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which images of a batch of ``n`` are rotated: ``count`` drawn uniformly with replacement
    across the whole batch, as the original code does (not the first ``count``, which would come
    from the first few clusters only)."""
    return torch.randint(n, (count,), generator=generator)
