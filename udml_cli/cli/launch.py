"""``udml train --nproc N``: the same command in N processes under PyTorch's elastic launcher
(what ``torchrun --standalone --nproc-per-node N -m udml_cli train …`` runs)."""

from __future__ import annotations

import sys

from udml_cli.errors import TrainingError, UsageError

ARGS: list[str] = []  # the command line of this udml process (set by ``app.main``)


def without_nproc(args: list[str]) -> list[str]:
    """``args`` less ``--nproc N`` / ``--nproc=N`` (each process is one of the N)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def launch(nproc: int, args: list[str]) -> None:
    """Run ``udml ARGS`` in ``nproc`` processes on this machine; returns when all have ended
    well. A failure ends every process: rank 0 has said why (one ``error:`` line), else the
    failing rank is named here."""
    import logging
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    for name in list(logging.Logger.manager.loggerDict):  # each sets its own level
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # rank 0 speaks for the run
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"udml-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )  # fmt: skip
    try:
        elastic_launch(config, sys.executable)("-m", "udml_cli", *args)
    except SignalException:  # Ctrl-C: every process got it too; rank 0 saved and said so
        sys.exit(130)
    except ChildFailedError as e:
        failures = e.failures
        zero = failures.get(0)
        if zero is not None and zero.exitcode > 0:  # rank 0 said what went wrong
            sys.exit(zero.exitcode)
        rank, first = min((r, f) for r, f in failures.items() if r != 0 or len(failures) == 1)
        code = first.exitcode if first.exitcode > 0 else 130  # killed by a signal
        how = (
            f"was killed (signal {-first.exitcode})"
            if first.exitcode < 0
            else f"failed (exit code {first.exitcode}; UDML_DEBUG=1 shows its traceback)"
        )
        raise TrainingError(
            f"process {rank} of {nproc} {how}; the others were stopped with it", exit_code=code
        ) from None
