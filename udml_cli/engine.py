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
    threads: int = 0  # torch intra-op threads while training (0: leave torch's choice)
    extract_threads: int = 0  # … while extracting

    @contextlib.contextmanager
    def using_threads(self, n: int):
        """torch's intra-op threads set to ``n`` inside the block (0: unchanged)."""
        if not n or self.device.type != "cpu":
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(n)
        try:
            yield
        finally:
            torch.set_num_threads(before)

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
        """Sequential batches for extraction. Without worker processes, one thread decodes the
        next batch while the model runs on this one (PIL and torch release the GIL)."""
        loader = torch.utils.data.DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.extract_workers,
            pin_memory=self.device.type == "cuda",
        )
        if self.extract_workers == 0 and os.environ.get("UDML_PREFETCH", "1") == "1":
            return _prefetched(loader)
        return loader

    def batch_loader(self, dataset, batch_sampler):
        """A DataLoader over precomputed batches (lists of dataset keys)."""
        return torch.utils.data.DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )


def _prefetched(loader, depth: int = 2):
    """Iterate ``loader`` in a background thread, ``depth`` batches ahead; its exceptions are
    re-raised here, in order; a consumer that stops early stops the thread."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    end = object()

    def fill() -> None:
        if os.environ.get("UDML_PREFETCH_NICE"):
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(
                    os.PRIO_PROCESS,
                    threading.get_native_id(),
                    int(os.environ["UDML_PREFETCH_NICE"]),
                )
        try:
            for item in loader:
                while not stop.is_set():
                    try:
                        q.put((None, item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            q.put((None, end))
        except BaseException as e:  # handed to the consumer
            q.put((e, None))

    thread = threading.Thread(target=fill, daemon=True, name="udml-prefetch")
    thread.start()
    try:
        while True:
            error, item = q.get()
            if error is not None:
                raise error
            if item is end:
                return
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                q.get_nowait()
            thread.join(timeout=0.05)


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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = cores or 1
    if cfg.threads == "auto":
        # measured in benchmarks/threads.py: OpenMP threads that outnumber the free cores spin
        # against the DataLoader worker (and any other busy process)
        threads, extract_threads = max(1, cores - workers), max(1, cores - extract_workers)
    else:
        threads = extract_threads = cfg.threads
    channels_last = device.type == "cuda" if cfg.channels_last == "auto" else cfg.channels_last
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    return Engine(
        device, amp, workers, channels_last, rank, world, extract_workers, threads, extract_threads
    )


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
    allocate=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``dataset`` (yielding ``(image, key)``: an index, ``FAILED`` for an unreadable
    image) through ``forward``; float32 rows and the keys, in dataset order. ``allocate(n, dim)``
    (e.g. a memory-mapped .npy) receives the rows batch by batch, so memory stays flat."""
    with engine.using_threads(engine.extract_threads):
        return _extract(forward, dataset, engine, batch_size, description, progress, allocate)


def _extract(forward, dataset, engine, batch_size, description, progress, allocate):
    loader = engine.loader(dataset, batch_size)
    task = progress.add_task(description, total=len(dataset)) if progress else None
    rows = None
    feats, labels, at = [], [], 0
    for images, target in loader:
        with engine.autocast():
            out = forward(engine.to_device(images)).float().cpu().numpy()
        if allocate is not None:
            if rows is None:
                rows = allocate(len(dataset), out.shape[1])
            rows[at : at + len(out)] = out
        else:
            feats.append(out)
        at += len(out)
        labels.append(torch.as_tensor(target))
        if progress:
            progress.advance(task, len(images))
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    keys = torch.cat(labels).numpy().astype(np.int64)
    return (rows if allocate is not None else np.concatenate(feats)), keys
