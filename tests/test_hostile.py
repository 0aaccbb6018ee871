"""Hostile input, as a user would give it: every case runs ``udml`` as its own process.

Each failing case must give exactly one ``error:`` line, a non-zero exit, no traceback, nothing on
stdout, nothing half-written, and leave earlier data as it was. Faults the shell cannot make (a full
disk, a download that prints) are injected into that one process before udml starts.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY as BASE
from conftest import inproc, make_layout

TINY = [*BASE, "--set", "train.save_step=1"]


def udml(*args, patch: str = "", cwd=None, timeout=300, fresh: bool = False):
    """``udml ARGS``: in this process (``conftest.inproc``: no torch import per call), or in a
    fresh one with ``patch`` (Python run first: a fault to inject), ``cwd`` or ``fresh``."""
    if not (patch or cwd or fresh):
        return inproc(*args)
    code = f"{patch}\nimport sys\nfrom udml_cli.cli.app import main\nmain(sys.argv[1:])\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "80"},
        timeout=timeout,
    )


def refused(proc, needle: str, code: int | None = None) -> str:
    err = proc.stderr.decode(errors="replace")
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0, err
    if code is not None:
        assert proc.returncode == code, err
    assert len(errors) == 1, err
    assert needle in errors[0], err
    assert "Traceback" not in err, err
    assert proc.stdout == b"", proc.stdout[:200]
    return errors[0]


def ok(proc) -> str:
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "error:" not in err, err
    return err


def no_partials(folder: Path) -> None:
    left = [p for p in folder.rglob("*") if p.name.endswith((".tmp", ".partial"))]
    assert not left, left


def snapshot(folder: Path) -> dict:
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def bomb_png(path: Path, side: int = 30000) -> None:
    """A PNG whose header claims 900 M pixels (Pillow refuses above 179 M)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)


@pytest.fixture
def bad_layout(tmp_path) -> Path:
    """The synthetic layout with a corrupt PNG and a text file named .jpg in train, and a
    decompression bomb in test."""
    root = make_layout(tmp_path / "bad")
    (root / "train/c00/0.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a png")
    (root / "train/c01/notes.jpg").write_text("shopping list, not a photo\n")
    with open(root / "train.txt", "a") as fh:
        fh.write("train/c01/notes.jpg 1\n")
    bomb_png(root / "test/c06/1.png")
    return root


