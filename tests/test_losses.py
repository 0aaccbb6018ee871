"""The vectorised Weight loss against a per-anchor loop written from the formula."""

import math

import pytest
import torch

from udml_cli.losses import rotate_batch, rotation_loss, weight_loss


def loop_reference(emb, labels, alpha=40.0, beta=2.0, base=0.5, margin=0.1):
    n = emb.shape[0]
    total = emb.new_zeros(())
    for i in range(n):
        sims = [emb[i] @ emb[j] for j in range(n)]
        pos = [j for j in range(n) if j != i and labels[j] == labels[i]]
        neg = [j for j in range(n) if labels[j] != labels[i]]
        if not pos or not neg:
            continue
        min_pos = min(float(sims[j].detach()) for j in pos)
        max_neg = max(float(sims[j].detach()) for j in neg)
        kept_neg = [j for j in neg if float(sims[j].detach()) + margin > min_pos]
        kept_pos = [j for j in pos if float(sims[j].detach()) - margin < max_neg]
        if not kept_neg or not kept_pos:
            continue
        pos_sum = sum(torch.exp(-beta * (sims[j] - base)) for j in kept_pos)
        neg_sum = sum(torch.exp(alpha * (sims[j] - base)) for j in kept_neg)
        total = total + torch.log(1 + pos_sum) / beta + torch.log(1 + neg_sum) / alpha
    return total / n


def _batch(seed, n, d, classes):
    g = torch.Generator().manual_seed(seed)
    raw = torch.randn(n, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    return raw, labels


@pytest.mark.parametrize(
    "seed, n, d, classes",
    [(0, 16, 8, 4), (1, 20, 32, 5), (2, 12, 4, 12), (3, 10, 6, 1), (4, 40, 16, 8), (5, 9, 3, 3)],
)
def test_value_and_gradient_match_the_loop(seed, n, d, classes):
    raw, labels = _batch(seed, n, d, classes)
    a = raw.clone().requires_grad_(True)
    b = raw.clone().requires_grad_(True)
    ours = weight_loss(torch.nn.functional.normalize(a, dim=1), labels)
    ref = loop_reference(torch.nn.functional.normalize(b, dim=1), labels)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-5)
    ours.backward()
    if ref.requires_grad:
        ref.backward()
        torch.testing.assert_close(a.grad, b.grad, atol=1e-5, rtol=1e-5)
    else:
        assert torch.count_nonzero(a.grad) == 0


def test_anchor_without_pairs_contributes_zero():
    emb = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    assert float(weight_loss(emb, torch.tensor([0, 1, 2, 3]))) == 0.0  # no positives
    assert float(weight_loss(emb, torch.tensor([0, 0, 0, 0]))) == 0.0  # no negatives


def test_hand_worked_pair():
    # two classes, two points each, orthogonal classes, identical points within a class
    emb = torch.tensor([[1.0, 0], [1.0, 0], [0, 1.0], [0, 1.0]])
    # positives at s=1, negatives at s=0: negative kept needs 0 + 0.1 > 1 (no) -> loss 0
    assert float(weight_loss(emb, torch.tensor([0, 0, 1, 1]))) == 0.0
    emb = torch.tensor([[1.0, 0], [0, 1.0], [1.0, 0], [0, 1.0]])
    # now each anchor's positive sits at s=0 and its negative at s=1: both kept
    per = math.log(1 + math.exp(-2 * (0 - 0.5))) / 2 + math.log(1 + math.exp(40 * (1 - 0.5))) / 40
    assert float(weight_loss(emb, torch.tensor([0, 0, 1, 1]))) == pytest.approx(per, rel=1e-6)


def test_rotation_batch_matches_rot90_loop():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    rotated, turns = rotate_batch(x)
    assert turns.tolist() == [1, 1, 2, 2, 3, 3]
    for k in (1, 2, 3):
        for i in range(2):
            torch.testing.assert_close(rotated[(k - 1) * 2 + i], torch.rot90(x[i], k, dims=(1, 2)))
    logits = torch.zeros(6, 4)
    assert float(rotation_loss(logits, turns)) == pytest.approx(math.log(4))
