"""k-means: ours (faiss + k-means++ init, all points) vs the original's scikit-learn setting.

Baseline: ``KMeans(n_clusters=100, n_init=10, max_iter=100)`` as the official code called it.
Cases: CUB-size 5,864×512 and SOP-train-size 59,551×512 clustered unit vectors, k = 100; and ours
alone at SOP scale with the paper's 10,000 clusters.
    python benchmarks/kmeans.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer, clustered_unit_vectors


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--quick", action="store_true", help="skip the 59,551-point and 10,000-cluster cases"
    )
    args = ap.parse_args()
    from sklearn.cluster import KMeans

    from udml_cli.clustering import kmeans

    res = Results("kmeans")
    sizes = [5864] if args.quick else [5864, 59551]
    kmeans(clustered_unit_vectors(1000, 512, 10)[0], 10)  # warm-up: thread pools, imports
    for n in sizes:
        x, _ = clustered_unit_vectors(n, 512, 200, seed=n)
        case = f"{n}x512 k=100"
        with Timer() as t_ours:
            ours = kmeans(x, 100, niter=20, seed=0)
        with Timer() as t_ref:
            ref = KMeans(n_clusters=100, n_init=10, max_iter=100, random_state=0).fit(x)
        res.add(case, "seconds", t_ours.seconds, t_ref.seconds, target=20, unit="s")
        res.add(case, "objective", ours.objective, float(ref.inertia_), target=0.99, unit="SSE")
        with Timer() as t3:
            ours3 = kmeans(x, 100, niter=20, seed=0, n_init=3)
        res.add(f"{case} n_init=3", "seconds", t3.seconds, t_ref.seconds, target=20, unit="s")
        res.add(f"{case} n_init=3", "objective", ours3.objective, float(ref.inertia_), target=0.99,
                unit="SSE")  # fmt: skip
    if not args.quick:
        x, _ = clustered_unit_vectors(59551, 512, 11318, seed=1)
        with Timer() as t:
            kmeans(x, 10000, niter=20, seed=0)
        res.add("59551x512 k=10000", "seconds", t.seconds, unit="s")
        with Timer() as t:
            kmeans(x, 10000, niter=20, seed=0, init="random")
        res.add("59551x512 k=10000 random init", "seconds", t.seconds, unit="s")
    res.write()


if __name__ == "__main__":
    main()
