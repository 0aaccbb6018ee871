import numpy as np
import pytest
from sklearn.cluster import KMeans

from udml_cli.clustering import diagnostics, kmeans


def _blobs(n=3000, d=32, k=20, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2
    x = centres[rng.integers(0, k, n)] + rng.normal(size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def test_objective_within_one_percent_of_sklearn():
    x = _blobs()
    ours = kmeans(x, 20, niter=30, seed=0, n_init=10)  # the same effort as sklearn's n_init=10
    ref = KMeans(n_clusters=20, n_init=10, max_iter=100, random_state=0).fit(x)
    assert ours.objective <= ref.inertia_ * 1.01
    # the reported objective is the true sum of squared distances of the returned assignment
    d2 = ((x - ours.centroids[ours.labels]) ** 2).sum()
    assert ours.objective == pytest.approx(d2, rel=1e-3)
    assert ours.labels.shape == (3000,) and set(ours.labels) <= set(range(20))


def test_warm_start_from_good_centroids_stays_good():
    x = _blobs(seed=1)
    ref = KMeans(n_clusters=20, n_init=10, random_state=0).fit(x)
    warm = kmeans(x, 20, niter=5, init_centroids=ref.cluster_centers_)
    assert warm.objective <= ref.inertia_ * 1.0001


def test_deterministic():
    x = _blobs(n=6000, k=5)
    a, b = kmeans(x, 5, seed=3), kmeans(x, 5, seed=3)
    np.testing.assert_array_equal(a.labels, b.labels)


def test_every_point_trains_the_centroids():
    """6,000 points, k = 5: faiss alone would train on a 1,280-point sample (256 per centroid).
    The centroids must be those of plain Lloyd iterations over all points from the same start."""
    x = _blobs(n=6000, k=5, seed=2)
    start = x[[0, 1, 2, 3, 4]].copy()
    ours = kmeans(x, 5, niter=3, init_centroids=start)
    c = start.astype(np.float64)
    for _ in range(3):  # the reference: a plain loop, all points
        assign = ((x[:, None, :] - c[None]) ** 2).sum(-1).argmin(1)
        c = np.stack([x[assign == j].mean(0) for j in range(5)])
    np.testing.assert_allclose(ours.centroids, c, rtol=0, atol=1e-4)


def test_diagnostics_hand_worked():
    labels = np.array([0, 0, 1, 1, 1])
    truth = np.array([0, 0, 1, 1, 0])
    d = diagnostics(labels, 3, 1.5, truth)
    assert (d["size_min"], d["size_median"], d["size_max"]) == (2, 2.5, 3)
    assert (d["empty"], d["singletons"], d["sizes"]) == (1, 0, [2, 3, 0])
    assert d["purity"] == pytest.approx(0.8)
    # by hand: contingency [[2, 0], [1, 2]]; both marginals (2/5, 3/5): H = 0.673012 nats;
    # MI = 2·(2/5)·ln(5/3) + (1/5)·ln(5/9) = 0.291103; NMI = MI / H. ARI: Σ C(n_ij, 2) = 2,
    # rows and columns Σ C(·, 2) = 4 each, expected 4·4 / C(5, 2) = 1.6: (2 − 1.6) / (4 − 1.6)
    mi = 2 * 0.4 * np.log(5 / 3) + 0.2 * np.log(5 / 9)
    h = -(0.4 * np.log(0.4) + 0.6 * np.log(0.6))
    assert d["nmi"] == pytest.approx(mi / h, abs=1e-9) == pytest.approx(0.432538, abs=1e-6)
    assert d["ari"] == pytest.approx(1 / 6, abs=1e-9)


def test_n_init_keeps_the_best_run():
    x = _blobs(n=1500, k=12, seed=4)
    runs = [kmeans(x, 12, seed=s) for s in range(4)]
    best = kmeans(x, 12, seed=0, n_init=4)
    assert best.objective == pytest.approx(min(r.objective for r in runs))


def test_mismatched_warm_start_is_refused_not_a_crash():
    x = _blobs(n=200, k=4)
    with pytest.raises(ValueError, match="do not fit"):
        kmeans(x, 4, init_centroids=np.zeros((5, x.shape[1]), np.float32))


def test_refine_is_lloyd_from_the_given_centroids():
    """The warm start's torch Lloyd against a plain numpy loop of the same iterations."""
    from udml_cli.clustering import kmeans, refine

    rng = np.random.default_rng(4)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    start = x[rng.choice(300, 12, replace=False)].copy()
    c = start.astype(np.float64)
    for _ in range(3):  # the reference: assign, then move every centroid to its mean
        labels = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
        c = np.stack([x[labels == j].mean(0) if (labels == j).any() else c[j] for j in range(12)])
    labels = ((x[:, None, :] - c[None]) ** 2).sum(2).argmin(1)
    ours = refine(x, start, max_iter=3, tol=-1.0)  # never stops early
    np.testing.assert_array_equal(ours.labels, labels)
    np.testing.assert_allclose(ours.centroids, c, rtol=1e-5, atol=1e-5)
    sse = ((x - c[labels]) ** 2).sum()
    assert ours.objective == pytest.approx(sse, rel=1e-5)
    # converged: one more pass gains nothing and stops; kmeans() takes this path with tol
    again = kmeans(x, 12, niter=50, init_centroids=ours.centroids, tol=1e-4)
    assert again.objective <= ours.objective * (1 + 1e-6)
    # an emptied cluster takes the farthest point instead of staying empty
    far = np.vstack([start[:11], np.full((1, 6), 100.0, np.float32)])
    assert np.bincount(refine(x, far, max_iter=1, tol=-1.0).labels, minlength=12).min() > 0
