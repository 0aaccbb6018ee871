"""The hot loops of clustering, evaluation and duplicate search in torch on an accelerator.

When CUDA is present (``hot_device``), k-means (k-means++ and Lloyd), the exact kNN of
evaluation and the duplicate pair search run as chunked matrix products on the GPU; on the CPU
they stay on faiss, unchanged. Each caller takes ``device``: ``None`` picks (the GPU if there is
one, else faiss), ``False`` forces faiss, a ``torch.device`` forces the torch path there (the
tests run it on the CPU and compare it with faiss).
"""

from __future__ import annotations

import numpy as np
import torch


def hot_device(device=None) -> torch.device | None:
    """The device the torch path runs on, or ``None`` for the CPU path (faiss)."""
    if device is False:
        return None
    if device is not None:
        return torch.device(device)
    return torch.device("cuda") if torch.cuda.is_available() else None


def knn(queries: np.ndarray, x: np.ndarray, k: int, device: torch.device, chunk: int = 2048):
    """``(similarities, indexes)`` of each query's ``k`` largest inner products with the rows
    of ``x``, most similar first (as faiss's ``IndexFlatIP.search``)."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    sims, idx = [], []
    for start in range(0, len(queries), chunk):
        q = torch.from_numpy(np.ascontiguousarray(queries[start : start + chunk],
                                                  dtype=np.float32)).to(device)  # fmt: skip
        s, i = (q @ xt.T).topk(k, dim=1)
        sims.append(s.cpu().numpy())
        idx.append(i.cpu().numpy())
    return np.concatenate(sims), np.concatenate(idx).astype(np.int64)


def pairs_above(x: np.ndarray, threshold: float, device: torch.device, chunk: int = 4096):
    """Every pair ``a < b`` with inner product ≥ ``threshold``: ``(a, b, similarity)``."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    n = len(xt)
    rows, cols, sims = [], [], []
    for start in range(0, n, chunk):
        block = xt[start : start + chunk] @ xt.T
        a, b = ((block >= threshold) & (torch.arange(n, device=device)[None, :] >
                                        torch.arange(start, start + len(block),
                                                     device=device)[:, None])).nonzero(as_tuple=True)  # fmt: skip
        rows.append((a + start).cpu().numpy())
        cols.append(b.cpu().numpy())
        sims.append(block[a, b].cpu().numpy())
    cat = lambda parts, t: np.concatenate(parts).astype(t) if parts else np.zeros(0, t)  # noqa: E731
    return cat(rows, np.int64), cat(cols, np.int64), cat(sims, np.float32)
