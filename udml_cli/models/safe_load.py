"""Reading tensors from files someone else may have written: ``torch.load(weights_only=True)``
only, and one test of why a file was refused (shared by checkpoints and ``--weights`` files)."""

from __future__ import annotations


def runs_code(error: Exception) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused the file for holding Python objects
    (globals it would have to import: the kind of file that can run code)."""
    text = str(error)
    return "Unsupported global" in text or "GLOBAL" in text
