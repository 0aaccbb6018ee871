"""The training loop of both methods. UDML-SS (``udml_ss.py``): cluster → P×K batches on
pseudo-labels → Weight + λ·rotation → re-cluster. STML (``stml.py``): neighbours → query +
neighbour batches in two views → relaxed contrastive + distillation against an EMA teacher →
neighbours again. The loop, checkpoints, resume, logging and DDP are shared.

Reproducible to the bit on the CPU: the batches of epoch e depend only on (seed, e), and every
image's augmentation and every iteration's dropout are seeded from (seed, e, i), so a run resumed
from any checkpoint (including one written on Ctrl-C mid-epoch) ends with the same weights as an
uninterrupted one.

Under torchrun the same global batches are drawn on every rank and each rank loads and runs its
contiguous share; the embeddings are gathered so the Weight loss mines the whole global batch
(``Engine.gather_batch``), the rotated images are the same draw over the global batch, and DDP
averages the gradients: the recipe and the loss curve do not change with the number of
processes. Rank 0 alone clusters (the labels are broadcast), writes checkpoints and metrics.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from udml_cli.clustering import diagnostics, kmeans
from udml_cli.config import Config, auto_clusters
from udml_cli.data.images import FAILED, ImageDataset, SeededImages, report_unreadable
from udml_cli.data.layout import read_split
from udml_cli.data.registry import DatasetRef
from udml_cli.data.sampler import NeighbourSampler, PKSampler
from udml_cli.data.transforms import eval_transform, train_transform
from udml_cli.engine import Engine, deferred_signals, extract, seed_everything
from udml_cli.errors import CheckpointError, DatasetError, TrainingError, UsageError, note
from udml_cli.fileio import append_line, atomic_write_text
from udml_cli.models.checkpoint import load_checkpoint, save_checkpoint
from udml_cli.models.net import aux_dim, build_model, init_head, trainable_backbone
from udml_cli.stml import (
    StudentForward,
    ema_update,
    make_teacher,
    nearest,
    neighbour_precision,
    stml_step,
)  # fmt: skip
from udml_cli.udml_ss import UdmlForward, udml_step


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


@dataclass
class State:
    epoch: int = 0  # epochs completed
    iteration: int = 0  # batches done inside the current epoch
    step: int = 0  # batches done in total
    pseudo_labels: np.ndarray | None = None
    centroids: np.ndarray | None = None
    clustered_at: int = -1  # the epoch whose re-clustering (stml: neighbour search) is in use
    cluster_feature: str = ""  # the feature those centroids live in (warm starts need the same)
    neighbours: np.ndarray | None = None  # stml: every image's nearest neighbours (n, k)

    @property
    def ready(self) -> bool:
        """Batches can be drawn (the first clustering or neighbour search is done)."""
        return self.pseudo_labels is not None or self.neighbours is not None


def validate(cfg: Config, n_train: int) -> None:
    """Refuse settings impossible for this data before any work starts, naming the setting to
    change (the checks that need no data are the config's own validators)."""
    if cfg.train.method == "stml":
        queries, k = cfg.train.batch_size // cfg.stml.neighbors, cfg.stml.neighbors
        if max(queries, k) > n_train:
            raise UsageError(
                f"a batch of {cfg.train.batch_size} = {queries} queries × {k} neighbours needs "
                f"more than the {n_train} training images; lower train.batch_size"
            )
        return
    k, p = cfg.cluster.num_clusters, cfg.train.batch_size // cfg.train.instances
    if k > n_train:
        raise UsageError(
            f"cluster.num_clusters ({k}) exceeds the {n_train} training images; "
            f"lower it, e.g. --set cluster.num_clusters={max(2, n_train // 10)}"
        )
    if p > k:
        raise UsageError(
            f"a batch of {cfg.train.batch_size} = {p} clusters × {cfg.train.instances} needs at least "
            f"{p} clusters but cluster.num_clusters is {k}; lower train.batch_size or raise the clusters"
        )


# What may differ between a run and its resumption: how long, how often things are written or
# evaluated, where data lives, how the work runs. Learning rates and weight decay are re-applied
# to the restored optimiser. Anything else would make a different run: refused, naming the keys.
_FREE_ON_RESUME = {
    "train.epochs", "train.save_step", "train.eval_step", "train.log_every", "data.data_root",
    "data.cache", "data.strict", "data.eval_dataset", "train.final_eval",
    "train.full_epoch_checkpoints",
}  # fmt: skip
_REAPPLIED = {"train.lr", "train.head_lr", "train.rot_lr", "train.weight_decay"}


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= _flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def resume_changes(saved: dict, cfg: Config, path: Path) -> dict:
    """``{key: (old, new)}`` for the re-applied keys that changed; refuse other changes."""
    defaults = _flat(Config().model_dump(mode="json"))  # keys newer than the checkpoint
    old = defaults | _flat(saved)
    new = _flat(cfg.model_dump(mode="json"))
    changed = {
        k: (old.get(k), new.get(k))
        for k in sorted(set(old) | set(new))
        if old.get(k) != new.get(k) and not k.startswith(("engine.", "eval."))
    }
    refused = [k for k in changed if k not in _FREE_ON_RESUME | _REAPPLIED]
    if refused:
        shown = ", ".join(f"{k} ({changed[k][0]} → {changed[k][1]})" for k in refused[:4])
        more = f" and {len(refused) - 4} more" if len(refused) > 4 else ""
        raise UsageError(
            f"{path}: cannot resume with different settings: {shown}{more}; resume with the run's "
            "config.toml (drop those --set/--config values) or start a new run with another --out"
        )
    return {k: v for k, v in changed.items() if k in _REAPPLIED}


def _group_lr(cfg: Config, name: str | None) -> float:
    t = cfg.train
    return {"head": t.head_lr, "rotation": t.rot_lr}.get(name or "", t.lr)


class Trainer:
    def __init__(self, cfg: Config, ref: DatasetRef, out: Path, engine: Engine, progress=None):
        self.cfg, self.ref, self.out, self.engine, self.progress = cfg, ref, out, engine, progress
        samples = read_split(ref, "train")
        self.stml = cfg.train.method == "stml"
        if cfg.cluster.num_clusters == "auto" and not self.stml:
            k = auto_clusters(len(samples), cfg.train.batch_size // cfg.train.instances)
            cfg.cluster.num_clusters = k
            note(
                f"cluster.num_clusters = auto → {k} for {len(samples)} training images (one per "
                "50); choose another with --set cluster.num_clusters=N"
            )
        if not ref.labelled:
            note(
                f"{ref.name} is an unlabelled collection: no NMI/ARI/purity while re-clustering "
                "(cluster sizes and the objective are logged)"
            )
        validate(cfg, len(samples))
        if cfg.train.batch_size % engine.world_size:
            raise UsageError(
                f"train.batch_size ({cfg.train.batch_size}) must split evenly across the "
                f"{engine.world_size} processes; choose a process count that divides it"
            )
        seed_everything(cfg.train.seed)
        self.model = engine.prepare_model(build_model(cfg.model, aux_dim=aux_dim(cfg)))
        init_head(self.model, cfg.model)  # "pca" waits for the first clustering's features
        self.teacher = make_teacher(self.model) if self.stml else None
        self.skipped: list[str] = []  # unreadable training images (relative paths), left out
        self._use_samples(samples)
        t = cfg.train
        m = self.model
        groups = [
            {
                "params": trainable_backbone(m, cfg.model.freeze_backbone),
                "lr": t.lr,
                "name": "backbone",
            },
            {"params": [*m.head.parameters(), *(m.aux_head.parameters() if m.aux_head else [])],
             "lr": t.head_lr, "name": "head"},
            {"params": list(m.rotation_head.parameters()) if m.rotation_head else [],
             "lr": t.rot_lr, "name": "rotation"},
        ]  # fmt: skip
        groups = [g for g in groups if g["params"]]
        if t.optimizer == "adamp":  # STML's code: AdamP with Nesterov momentum
            from adamp import AdamP

            self.optimizer = AdamP(groups, weight_decay=t.weight_decay, nesterov=True)
        else:
            self.optimizer = torch.optim.Adam(groups, weight_decay=t.weight_decay)
        self.state = State()
        self.log_path = out / "metrics.jsonl"
        self.main = engine.is_main  # rank 0 writes; the other ranks compute
        self.rescuer = False  # a rank that writes last.pt because rank 0 is gone
        # what DDP wraps (in ``run``)
        self.forward = (
            StudentForward(self.model, engine) if self.stml else UdmlForward(self.model, engine)
        )
        self.step_forward = self.forward  # ``run`` wraps it in DDP when distributed

    def _use_samples(self, samples) -> None:
        cfg = self.cfg
        cache = cfg.data.resize if cfg.data.cache else None
        self.plain = ImageDataset(
            samples, eval_transform(cfg.data), cache_size=cache, size=cfg.data.image_size
        )
        self.augmented = SeededImages(samples, train_transform(cfg.data))
        self.augmented.cache = self.plain.cache

    def _leave_out(self, rels: set[str]) -> None:
        """Train without these images (unreadable at the first pass)."""
        kept = [s for s in self.plain.samples if s.rel not in rels]
        self.skipped = sorted(set(self.skipped) | rels)
        if len(kept) != len(self.plain.samples):
            self._use_samples(kept)
            validate(self.cfg, len(kept))

    # ---- bookkeeping -------------------------------------------------------------------------
    def log(self, event: str, **fields) -> None:
        if not self.main:
            return
        record = {"event": event, "epoch": self.state.epoch, "step": self.state.step, **fields}
        append_line(self.log_path, json.dumps(record))

    def keep_last(self) -> None:
        """After Ctrl-C, the launcher's SIGTERM or a lost peer: ``last.pt`` at the last whole
        step, by rank 0, or by the lowest rank still running when rank 0 is the one gone (every
        rank holds the same state). A signal during the write waits until it is done."""
        self.rescuer = not self.main and self.engine.first_alive() == self.engine.rank
        with deferred_signals():
            self.save("last.pt")

    def save(self, name: str, full: bool = True) -> Path:
        """A checkpoint; ``full=False`` keeps what eval/embed need (weights, config, position),
        not the optimiser and cluster state a resume needs (3× smaller with Adam)."""
        s = self.state
        path = self.out / name
        if not (self.main or self.rescuer):
            return path
        state: dict = {"epoch": s.epoch, "iteration": s.iteration, "step": s.step}
        if full:
            state |= {
                "optimizer": self.optimizer.state_dict(),
                "clustered_at": s.clustered_at,
                "skipped": list(self.skipped),
            }
            if self.stml:
                state |= {
                    "neighbours": torch.from_numpy(s.neighbours),
                    "teacher": self.teacher.state_dict(),
                }
            else:
                state |= {
                    "pseudo_labels": torch.from_numpy(s.pseudo_labels),
                    "centroids": torch.from_numpy(s.centroids),
                    "cluster_feature": s.cluster_feature,
                }
        save_checkpoint(path, self.model, self.cfg, self.ref.spec or self.ref.name, **state)
        return path

    def resume(self, path: Path, payload: dict | None = None) -> None:
        """Load ``path`` (``payload``: its contents, when the caller has read them already) after
        checking it agrees with this run; touches nothing on disk."""
        if payload is None:
            payload = load_checkpoint(path, training=True)
        changes = resume_changes(payload["config"], self.cfg, path)
        self._leave_out(set(payload.get("skipped", [])))
        labels = payload["neighbours" if self.stml else "pseudo_labels"].numpy()
        if len(labels) != len(self.plain):
            raise UsageError(
                f"{path}: the run was trained on {len(labels)} images but {self.ref.name} now has "
                f"{len(self.plain)} training images; the dataset changed: start a new run (--out)"
            )
        top = len(labels) if self.stml else self.cfg.cluster.num_clusters
        if labels.min(initial=0) < 0 or labels.max(initial=0) >= top:
            raise CheckpointError(f"{path}: damaged: pseudo-labels or neighbours out of range")
        try:
            self.model.load_state_dict(payload["model"])
            if self.stml:
                self.teacher.load_state_dict(payload["teacher"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(f"{path}: does not fit this run's network ({first})") from None
        for group in self.optimizer.param_groups:  # the config's values win over the saved ones
            group["lr"] = _group_lr(self.cfg, group.get("name"))
            group["weight_decay"] = self.cfg.train.weight_decay
        for key, (old, new) in changes.items():
            note(f"resume: {key} changed {old} → {new}; applied from step {payload['step']}")
        s = self.state
        s.epoch, s.iteration, s.step = payload["epoch"], payload["iteration"], payload["step"]
        if self.stml:
            s.neighbours = labels
            s.clustered_at = int(payload["clustered_at"])
            return
        s.pseudo_labels = labels
        s.centroids = payload["centroids"].numpy()
        up = self.cfg.train.up_step
        # checkpoints before udml 0.1.1 lack clustered_at: their labels are from the last due epoch
        legacy = s.epoch - s.epoch % up if s.iteration or s.epoch % up else s.epoch - up
        s.clustered_at = int(payload.get("clustered_at", max(0, legacy)))
        s.cluster_feature = str(payload.get("cluster_feature", self.cfg.cluster.feature))

    def _forget_steps_after(self, step: int) -> None:
        """A resume from an older checkpoint (kill -9, a damaged last.pt) redoes steps that
        metrics.jsonl already holds: drop those records so every step appears once."""
        if not self.main or not self.log_path.is_file():
            return
        kept = [
            line for line in self.log_path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step
        ]  # fmt: skip
        atomic_write_text(self.log_path, "".join(f"{line}\n" for line in kept))

    # ---- clustering --------------------------------------------------------------------------
    @torch.no_grad()
    def clustered_feature(self, kind: str) -> np.ndarray:
        """The feature k-means sees for every training image (centre crop, no augmentation):
        ``embedding``, the L2-normalised pooled ``backbone`` feature, the raw one, or STML's
        g embedding (``aux``)."""
        self.model.eval()
        feat, index = extract(
            self.model.features, self.plain, self.engine, self.cfg.eval.batch_size,
            "embedding train", self.progress,
        )  # fmt: skip
        bad = (index == FAILED).nonzero()[0]
        if len(bad):
            paths = [str(self.plain.paths[i]) for i in bad]
            if self.state.ready:  # readable before: changed during the run
                raise DatasetError(f"{paths[0]}: became unreadable during training; restore it")
            report_unreadable(paths, len(index), self.cfg.data.strict, f"{self.ref.name}/train")
            self._leave_out({self.plain.samples[i].rel for i in bad})
            if self.main:
                atomic_write_text(self.out / "skipped.txt", "".join(f"{r}\n" for r in self.skipped))
            note(f"{len(bad)} unreadable training images are left out: {self.out / 'skipped.txt'}")
            feat = feat[index != FAILED]
        if self.cfg.model.head_init == "pca" and self.state.centroids is None:
            self.model.head.init_pca(feat)  # first clustering of a fresh run
        if kind == "backbone-raw":
            return feat
        if kind == "aux":
            g = self.model.aux_head(torch.from_numpy(feat).to(self.engine.device))
            return g.float().cpu().numpy()
        if kind == "backbone":
            return feat / np.linalg.norm(feat, axis=1, keepdims=True).clip(1e-12)
        proj = self.model.project(torch.from_numpy(feat).to(self.engine.device))
        return proj.float().cpu().numpy()

    def find_neighbours(self) -> None:
        """STML: every image's ``stml.neighbors`` nearest (itself included) in the student's g
        embedding, found on rank 0 and sent to the others."""
        s = self.state
        x = self.clustered_feature("aux")
        found = nearest(x, self.cfg.stml.neighbors) if self.main else None
        s.neighbours, s.clustered_at = self.engine.from_main(found), s.epoch
        extra = {}
        if self.ref.labelled:
            extra["precision"] = neighbour_precision(s.neighbours, np.asarray(self.plain.labels))
        self.log("neighbours", k=self.cfg.stml.neighbors, **extra)

    def refresh(self, first: bool) -> None:
        """What the batches are drawn from: the k-means pseudo-labels, or STML's neighbours."""
        if self.stml:
            self.find_neighbours()
        else:
            self.recluster(first)

    def sampler(self):
        s, t = self.state, self.cfg.train
        if self.stml:
            return NeighbourSampler(s.neighbours, t.batch_size, t.seed, t.iters_per_epoch)
        return PKSampler(s.pseudo_labels, t.batch_size, t.instances, t.seed, t.iters_per_epoch)

    def recluster(self, first: bool) -> None:
        c, s = self.cfg.cluster, self.state
        kind = c.first_feature if first and c.first_feature != "same" else c.feature
        x = self.clustered_feature(kind)
        # warm start only from centroids of the same feature (the original, too, starts the
        # first embedding clustering after a pool5 one from k-means++)
        warm = s.centroids if c.warm_start and not first and s.cluster_feature == kind else None
        result = None
        if self.main:  # once, on rank 0; every rank trains on its labels
            result = kmeans(
                x, c.num_clusters, c.niter, c.seed, c.init, init_centroids=warm, n_init=c.n_init,
                tol=c.warm_tol or None,
            )  # fmt: skip
        result = self.engine.from_main(result)
        # one assignment: an interrupt leaves either the old clustering or the new one, whole
        s.pseudo_labels, s.centroids, s.clustered_at, s.cluster_feature = (
            result.labels, result.centroids, s.epoch, kind,
        )  # fmt: skip
        truth = self.plain.labels if self.ref.labelled else None
        diag = diagnostics(result.labels, c.num_clusters, result.objective, truth)
        diag.pop("sizes")
        self.log(
            "cluster", feature=kind, iterations=result.iterations, warm=warm is not None, **diag
        )
        p = self.cfg.train.batch_size // self.cfg.train.instances
        if c.num_clusters - diag["empty"] < p:
            raise TrainingError(
                f"only {c.num_clusters - diag['empty']} non-empty clusters, a batch needs {p}; "
                "lower train.batch_size or cluster.num_clusters"
            )

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> dict:
        """One batch: ``images`` this rank's share, ``labels`` the whole global batch's
        pseudo-labels (stml: which image each row is a view of)."""
        step = stml_step if self.stml else udml_step
        out, local = step(self, images, labels)
        if not np.isfinite(out["loss"]):
            kept = (
                f"the last good checkpoint is kept: {self.out / 'last.pt'}"
                if (self.out / "last.pt").is_file()
                else "no checkpoint had been written yet"
            )
            raise TrainingError(
                f"loss became {out['loss']} at epoch {self.state.epoch + 1}, step "
                f"{self.state.step}; stopped, {kept} (try a lower learning rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (local * self.engine.processes).backward()  # DDP averages the gradients: × N sums
        if self.teacher is not None:  # before the step, as STML's code
            ema_update(self.teacher, self.model, self.cfg.stml.momentum)
        self.optimizer.step()
        return out

    def run(
        self, resume_from: Path | None = None, evaluate=None, payload: dict | None = None
    ) -> Path:
        """Train to ``train.epochs``; ``resume_from`` (with ``payload``, its contents if read)
        continues a run."""
        cfg, t, s = self.cfg, self.cfg.train, self.state
        if resume_from is not None:
            self.resume(resume_from, payload)  # every check first: a refused resume changes nothing
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.toml", cfg.to_toml())
        if resume_from is not None:
            self._forget_steps_after(s.step)
            self.log("resume", checkpoint=str(resume_from), iteration=s.iteration)
        else:
            if self.main:
                self.log_path.write_text("")
            self.refresh(first=True)
            if evaluate is not None and t.final_eval:
                self.log("eval", at="start", **evaluate(self.model))
        # after the first clustering (a "pca" head is set from it): DDP starts from rank 0's weights
        # (a rank without rotated images still runs the rotation head, on no rows)
        rotating = cfg.loss.rot_weight > 0 and cfg.loss.rot_batch > 0
        self.step_forward = self.engine.wrap(self.forward, unused=not (rotating or self.stml))
        sampler = self.sampler()
        total = t.epochs * len(sampler)
        done = s.epoch * len(sampler) + s.iteration
        task = (
            self.progress.add_task("training", total=total, completed=done)
            if self.progress
            else None
        )
        last = self.out / "last.pt"
        try:
            while s.epoch < t.epochs:
                due = s.iteration == 0 and s.epoch > 0 and s.epoch % t.up_step == 0
                if due and s.clustered_at != s.epoch:  # not already done before an interrupt
                    self.refresh(first=False)
                    sampler = self.sampler()
                self.run_epoch(sampler, task)
                s.epoch, s.iteration = s.epoch + 1, 0
                if s.epoch % t.save_step == 0 or s.epoch == t.epochs:
                    self.save(f"epoch_{s.epoch:04d}.pt", full=t.full_epoch_checkpoints)
                    self.save("last.pt")
                periodic = t.eval_step and s.epoch % t.eval_step == 0
                final = t.final_eval and s.epoch == t.epochs
                if evaluate is not None and (periodic or final):
                    at = "end" if s.epoch == t.epochs else "epoch"
                    self.log("eval", at=at, **evaluate(self.model))
        except KeyboardInterrupt:
            if s.ready:  # nothing worth keeping before the first clustering
                self.keep_last()
                self.log("interrupted", iteration=s.iteration)
            raise
        except RuntimeError as e:
            if not _peer_lost(e):
                raise
            # another rank died: every collective comes before the optimiser step, so the
            # weights are those after step s.step, whole; keep them
            if s.ready:
                self.keep_last()
            self.log("interrupted", iteration=s.iteration)
            raise TrainingError(
                f"another process of the run stopped at step {s.step} ({str(e).strip()[:120]}); "
                f"saved {last}: continue with --resume"
            ) from None
        return last

    def run_epoch(self, sampler, task) -> None:
        cfg, s, eng = self.cfg, self.state, self.engine
        batches = sampler.epoch(s.epoch)[s.iteration :]
        base = _mix(cfg.train.seed, s.epoch)
        size = cfg.train.batch_size
        views = cfg.stml.views if self.stml else 1
        share = eng.shard(size)  # this rank's images of every batch, each in ``views`` views
        seeded = [
            [(batch[j], _mix(base, s.iteration + b, j + v * size))
             for v in range(views) for j in share]
            for b, batch in enumerate(batches)
        ]  # fmt: skip
        self._set_lr()
        loader = self.engine.batch_loader(self.augmented, seeded)
        self.model.train(True, freeze_bn=cfg.model.freeze_bn)
        self.engine.use_threads(self.engine.threads)
        tick, images_seen, losses = time.perf_counter(), 0, []
        for (images, _), batch in zip(loader, batches, strict=True):
            torch.manual_seed(_mix(base, s.iteration, 1 << 20))  # dropout etc.
            parts = self.train_step(images, self._batch_labels(batch))
            s.iteration += 1
            s.step += 1
            images_seen += len(batch)
            losses.append(parts["loss"])
            now = time.perf_counter()
            rate = images_seen / max(now - tick, 1e-9)
            if s.step % cfg.train.log_every == 0:
                self.log("step", iteration=s.iteration, images_per_s=round(rate, 1), **parts)
            if self.progress:
                self.progress.update(
                    task, advance=1, description=self._describe(parts, rate, len(sampler))
                )
        if losses:  # one summary record per epoch (of the part run here, after a mid-epoch resume)
            seconds = time.perf_counter() - tick
            self.log(
                "epoch_summary", completed=s.epoch + 1, steps=len(losses),
                mean_loss=round(float(np.mean(losses)), 6), seconds=round(seconds, 3),
                images_per_s=round(images_seen / max(seconds, 1e-9), 1),
                partial=len(losses) < len(sampler),
            )  # fmt: skip

    def _batch_labels(self, batch: list[int]) -> torch.Tensor:
        """What the loss needs of the global batch: UDML-SS the pseudo-labels; STML which image
        each row is a view of (all images' first view, then the second …)."""
        if self.stml:
            return torch.from_numpy(np.tile(np.asarray(batch), self.cfg.stml.views))
        return torch.from_numpy(self.state.pseudo_labels[batch])

    def _set_lr(self) -> None:
        """The learning rates of this epoch: the config's, cosine-annealed over train.epochs
        (``train.schedule``, as torch's CosineAnnealingLR stepped once per epoch)."""
        t = self.cfg.train
        scale = 0.5 * (1 + math.cos(math.pi * self.state.epoch / t.epochs))
        for group in self.optimizer.param_groups:
            lr = _group_lr(self.cfg, group.get("name"))
            group["lr"] = lr * scale if t.schedule == "cosine" else lr

    def _describe(self, parts: dict, rate: float, per_epoch: int) -> str:
        s, t = self.state, self.cfg.train
        if self.stml:
            detail = f"rc {parts['rc_loss']:.3f} kl {parts['kl_loss']:.3f}"
        else:
            rot = f" rot {parts['rot_loss']:.3f}" if "rot_loss" in parts else ""
            detail = f"weight {parts['weight_loss']:.3f}{rot}"
        text = (
            f"epoch {s.epoch + 1}/{t.epochs} loss {parts['loss']:.3f} ({detail}) {rate:.0f} img/s"
        )
        return text + recluster_note(s.epoch, s.iteration, per_epoch, t.up_step, t.epochs)


def recluster_note(epoch: int, iteration: int, per_epoch: int, up_step: int, epochs: int) -> str:
    """``", re-cluster in N it"`` while in epoch ``epoch`` (0-based) after ``iteration`` of its
    ``per_epoch`` batches: N batches remain before the next re-clustering, which runs at the start
    of the next epoch divisible by ``up_step``; nothing once the run ends before it."""
    due = (epoch // up_step + 1) * up_step
    if due >= epochs:
        return ""
    return f", re-cluster in {(due - epoch - 1) * per_epoch + per_epoch - iteration} it"


def _peer_lost(e: RuntimeError) -> bool:
    """A collective failed because another process of the run is gone (gloo raises a plain
    RuntimeError naming itself, NCCL a DistError)."""
    text = str(e)
    return isinstance(e, torch.distributed.DistError) or "gloo" in text or "NCCL" in text
