"""TensorBoard logs of a run (``train.log = ["jsonl", "tensorboard"]``): every record the loop
writes to metrics.jsonl also goes to ``RUN/tensorboard/`` as scalars (losses, learning rates,
images/s, each re-clustering's diagnostics, each evaluation's scores), and each evaluation adds
the embedding projector's view of a sample: vectors, labels (true ones where the data has them,
else the method's pseudo-labels) and thumbnails.

    tensorboard --logdir runs/NAME/tensorboard
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

GROUPS = {"step": "train", "epoch_summary": "epoch", "cluster": "cluster",
          "neighbours": "neighbours"}  # fmt: skip
SKIP = {"epoch", "step", "iteration", "completed", "at"}


def available() -> bool:
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def _numbers(fields: dict, prefix: str):
    for key, value in fields.items():
        if key in SKIP or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and np.isfinite(value):
            yield f"{prefix}/{key}", float(value)
        elif isinstance(value, dict):
            yield from _numbers(value, f"{prefix}/{key}")


class Board:
    def __init__(self, folder: Path, trainer, sample: int = 200) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))
        self.trainer, self.sample = trainer, sample

    def record(self, event: str, step: int, fields: dict) -> None:
        w = self.writer
        if event == "eval":
            recall = fields.get("recall_at") or {}
            for k, v in recall.items():
                w.add_scalar(f"eval/R@{k}", 100 * float(v), step)
            for key in ("nmi", "map_at_r", "r_precision"):
                if isinstance(fields.get(key), (int, float)):
                    w.add_scalar(f"eval/{key}", 100 * float(fields[key]), step)
            for tag, value in _numbers(fields.get("label_free") or {}, "label_free"):
                w.add_scalar(tag, value, step)
            self.projector(step)
            w.flush()
            return
        group = GROUPS.get(event)
        if group is None:
            return
        for tag, value in _numbers(fields, group):
            w.add_scalar(tag, value, step)
        if event == "step":
            for g in self.trainer.optimizer.param_groups:
                w.add_scalar(f"lr/{g.get('name', 'group')}", float(g["lr"]), step)

    @torch.no_grad()
    def projector(self, step: int) -> None:
        """The embedding of a sample of the evaluated split (the test split where the data has
        labels, else the training images with their pseudo-labels)."""
        from udml_cli.data.images import ImageDataset
        from udml_cli.data.layout import read_split
        from udml_cli.inference import embed_dataset

        t = self.trainer
        cfg, ref = t.cfg, t.ref
        if ref.labelled:
            samples = read_split(ref, "test")
            labels = np.array([s.label for s in samples])
        else:
            samples = t.images.plain.samples
            pseudo = getattr(t.method, "pseudo_labels", None)
            labels = pseudo if pseudo is not None else np.zeros(len(samples), np.int64)
        rng = np.random.default_rng(0)
        pick = np.sort(rng.choice(len(samples), min(self.sample, len(samples)), replace=False))
        data = ImageDataset.evaluated([samples[i] for i in pick], cfg.data)
        x, ok = embed_dataset(t.model, cfg, data, t.engine, "projector sample")
        rows = pick[ok]
        thumbs = torch.stack([data[int(i)][0] for i in np.flatnonzero(ok)])
        thumbs = torch.nn.functional.interpolate(thumbs, size=(32, 32), mode="bilinear",
                                                 antialias=True).clamp(0, 1)  # fmt: skip
        self.writer.add_embedding(
            torch.from_numpy(np.asarray(x)), metadata=[str(int(labels[i])) for i in rows],
            label_img=thumbs, global_step=step, tag="embedding",
        )  # fmt: skip

    def close(self) -> None:
        self.writer.close()
