"""``udml train --nproc N``: the same command in N processes under PyTorch's elastic launcher
(what ``torchrun --standalone --nproc-per-node N -m udml_cli train …`` runs)."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

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


def record_error(message: str) -> None:
    """A process started by ``launch`` leaves its error line where the launcher finds it (only
    rank 0 prints: the others' lines would repeat it)."""
    folder = os.environ.get("UDML_ERRORS_DIR")
    if folder:
        with contextlib.suppress(OSError):
            Path(folder, f"rank-{os.environ.get('RANK', '0')}.txt").write_text(message)


def launch(nproc: int, args: list[str]) -> None:
    """Run ``udml ARGS`` in ``nproc`` processes on this machine; returns when all have ended
    well. A failure ends every process: rank 0 has said why (one ``error:`` line), else the
    failing process is named here, with its error when it had one."""
    import logging
    import tempfile
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
    with tempfile.TemporaryDirectory(prefix="udml-errors-") as errors:
        os.environ["UDML_ERRORS_DIR"] = errors  # the processes inherit it
        try:
            elastic_launch(config, sys.executable)("-m", "udml_cli", *args)
        except SignalException:  # Ctrl-C: every process got it too; rank 0 saved and said so
            sys.exit(130)
        except ChildFailedError as e:
            said = {int(p.stem[5:]): p.read_text() for p in Path(errors).glob("rank-*.txt")}
            _report(e.failures, said, nproc)
        finally:
            os.environ.pop("UDML_ERRORS_DIR", None)


def _report(failures: dict, said: dict[int, str], nproc: int) -> None:
    """Exit as the run failed: quietly where rank 0 printed the error every process had, else
    with one line naming the process that failed first (killed, or with its own error)."""
    # killed from outside (SIGTERM is the launcher stopping the rest after a failure)
    killed = sorted((r, f) for r, f in failures.items() if r != 0 and f.exitcode not in (-15,)
                    and f.exitcode < 0)  # fmt: skip
    if 0 in said and not killed:  # every process refused alike (a setting, the data)
        zero = failures.get(0)
        codes = [f.exitcode for f in failures.values() if f.exitcode > 0]
        sys.exit(zero.exitcode if zero is not None and zero.exitcode > 0 else (codes or [1])[0])
    # else name the process that failed first: killed (rank 0 said what it saved), or its error
    others = sorted((r, f) for r, f in failures.items() if r != 0) or sorted(failures.items())
    rank, first = (killed or others)[0]
    if first.exitcode < 0:
        how = f"was killed (signal {-first.exitcode})"
    elif rank in said:
        how = f"stopped: {said[rank]}"
    else:
        how = f"failed (exit code {first.exitcode}; UDML_DEBUG=1 shows its traceback)"
    code = first.exitcode if first.exitcode > 0 else 130
    raise TrainingError(
        f"process {rank} of {nproc} {how}; the others were stopped with it", exit_code=code
    ) from None
