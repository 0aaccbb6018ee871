"""Re-clustering at SOP size: the recipe's warm start (udml's ``refine``: exact Lloyd in torch
from the last centroids until an iteration gains < 1e-4) against today's fresh k-means (greedy
k-means++ + 20 faiss Lloyd iterations) on the same data, one run each.

The data: 59,551 × 512 clustered unit vectors (11,318 clusters, as SOP's classes). Between two
re-clusterings every vector moves in a random direction by ``--drift`` × the median
nearest-neighbour distance: 0.38 was measured on the emoji demo between two STML checkpoints
50 steps apart (median move 0.22 of a unit vector, median nearest-neighbour distance 0.59),
an upper end for UDML-SS at its 10× lower learning rate. The previous clustering is a fresh
k-means of the data before the move. Also the demo size (2,772 × 1280, k = 700): the warm start
through faiss's fixed 20 iterations (before) vs ``refine``.
    python benchmarks/recluster.py [--drift 0.38] [--quick]   → results/recluster.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer, clustered_unit_vectors


def moved(x: np.ndarray, drift: float, seed: int) -> np.ndarray:
    import faiss

    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    nn = float(np.median(np.sqrt(index.search(x, 2)[0][:, 1])))
    rng = np.random.default_rng(seed)
    step = rng.normal(size=x.shape).astype(np.float32)
    step *= drift * nn / np.linalg.norm(step, axis=1, keepdims=True)
    y = x + step
    return (y / np.linalg.norm(y, axis=1, keepdims=True)).astype(np.float32)


def case(res: Results, name: str, x: np.ndarray, k: int, drift: float, faiss_warm: bool) -> None:
    from udml_cli.clustering import kmeans

    before = kmeans(x, k, niter=20, seed=0)  # the previous re-clustering
    y = moved(x, drift, seed=1)
    with Timer() as fresh_t:
        fresh = kmeans(y, k, niter=20, seed=0)  # today's k-means++ result
    with Timer() as warm_t:
        warm = kmeans(y, k, niter=100, init_centroids=before.centroids, tol=1e-4)
    res.add(name, "seconds, warm re-clustering (baseline: fresh k-means++)", warm_t.seconds,
            fresh_t.seconds, target=30 if k >= 10000 else None, unit="s")  # fmt: skip
    res.add(name, "objective (SSE; baseline: fresh k-means++)", warm.objective, fresh.objective,
            target=0.99, unit="SSE")  # fmt: skip
    res.add(name, "Lloyd iterations of the warm re-clustering", warm.iterations)
    if faiss_warm:
        with Timer() as old_t:
            old = kmeans(y, k, niter=20, init_centroids=before.centroids)  # before: faiss, 20
        res.add(name, "seconds, warm: refine (baseline: faiss 20 iterations)", warm_t.seconds,
                old_t.seconds, unit="s")  # fmt: skip
        res.add(name, "objective, warm: refine (baseline: faiss 20 iterations)", warm.objective,
                old.objective, unit="SSE")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--drift", type=float, default=0.38)
    ap.add_argument("--quick", action="store_true", help="the demo size only")
    args = ap.parse_args()
    res = Results("recluster")
    x, _ = clustered_unit_vectors(2772, 1280, 924, seed=2)
    case(res, f"demo size 2772x1280 k=700, drift {args.drift}", x, 700, args.drift, True)
    if not args.quick:
        x, _ = clustered_unit_vectors(59551, 512, 11318, seed=1)
        case(res, f"SOP size 59551x512 k=10000, drift {args.drift}", x, 10000, args.drift, False)
    res.write()


if __name__ == "__main__":
    main()
