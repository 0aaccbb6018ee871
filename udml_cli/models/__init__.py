"""Backbones (registry + one factory), embedding and rotation heads, checkpoints."""

from udml_cli.models.net import EmbeddingNet, build_model

__all__ = ["EmbeddingNet", "build_model"]
