"""The torch path of the hot loops (what runs on a GPU) against the faiss path, here on the CPU:
k-means, the evaluation kNN (every metric) and the duplicate pair search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from udml_cli.clustering import kmeans
from udml_cli.index import duplicate_pairs
from udml_cli.metrics import retrieval_metrics

CPU = torch.device("cpu")


def _unit(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_kmeans_torch_path_matches_faiss():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(6, 8)) * 10
    blobs = (centres.repeat(50, 0) + rng.normal(size=(300, 8))).astype(np.float32)
    a, b = kmeans(blobs, 6, 20, seed=1), kmeans(blobs, 6, 20, seed=1, device=CPU)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(a.labels, b.labels) == 1.0
    assert b.objective == pytest.approx(a.objective, rel=1e-4)
    x = _unit(500, 16, 2)  # no structure: the same init, Lloyd either way
    a, b = kmeans(x, 20, 10, seed=3), kmeans(x, 20, 10, seed=3, device=CPU)
    assert b.objective <= a.objective * (1 + 1e-3)
    assert (a.labels == b.labels).mean() > 0.95


def test_evaluation_knn_torch_path_matches_faiss():
    x = _unit(400, 12, 4)
    x[50] = x[10]  # exact ties, which the metrics resolve for the positive
    labels = np.random.default_rng(5).integers(0, 20, 400)
    a = retrieval_metrics(x, labels, [1, 2, 4, 8])
    b = retrieval_metrics(x, labels, [1, 2, 4, 8], device=CPU)
    assert a["recall_at"] == pytest.approx(b["recall_at"])
    assert b["map_at_r"] == pytest.approx(a["map_at_r"], abs=1e-6)
    assert b["r_precision"] == pytest.approx(a["r_precision"], abs=1e-6)


def test_duplicate_pairs_torch_path_matches_faiss():
    x = _unit(300, 8, 6)
    x[100:120] = x[:20] + 0.02 * _unit(20, 8, 7)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    a, b = duplicate_pairs(x, 0.9), duplicate_pairs(x, 0.9, device=CPU)
    key = lambda p: sorted(zip(p[0].tolist(), p[1].tolist(), strict=True))  # noqa: E731
    assert key(a) == key(b) and len(a[0]) >= 20
    order = np.lexsort((b[1], b[0]))
    ref = np.einsum("ij,ij->i", x[b[0]], x[b[1]])
    np.testing.assert_allclose(b[2][order], ref[order], atol=1e-5)
