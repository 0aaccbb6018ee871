"""Batch samplers. UDML-SS: P×K batches from pseudo-labels, P clusters × K images each, as the
official code samples; STML: queries with their nearest neighbours (``NeighbourSampler``).

One epoch is ``num_clusters × K`` samples by default (official: 100 × 5 = 500 → 6 batches of 80).
Clusters smaller than K are sampled with replacement. The order of an epoch depends only on
``(seed, epoch)``, so a resumed run draws exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np


class PKSampler:
    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        instances: int,
        seed: int = 0,
        iters_per_epoch: int | None = None,
    ) -> None:
        if batch_size % instances:
            raise ValueError("batch_size must be a multiple of instances")
        self.k = instances
        self.p = batch_size // instances
        self.seed = seed
        clusters: dict[int, list[int]] = {}
        for i, lab in enumerate(np.asarray(labels).tolist()):
            clusters.setdefault(lab, []).append(i)
        self.clusters = [np.array(v) for _, v in sorted(clusters.items())]
        if len(self.clusters) < self.p:
            raise ValueError(
                f"a batch needs {self.p} clusters but only {len(self.clusters)} are non-empty"
            )
        default = max(1, len(self.clusters) * self.k // batch_size)
        self.iters_per_epoch = iters_per_epoch or default

    def __len__(self) -> int:
        return self.iters_per_epoch

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        batches: list[list[int]] = []
        order: list[int] = []
        while len(batches) < self.iters_per_epoch:
            if len(order) < self.p:
                order = rng.permutation(len(self.clusters)).tolist()  # P distinct clusters
            chosen, order = order[: self.p], order[self.p :]
            batch = []
            for c in chosen:
                members = self.clusters[c]
                pick = rng.choice(members, self.k, replace=len(members) < self.k)
                batch.extend(int(i) for i in pick)
            batches.append(batch)
        return batches


class NeighbourSampler:
    """STML's batches: ``batch_size / k`` distinct random queries, each with its ``k`` nearest
    neighbours (itself first) in the student's g embedding; an epoch is ``n // batch_size``
    batches, as STML's code (``NNBatchSampler``). Like ``PKSampler``, an epoch's order depends
    only on ``(seed, epoch)``."""

    def __init__(
        self, neighbours: np.ndarray, batch_size: int, seed: int = 0,
        iters_per_epoch: int | None = None,
    ) -> None:  # fmt: skip
        self.neighbours = np.asarray(neighbours)
        n, k = self.neighbours.shape
        if batch_size % k:
            raise ValueError("batch_size must be a multiple of the neighbours per query")
        self.queries = batch_size // k
        if self.queries > n:
            raise ValueError(f"a batch needs {self.queries} queries but there are {n} images")
        self.seed = seed
        self.iters_per_epoch = iters_per_epoch or max(1, n // batch_size)

    def __len__(self) -> int:
        return self.iters_per_epoch

    def epoch(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        n = len(self.neighbours)
        return [
            self.neighbours[rng.choice(n, self.queries, replace=False)].reshape(-1).tolist()
            for _ in range(self.iters_per_epoch)
        ]
