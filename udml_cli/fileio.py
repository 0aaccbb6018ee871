"""Every file udml writes goes through here: atomic, checked before the work, one-line errors.

- ``atomic_open``: a temp file beside the target, renamed over it on success, deleted on failure,
  so nothing half-written is ever left where the user expects a result. Created files get the
  normal umask-derived mode (not mkstemp's 0600).
- ``ensure_writable`` / ``ensure_writable_dir``: called before long work, so a bad output path
  fails at once, not after an hour of embedding.
- Any ``OSError`` (disk full, permissions, a folder where a file goes) becomes one ``UdmlError``
  naming the path the user gave.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from udml_cli.errors import UdmlError, UsageError, describe_os_error


def umask() -> int:
    current = os.umask(0)
    os.umask(current)
    return current


def first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists."""
    for parent in [path, *path.parents]:
        if parent.exists():
            return parent
    return Path("/")


def ensure_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Refuse an output file path that cannot be written, before any work."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder; give a file name")
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(f"{what} {path} is not a regular file (a device or pipe); refusing it")
    _check_parent(path, what)
    return path


def ensure_writable_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} exists and is not a folder")
    _check_parent(path if path.exists() else path.parent, what, folder=path)
    return path


def _check_parent(path: Path, what: str, folder: Path | None = None) -> None:
    base = first_existing(path.parent if folder is None else path)
    target = folder or path
    if not base.is_dir():
        raise UsageError(f"cannot write {what} {target}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {what} {target}: no permission to write in {base}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temp file beside ``path`` (empty, the umask's mode) to write by any means; on success
    it is synced and renamed over ``path``, on error deleted."""
    path = Path(path)
    if path.exists() and not stat.S_ISREG(path.stat().st_mode):
        raise UsageError(f"{path} is not a regular file (a folder, device or pipe); refusing it")
    tmp = None
    base = first_existing(path.parent)
    if not base.is_dir():
        raise UsageError(f"cannot write {path}: {base} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.fchmod(fd, 0o666 & ~umask())
        os.close(fd)
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        _remove(tmp)
        e.filename = str(path)  # the user's path, not the temp file's
        raise UdmlError(describe_os_error(e)) from None
    except BaseException:
        _remove(tmp)
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success rename it over ``path``, on error delete it."""
    with atomic_path(path) as tmp, open(tmp, mode) as fh:
        yield fh


def _remove(tmp: str | None) -> None:
    if tmp is not None:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as fh:
        fh.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append one line (metrics.jsonl); a full disk is one error line naming the file."""
    try:
        with open(path, "a") as fh:
            fh.write(line + "\n")
    except OSError as e:
        e.filename = str(path)
        raise UdmlError(describe_os_error(e)) from None
