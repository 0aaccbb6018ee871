"""The embedding head (feature → Linear → dim, L2-normalised) and the rotation head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

# model.head_init = "whiten": the shrinkage of each direction's variance towards their mean, and
# the most images the fit reads (both chosen on emoji: BENCHMARKS "Whitening")
WHITEN_SHRINK = 0.1
WHITEN_ROWS = 10_000
# the model.head_init values fitted to the training images' features at the first refresh
FITTED = ("pca", "whiten")


class EmbeddingHead(nn.Module):
    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_dim, dim)

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.fc(feat), dim=1)

    @torch.no_grad()
    def init_identity(self) -> None:
        """Start as the identity: the initial embedding *is* the normalised pretrained feature."""
        if self.fc.in_features != self.fc.out_features:
            from udml_cli.errors import UsageError

            raise UsageError(
                f"model.head_init=identity needs model.dim equal to the backbone's feature size "
                f"({self.fc.in_features}), got {self.fc.out_features}"
            )
        self.fc.weight.copy_(torch.eye(self.fc.in_features))
        self.fc.bias.zero_()

    def init_from(self, feats: np.ndarray, kind: str) -> None:
        """``head_init`` = one of ``FITTED``, from the training images' features."""
        (self.init_whiten if kind == "whiten" else self.init_pca)(feats)

    @torch.no_grad()
    def init_pca(self, feats: np.ndarray) -> None:
        """Project onto the top principal directions of ``feats``: the head starts as a whitening-free
        PCA of the pretrained feature, so the initial embedding keeps its neighbourhoods."""
        x = torch.from_numpy(np.asarray(feats, dtype=np.float64))
        mean = x.mean(0)
        q = min(self.fc.out_features, x.shape[1])
        # exact and deterministic: eigenvectors of the covariance, largest eigenvalues first
        _, vecs = torch.linalg.eigh((x - mean).T @ (x - mean))
        self._project(vecs[:, -q:].flip(1), mean)

    @torch.no_grad()
    def init_whiten(self, feats: np.ndarray, shrink: float = WHITEN_SHRINK,
                    rows: int = WHITEN_ROWS) -> None:  # fmt: skip
        """PCA-whitening learned on ``feats`` (the training images' descriptors, no labels): the
        top principal directions, each divided by sqrt(λ + shrink·mean λ) (λ: its variance, the
        mean over the kept directions), so no direction the images vary much along dominates the
        similarity. shrink = 0 is ``sklearn.decomposition.PCA(whiten=True)``; the shrinkage keeps
        low-variance directions from being blown up into noise. At most ``rows`` images are used
        (a fixed sample beyond: the fit is O(rows²·dim)). BENCHMARKS "Whitening"."""
        x = np.asarray(feats, dtype=np.float64)
        if len(x) > rows:
            x = x[np.sort(np.random.default_rng(0).choice(len(x), rows, replace=False))]
        x = torch.from_numpy(x)
        mean = x.mean(0)
        xc = x - mean
        gram = len(xc) < xc.shape[1]  # fewer images than dimensions: the Gram matrix's eigenvectors
        val, u = torch.linalg.eigh(xc @ xc.T if gram else xc.T @ xc)
        keep = val > 1e-9 * val.max().clamp(min=1e-300)  # the directions the images span
        val, u = val[keep], u[:, keep]
        vecs = (xc.T @ u) / val.sqrt() if gram else u
        q = min(self.fc.out_features, len(val))
        lam = val[-q:].flip(0) / max(len(xc) - 1, 1)  # the covariance's eigenvalues, largest first
        self._project(vecs[:, -q:].flip(1) / (lam + shrink * lam.mean()).sqrt(), mean)

    def _project(self, directions: torch.Tensor, mean: torch.Tensor) -> None:
        """The head's first rows onto ``directions`` (columns) of the centred feature, the rest
        zero."""
        weight = torch.zeros_like(self.fc.weight)
        weight[: directions.shape[1]] = directions.T.float()
        self.fc.weight.copy_(weight)
        self.fc.bias.copy_(-(weight @ mean.float()))


class RotationHead(nn.Module):
    """Pooled feature → 512 → ReLU → 4 rotation logits (0/90/180/270°)."""

    def __init__(self, in_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 4)
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat)
