"""Retrieval and clustering metrics on L2-normalised embeddings; query = gallery, self excluded.

Exact inner-product search in chunks of queries (memory ~ chunk × N, never N × N). The query itself
is removed by its index. Ties are resolved in favour of positives: the rank of a query's nearest
positive is the number of other items strictly more similar than it; a top-R list orders equal
similarities positives first. Queries whose class has no other member are left out (counted in
``singletons``).

- Recall@K: fraction of queries whose nearest positive has rank < K.
- MAP@R, R-Precision (Musgrave et al. 2020), R = number of other members of the query's class.
- NMI: k-means (k = number of classes, k-means++ init, fixed seed) against the true labels.
"""

from __future__ import annotations

import numpy as np
import torch

MEMORY_BUDGET = 64 * 1024 * 1024  # floats of the similarity chunk (256 MB)


def _ranked_precision(rel: torch.Tensor, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MAP@R and R-precision per row from relevance in rank order (only the first R count)."""
    k = rel.shape[1]
    positions = torch.arange(1, k + 1, dtype=torch.float64)
    rel = rel & (positions[None, :] <= r[:, None])
    hits = rel.double().cumsum(1)
    map_r = ((hits / positions) * rel).sum(1) / r
    return map_r, rel.sum(1).double() / r


def _tie_sorted(vals: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Relevance ordered by similarity descending, positives first among equal similarities."""
    order = torch.sort((~pos).to(torch.int8), dim=1, stable=True).indices
    vals, pos = vals.gather(1, order), pos.gather(1, order)
    order = torch.sort(vals, dim=1, descending=True, stable=True).indices
    return pos.gather(1, order), vals.gather(1, order)


def retrieval_metrics(
    x: np.ndarray, labels: np.ndarray, recall_at: list[int], chunk: int | None = None
) -> dict:
    x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    lab = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    n = len(lab)
    _, inverse, counts = torch.unique(lab, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1
    chunk = chunk or max(1, min(n, MEMORY_BUDGET // max(n, 1)))
    ks = sorted(set(recall_at))
    hits = {k: 0 for k in ks}
    map_sum = rprec_sum = 0.0
    queries = 0
    for start in range(0, n, chunk):
        rows = torch.arange(start, min(start + chunk, n))
        valid = r_all[rows] > 0
        rows = rows[valid]
        if len(rows) == 0:
            continue
        sims = x_t[rows] @ x_t.T
        sims[torch.arange(len(rows)), rows] = float("-inf")  # the query itself, by index
        same = lab[rows][:, None] == lab[None, :]
        same[torch.arange(len(rows)), rows] = False
        best_pos = torch.where(same, sims, float("-inf")).amax(1)
        rank = (sims > best_pos[:, None]).sum(1)
        for k in ks:
            hits[k] += int((rank < k).sum())
        r = r_all[rows]
        top = int(min(r.max() + 1, n - 1))
        vals, idx = sims.topk(top, dim=1)
        rel, vals = _tie_sorted(vals, same.gather(1, idx))
        map_r, rprec = _ranked_precision(rel, r)
        # a tie group that reaches past the retrieved list: redo those rows over the full row
        boundary = vals.gather(1, (r - 1)[:, None]).squeeze(1)
        partial = (boundary == vals[:, -1]) & (r < n - 1)
        for i in torch.nonzero(partial).flatten().tolist():
            full_rel, _ = _tie_sorted(sims[i : i + 1], same[i : i + 1])
            m, p = _ranked_precision(full_rel, r[i : i + 1])
            map_r[i], rprec[i] = m[0], p[0]
        map_sum += float(map_r.sum())
        rprec_sum += float(rprec.sum())
        queries += len(rows)
    denom = max(queries, 1)
    return {
        "recall_at": {str(k): hits[k] / denom for k in ks},
        "map_at_r": map_sum / denom,
        "r_precision": rprec_sum / denom,
        "num_queries": queries,
        "singletons": int((r_all == 0).sum()),
        "num_classes": len(counts),
    }


def nmi(x: np.ndarray, labels: np.ndarray, seed: int = 0) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    from udml_cli.clustering import kmeans

    k = len(np.unique(labels))
    result = kmeans(x, k, seed=seed)
    return float(normalized_mutual_info_score(labels, result.labels))


def evaluate_embeddings(
    x: np.ndarray, labels: np.ndarray, recall_at: list[int], with_nmi: bool = True, seed: int = 0
) -> dict:
    out = retrieval_metrics(x, labels, recall_at)
    out["nmi"] = nmi(x, labels, seed) if with_nmi else None
    return out
