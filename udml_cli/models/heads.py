"""The embedding head (feature → Linear → dim, L2-normalised) and the rotation head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


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

    @torch.no_grad()
    def init_pca(self, feats: np.ndarray) -> None:
        """Project onto the top principal directions of ``feats``: the head starts as a whitening-free
        PCA of the pretrained feature, so the initial embedding keeps its neighbourhoods."""
        x = torch.from_numpy(np.asarray(feats, dtype=np.float64))
        mean = x.mean(0)
        q = min(self.fc.out_features, x.shape[1])
        # exact and deterministic: eigenvectors of the covariance, largest eigenvalues first
        _, vecs = torch.linalg.eigh((x - mean).T @ (x - mean))
        v = vecs[:, -q:].flip(1).float()
        mean = mean.float()
        weight = torch.zeros_like(self.fc.weight)
        weight[:q] = v.T
        self.fc.weight.copy_(weight)
        self.fc.bias.copy_(-(weight @ mean))


class RotationHead(nn.Module):
    """Pooled feature → 512 → ReLU → 4 rotation logits (0/90/180/270°)."""

    def __init__(self, in_dim: int, hidden: int = 512) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 4)
        )

    def forward(self, feat: torch.Tensor) -> torch.Tensor:
        return self.net(feat)
