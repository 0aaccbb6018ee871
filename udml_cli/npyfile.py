"""Embeddings that need not fit in memory: a float32 .npy filled on disk, batch by batch.

``RowFile(path).allocate(n, dim)`` (for ``engine.extract``) writes the .npy header for ``(n, dim)``
and returns ``DiskRows``: ``rows[a:b] = batch`` writes at the right offset and ``rows[a:b]``
reads back, with plain file I/O (no memory map, whose written pages would count as the
process's memory). ``finish(count)`` keeps the first ``count`` rows: the header is rewritten in
place and the file truncated, so 100,000 rows need no second copy, on disk or in memory.
``copy_to(stream)`` writes the finished .npy to a stream (stdout) in chunks.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np

ROW = np.dtype(np.float32)


def npy_header(count: int, dim: int) -> bytes:
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(ROW), "fortran_order": False,
              "shape": (count, dim)}  # fmt: skip
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


class DiskRows:
    """``(n, dim)`` float32 rows in an open file from byte ``offset`` on."""

    def __init__(self, fd: int, offset: int, n: int, dim: int) -> None:
        self.fd, self.offset, self.shape = fd, offset, (n, dim)

    def __len__(self) -> int:
        return self.shape[0]

    def _span(self, key: slice) -> tuple[int, int]:
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError("DiskRows takes contiguous slices only")
        return start, max(start, stop)

    def __setitem__(self, key: slice, rows: np.ndarray) -> None:
        start, stop = self._span(key)
        data = np.ascontiguousarray(rows, dtype=ROW)
        if data.shape != (stop - start, self.shape[1]):
            raise ValueError(f"rows {data.shape} do not fit {(stop - start, self.shape[1])}")
        os.pwrite(self.fd, data.tobytes(), self.offset + start * self.shape[1] * ROW.itemsize)

    def __getitem__(self, key: slice) -> np.ndarray:
        start, stop = self._span(key)
        width = self.shape[1] * ROW.itemsize
        raw = os.pread(self.fd, (stop - start) * width, self.offset + start * width)
        return np.frombuffer(raw, dtype=ROW).reshape(stop - start, self.shape[1]).copy()

    def prefix(self, count: int) -> DiskRows:
        """The first ``count`` rows (same file)."""
        return DiskRows(self.fd, self.offset, count, self.shape[1])


class RowFile:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.rows: DiskRows | None = None

    def allocate(self, n: int, dim: int) -> DiskRows:
        header = npy_header(n, dim)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
        os.write(fd, header)
        os.ftruncate(fd, len(header) + n * dim * ROW.itemsize)  # sparse until written
        self.rows = DiskRows(fd, len(header), n, dim)
        return self.rows

    def finish(self, count: int) -> None:
        """Keep the first ``count`` rows as a valid .npy of shape ``(count, dim)``."""
        assert self.rows is not None
        fd, offset, dim = self.rows.fd, self.rows.offset, self.rows.shape[1]
        self.rows = None
        header = npy_header(count, dim)
        size = count * dim * ROW.itemsize
        try:
            if len(header) == offset:  # the usual case: the padded header keeps its length
                os.pwrite(fd, header, 0)
                os.ftruncate(fd, offset + size)
                return
        finally:
            os.close(fd)
        moved = self.path + ".move"  # a header of another length: rewrite once, in chunks
        with open(self.path, "rb") as src, open(moved, "wb") as dst:
            dst.write(header)
            src.seek(offset)
            remaining = size
            while remaining:
                block = src.read(min(remaining, 1 << 24))
                dst.write(block)
                remaining -= len(block)
        os.replace(moved, self.path)

    def copy_to(self, stream) -> None:
        with open(self.path, "rb") as fh:
            shutil.copyfileobj(fh, stream, 1 << 20)