@pytest.fixture
def run(tmp_path, layout) -> Path:
    """A finished tiny run (trained in this process: the cases below are the processes)."""
    out = tmp_path / "run"
    ok(inproc("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "2"))
    return out


# ---- unreadable images: skipped and listed, or one line under --strict ----------------------
# every method: UDML-SS reads the images for its first clustering; the invariance method alone
# with the identity head reads none before its first batch (the photos template's case)
NO_FIRST_READ = ["--set", "train.method=invariance", "--set", "model.head_init=identity",
                 "--set", "model.dim=auto"]  # fmt: skip


@pytest.mark.parametrize("method", [[], NO_FIRST_READ], ids=["udml-ss", "invariance"])
def test_train_skips_unreadable_images_and_lists_them(bad_layout, tmp_path, method):
    out = tmp_path / "run"
    err = ok(udml("train", "--dataset", bad_layout, "--out", out, *TINY, *method, "--epochs", "1"))
    assert "skipped 2 unreadable images" in err
    listed = (out / "skipped.txt").read_text().split()
    assert listed == ["train/c00/0.png", "train/c01/notes.jpg"]
    saved = torch.load(out / "last.pt", weights_only=True)
    assert len(saved["pseudo_labels"]) == 48 + 1 - 2 and saved["skipped"] == listed
    ok(udml("train", "--out", out, "--resume", "--epochs", "2"))  # resume knows them


def test_train_strict_stops_on_an_unreadable_image(bad_layout, tmp_path):
    out = tmp_path / "run"
    proc = udml("train", "--dataset", bad_layout, "--out", out, *TINY, "--epochs", "1", "--strict")
    refused(proc, "2 unreadable images")
    assert not (out / "last.pt").exists()


def test_eval_skips_a_decompression_bomb(bad_layout, run):
    err = ok(udml("eval", run / "last.pt", "--dataset", bad_layout))
    assert "skipped 1 unreadable images" in err and "test/c06/1.png" in err
    refused(udml("eval", run / "last.pt", "--dataset", bad_layout, "--strict"), "unreadable")


# ---- config numbers -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting, needle",
    [
        ("engine.workers=-3", "engine.workers"),
        ("train.lr=inf", "train.lr: Input should be a finite number"),
        ("loss.alpha=nan", "loss.alpha"),
        ("cluster.seed=-1", "cluster.seed"),
        ("eval.recall_at=[0, 1]", "eval.recall_at.0"),
        ("data.image_size=100000", "data.image_size"),
    ],
)
def test_bad_numbers_are_refused_before_work(layout, tmp_path, setting, needle):
    out = tmp_path / "run"
    proc = udml("train", "--dataset", layout, "--out", out, *TINY, "--set", setting)
    refused(proc, needle, code=2)
    assert not out.exists()


def test_nan_message_says_no_checkpoint_exists_yet(layout, tmp_path):
    out = tmp_path / "run"
    patch = (
        "import torch, udml_cli.methods.udml_ss as t\n"
        "t.weight_loss = lambda *a, **k: torch.tensor(float('nan'))\n"
    )
    proc = udml("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1", patch=patch)
    line = refused(proc, "loss became nan")
    assert "no checkpoint had been written yet" in line


# ---- checkpoints ----------------------------------------------------------------------------
def test_checkpoint_with_header_but_no_config(layout, tmp_path):
    path = tmp_path / "headless.pt"
    torch.save({"format": "udml-checkpoint", "format_version": 1, "model": {}}, path)
    refused(udml("eval", path, "--dataset", layout), "no valid 'config'")


def test_hostile_weights_file_is_one_line_without_unsafe_advice(layout, tmp_path):
    evil = tmp_path / "weights.pth"
    evil.write_bytes(b"\x80\x04cos\nsystem\n(S'touch pwned'\ntR.")
    proc = udml(
        "eval", "--backbone", "resnet18", "--weights", evil, "--dataset", layout, cwd=tmp_path
    )
    line = refused(proc, "cannot load weights for resnet18")
    assert "weights_only" not in proc.stderr.decode() and not (tmp_path / "pwned").exists()
    assert str(evil) in line  # names the file
    text = tmp_path / "notes.pth"
    text.write_text("not weights")
    refused(udml("eval", "--backbone", "resnet18", "--weights", text, "--dataset", layout), "notes")


# ---- output paths ---------------------------------------------------------------------------
def test_outputs_that_cannot_be_written_fail_before_work(layout, run, tmp_path):
    folder = tmp_path / "photos"
    make_layout(folder, range(1), range(0), per_class=3, layout="folder")
    images = folder / "train" / "c00"
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    ckpt = ["--checkpoint", run / "last.pt"]
    refused(udml("embed", images, *ckpt, "-o", tmp_path), "is a folder")
    refused(udml("embed", images, *ckpt, "-o", a_file / "v.npy"), "is a file, not a folder")
    refused(udml("embed", images, *ckpt, "-o", "/dev/null"), "not a regular file")
    refused(udml("embed", images, *ckpt, "-o", tmp_path / "v.npy", "--paths", tmp_path), "--paths")
    refused(
        udml("cluster", *ckpt, "--k", "3", "--split", "test", "--write-labels", tmp_path),
        "is a folder",
    )
    refused(udml("train", "--dataset", layout, "--out", a_file, *TINY), "not a folder")
    assert a_file.read_text() == "x"
    assert not (tmp_path / "v.npy").exists()


ENOSPC = (
    "import errno, os\n"
    "def _full(fd):\n"
    "    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))\n"
    "os.fsync = _full\n"
)


def test_full_disk_is_one_line_and_leaves_nothing(layout, run, tmp_path):
    images = layout / "test" / "c06"
    target = tmp_path / "out" / "v.npy"
    proc = udml("embed", images, "--checkpoint", run / "last.pt", "-o", target, patch=ENOSPC)
    refused(proc, f"cannot write {target}: No space left on device")
    assert not target.exists()
    no_partials(tmp_path / "out")
    out = tmp_path / "full"
    proc = udml("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1", patch=ENOSPC)
    refused(proc, "No space left on device")
    no_partials(out)


# ---- run folders ----------------------------------------------------------------------------
def test_failed_resume_changes_nothing(run, tmp_path):
    other = make_layout(tmp_path / "other", per_class=5)
    before = snapshot(run)
    proc = udml("train", "--out", run, "--resume", "--epochs", "3", "--dataset", other)
    refused(proc, "data.dataset")
    proc = udml("train", "--out", run, "--resume", "--epochs", "3",
                "--set", "cluster.num_clusters=4")  # fmt: skip
    refused(proc, "cluster.num_clusters (6 → 4)")
    assert snapshot(run) == before  # config.toml too
    ok(udml("train", "--out", run, "--resume", "--epochs", "3"))


def test_resume_after_the_data_changed(run, layout):
    (layout / "train.txt").write_text(
        "".join((layout / "train.txt").read_text().splitlines(True)[:40])
    )
    before = snapshot(run)
    refused(udml("train", "--out", run, "--resume", "--epochs", "3"), "the dataset changed")
    assert snapshot(run) == before


def test_second_train_on_the_same_folder_is_refused(layout, tmp_path):
    from udml_cli.runs import RunLock

    out = tmp_path / "run"
    with RunLock(out):  # another process holding the run (this test's own)
        proc = udml("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1")
        refused(proc, f"in use by another udml train (pid {os.getpid()})")
    ok(udml("train", "--dataset", layout, "--out", out, *TINY, "--epochs", "1"))


def test_replacing_a_run_starts_empty(layout, run):
    assert (run / "epoch_0002.pt").exists()
    ok(udml("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1", "--yes"))
    assert sorted(p.name for p in run.glob("*.pt")) == ["epoch_0000.pt", "epoch_0001.pt", "last.pt"]
    assert not (run.parent / f".{run.name}.replaced").exists()


def test_replacing_a_run_that_then_fails_keeps_the_old_one(layout, run):
    before = snapshot(run)
    patch = "import udml_cli.methods.udml_ss as t\nt.kmeans = lambda *a, **k: 1 / 0\n"
    proc = udml("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1", "--yes",
                patch=patch)  # fmt: skip
    refused(proc, "internal error (ZeroDivisionError")
    assert snapshot(run) == before


def test_damaged_last_checkpoint_offers_the_newest_intact_one(run, layout, tmp_path):
    good = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(good[: len(good) // 3])
    # slim epoch files (the default) hold no state to resume from: said, not attempted
    refused(udml("train", "--out", run, "--resume", "--yes"), "train.full_epoch_checkpoints")
    run = tmp_path / "full"
    ok(udml("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "2",
            "--set", "train.full_epoch_checkpoints=true"))  # fmt: skip
    good = (run / "last.pt").read_bytes()
    (run / "last.pt").write_bytes(good[: len(good) // 3])
    refused(udml("train", "--out", run, "--resume", "--epochs", "3"), "epoch_0002.pt")
    err = ok(udml("train", "--out", run, "--resume", "--epochs", "3", "--yes"))
    assert "resuming from" in err and "epoch_0002.pt" in err
    assert torch.load(run / "last.pt", weights_only=True)["epoch"] == 3


def test_prepare_replaces_only_what_udml_wrote(tmp_path):
    source = make_layout(tmp_path / "src", range(4), range(0), per_class=2, layout="folder")
    mine = tmp_path / "mine"
    (mine / "thesis").mkdir(parents=True)
    (mine / "thesis" / "chapter1.tex").write_text("years of work")
    proc = udml(
        "dataset", "prepare", "folder", "--source", source / "train", "--out", mine, "--yes"
    )
    refused(proc, "folder udml did not prepare")
    assert (mine / "thesis" / "chapter1.tex").read_text() == "years of work"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    proc = udml(
        "dataset", "prepare", "folder", "--source", source / "train", "--out", a_file, "--yes"
    )
    refused(proc, "is a file")
    assert a_file.read_text() == "keep me" and not (tmp_path / ".notes.txt.old").exists()
    prepared = tmp_path / "prepared"
    args = ["dataset", "prepare", "folder", "--source", source / "train", "--out", prepared]
    ok(udml(*args, "--name", "p1"))
    ok(udml(*args, "--name", "p1", "--yes"))  # udml's own folder may be replaced
    assert (prepared / ".udml-dataset").is_file()


# ---- output discipline ----------------------------------------------------------------------
def test_library_prints_never_reach_stdout(layout, tmp_path):
    """A 'download' that prints (as torch.hub does) while embedding to stdout."""
    patch = (
        "import torchvision, torch\n"
        "from torchvision.models._api import WeightsEnum\n"
        "def fake(self, *a, **k):\n"
        "    print('Downloading: https://example.invalid/resnet18.pth')\n"
        "    return torchvision.models.resnet18().state_dict()\n"
        "WeightsEnum.get_state_dict = fake\n"
    )
    images = layout / "test" / "c06"
    proc = udml("embed", images, "--backbone", "resnet18", "--weights", "imagenet", patch=patch)
    ok(proc)
    x = np.load(__import__("io").BytesIO(proc.stdout))
    assert x.shape == (8, 512)
    assert b"Downloading" not in proc.stdout


def test_user_text_is_never_read_as_markup(tmp_path):
    name = tmp_path / "my[bold]photos[/bold]"
    proc = udml("dataset", "check", name)
    line = refused(proc, "[bold]photos[/bold]")
    assert line.count("[bold]") == 1
    nl = tmp_path / "two\nlines"
    refused(udml("dataset", "check", nl), "two\\nlines")


def test_interrupted_embed_leaves_no_partial_file(layout, run, tmp_path):
    target = tmp_path / "out" / "v.npy"
    target.parent.mkdir()
    patch = (
        "import udml_cli.npyfile as f\n"
        "real = f.RowFile.allocate\n"
        "def allocate(self, n, dim):\n"
        "    rows = real(self, n, dim)\n"
        "    raise KeyboardInterrupt\n"
        "f.RowFile.allocate = allocate\n"
    )
    proc = udml("embed", layout / "test" / "c06", "--checkpoint", run / "last.pt", "-o", target,
                patch=patch)  # fmt: skip
    assert proc.returncode == 130 and b"Traceback" not in proc.stderr
    said = [ln for ln in proc.stderr.decode().splitlines() if "interrupted" in ln]
    assert said == ["interrupted: stopped; nothing half-written was kept"], proc.stderr
    assert list(target.parent.iterdir()) == []


# ---- messages that mislead: each names what is wrong ----------------------------------------
def _tiny_toml(path: Path) -> Path:
    """TINY as a config file (the flags that are not --set become keys)."""
    path.write_text(
        '[model]\nbackbone = "tiny-test"\nweights = "none"\n[data]\nimage_size = 16\nresize = 18\n'
        "[cluster]\nnum_clusters = 6\n[train]\nbatch_size = 8\ninstances = 2\nlog_every = 1\n"
        "save_step = 1\nlr = 1e-3\nhead_lr = 1e-3\nup_step = 2\n[loss]\nrot_batch = 4\n"
        "[engine]\nworkers = 0\n"
    )
    return path


@pytest.mark.parametrize(
    "change, key",
    [("model.dim=32", "model.dim"), ("cluster.num_clusters=5", "cluster.num_clusters")],
)
def test_resume_with_a_config_names_the_changed_keys(layout, tmp_path, change, key):
    cfg = _tiny_toml(tmp_path / "tiny.toml")
    out = tmp_path / "run"
    ok(inproc("train", "--config", cfg, "--dataset", layout, "--out", out, "--epochs", "1"))
    proc = inproc("train", "--config", cfg, "--out", out, "--resume", "--set", change)
    line = refused(proc, "cannot resume with different settings", 2)
    assert key in line and "dataset" not in line.split("settings")[1]
    ok(inproc("train", "--config", cfg, "--out", out, "--resume", "--epochs", "2"))  # same: resumes


def test_report_skips_a_cut_last_line_and_names_a_damaged_one(run, tmp_path):
    log = run / "metrics.jsonl"
    whole = log.read_text()
    log.write_text(whole + '{"event": "step", "epoch": 2, "st')  # kill -9 mid-append
    err = ok(inproc("report", run, "-o", tmp_path / "r.html"))
    assert "metrics.jsonl" in err and "cut short" in err
    lines = whole.splitlines()
    lines.insert(3, '{"epoch": 1, "step": 3}')  # a record without event
    log.write_text("\n".join(lines) + "\n")
    refused(inproc("report", run, "-o", tmp_path / "r.html"), "metrics.jsonl:4: not a udml record")
    lines[3] = "[1, 2"
    log.write_text("\n".join(lines) + "\n")
    refused(inproc("report", run, "-o", tmp_path / "r.html"), "metrics.jsonl:4: not a JSON record")


def test_a_label_too_large_for_an_integer(layout, run):
    test_txt = layout / "test.txt"
    lines = test_txt.read_text().splitlines()
    lines[2] = lines[2].split()[0] + " 99999999999999999999999"
    test_txt.write_text("\n".join(lines) + "\n")
    proc = inproc("dataset", "check", layout)
    assert proc.returncode != 0
    assert b"test.txt:3" in proc.stdout + proc.stderr and b"64-bit" in proc.stdout + proc.stderr
    refused(inproc("eval", run / "last.pt", "--dataset", layout), "test.txt:3")


def test_udml_home_that_is_a_file_is_named(layout, tmp_path):
    home = tmp_path / "afile"
    home.write_text("not a folder")
    for cmd in (["dataset", "add", "x", layout], ["dataset", "list"]):
        proc = subprocess.run(
            [sys.executable, "-m", "udml_cli", *map(str, cmd)], capture_output=True,
            stdin=subprocess.DEVNULL, env={**os.environ, "UDML_HOME": str(home)}, timeout=120,
        )  # fmt: skip
        refused(proc, f"UDML_HOME={home}: {home} is a file, not a folder")


@pytest.mark.parametrize(
    "setting", ["train.epochs=true", "data.flip=1", "train.batch_size=8.0", 'train.epochs="3"']
)
def test_values_of_the_wrong_type_are_refused_not_coerced(layout, tmp_path, setting):
    refused(inproc("config", "show", "--set", setting), setting.split("=")[0], 2)


def test_a_split_with_nothing_to_score_is_refused(layout, run):
    lines = [f"test/c{6 + i % 4:02d}/{i // 4}.png {i}" for i in range(8)]  # every class one image
    (layout / "test.txt").write_text("\n".join(lines) + "\n")
    refused(inproc("eval", run / "last.pt", "--dataset", layout), "nothing to score")
    (layout / "test.txt").write_text("\n".join(f"{ln.split()[0]} 7" for ln in lines) + "\n")
    refused(inproc("eval", run / "last.pt", "--dataset", layout), "all of one class")


@pytest.mark.parametrize("kind", ["/dev/zero", "fifo", "big", "folder"])
def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path, kind):
    path = Path(kind) if kind == "/dev/zero" else tmp_path / "cfg.toml"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "big":
        path.write_text("# padding\n" * 200_000)
    elif kind == "folder":
        path.mkdir()
    proc = inproc("config", "show", "--config", path)
    refused(proc, "config file", 2)
