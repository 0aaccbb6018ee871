"""Embeddings that need not fit in memory: a float32 .npy filled on disk, batch by batch.

``RowFile(path, n_max)`` gives ``allocate(n, dim)`` for ``engine.extract``: a memory-mapped
``(n, dim)`` array in ``path``. ``finish(count)`` keeps the first ``count`` rows: the header is
rewritten in place and the file truncated (a 100,000-row embed needs no second copy, on disk or
in memory). ``copy_to(stream)`` writes the finished .npy to a stream (stdout) in chunks.
"""

from __future__ import annotations

import io
import os
import shutil

import numpy as np


def npy_header(count: int, dim: int) -> bytes:
    buf = io.BytesIO()
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)),
              "fortran_order": False, "shape": (count, dim)}  # fmt: skip
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


class RowFile:
    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        self.rows: np.memmap | None = None

    def allocate(self, n: int, dim: int) -> np.memmap:
        self.rows = np.lib.format.open_memmap(self.path, mode="w+", dtype=np.float32,
                                              shape=(n, dim))  # fmt: skip
        return self.rows

    def finish(self, count: int) -> None:
        """Keep the first ``count`` rows as a valid .npy of shape ``(count, dim)``."""
        assert self.rows is not None
        dim = self.rows.shape[1]
        self.rows.flush()
        offset = self.rows.offset
        self.rows = None  # unmapped before the file shrinks
        header = npy_header(count, dim)
        if len(header) == offset:  # the usual case: the padded header keeps its length
            with open(self.path, "r+b") as fh:
                fh.write(header)
                fh.truncate(offset + 4 * count * dim)
            return
        moved = self.path + ".move"  # a header of another length: rewrite once, in chunks
        with open(self.path, "rb") as src, open(moved, "wb") as dst:
            dst.write(header)
            src.seek(offset)
            remaining = 4 * count * dim
            while remaining:
                block = src.read(min(remaining, 1 << 24))
                dst.write(block)
                remaining -= len(block)
        os.replace(moved, self.path)

    def copy_to(self, stream) -> None:
        with open(self.path, "rb") as fh:
            shutil.copyfileobj(fh, stream, 1 << 20)
