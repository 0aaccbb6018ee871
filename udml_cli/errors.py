"""One exception type for every user-facing failure, with the exit code it maps to.

Commands raise ``UdmlError`` (or a subclass); the CLI prints ``error: <message>`` on one line to
stderr and exits with ``exit_code``. No traceback ever reaches the user for these.
"""

from __future__ import annotations

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


class RegistryError(UdmlError):
    """The dataset registry file is corrupt or cannot be written."""


def warn(message: str) -> None:
    """One ``warning:`` line on stderr (stdout carries data only)."""
    sys.stderr.write(f"warning: {message}\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """One ``note:`` line on stderr: something the user should know, not a problem."""
    sys.stderr.write(f"note: {message}\n")
    sys.stderr.flush()
