from collections import Counter

import numpy as np
import pytest

from udml_cli.data.sampler import PKSampler


def test_batches_are_p_distinct_clusters_times_k():
    labels = np.repeat(np.arange(10), [1, 2, 3, 10, 10, 10, 10, 10, 10, 10])
    s = PKSampler(labels, batch_size=12, instances=3, seed=0)
    assert len(s) == 10 * 3 // 12  # official epoch: clusters x K samples
    for batch in s.epoch(0):
        assert len(batch) == 12
        per = Counter(labels[batch].tolist())
        assert len(per) == 4 and set(per.values()) == {3}
    # a cluster with one image is drawn with replacement
    singles = [b for e in range(20) for b in s.epoch(e) if 0 in labels[b]]
    assert singles and all(Counter(labels[b].tolist())[0] == 3 for b in singles)


def test_epochs_are_reproducible_and_differ():
    labels = np.repeat(np.arange(8), 6)
    s = PKSampler(labels, 8, 2, seed=1, iters_per_epoch=5)
    assert s.epoch(3) == PKSampler(labels, 8, 2, seed=1, iters_per_epoch=5).epoch(3)
    assert s.epoch(3) != s.epoch(4) and len(s.epoch(0)) == 5


def test_too_few_clusters():
    with pytest.raises(ValueError, match="needs 5 clusters"):
        PKSampler(np.repeat(np.arange(3), 5), 10, 2)
