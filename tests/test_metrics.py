"""Metrics against a brute-force per-query reference and a hand-worked example."""

import numpy as np
import pytest

from udml_cli.metrics import evaluate_embeddings, retrieval_metrics


def reference(x, labels, ks):
    """Plain loop: sort the others by (similarity desc, positives first among ties)."""
    n = len(x)
    hits = {k: 0 for k in ks}
    maps, rps = [], []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        is_pos = np.array([labels[j] == labels[i] for j in others])
        if not is_pos.any():
            continue
        sims = [float(np.dot(x[j].astype(np.float64), x[i].astype(np.float64))) for j in others]
        order = sorted(range(len(others)), key=lambda t: (-sims[t], not is_pos[t]))
        rel = is_pos[order]
        for k in ks:
            hits[k] += bool(rel[:k].any())
        r = int(is_pos.sum())
        maps.append(sum(rel[q] * rel[: q + 1].sum() / (q + 1) for q in range(r)) / r)
        rps.append(rel[:r].sum() / r)
    q = len(maps)
    return {str(k): hits[k] / q for k in ks}, float(np.mean(maps)), float(np.mean(rps)), q


def _case(seed):
    rng = np.random.default_rng(seed)
    n, d = rng.integers(30, 120), rng.integers(3, 8)
    if seed % 2:  # quantised: many exact ties, exact in any summation order
        x = rng.integers(-2, 3, (n, d)).astype(np.float32) / 4
    else:
        x = rng.normal(size=(n, d)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    labels = rng.integers(0, max(2, n // 4), n)
    labels[:3] = [1000, 1001, 1002]  # singleton classes
    return x, labels


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("chunk", [None, 7])
def test_matches_brute_force(seed, chunk):
    x, labels = _case(seed)
    ks = [1, 2, 4, 8, 16, 32]
    got = retrieval_metrics(x, labels, ks, chunk=chunk)
    recall, map_r, rp, q = reference(x, labels, ks)
    assert got["num_queries"] == q and got["singletons"] >= 3
    for k in ks:
        assert got["recall_at"][str(k)] == pytest.approx(recall[str(k)], abs=1e-6)
    assert got["map_at_r"] == pytest.approx(map_r, abs=1e-6)
    assert got["r_precision"] == pytest.approx(rp, abs=1e-6)


def test_hand_worked_example():
    x = np.array([[1, 0], [0.8, 0.6], [0.6, 0.8], [0, 1], [-1, 0]], np.float32)
    labels = np.array([0, 0, 1, 1, 2])
    got = retrieval_metrics(x, labels, [1, 2])
    # q0: positive 1 is nearest; q1: item 2 (0.96) beats positive 0 (0.8); q2 likewise;
    # q3: positive 2 nearest; q4 is a singleton and is left out.
    assert got["recall_at"] == {"1": 0.5, "2": 1.0}
    assert got["map_at_r"] == pytest.approx(0.5) and got["r_precision"] == pytest.approx(0.5)
    assert (got["num_queries"], got["singletons"], got["num_classes"]) == (4, 1, 3)


def test_tie_goes_to_the_positive():
    x = np.array([[1, 0], [0, 1], [0, 1]], np.float32)
    labels = np.array([0, 0, 1])  # for q0, positive 1 and negative 2 tie at 0
    got = retrieval_metrics(x, labels, [1])
    assert got["recall_at"]["1"] == pytest.approx(0.5)  # q0 hit (tie), q1 misses (2 is identical)


def test_nmi_matches_sklearn_on_separated_clusters():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 16)) * 10
    labels = np.repeat(np.arange(4), 50)
    x = (centres[labels] + rng.normal(size=(200, 16))).astype(np.float32)
    out = evaluate_embeddings(x, labels, [1])
    assert out["nmi"] == pytest.approx(1.0)
    shuffled = rng.permutation(labels)
    assert evaluate_embeddings(x, shuffled, [1])["nmi"] < 0.1
