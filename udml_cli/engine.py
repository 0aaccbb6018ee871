"""The one place that decides how work runs: device, precision, workers, seeding, extraction.

Every command builds an ``Engine`` from ``config.engine`` and goes through it. Under torchrun
(``RANK``/``WORLD_SIZE`` set) the engine is also the distributed one: ``distributed_session``
joins the process group (NCCL on CUDA, gloo on the CPU), ``extract`` shards its dataset across the
ranks and gathers the rows, ``gather_batch`` puts the whole global batch on every rank.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
from dataclasses import dataclass, replace

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
    local_rank: int = 0
    pids: tuple[int, ...] = ()  # every rank's process id, when all run on this machine

    def first_alive(self) -> int | None:
        """The lowest rank whose process still runs (``None``: not known, other machines): after
        a peer is lost, it keeps the run's last whole step when rank 0 is the one gone."""
        if len(self.pids) != self.world_size:
            return None
        for rank, pid in enumerate(self.pids):
            if _running(pid):
                return rank
        return None

    def use_threads(self, n: int) -> None:
        """torch's intra-op threads to ``n`` for the work that follows (0 or the current value:
        no call). Set only on a change, never "restored": measured in benchmarks/embed_memory.py,
        an explicit ``torch.set_num_threads(2)`` on 2 cores (the value torch already had) made
        every later batch leak ~11 KB of anonymous memory per image (1 GB over 100k images)."""
        if n and self.device.type == "cpu" and n != torch.get_num_threads():
            torch.set_num_threads(n)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process, the process group joined (``distributed_session``)."""
        import torch.distributed as dist

        return self.world_size > 1 and dist.is_available() and dist.is_initialized()

    @property
    def processes(self) -> int:
        """How many processes share each batch now (1 outside a joined process group)."""
        return self.world_size if self.distributed else 1

    def shard(self, n: int, rank: int | None = None) -> range:
        """This rank's (or ``rank``'s) contiguous share of ``n`` items (the first ``n % world``
        take one more)."""
        rank = self.rank if rank is None else rank
        per, extra = divmod(n, self.world_size)
        start = rank * per + min(rank, extra)
        return range(start, start + per + (rank < extra))

    def gather_rows(self, x: torch.Tensor) -> torch.Tensor:
        """Every rank's rows of ``x`` in rank order (counts may differ between ranks)."""
        import torch.distributed as dist

        x = x.to(self.device)
        count = torch.tensor([len(x)], device=self.device)
        counts = [torch.zeros_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        padded = x.new_zeros((int(max(counts)), *x.shape[1:]))
        padded[: len(x)] = x
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([p[: int(c)] for p, c in zip(parts, counts, strict=True)])

    def gather_batch(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch's rows (every rank holds an equal share) on every rank; gradients
        flow into this rank's own rows only, the others are copies. The loss each rank computes
        on it is therefore the single-process loss; scaled by the world size it gives, after
        DDP averages the gradients, exactly the single-process gradient."""
        import torch.distributed as dist

        parts = [torch.empty_like(x) for _ in range(self.world_size)]
        dist.all_gather(parts, x.detach().contiguous())
        parts[self.rank] = x
        return torch.cat(parts)

    def sum_over_ranks(self, values: list[float]) -> list[float]:
        import torch.distributed as dist

        if not self.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def from_main(self, obj):
        """Rank 0's ``obj`` on every rank (itself where there is one process)."""
        import torch.distributed as dist

        if not self.distributed:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, module: torch.nn.Module, unused: bool = False) -> torch.nn.Module:
        """``module`` under DistributedDataParallel when distributed (its construction copies
        rank 0's parameters and buffers to every rank), else itself. ``unused``: some trained
        parameters take no part in the forward (DDP must look for them every step)."""
        if not self.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=unused)

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


def _device(name: str, local_rank: int = 0) -> torch.device:
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if cuda and name in ("auto", "cuda") and "LOCAL_RANK" in os.environ:
        return torch.device("cuda", local_rank)  # torchrun: one GPU per local rank
    if name == "auto":
        return torch.device("cuda" if cuda else "mps" if mps else "cpu")
    if name == "cuda" and not cuda:
        raise UsageError("engine.device=cuda but no CUDA device is visible; use --device cpu")
    if name == "mps" and not mps:
        raise UsageError("engine.device=mps but MPS is not available; use --device cpu")
    return torch.device(name)


