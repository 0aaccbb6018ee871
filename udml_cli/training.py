"""The training loop, the same for every method (``udml_cli/methods``, the contract in
``methods/base.py``): the method refreshes its targets every ``train.up_step`` epochs and draws
batches from them; the loop runs the steps, checkpoints, resumes, logs and guards.

Bit-exact on the CPU: an epoch's batches depend only on (seed, epoch) and every augmentation and
dropout draw on (seed, epoch, iteration), so a run resumed from any checkpoint (Ctrl-C mid-epoch
included) ends with the weights of an uninterrupted one. Under torchrun every rank draws the
same global batch and runs its contiguous share; the method gathers what its loss needs and DDP
averages the gradients, so the curve does not depend on the process count. Rank 0 writes.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from udml_cli.config import Config
from udml_cli.data.feature_cache import FeatureCache
from udml_cli.data.layout import DatasetRef, read_split
from udml_cli.data.training_images import TrainingImages
from udml_cli.engine import Engine, deferred_signals, peer_lost, seed_everything
from udml_cli.errors import CheckpointError, TrainingError, UsageError, note
from udml_cli.fileio import append_line, atomic_write_text
from udml_cli.methods import method_class
from udml_cli.methods.base import Run, short
from udml_cli.models.checkpoint import load_checkpoint, save_checkpoint
from udml_cli.models.net import build_network, init_head
from udml_cli.optim import build_optimizer, set_rates
from udml_cli.runs import forget_steps_after, resume_changes


def _mix(*parts: int) -> int:
    return int(np.random.SeedSequence(list(parts)).generate_state(1)[0])


class Trainer:
    def __init__(self, cfg: Config, ref: DatasetRef, out: Path, engine: Engine, progress=None):
        self.cfg, self.ref, self.out, self.engine, self.progress = cfg, ref, out, engine, progress
        samples = read_split(ref, "train")
        self.kind = kind = method_class(cfg.train.method)
        kind.adapt(cfg, len(samples), ref)
        kind.check_data(cfg, len(samples))
        if cfg.train.feature_cache and engine.world_size > 1:
            raise UsageError(
                "train.feature_cache trains in one process (its steps run the heads only); "
                "drop --nproc or set train.feature_cache = 0"
            )
        if cfg.train.batch_size % engine.world_size:
            raise UsageError(
                f"train.batch_size ({cfg.train.batch_size}) must split evenly across the "
                f"{engine.world_size} processes; choose a process count that divides it"
            )
        if cfg.model.layers == ["auto"]:  # a resumed run's config names the stage it chose
            from udml_cli.selection import choose_layers

            choose_layers(cfg, samples, engine, progress, f"{ref.name}/train")
        seed_everything(cfg.train.seed)
        self.model = engine.prepare_model(build_network(cfg))
        init_head(self.model, cfg.model)  # "pca" waits for the first refresh's features
        self.images = TrainingImages(cfg, samples, kind.check_data, kind.augmentation(cfg))
        self.cache: FeatureCache | None = None  # train.feature_cache: built when first needed
        self.labelled, self.main = ref.labelled, engine.is_main  # rank 0 writes
        self.log_path = out / "metrics.jsonl"
        self.epoch = self.iteration = self.step = 0  # epochs and batches done; batches in all
        self.method = kind(Run(cfg, self.model, engine, self))
        self.optimizer = build_optimizer(cfg, self.model, self.method)
        self.step_forward = self.method.forward_module()  # ``run`` wraps it in DDP
        self.board = None  # TensorBoard (train.log), opened by ``run`` on rank 0
        if "tensorboard" in cfg.train.log:
            from udml_cli import board

            if not board.available():
                raise UsageError(
                    "train.log asks for tensorboard but the tensorboard package is not "
                    "installed: pip install tensorboard (or udml[tensorboard])"
                )

    # ---- what a method asks of the loop ------------------------------------------------------
    def log(self, event: str, **fields) -> None:
        if not self.main:
            return
        record = {"event": event, "epoch": self.epoch, "step": self.step, **fields}
        append_line(self.log_path, json.dumps(record))
        if self.board is not None:
            self.board.record(event, self.step, fields)

    def features(self, view: str = "eval") -> np.ndarray:
        """The pooled backbone feature of every training image (see ``TrainingImages``); with
        ``train.feature_cache``, the plain view's from the cache."""
        if self.cfg.train.feature_cache and view == "eval":
            return self.feature_cache().plain
        return self.plain_features(view)

    def feature_cache(self) -> FeatureCache:
        if self.cache is None:
            self.cache = FeatureCache.open(self)
        return self.cache

    def plain_features(self, view: str = "eval") -> np.ndarray:
        return self.images.features(self.model, self.engine, self.progress, self.method.ready,
                                    *self._skip_report, view)  # fmt: skip

    @property
    def _skip_report(self) -> tuple[Path | None, str]:
        """Where unreadable training images are listed (skipped.txt: rank 0 only) and named."""
        return (self.out if self.main else None), f"{self.ref.name}/train"

    # ---- checkpoints -------------------------------------------------------------------------
    def keep_last(self) -> None:
        """After Ctrl-C, the launcher's SIGTERM or a lost peer: ``last.pt`` at the last whole
        step, by rank 0, or by the lowest rank still running when rank 0 is the one gone (every
        rank holds the same state). Signals wait for the write; one that lands as it starts
        (SIGTERM just after a lost peer) makes it start again."""
        for _ in range(3):
            try:
                with deferred_signals():
                    writer = self.main or self.engine.first_alive() == self.engine.rank
                    self.save("last.pt", writer=writer)
                return
            except KeyboardInterrupt:
                continue

    def save(self, name: str, full: bool = True, writer: bool | None = None) -> Path:
        """A checkpoint; ``full=False`` keeps what eval/embed need (weights, config, position),
        not the optimiser and method state a resume needs (3× smaller with Adam). Written by
        rank 0 (``writer``: by this rank, when rank 0 is gone)."""
        path = self.out / name
        if not (self.main if writer is None else writer):
            return path
        state: dict = {"epoch": self.epoch, "iteration": self.iteration, "step": self.step}
        if full:
            state |= {"optimizer": self.optimizer.state_dict(), "skipped": list(self.images.skipped),
                      "method": {"name": self.kind.name, "version": self.kind.version},
                      **self.method.state_dict()}  # fmt: skip
        save_checkpoint(path, self.model, self.cfg, self.ref.spec or self.ref.name, **state)
        return path

    def resume(self, path: Path, payload: dict | None = None) -> None:
        """Load ``path`` (``payload``: its contents, when the caller has read them already) after
        checking it agrees with this run; touches nothing on disk."""
        if payload is None:
            payload = load_checkpoint(path, training=True)
        changes = resume_changes(payload["config"], self.cfg, path)
        self.images.leave_out(set(payload.get("skipped", [])))
        try:
            self.method.load_state_dict(payload, len(self.images))
            self.model.load_state_dict(payload["model"])
            self.optimizer.load_state_dict(payload["optimizer"])
        except (CheckpointError, UsageError) as e:
            raise type(e)(f"{path}: {e}") from None
        except (RuntimeError, ValueError, KeyError) as e:
            first = str(e).strip().splitlines()[0][:160]
            raise CheckpointError(f"{path}: does not fit this run's network ({first})") from None
        for key, (old, new) in changes.items():
            note(f"resume: {key} changed {old} → {new}; applied from step {payload['step']}")
        self.epoch, self.iteration, self.step = (payload["epoch"], payload["iteration"],
                                                 payload["step"])  # fmt: skip

    # ---- the loop ----------------------------------------------------------------------------
    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> dict:
        """One batch: ``images`` this rank's share, ``targets`` the method's for the global batch."""
        out, local = self.method.step(images, targets)
        if not np.isfinite(out["loss"]):
            last = self.out / "last.pt"
            kept = f"the last good checkpoint is kept: {last}" if last.is_file() else \
                "no checkpoint had been written yet"  # fmt: skip
            raise TrainingError(
                f"loss became {out['loss']} at epoch {self.epoch + 1}, step {self.step + 1}; "
                f"stopped, {kept} (try a lower learning rate)"
            )
        self.optimizer.zero_grad(set_to_none=True)
        (local * self.engine.processes).backward()  # DDP averages the gradients: × N sums
        self.method.after_backward()
        self.optimizer.step()
        return out

    def run(self, resume_from: Path | None = None, evaluate=None, payload: dict | None = None):
        """Train to ``train.epochs``; ``resume_from`` (with ``payload``, its contents if read)
        continues a run. Returns the path of ``last.pt``."""
        cfg, t = self.cfg, self.cfg.train
        if resume_from is not None:
            self.resume(resume_from, payload)  # every check first: a refused resume changes nothing
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out / "config.toml", cfg.to_toml())
            if "tensorboard" in t.log:
                from udml_cli.board import Board

                self.board = Board(self.out / "tensorboard", self)
        try:
            return self._run(resume_from, evaluate)
        finally:
            if self.board is not None:
                self.board.close()

    def _run(self, resume_from, evaluate) -> Path:
        t, method = self.cfg.train, self.method
        if resume_from is not None:
            if self.main:
                forget_steps_after(self.log_path, self.step)
            self.log("resume", checkpoint=str(resume_from), iteration=self.iteration)
        else:
            if self.main:
                self.log_path.write_text("")
            method.refresh(self.epoch, first=True)
            # a method whose first refresh read no image (no features needed) learns here which
            # are unreadable, and starts again on the rest
            if self.images.scan(self.engine, self.progress, *self._skip_report):
                method.refresh(self.epoch, first=True)
            if evaluate is not None and t.final_eval:
                self.log("eval", at="start", **evaluate(self.model))
            # the start itself, kept: where training takes away (BENCHMARKS, issue 21's tally),
            # `udml eval RUN` ranks it with the rest and `udml index --checkpoint` can use it
            self.save("epoch_0000.pt", full=t.full_epoch_checkpoints)
        # after the first refresh (a "pca" head is set from it): DDP starts from rank 0's weights
        self.step_forward = self.engine.wrap(self.step_forward, not method.all_parameters_used)
        sampler = method.sampler()
        total, done = t.epochs * len(sampler), self.epoch * len(sampler) + self.iteration
        task = self.progress.add_task("training", total=total, completed=done) if self.progress \
            else None  # fmt: skip
        last = self.out / "last.pt"
        lost = stopped = None  # a peer process gone; Ctrl-C or the launcher's SIGTERM
        try:  # the outer level catches an interrupt that lands while the inner one handles a loss
            try:
                while self.epoch < t.epochs:
                    due = self.iteration == 0 and self.epoch > 0 and self.epoch % t.up_step == 0
                    if due and method.refreshed_at != self.epoch:  # not done before an interrupt
                        method.refresh(self.epoch, first=False)
                        sampler = method.sampler()
                    self.run_epoch(sampler, task)
                    self.epoch, self.iteration = self.epoch + 1, 0
                    self._epoch_done(evaluate)
            except RuntimeError as e:
                if not peer_lost(e):
                    raise
                lost = e  # every collective comes before the optimiser step: this step is whole
        except KeyboardInterrupt:
            stopped = True
        if lost is not None or stopped:
            if method.ready:  # nothing worth keeping before the first refresh
                self.keep_last()
                self.log("interrupted", iteration=self.iteration)
            if stopped:
                raise KeyboardInterrupt
            raise TrainingError(
                f"another process of the run stopped at step {self.step} "
                f"({str(lost).strip()[:120]}); saved {last}: continue with --resume"
            )
        return last

    def _epoch_done(self, evaluate) -> None:
        """Checkpoints every ``train.save_step`` epochs and at the end; scores when due."""
        t = self.cfg.train
        if self.epoch % t.save_step == 0 or self.epoch == t.epochs:
            self.save(f"epoch_{self.epoch:04d}.pt", full=t.full_epoch_checkpoints)
            self.save("last.pt")
        periodic = t.eval_step and self.epoch % t.eval_step == 0
        if evaluate is not None and (periodic or (t.final_eval and self.epoch == t.epochs)):
            at = "end" if self.epoch == t.epochs else "epoch"
            self.log("eval", at=at, **evaluate(self.model))

    def run_epoch(self, sampler, task) -> None:
        cfg, eng, method = self.cfg, self.engine, self.method
        batches = sampler.epoch(self.epoch)[self.iteration :]
        base = _mix(cfg.train.seed, self.epoch)
        size = cfg.train.batch_size
        share = eng.shard(size)  # this rank's images of every batch, each in ``views`` views
        set_rates(self.optimizer, cfg, method, self.epoch)
        if cfg.train.feature_cache:  # cached views in place of images, distinct ones per row
            cache = self.feature_cache()
            picked = [
                [(batch[j], (_mix(base, self.iteration + b, j) + v) % cache.count)
                 for v in range(method.views) for j in share]
                for b, batch in enumerate(batches)
            ]  # fmt: skip
            loader = ((cache.rows(items), None) for items in picked)
        else:
            seeded = [
                [(batch[j], _mix(base, self.iteration + b, j + v * size))
                 for v in range(method.views) for j in share]
                for b, batch in enumerate(batches)
            ]  # fmt: skip
            loader = eng.batch_loader(self.images.augmented, seeded)
        self.model.train(True, freeze_bn=cfg.model.freeze_bn)
        eng.use_threads(eng.threads)
        tick, images_seen, losses = time.perf_counter(), 0, []
        for (images, _), batch in zip(loader, batches, strict=True):
            torch.manual_seed(_mix(base, self.iteration, 1 << 20))  # dropout etc.
            parts = self.train_step(images, method.targets(batch))
            self.iteration += 1
            self.step += 1
            images_seen += len(batch)
            losses.append(parts["loss"])
            rate = images_seen / max(time.perf_counter() - tick, 1e-9)
            final = self.epoch + 1 == cfg.train.epochs and self.iteration == len(sampler)
            if self.step % cfg.train.log_every == 0 or final:  # and the run's last step
                self.log("step", iteration=self.iteration, images_per_s=round(rate, 1), **parts)
            if self.progress:
                line = (f"epoch {self.epoch + 1}/{cfg.train.epochs} loss {short(parts['loss'])} "
                        f"({method.describe(parts)}) {rate:.0f} img/s"
                        + method.refresh_note(self.epoch, self.iteration, len(sampler)))  # fmt: skip
                self.progress.update(task, advance=1, description=line)
        if losses:  # one summary record per epoch (of the part run here, after a mid-epoch resume)
            seconds = time.perf_counter() - tick
            self.log(
                "epoch_summary", completed=self.epoch + 1, steps=len(losses),
                mean_loss=round(float(np.mean(losses)), 6), seconds=round(seconds, 3),
                images_per_s=round(images_seen / max(seconds, 1e-9), 1),
                partial=len(losses) < len(sampler),
            )  # fmt: skip
