"""Retrieval and clustering metrics on L2-normalised embeddings; query = gallery, self excluded.

Exact inner-product kNN with faiss in chunks of queries (memory ~ chunk × k, never N × N). The query itself
is removed by its index. Ties are resolved in favour of positives: the rank of a query's nearest
positive is the number of other items strictly more similar than it; a top-R list orders equal
similarities positives first. Queries whose class has no other member are left out (counted in
``singletons``).

- Recall@K: fraction of queries whose nearest positive has rank < K.
- MAP@R, R-Precision (Musgrave et al. 2020), R = number of other members of the query's class.
- NMI: k-means (k = number of classes, k-means++ init, best of 5 inits, fixed seeds) against the
  true labels.
"""

from __future__ import annotations

import numpy as np

CHUNK = 2048  # queries per faiss search: memory ~ CHUNK × k, never N × N


def _ranked_precision(rel: np.ndarray, r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MAP@R and R-precision per row from relevance in rank order (only the first R count)."""
    positions = np.arange(1, rel.shape[1] + 1)
    rel = rel & (positions[None, :] <= r[:, None])
    hits = rel.cumsum(1)
    return ((hits / positions) * rel).sum(1) / r, rel.sum(1) / r


def _tie_sorted(vals: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows ordered by similarity descending, positives first among equal similarities."""
    order = np.lexsort((~pos, -vals), axis=-1)
    return np.take_along_axis(pos, order, 1), np.take_along_axis(vals, order, 1)


def retrieval_metrics(
    x: np.ndarray, labels: np.ndarray, recall_at: list[int], chunk: int | None = None,
    device=None,
) -> dict:  # fmt: skip
    """``device`` (``device_ops.hot_device``): the kNN in torch there (with CUDA by default);
    else faiss on the CPU."""
    import faiss

    from udml_cli.device_ops import hot_device, knn

    on = hot_device(device)
    x = np.ascontiguousarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    n = len(labels)
    _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    r_all = counts[inverse] - 1
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    ks = sorted(set(recall_at))
    # retrieve enough to decide every Recall@K and every top-R list (+1 for the query itself)
    k = int(min(n, max(ks[-1], r_all.max(initial=0)) + 1))
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    hits = dict.fromkeys(ks, 0)
    map_sum = rprec_sum = 0.0
    queries = 0
    for start in range(0, n, chunk or CHUNK):
        rows = np.arange(start, min(start + (chunk or CHUNK), n))
        rows = rows[r_all[rows] > 0]
        if len(rows) == 0:
            continue
        sims, idx = knn(x[rows], x, k, on) if on is not None else index.search(x[rows], k)
        # drop the query itself by index (or the last neighbour when ties pushed it out)
        keep = idx != rows[:, None]
        keep[keep.all(1), -1] = False
        sims = sims[keep].reshape(len(rows), k - 1)
        idx = idx[keep].reshape(len(rows), k - 1)
        pos = labels[idx] == labels[rows][:, None]
        # Recall@K: rank of the nearest positive = neighbours strictly more similar than it
        best = np.where(pos, sims, -np.inf).max(1)
        for i in np.flatnonzero(~pos.any(1)):  # no positive retrieved: a tie at the end, or a miss
            q = rows[i]
            others = members[inverse[q]][members[inverse[q]] != q]
            best[i] = (x[others] @ x[q]).max()
        rank = (sims > best[:, None]).sum(1)
        rank[rank >= k - 1] = n  # every retrieved item is more similar: a miss for every K
        for kk in ks:
            hits[kk] += int((rank < kk).sum())
        # MAP@R and R-precision on the top-R list
        r = r_all[rows]
        rel, vals = _tie_sorted(sims, pos)
        map_r, rprec = _ranked_precision(rel, r)
        boundary = np.take_along_axis(vals, (r - 1)[:, None], 1)[:, 0]
        for i in np.flatnonzero((boundary == vals[:, -1]) & (r < n - 1)):
            q = rows[i]  # the tie group at position R may go past the retrieved list: redo exactly
            full = x @ x[q]
            full_pos = labels == labels[q]
            full, full_pos = np.delete(full, q)[None], np.delete(full_pos, q)[None]
            rel_i, _ = _tie_sorted(full, full_pos)
            m, p = _ranked_precision(rel_i, r[i : i + 1])
            map_r[i], rprec[i] = m[0], p[0]
        map_sum += float(map_r.sum())
        rprec_sum += float(rprec.sum())
        queries += len(rows)
    denom = max(queries, 1)
    return {
        "recall_at": {str(kk): hits[kk] / denom for kk in ks},
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
    # NMI of a single k-means run swings by several points with its init; keep the best of 5
    # inits where that is cheap (k·n ≤ 5e7), one run at SOP scale
    result = kmeans(x, k, seed=seed, n_init=5 if k * len(x) <= 5e7 else 1)
    return float(normalized_mutual_info_score(labels, result.labels))


def evaluate_embeddings(
    x: np.ndarray, labels: np.ndarray, recall_at: list[int], with_nmi: bool = True, seed: int = 0
) -> dict:
    """Retrieval metrics and NMI; refuses a split with nothing to score (no query has a
    positive, or one class only: every neighbour would be right), so that no degenerate number
    looks like a result."""
    from udml_cli.errors import DatasetError

    classes = len(np.unique(labels))
    if classes < 2:
        raise DatasetError(
            f"nothing to score: the {len(labels)} images are all of one class (every neighbour "
            "would count as right); evaluate on a split with at least two classes"
        )
    out = retrieval_metrics(x, labels, recall_at)
    if out["num_queries"] == 0:
        raise DatasetError(
            f"nothing to score: none of the {len(labels)} images has another image of its class "
            f"({classes} classes); retrieval needs classes of two or more images"
        )
    out["nmi"] = nmi(x, labels, seed) if with_nmi else None
    return out