def launched_rank() -> tuple[int, int, int, int]:
    """``(rank, world size, local rank, local world size)`` as torchrun sets them (0, 1, 0, 1
    in a plain process)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", 1))
    return (int(env.get("RANK", 0)), world, int(env.get("LOCAL_RANK", 0)),
            int(env.get("LOCAL_WORLD_SIZE", world)))  # fmt: skip


def resolve_engine(cfg: EngineConfig, inference: bool = False) -> Engine:
    """The engine of ``cfg``; ``inference``: a command that only embeds with a model it loaded
    (channels-last "auto" is then on on the CPU too: 1.1-1.6x the images/s, BENCHMARKS.md)."""
    rank, world, local_rank, local_world = launched_rank()
    device = _device(cfg.device, local_rank)
    if cfg.precision == "auto":
        amp = torch.bfloat16 if device.type == "cuda" else None
    elif cfg.precision == "fp32":
        amp = None
    else:
        if device.type == "cpu" and cfg.precision == "fp16":
            raise UsageError("engine.precision=fp16 needs a GPU; use bf16 or fp32 on the CPU")
        amp = torch.bfloat16 if cfg.precision == "bf16" else torch.float16
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cores = max(1, (cores or 1) // local_world)  # the share of one process on this machine
    if cfg.workers == "auto":
        # measured in benchmarks/pipeline.py on 2 cores: a training step is long enough for one
        # worker to prefetch unnoticed, but during extraction a worker steals the cores the
        # model computes on, so extraction decodes in the main process there
        workers = min(8, max(1, cores - 1))
        extract_workers = 0 if cores <= 2 else workers
    else:
        workers = extract_workers = cfg.workers
    if cfg.threads == "auto" and device.type == "cpu":
        # measured in benchmarks/threads.py (2 cores, demo step): alone, one thread per core is
        # fastest (48 vs 31 img/s with one thread); with another busy process, threads that
        # outnumber the free cores spin against it and the DataLoader worker (19 vs 33 img/s).
        # So: all cores unless something else is using the CPU right now; then the cores nobody
        # else uses, less one per DataLoader worker.
        busy = others_busy() if local_world == 1 else 0.0  # ranks start together: busy alike
        free = cores - round(min(busy, cores))  # the cores nobody else is using
        threads = max(1, free - workers) if busy >= 0.5 else cores
        extract_threads = max(1, free - extract_workers) if busy >= 0.5 else cores
    elif cfg.threads == "auto":
        threads = extract_threads = 0  # a GPU does the math: torch's default
    else:
        threads = extract_threads = cfg.threads
    # on the CPU only in one process: under --nproc (gloo) it made a process abort at exit
    auto = device.type == "cuda" or (inference and device.type == "cpu" and world == 1)
    channels_last = auto if cfg.channels_last == "auto" else cfg.channels_last
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return Engine(device, amp, workers, channels_last, rank, world, extract_workers, threads,
                  extract_threads, local_rank)  # fmt: skip


@contextlib.contextmanager
def distributed_session(engine: Engine):
    """Join torchrun's process group for the work inside (NCCL on CUDA, gloo on the CPU) and
    leave it after; nothing where there is one process."""
    import torch.distributed as dist

    if engine.world_size == 1 or dist.is_initialized():
        yield engine
        return
    if engine.device.type == "cuda":
        torch.cuda.set_device(engine.device)
    dist.init_process_group("nccl" if engine.device.type == "cuda" else "gloo")
    if os.environ.get("LOCAL_WORLD_SIZE") == str(engine.world_size):  # one machine
        pids: list = [None] * engine.world_size
        dist.all_gather_object(pids, os.getpid())
        engine.pids = tuple(pids)
    # the launcher stops the others with SIGTERM when one process fails: handled as Ctrl-C,
    # so rank 0 keeps its last whole step in last.pt
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield engine
    finally:
        signal.signal(signal.SIGTERM, previous)
        dist.destroy_process_group()


def session_for(device: str):
    """``distributed_session`` for a command that embeds (``udml index|embed --nproc``): the
    process group of the processes torchrun started, nothing in a plain process."""
    from udml_cli.config import EngineConfig

    return distributed_session(resolve_engine(EngineConfig(device=device)))


@contextlib.contextmanager
def deferred_signals():
    """Ctrl-C and SIGTERM wait until the work inside is done (a checkpoint being written), then
    arrive as usual."""
    stop = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


PF_EXITING = 0x4  # the kernel's task flag, set as a process starts to exit (linux/sched.h)


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs and is not on its way out: a zombie is dead, only not reaped
    yet, and a killed process closes its sockets (which is how its peers learn it is gone)
    while still in state R or D, with PF_EXITING already set."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        state, flags = fields[0], int(fields[6])
    except (OSError, IndexError, ValueError):
        return False
    return state not in ("Z", "X") and not flags & PF_EXITING


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def others_busy(seconds: float = 0.2) -> float:
    """How many cores other processes keep busy right now: the machine's non-idle time over a
    short sample (/proc/stat), this process's own share taken out. 0.0 where /proc is absent."""
    import time

    def sample() -> tuple[float, float, float]:
        with open("/proc/stat") as fh:
            fields = [float(v) for v in fh.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)
        own = sum(os.times()[:2])
        return sum(fields), idle, own

    try:
        total0, idle0, own0 = sample()
        time.sleep(seconds)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    elapsed = (total1 - total0) / ticks  # core-seconds that passed on all cores
    if elapsed <= 0:
        return 0.0
    busy = elapsed - (idle1 - idle0) / ticks - (own1 - own0)
    return max(0.0, busy / seconds)


