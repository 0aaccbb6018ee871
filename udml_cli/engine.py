"""The one place that decides how work runs: device, precision, workers, seeding, extraction.

Every command builds an ``Engine`` from ``config.engine`` and goes through it; rank and world size
are resolved here too, so torchrun/DDP can be added without touching callers.
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

from udml_cli.config import EngineConfig
from udml_cli.errors import UsageError


@dataclass
class Engine:
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype, None = full fp32
    workers: int  # DataLoader workers for training batches
    channels_last: bool
    rank: int = 0
    world_size: int = 1
    extract_workers: int = 0  # DataLoader workers for no-grad extraction

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def to_device(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device, non_blocking=True)
        if self.channels_last and batch.dim() == 4:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def loader(self, dataset, batch_size: int):
        """Sequential batches for extraction."""
        return torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.extract_workers,
            pin_memory=self.device.type == "cuda",
        )

    def batch_loader(self, dataset, batch_sampler):
        """A DataLoader over precomputed batches (lists of dataset keys)."""
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )


def _device(name: str) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UsageError("engine.device=cuda but no CUDA device is visible; use --device cpu")
    if name == "mps" and not mps:
        raise UsageError("engine.device=mps but MPS is not available; use --device cpu")
    return torch.device(name)


def resolve_engine(cfg: EngineConfig) -> Engine:
    device = _device(cfg.device)
    if cfg.precision == "auto":
        amp = torch.bfloat16 if device.type == "cuda" else None
    elif cfg.precision == "fp32":
        amp = None
    else:
        if device.type == "cpu" and cfg.precision == "fp16":
            raise UsageError("engine.precision=fp16 needs a GPU; use bf16 or fp32 on the CPU")
        amp = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    if cfg.workers == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        # measured in benchmarks/pipeline.py on 2 cores: a training step is long enough for one
        # worker to prefetch unnoticed, but during extraction a worker steals the cores the
        # model computes on, so extraction decodes in the main process there
        workers = min(8, max(1, (cpus or 1) - 1))
        extract_workers = 0 if (cpus or 1) <= 2 else workers
    else:
        workers = extract_workers = cfg.workers
    channels_last = device.type == "cuda" if cfg.channels_last == "auto" else cfg.channels_last
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    return Engine(device, amp, workers, channels_last, rank, world, extract_workers)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@torch.no_grad()
def extract(
    forward,
    dataset,
    engine: Engine,
    batch_size: int,
    description: str = "embedding",
    progress=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``dataset`` (yielding ``(image, key)``: an index, ``FAILED`` for an unreadable
    image) through ``forward``; float32 rows and the keys, in dataset order."""
    loader = engine.loader(dataset, batch_size)
    task = progress.add_task(description, total=len(dataset)) if progress else None
    feats, labels = [], []
    for images, target in loader:
        with engine.autocast():
            out = forward(engine.to_device(images))
        feats.append(out.float().cpu())
        labels.append(torch.as_tensor(target))
        if progress:
            progress.advance(task, len(images))
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    return torch.cat(feats).numpy(), torch.cat(labels).numpy().astype(np.int64)
