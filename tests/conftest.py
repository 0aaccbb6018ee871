"""Shared fixtures: an isolated UDML_HOME, tiny synthetic image layouts, an in-process CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

# the tests' plug-in (tests/udml_testkit.py: the tiny-test backbone, fault-injecting methods),
# loaded as a user's plug-in is, here and in every udml process a test starts
os.environ["UDML_PLUGINS"] = "udml_testkit"
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(Path(__file__).resolve().parent), os.environ.get("PYTHONPATH")) if p
)

# the tiny backbone on the synthetic layout: a training run in seconds
TINY = [
    "--backbone", "tiny-test", "--weights", "none", "--image-size", "16",
    "--set", "cluster.num_clusters=6", "--set", "train.batch_size=8", "--set", "train.instances=2",
    "--set", "loss.rot_batch=4", "--set", "train.log_every=1", "--set", "engine.workers=0",
    "--set", "train.save_step=2", "--set", "train.lr=1e-3", "--set", "train.head_lr=1e-3",
    "--set", "train.up_step=2",
    # one thread, not "auto": auto takes fewer threads while another process is busy (the
    # suite runs in two workers), and a run and its resumed twin must do the same sums
    "--set", "engine.threads=1",
]  # fmt: skip


@pytest.fixture(autouse=True)
def udml_home(tmp_path, monkeypatch):
    home = tmp_path / "udml_home"
    monkeypatch.setenv("UDML_HOME", str(home))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))  # never a cached download
    monkeypatch.delenv("UDML_DATA_ROOT", raising=False)
    return home


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``udml ARGS`` in-process; returns exit code, stdout and stderr."""
    from udml_cli.cli.app import main

    def run(*args: str) -> Result:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return run


def run_udml(*args: str, stdin=None, cwd=None, env=None) -> subprocess.CompletedProcess:
    """Run udml in a subprocess (binary stdout, real exit codes)."""
    return subprocess.run(
        [sys.executable, "-m", "udml_cli", *map(str, args)],
        capture_output=True,
        stdin=stdin if stdin is not None else subprocess.DEVNULL,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def inproc(*args) -> subprocess.CompletedProcess:
    """``udml ARGS`` in this process (no torch import per call: 10x faster than ``udml``), with
    the exit code, stdout and stderr a separate process would give."""
    import contextlib
    import io

    from udml_cli.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    return subprocess.CompletedProcess(args, code, out.getvalue().encode(), err.getvalue().encode())


def write_image(path: Path, rgb, size: int = 24, noise: float = 25.0, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    a = np.clip(np.asarray(rgb, float) + rng.normal(0, noise, (size, size, 3)), 0, 255)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a.astype(np.uint8)).save(path)


def make_layout(
    root: Path,
    train_classes=range(0, 6),
    test_classes=range(6, 10),
    per_class: int = 8,
    layout: str = "txt",
    size: int = 24,
) -> Path:
    """Colour-coded synthetic classes: every class a base colour plus noise."""
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 255, (max(list(train_classes) + list(test_classes)) + 1, 3))
    for split, classes in (("train", train_classes), ("test", test_classes)):
        lines = []
        for c in classes:
            for i in range(per_class):
                rel = f"{split}/c{c:02d}/{i}.png"
                write_image(root / rel, colours[c], size, seed=c * 1000 + i)
                lines.append(f"{rel} {c}")
        if layout == "txt":
            (root / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def layout(tmp_path) -> Path:
    return make_layout(tmp_path / "syn")


def real_data_available() -> bool:
    return Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """udml built as a wheel from a copy of this checkout (what `pip install .` installs)."""
    import shutil

    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy: building writes build/ into the source tree
    top = {".git", "build", "runs", "data", "udml.egg-info"}

    def skip(folder, names):
        return [n for n in names if (folder == str(REPO) and n in top) or n == "__pycache__"]

    shutil.copytree(REPO, src, ignore=skip)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return next(tmp.glob("udml-*.whl"))


def interrupted_and_resumed(cli, args: list, method: str, fault: str, straight, cut,
                            monkeypatch, at=None) -> None:  # fmt: skip
    """``udml train ARGS`` straight into ``straight``, and into ``cut`` with the fault-injecting
    ``method`` (tests/udml_testkit.py) interrupted where ``fault`` says (``at``: the (epoch,
    iteration) its last.pt must then hold), then resumed: the weights must be equal, bit for
    bit."""
    import torch

    r = cli("train", "--out", straight, *args)
    assert r.code == 0, r.err
    monkeypatch.setenv("UDML_TEST_FAULT", fault)
    r = cli("train", "--out", cut, *args, "--set", f"train.method={method}")
    assert r.code == 130 and "--resume" in r.err, r.err
    if at is not None:
        saved = torch.load(cut / "last.pt", weights_only=True)
        assert (saved["epoch"], saved["iteration"]) == at
    monkeypatch.delenv("UDML_TEST_FAULT")
    r = cli("train", "--out", cut, "--resume")
    assert r.code == 0, r.err
    a = torch.load(straight / "last.pt", weights_only=True)["model"]
    b = torch.load(cut / "last.pt", weights_only=True)["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