def release_freed_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere nothing).
    Measured in benchmarks/embed_memory.py: without it, extraction's freed batch buffers stay in
    a fragmented heap and the process grows ~11 KB per image (1 GB over 100,000 images); fixing
    glibc's mmap threshold instead cost 25 % of the speed, this costs nothing measurable."""
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _libc.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _libc = False
    if _libc:
        _libc.malloc_trim(0)


_libc = None


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
    on_host: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Stream ``dataset`` (yielding ``(image, key)``: an index, ``FAILED`` for an unreadable
    image) through ``forward``; float32 rows and the keys, in dataset order. ``allocate(n, dim)``
    (e.g. ``npyfile.DiskRows``, a .npy on disk) receives the rows batch by batch, so memory stays flat.
    ``on_host``: ``forward`` gets the batches as decoded, not copied to the device (no network)."""
    engine.use_threads(engine.extract_threads)
    if engine.distributed and allocate is None and len(dataset) >= engine.world_size:
        # each rank extracts its share; every rank gets all rows back, in dataset order
        part = torch.utils.data.Subset(dataset, list(engine.shard(len(dataset))))
        rows, keys = extract(forward, part, replace(engine, world_size=1), batch_size,
                             description, progress, on_host=on_host)  # fmt: skip
        keys = engine.gather_rows(torch.from_numpy(keys)).cpu().numpy()
        return engine.gather_rows(torch.from_numpy(rows)).cpu().numpy(), keys
    loader = engine.loader(dataset, batch_size)
    task = progress.add_task(description, total=len(dataset)) if progress else None
    rows = None
    feats, labels, at = [], [], 0
    for images, target in loader:
        if on_host:
            out = forward(images).float().numpy()
        else:
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
        if len(labels) % 16 == 0:
            release_freed_memory()
        if progress:
            progress.advance(task, len(images))
    if not labels:
        return np.zeros((0, 0), np.float32), np.zeros(0, np.int64)
    keys = torch.cat(labels).numpy().astype(np.int64)
    return (rows if allocate is not None else np.concatenate(feats)), keys


def peer_lost(e: RuntimeError) -> bool:
    """A collective failed because another process of the run is gone (gloo raises a plain
    RuntimeError naming itself, NCCL a DistError)."""
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or "gloo" in text or "NCCL" in text
