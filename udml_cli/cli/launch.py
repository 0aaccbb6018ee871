"""``udml train --nproc N``: the same command in N processes under PyTorch's elastic launcher
(what ``torchrun --standalone --nproc-per-node N -m udml_cli train …`` runs)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

from udml_cli.errors import TrainingError, UsageError


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


def record_error(message: str) -> bool:
    """A process started by ``launch`` leaves its error line where the launcher finds it and
    prints nothing (the launcher prints one line for the run); ``False`` elsewhere."""
    from udml_cli.cli.session import SESSION

    folder = SESSION.errors_dir
    if folder is None:
        return False
    with contextlib.suppress(OSError):
        (folder / f"rank-{os.environ['RANK']}.txt").write_text(message)
    return True


def mark_interrupt_said() -> None:
    """Rank 0 of a launched run has said how Ctrl-C left its work: the launcher stays quiet."""
    from udml_cli.cli.session import SESSION

    folder = SESSION.errors_dir
    if folder is not None and os.environ.get("RANK") == "0":
        with contextlib.suppress(OSError):
            (folder / "interrupted").touch()


def launch(nproc: int, args: list[str], out: Path | None = None) -> None:
    """Run ``udml ARGS`` in ``nproc`` processes on this machine; returns when all have ended
    well. A failure ends every process: rank 0 has said why (one ``error:`` line), else the
    failing process is named here, with its error when it had one."""
    import logging
    import tempfile
    import time
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    from udml_cli.cli.session import SESSION

    if nproc < 1:
        raise UsageError(f"--nproc must be at least 1, not {nproc}")
    for name in list(logging.Logger.manager.loggerDict):  # each sets its own level
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)  # rank 0 speaks for the run
    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"udml-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0,
    )  # fmt: skip
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="udml-errors-") as errors:
        try:
            with SESSION.handing_errors_to(errors), _real_stdout():
                elastic_launch(config, sys.executable)("-m", "udml_cli", *args)
        except SignalException:  # Ctrl-C: every process got it too; rank 0 saved and said so,
            from udml_cli.cli.common import SaidInterrupted, say

            if not (Path(errors) / "interrupted").exists():  # unless it was still starting
                say("interrupted", "yellow", "(the processes were still starting)")
            raise SaidInterrupted from None
        except ChildFailedError as e:
            said = {int(p.stem[5:]): p.read_text() for p in Path(errors).glob("rank-*.txt")}
            last = out / "last.pt" if out is not None else None
            kept = last if last is not None and _written_since(last, started) else None
            _report(e.failures, said, nproc, kept)


@contextlib.contextmanager
def _real_stdout():
    """The processes inherit the real stdout as their file descriptor 1 (this process points
    its own at stderr, ``app.main``): rank 0 of ``udml embed --nproc`` writes data there."""
    from udml_cli.cli.session import SESSION

    fd = getattr(SESSION.data, "fd", None)
    if fd is None:
        yield
        return
    own = os.dup(1)
    os.dup2(fd, 1)
    try:
        yield
    finally:
        os.dup2(own, 1)
        os.close(own)


def _written_since(path: Path, started: float) -> bool:
    try:
        return path.stat().st_mtime >= started - 1
    except OSError:
        return False


def _report(failures: dict, said: dict[int, str], nproc: int, kept: Path | None = None) -> None:
    """Exit as the run failed, with one line: the process killed from outside (and the
    ``last.pt`` the survivors kept), else the error every process had (rank 0's), else the
    process that failed first with its own error."""
    # killed from outside (SIGTERM is the launcher stopping the rest after a failure)
    killed = sorted((r, f) for r, f in failures.items() if f.exitcode < 0 and f.exitcode != -15)
    saved = f"; {kept} holds the last whole step: continue with --resume" if kept else ""
    if killed:
        rank, first = killed[0]
        raise TrainingError(
            f"process {rank} of {nproc} was killed (signal {-first.exitcode}); the others were "
            f"stopped with it{saved}", exit_code=130,
        )  # fmt: skip
    if said:  # a process's own error line; rank 0's first (what every process refused alike)
        rank = 0 if 0 in said else min(said)
        codes = [f.exitcode for r, f in sorted(failures.items(), key=lambda t: t[0] != rank)
                 if f.exitcode > 0]  # fmt: skip
        code = (codes or [1])[0]
        # a refused setting (exit 2) is every process's: said once, as rank 0 would
        where = "" if rank == 0 or code == 2 else f"process {rank} of {nproc} stopped: "
        raise TrainingError(f"{where}{said[rank]}{saved}", exit_code=code)
    rank, first = min(failures.items())
    how = (
        f"was stopped (signal {-first.exitcode})"
        if first.exitcode < 0
        else f"failed (exit code {first.exitcode}; UDML_DEBUG=1 shows its traceback)"
    )
    code = first.exitcode if first.exitcode > 0 else 130
    raise TrainingError(
        f"process {rank} of {nproc} {how}; the others were stopped with it{saved}", exit_code=code
    ) from None
