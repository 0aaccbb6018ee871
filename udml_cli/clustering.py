"""k-means for pseudo-labels: faiss Lloyd iterations, k-means++ initialisation, warm start.

faiss alone initialises randomly and subsamples above 256 points per centroid; here the
initialisation is greedy k-means++ as scikit-learn does it and every point is used. A warm start
(the recipe's re-clusterings, from the last centroids) runs exact Lloyd iterations as chunked
matrix products in torch until an iteration gains less than ``tol`` of the objective
(``refine``): from centroids that already fit, a few iterations do what a fresh clustering needs
k-means++ and 20 iterations for (benchmarks/kmeans.py). Diagnostics describe the clusters and,
when true labels are known, their agreement.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def auto_clusters(n_images: int, batch_clusters: int) -> int:
    """``cluster.num_clusters = "auto"``: one cluster per 50 images (CUB's 5,864 → 117; the paper
    used 100), never fewer than a batch needs, never more than 10,000 (SOP's)."""
    return max(batch_clusters, 2, min(10_000, n_images // 50))


@dataclass
class KMeansResult:
    centroids: np.ndarray  # (k, d) float32
    labels: np.ndarray  # (n,) int64
    objective: float  # sum of squared distances to the assigned centroid
    iterations: int = 0  # Lloyd iterations run (refine; faiss: the fixed niter)


def kmeans_pp_init(x: np.ndarray, k: int, seed: int = 0, trials: int | None = None,
                   device=None) -> np.ndarray:  # fmt: skip
    """Greedy k-means++ (Arthur & Vassilvitskii; scikit-learn's variant): each new centre is the best
    of ``2 + ln k`` D²-sampled candidates. The candidates' distances come from one matrix product
    per centre, so the cost is one pass over the data per centre."""
    import torch

    rng = np.random.default_rng(seed)
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device or "cpu")
    n = xt.shape[0]
    trials = trials or 2 + int(np.log(k))
    sq = (xt * xt).sum(1)
    first = int(rng.integers(n))
    chosen = [first]
    closest = (sq - 2 * (xt @ xt[first]) + sq[first]).clamp_min_(0)
    for _ in range(1, k):
        cumulative = np.cumsum(closest.double().cpu().numpy())
        cand = np.searchsorted(cumulative, rng.uniform(size=trials) * cumulative[-1])
        cand = torch.from_numpy(np.minimum(cand, n - 1)).to(xt.device)
        dist = (sq[:, None] - 2 * (xt @ xt[cand].T) + sq[cand][None, :]).clamp_min_(0)
        dist = torch.minimum(dist, closest[:, None])
        pots = dist.sum(0)
        best = int(pots.argmin())
        closest = dist[:, best].contiguous()
        chosen.append(int(cand[best]))
    return np.ascontiguousarray(x[chosen], dtype=np.float32)


def _assign(xt, ct, chunk: int = 4096):
    """Every row's nearest centroid and squared distance, exactly (chunked matrix products)."""
    import torch

    csq = (ct * ct).sum(1)
    labels = torch.empty(len(xt), dtype=torch.long, device=xt.device)
    dist = torch.empty(len(xt), dtype=xt.dtype, device=xt.device)
    for start in range(0, len(xt), chunk):
        xb = xt[start : start + chunk]
        best, idx = torch.addmm(csq[None, :], xb, ct.T, alpha=-2).min(1)
        dist[start : start + len(xb)] = (best + (xb * xb).sum(1)).clamp_min_(0)
        labels[start : start + len(xb)] = idx
    return labels, dist


def refine(x: np.ndarray, centroids: np.ndarray, max_iter: int, tol: float,
           device=None) -> KMeansResult:  # fmt: skip
    """Lloyd iterations from ``centroids`` until one gains less than ``tol`` of the objective
    (at most ``max_iter``). An emptied cluster takes the point farthest from its centroid, as
    scikit-learn does."""
    import torch

    xt = torch.from_numpy(x).to(device or "cpu")
    ct = torch.from_numpy(np.array(centroids, dtype=np.float32)).to(xt.device)
    k = len(ct)
    labels, dist = _assign(xt, ct)
    objective = float(dist.double().sum())
    done = 0
    for done in range(1, max_iter + 1):  # noqa: B007 (the count is the result)
        sums = torch.zeros_like(ct).index_add_(0, labels, xt)
        counts = torch.bincount(labels, minlength=k)
        kept = counts > 0
        ct[kept] = sums[kept] / counts[kept, None].to(ct.dtype)
        empty = (~kept).nonzero()[:, 0]
        if len(empty):
            ct[empty] = xt[dist.topk(len(empty)).indices]
        labels, dist = _assign(xt, ct)
        before, objective = objective, float(dist.double().sum())
        if before - objective <= tol * before:
            break
    return KMeansResult(ct.cpu().numpy(), labels.cpu().numpy().astype(np.int64), objective, done)


def kmeans(
    x: np.ndarray,
    k: int,
    niter: int = 20,
    seed: int = 0,
    init: str = "kmeans++",
    init_centroids: np.ndarray | None = None,
    n_init: int = 1,
    tol: float | None = None,
    device=None,
) -> KMeansResult:
    """Lloyd iterations from ``init_centroids`` or a fresh init; ``n_init`` fresh inits keep the
    best. ``tol`` (with ``init_centroids``): ``refine`` instead of faiss's fixed ``niter``.
    ``device`` (``device_ops.hot_device``): with CUDA, the init and ``niter`` exact Lloyd
    iterations run there in torch (``refine``); on the CPU, faiss as before."""
    from udml_cli.device_ops import hot_device

    if n_init > 1 and init_centroids is None:
        runs = [kmeans(x, k, niter, seed + i, init, device=device) for i in range(n_init)]
        return min(runs, key=lambda r: r.objective)
    on = hot_device(device)
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if k > n:
        raise ValueError(f"cannot make {k} clusters from {n} points")
    if init_centroids is not None and np.shape(init_centroids) != (k, d):
        # faiss would read past the array: refuse here, never crash natively
        raise ValueError(f"warm-start centroids {np.shape(init_centroids)} do not fit ({k}, {d})")
    if init_centroids is not None and tol is not None:
        return refine(x, init_centroids, niter, tol, on)
    if init_centroids is None:
        if init == "kmeans++":
            init_centroids = kmeans_pp_init(x, k, seed, device=on)
        else:
            rng = np.random.default_rng(seed)
            init_centroids = x[rng.choice(n, k, replace=False)].copy()
    if on is not None:  # on the GPU: exact Lloyd in torch, stopping once nothing moves
        return refine(x, init_centroids, niter, 0.0, on)
    km = faiss.Kmeans(
        d,
        k,
        niter=niter,
        seed=seed,
        max_points_per_centroid=max(256, n),  # no silent subsampling
        min_points_per_centroid=1,
        verbose=False,
        gpu=bool(getattr(faiss, "get_num_gpus", lambda: 0)()),  # faiss-gpu builds, when present
    )
    km.train(x, init_centroids=np.ascontiguousarray(init_centroids, dtype=np.float32))
    dist, assign = km.index.search(x, 1)
    return KMeansResult(
        km.centroids.copy(), assign[:, 0].astype(np.int64), float(dist.sum()), niter
    )


def diagnostics(
    labels: np.ndarray, k: int, objective: float, truth: np.ndarray | None = None
) -> dict:
    sizes = np.bincount(labels, minlength=k)
    nonempty = sizes[sizes > 0]
    out = {
        "k": int(k),
        "objective": objective,
        "size_min": int(nonempty.min()),
        "size_median": float(np.median(nonempty)),
        "size_max": int(nonempty.max()),
        "empty": int((sizes == 0).sum()),
        "singletons": int((sizes == 1).sum()),
        "sizes": sizes.tolist(),
    }
    if truth is not None:
        from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score
        from sklearn.metrics.cluster import contingency_matrix

        table = contingency_matrix(truth, labels)
        out["nmi"] = float(normalized_mutual_info_score(truth, labels))
        out["ari"] = float(adjusted_rand_score(truth, labels))
        out["purity"] = float(table.max(0).sum() / table.sum())
    return out


@dataclass
class Clustering:
    """What ``udml cluster`` found: the diagnostics (sizes, objective; NMI/ARI/purity against
    true labels where there are any), and per image its path, vector and cluster."""

    diagnostics: dict
    paths: list[str]
    vectors: np.ndarray
    result: KMeansResult

    def pseudo_label_lines(self) -> str:
        """``PATH CLUSTER`` per image: the train.txt layout, clusters as labels."""
        labels = self.result.labels.tolist()
        return "".join(f"{p} {lab}\n" for p, lab in zip(self.paths, labels, strict=True))

    def assignment_csv(self) -> str:
        """``path,cluster,similarity_to_centre`` rows: cosine of each vector with its centroid."""
        import csv
        import io

        r = self.result
        centres = r.centroids / np.linalg.norm(r.centroids, axis=1, keepdims=True).clip(1e-12)
        x = self.vectors
        unit = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        sims = (unit * centres[r.labels]).sum(1)
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["path", "cluster", "similarity_to_centre"])
        for p, lab, sim in zip(self.paths, r.labels.tolist(), sims.tolist(), strict=True):
            writer.writerow([p, lab, f"{sim:.6f}"])
        return buf.getvalue()
