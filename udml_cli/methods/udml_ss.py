"""UDML-SS (Cao, Chen & Lim 2019): k-means pseudo-labels → P×K batches → the Weight loss on the
gathered global batch + λ·rotation prediction on one draw over it → re-cluster every
``train.up_step`` epochs. Its settings: ``[loss]``, ``[cluster]`` and ``train.instances`` (K).

Under DDP the embeddings are gathered so the Weight loss mines the whole global batch
(``Engine.gather_batch``) and the rotated images are the same draw over it on every rank; rank 0
alone runs k-means (the labels are broadcast).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

from udml_cli.clustering import auto_clusters, diagnostics, kmeans
from udml_cli.data.sampler import PKSampler
from udml_cli.errors import CheckpointError, TrainingError, UsageError, note
from udml_cli.losses import rotate_batch, rotation_draw, rotation_loss, weight_loss
from udml_cli.methods.base import Method, TrainingForward
from udml_cli.models.heads import FITTED, RotationHead


class UdmlSS(Method):
    name = "udml-ss"
    sections: ClassVar[dict] = {"loss": None, "cluster": None, "train": {"instances"}}
    losses = ("loss", "weight_loss", "rot_loss")
    checkpoint_fields: ClassVar[dict] = {"pseudo_labels": torch.Tensor, "centroids": torch.Tensor}
    feature_cache = True

    @classmethod
    def check_config(cls, cfg) -> None:
        t, loss = cfg.train, cfg.loss
        if t.batch_size % t.instances:
            raise ValueError(
                f"train.batch_size ({t.batch_size}) must be a multiple of "
                f"train.instances ({t.instances})"
            )
        if loss.rot_batch > t.batch_size:
            raise ValueError(
                f"loss.rot_batch ({loss.rot_batch}) exceeds train.batch_size ({t.batch_size})"
            )
        if t.feature_cache and loss.rot_weight and loss.rot_batch:
            raise ValueError(
                "train.feature_cache trains the heads on a frozen backbone, where the rotation "
                "loss trains only its own head; set loss.rot_weight = 0"
            )
        if loss.metric_weight == 0 and loss.rot_weight == 0:
            raise ValueError("loss.metric_weight and loss.rot_weight are both 0: nothing to train")

    @classmethod
    def heads(cls, cfg, feat_dim: int) -> dict[str, nn.Module]:
        return {"rotation_head": RotationHead(feat_dim)}

    @classmethod
    def check_checkpoint(cls, payload: dict) -> str | None:
        if payload["pseudo_labels"].dim() != 1 or payload["centroids"].dim() != 2:
            return "cluster state"
        return None

    def __init__(self, run) -> None:
        super().__init__(run)
        self.pseudo_labels: np.ndarray | None = None
        self.centroids: np.ndarray | None = None
        self.feature = ""  # the feature those centroids live in (warm starts need the same)

    @classmethod
    def adapt(cls, cfg, n_train: int, ref) -> None:
        if cfg.cluster.num_clusters == "auto":
            k = auto_clusters(n_train, cfg.train.batch_size // cfg.train.instances)
            cfg.cluster.num_clusters = k
            note(
                f"cluster.num_clusters = auto → {k} for {n_train} training images (one per "
                "50); choose another with --set cluster.num_clusters=N"
            )
        if not ref.labelled:
            note(
                f"{ref.name} is an unlabelled collection: no NMI/ARI/purity while re-clustering "
                "(cluster sizes and the objective are logged)"
            )

    @classmethod
    def check_data(cls, cfg, n_train: int) -> None:
        k = cfg.cluster.num_clusters
        p = cfg.train.batch_size // cfg.train.instances
        if k > n_train:
            raise UsageError(
                f"cluster.num_clusters ({k}) exceeds the {n_train} training images; "
                f"lower it, e.g. --set cluster.num_clusters={max(2, n_train // 10)}"
            )
        if p > k:
            raise UsageError(
                f"a batch of {cfg.train.batch_size} = {p} clusters × "
                f"{cfg.train.instances} needs at least {p} clusters but "
                f"cluster.num_clusters is {k}; lower train.batch_size or raise the clusters"
            )

    def param_groups(self) -> list[dict]:
        head = self.run.model.rotation_head
        return [{"params": list(head.parameters()), "lr": self.cfg.train.rot_lr,
                 "name": "rotation"}]  # fmt: skip

    @property
    def rotating(self) -> bool:
        return self.cfg.loss.rot_weight > 0 and self.cfg.loss.rot_batch > 0

    @property
    def ready(self) -> bool:
        return self.pseudo_labels is not None

    # ---- targets: k-means pseudo-labels ---------------------------------------------------
    def refresh(self, epoch: int, first: bool) -> None:
        c, run = self.cfg.cluster, self.run
        kind = c.first_feature if first and c.first_feature != "same" else c.feature
        raw = run.trainer.features()
        if first and self.cfg.model.head_init in FITTED:
            run.model.head.init_from(raw, self.cfg.model.head_init)  # the first clustering's
        x = self._feature(raw, kind)
        # warm start only from centroids of the same feature (the original, too, starts the
        # first embedding clustering after a pool5 one from k-means++)
        warm = self.centroids if c.warm_start and not first and self.feature == kind else None
        result = None
        if run.trainer.main:  # once, on rank 0; every rank trains on its labels
            result = kmeans(
                x, c.num_clusters, c.niter, c.seed, c.init, init_centroids=warm, n_init=c.n_init,
                tol=c.warm_tol or None,
            )  # fmt: skip
        result = self.engine.from_main(result)
        # one assignment: an interrupt leaves either the old clustering or the new one, whole
        self.pseudo_labels, self.centroids, self.refreshed_at, self.feature = (
            result.labels, result.centroids, epoch, kind,
        )  # fmt: skip
        truth = run.trainer.images.plain.labels if run.trainer.labelled else None
        diag = diagnostics(result.labels, c.num_clusters, result.objective, truth)
        diag.pop("sizes")
        run.log("cluster", feature=kind, iterations=result.iterations, warm=warm is not None,
                **diag)  # fmt: skip
        p = self.cfg.train.batch_size // self.cfg.train.instances
        if c.num_clusters - diag["empty"] < p:
            raise TrainingError(
                f"only {c.num_clusters - diag['empty']} non-empty clusters, a batch needs {p}; "
                "lower train.batch_size or cluster.num_clusters"
            )

    @torch.no_grad()
    def _feature(self, raw: np.ndarray, kind: str) -> np.ndarray:
        """What k-means sees: the embedding, the L2-normalised pooled backbone feature, or the
        raw one."""
        if kind == "backbone-raw":
            return raw
        if kind == "backbone":
            return raw / np.linalg.norm(raw, axis=1, keepdims=True).clip(1e-12)
        proj = self.run.model.project(torch.from_numpy(raw).to(self.engine.device))
        return proj.float().cpu().numpy()

    def sampler(self):
        t = self.cfg.train
        return PKSampler(self.pseudo_labels, t.batch_size, t.instances, t.seed, t.iters_per_epoch)

    def targets(self, batch: list[int]) -> torch.Tensor:
        return torch.from_numpy(self.pseudo_labels[batch])

    # ---- one step -------------------------------------------------------------------------
    def forward_module(self) -> nn.Module:
        return UdmlForward(self.run.model, self.engine)

    @property
    def all_parameters_used(self) -> bool:
        return self.rotating

    def step(self, images: torch.Tensor, labels: torch.Tensor):
        """The Weight loss and the rotation loss of one batch and the loss to back-propagate on
        this rank. The backbone runs under the engine's autocast; the heads and both losses in
        fp32 with autocast off (a bf16 similarity matrix is amplified by α = 40)."""
        cfg, eng = self.cfg, self.engine
        x = eng.to_device(images)
        y = labels.to(eng.device)
        n = len(x)
        rb = cfg.loss.rot_batch if cfg.loss.rot_weight > 0 else 0
        rows = 4 * rb  # rotation rows of the whole batch: each picked image and its 3 turns
        pick = turns = None
        if rb:  # the same draw over the global batch on every rank; each rotates its own picks
            drawn = rotation_draw(len(y), rb)
            share = eng.shard(len(y))
            pick = (drawn[(drawn >= share.start) & (drawn < share.stop)] - share.start).to(x.device)
            rotated, turns = rotate_batch(x[pick])
            x = torch.cat([x, rotated])
        emb, logits = self.run.trainer.step_forward(x, n, pick)
        with torch.autocast(eng.device.type, enabled=False):
            metric = weight_loss(
                eng.gather_batch(emb) if eng.processes > 1 else emb,
                y, cfg.loss.alpha, cfg.loss.beta, cfg.loss.base, cfg.loss.margin,
            )  # fmt: skip
            local = cfg.loss.metric_weight * metric
            rot = correct = torch.zeros((), device=x.device)
            if rb:
                target = torch.cat(
                    [torch.zeros(len(pick), dtype=torch.long, device=x.device), turns]
                )
                rot = rotation_loss(logits, target, rows)  # this rank's share of the mean
                correct = (logits.argmax(1) == target).sum()
                local = local + cfg.loss.rot_weight * rot
        rot_all, correct_all = eng.sum_over_ranks([rot.item(), float(correct)])
        total = cfg.loss.metric_weight * metric.item() + cfg.loss.rot_weight * rot_all
        out = {"weight_loss": metric.item()}
        if rb:
            out |= {"rot_loss": rot_all, "rot_acc": correct_all / rows}
        out["loss"] = total
        return out, local

    # ---- checkpoints and progress -----------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "pseudo_labels": torch.from_numpy(self.pseudo_labels),
            "centroids": torch.from_numpy(self.centroids),
            "cluster_feature": self.feature,
            "clustered_at": self.refreshed_at,
        }

    def load_state_dict(self, payload: dict, n_train: int) -> None:
        labels = payload["pseudo_labels"].numpy()
        self.check_images(labels, n_train)
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= self.cfg.cluster.num_clusters:
            raise CheckpointError("damaged: pseudo-labels out of range")
        self.pseudo_labels, self.centroids = labels, payload["centroids"].numpy()
        epoch, iteration, up = payload["epoch"], payload["iteration"], self.cfg.train.up_step
        # checkpoints before udml 0.1.1 lack clustered_at: their labels are from the last due epoch
        legacy = epoch - epoch % up if iteration or epoch % up else epoch - up
        self.refreshed_at = int(payload.get("clustered_at", max(0, legacy)))
        self.feature = str(payload.get("cluster_feature", self.cfg.cluster.feature))

    def refresh_note(self, epoch: int, iteration: int, per_epoch: int) -> str:
        t = self.cfg.train
        return recluster_note(epoch, iteration, per_epoch, t.up_step, t.epochs)


def recluster_note(epoch: int, iteration: int, per_epoch: int, up_step: int, epochs: int) -> str:
    """``", re-cluster in N it"`` while in epoch ``epoch`` (0-based) after ``iteration`` of its
    ``per_epoch`` batches: N batches remain before the next re-clustering, which runs at the start
    of the next epoch divisible by ``up_step``; nothing once the run ends before it."""
    due = (epoch // up_step + 1) * up_step
    if due >= epochs:
        return ""
    return f", re-cluster in {(due - epoch - 1) * per_epoch + per_epoch - iteration} it"


class UdmlForward(TrainingForward):
    """The embedding head on the first ``n`` rows; the rotation head on the ``pick``-ed rows
    and the rotated ones (after row ``n``)."""

    def heads(self, feat: torch.Tensor, n: int, pick: torch.Tensor | None):
        m = self.model
        emb = m.project(feat[:n])
        logits = None if pick is None else m.rotation_head(torch.cat([feat[pick], feat[n:]]))
        return emb, logits
