"""Run folders: one writer at a time, replaced whole, resumed from an intact checkpoint.

- ``RunLock``: an exclusive ``flock`` on ``.<name>.lock`` beside the run folder, holding the
  owner's pid. The kernel drops it when the process dies (even kill -9), so a stale lock never
  blocks; a second ``udml train`` on the same folder refuses, naming the pid.
- ``ReplacedRun``: ``--yes`` over an existing run moves the old folder aside in one rename, so the
  new run starts empty; the old one is deleted once the new run has a checkpoint, and put back if
  the new run stops before writing one.
- ``resume_checkpoint``: ``last.pt``, or, when it is damaged, the newest intact ``epoch_NNNN.pt``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path

from udml_cli.errors import CheckpointError, UsageError, note
from udml_cli.fileio import umask


class RunLock:
    def __init__(self, out: Path, command: str = "udml train") -> None:
        self.out = out
        self.command = command
        self.path = out.parent / f".{out.name}.lock"
        self.fd: int | None = None

    def __enter__(self) -> RunLock:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise UsageError(
                f"{self.out} is in use by another {self.command} (pid {holder}); wait for it "
                "to finish or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)  # closing releases the flock
            self.fd = None


class ReplacedRun:
    """Move ``out`` aside for a fresh run; ``commit`` deletes it, ``rollback`` restores it."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.aside = out.parent / f".{out.name}.replaced"
        shutil.rmtree(self.aside, ignore_errors=True)
        os.replace(out, self.aside)

    def commit(self) -> None:
        shutil.rmtree(self.aside, ignore_errors=True)

    def rollback(self) -> None:
        if self.aside.exists():
            shutil.rmtree(self.out, ignore_errors=True)
            os.replace(self.aside, self.out)


def read_metrics(out: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, in order (none when there is no log yet). A cut last
    line (what a crash mid-append leaves) is skipped with a warning; any other line that is not
    a record (JSON object with ``event``, ``epoch`` and ``step``) is one error naming its line."""
    import json

    from udml_cli.errors import DatasetError, warn

    log = Path(out) / "metrics.jsonl"
    if not log.is_file():
        return []
    try:
        text = log.read_bytes().decode("utf-8", errors="replace")
    except OSError as e:
        raise DatasetError(f"cannot read {log}: {e.strerror}") from None
    lines = text.split("\n")
    records = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if n == len(lines) and not text.endswith("\n"):  # the last line, never finished
                warn(f"{log}:{n}: the last line is cut short (a crash while writing?); skipped")
                continue
            raise DatasetError(f"{log}:{n}: not a JSON record; the log is damaged") from None
        if not _is_record(record):
            raise DatasetError(
                f"{log}:{n}: not a udml record (a JSON object with event, epoch and step); "
                "the log is damaged"
            )
        records.append(record)
    return records


def run_losses(out: Path) -> tuple[str, ...]:
    """The loss names a run's method logs (its config.toml says which method; UDML-SS's when
    it cannot be read)."""
    import tomllib

    from udml_cli.methods import method_class

    name = "udml-ss"
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        name = str(tomllib.loads((Path(out) / "config.toml").read_text())["train"]["method"])
    try:
        return method_class(name).losses
    except UsageError:
        return method_class("udml-ss").losses


def _is_record(r) -> bool:
    def whole(v) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    return isinstance(r, dict) and isinstance(r.get("event"), str) and whole(r.get("epoch")) \
        and whole(r.get("step"))  # fmt: skip


def holds_run(out: Path) -> bool:
    return out.is_dir() and any(out.glob("*.pt"))


def resume_checkpoint(out: Path, ask) -> tuple[Path, dict]:
    """``out/last.pt`` when it loads, else the newest intact full ``epoch_NNNN.pt`` once
    ``ask(question, refuse)`` agrees (it raises to refuse); with its contents, read once."""
    from udml_cli.models.checkpoint import load_checkpoint

    last = out / "last.pt"
    if not last.is_file() and not any(out.glob("epoch_*.pt")):
        raise UsageError(f"nothing to resume: {last} does not exist")
    try:
        return last, load_checkpoint(last, training=True)
    except CheckpointError as damaged:
        problem = str(damaged)
    for candidate in sorted(out.glob("epoch_*.pt"), reverse=True):
        try:
            payload = load_checkpoint(candidate, training=True)
        except CheckpointError:
            continue
        ask(
            f"{problem}. Resume from {candidate.name}, the newest intact checkpoint?",
            f"{problem}; the newest intact checkpoint is {candidate}: pass --yes to resume from it",
        )
        note(f"resuming from {candidate} ({last.name} is damaged)")
        return candidate, payload
    raise CheckpointError(
        f"{problem}; no intact full epoch_NNNN.pt to fall back on either (epoch files hold the "
        "weights only unless train.full_epoch_checkpoints = true)"
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


def resume_changes(saved: dict, cfg, path: Path) -> dict:
    """``{key: (old, new)}`` for the re-applied keys that changed; refuse other changes."""
    from udml_cli.config import Config

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


def forget_steps_after(log: Path, step: int) -> None:
    """A resume from an older checkpoint (kill -9, a damaged last.pt) redoes steps that
    metrics.jsonl already holds: drop those records so every step appears once."""
    import json

    from udml_cli.fileio import atomic_write_text

    if not log.is_file():
        return
    kept = [r for r in read_metrics(log.parent) if r["step"] <= step]
    atomic_write_text(log, "".join(json.dumps(r) + "\n" for r in kept))


def run_checkpoints(run: Path) -> list[Path]:
    """The checkpoints of a run folder in epoch order; last.pt too when it is not a copy of the
    final epoch's (an interrupted run's mid-epoch state)."""
    from udml_cli.models.checkpoint import load_checkpoint

    epochs = sorted(run.glob("epoch_*.pt"))
    last = run / "last.pt"
    if last.is_file():
        payload = load_checkpoint(last)
        final = int(epochs[-1].stem.split("_")[1]) if epochs else -1
        # last.pt holds the final epoch's weights too (with the state to resume from)
        if (payload.get("epoch"), payload.get("iteration")) != (final, 0):
            epochs.append(last)
    if not epochs:
        raise UsageError(f"{run}: no checkpoints (epoch_NNNN.pt or last.pt) in this folder")
    return epochs
