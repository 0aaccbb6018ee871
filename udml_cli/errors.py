"""One exception type for every user-facing failure, with the exit code it maps to.

Commands raise ``UdmlError`` (or a subclass); the CLI prints ``error: <message>`` on one line to
stderr and exits with ``exit_code``. No traceback ever reaches the user for these.
"""

from __future__ import annotations

import os
import sys


class UdmlError(Exception):
    """A failure the user can fix. ``str(err)`` is the one line shown to them."""

    exit_code = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(UdmlError):
    """Bad flags, bad config values, unknown names: exit code 2."""

    exit_code = 2


class ConfigError(UsageError):
    """A config file or ``--set`` override is invalid."""


class DatasetError(UdmlError):
    """A dataset cannot be found, read or converted."""


class CheckpointError(UdmlError):
    """A checkpoint file is missing, truncated, not ours, or unsafe."""


class TrainingError(UdmlError):
    """Training cannot go on (a non-finite loss, too few non-empty clusters): exit code 3."""

    exit_code = 3


class RegistryError(UdmlError):
    """The dataset registry file is corrupt or cannot be written."""


def quiet_rank() -> bool:
    """A torchrun process other than rank 0: its notes would repeat rank 0's."""
    return os.environ.get("RANK", "0") != "0"


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (stdout carries data only)."""
    if quiet_rank():
        return
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """One ``note:`` line on stderr: something the user should know, not a problem."""
    if quiet_rank():
        return
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()


def describe_os_error(e: OSError, action: str = "cannot write") -> str:
    """One line for an OS error, naming the path: 'cannot write X: No space left on device'."""
    import errno

    reason = e.strerror or type(e).__name__
    hint = {
        errno.ENOSPC: "; free some space or write elsewhere",
        errno.EACCES: "; check the permissions or write elsewhere",
        errno.EROFS: "; write elsewhere",
        errno.EISDIR: "; give a file name, not a folder",
    }.get(e.errno or 0, "")
    where = e.filename if e.filename is not None else ""
    if not where:
        return f"{reason}{hint}"
    verb = action if e.errno in (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EISDIR) else "on"
    return f"{verb} {where}: {reason}{hint}"
