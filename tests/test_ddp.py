"""Multi-process training (torchrun / ``udml train --nproc``, DDP over gloo on the CPU): the
same loss curve and weights as one process with the same global batch, resume across process
counts, a dying process stops the run with last.pt whole."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, inproc, run_udml

pytestmark = pytest.mark.slow

# 3 batches per epoch, 4 epochs (a re-clustering at epoch 2), every step logged
RUN = [*TINY, "--set", "train.iters_per_epoch=3", "--set", "train.final_eval=false"]


def _losses(out) -> list[tuple[int, float]]:
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in records if r["event"] == "step"]


def _weights(out) -> dict:
    return torch.load(out / "last.pt", weights_only=True)


def _train(layout, out, *extra):
    r = run_udml("train", "--dataset", layout, "--out", out, *RUN, *extra)
    assert r.returncode == 0, r.stderr.decode()
    return r


def test_two_processes_match_one_and_resume_across_counts_bit_exactly(layout, tmp_path):
    one, two, split = tmp_path / "one", tmp_path / "two", tmp_path / "split"
    _train(layout, one, "--epochs", "4")
    r = _train(layout, two, "--epochs", "4", "--nproc", "2")
    err = r.stderr.decode()
    assert err.count("done: ") == 1 and "warning" not in err.lower()  # rank 0 speaks alone
    a, b = _losses(one), _losses(two)
    # every step once (rank 0 writes), the same curve: measured max difference 0 to 1e-7
    assert [s for s, _ in b] == list(range(1, 13)) == [s for s, _ in a]
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-6)
    wa, wb = _weights(one), _weights(two)
    torch.testing.assert_close(wa["pseudo_labels"], wb["pseudo_labels"], rtol=0, atol=0)
    for key in wa["model"]:
        torch.testing.assert_close(wa["model"][key], wb["model"][key], rtol=1e-4, atol=1e-5)
    # stopped after 2 epochs in 2 processes, resumed in 1: the same run again
    _train(layout, split, "--epochs", "2", "--nproc", "2")
    r = run_udml("train", "--out", split, "--resume", "--epochs", "4")
    assert r.returncode == 0, r.stderr.decode()
    assert [s for s, _ in _losses(split)] == list(range(1, 13))
    for (_, x), (_, y) in zip(b, _losses(split), strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-6)
    ws = _weights(split)
    for key in wb["model"]:
        torch.testing.assert_close(ws["model"][key], wb["model"][key], rtol=1e-4, atol=1e-5)
    # stopped after 2 epochs in 2 processes, resumed in 2: bit-identical to the straight run
    again = tmp_path / "again"
    _train(layout, again, "--epochs", "2", "--nproc", "2")
    r = run_udml("train", "--out", again, "--resume", "--epochs", "4", "--nproc", "2")
    assert r.returncode == 0, r.stderr.decode()
    wg = _weights(again)
    assert wg["step"] == wb["step"] == 12
    for key in wb["model"]:
        torch.testing.assert_close(wg["model"][key], wb["model"][key], rtol=0, atol=0)


def test_a_batch_that_does_not_split_is_one_error(layout, tmp_path):
    r = run_udml("train", "--dataset", layout, "--out", tmp_path / "r", *RUN, "--nproc", "3")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "train.batch_size (8)" in lines[0] and "3 processes" in lines[0]
    assert "Traceback" not in err and not (tmp_path / "r" / "last.pt").exists()


def _ranks(parent: int) -> dict[int, int]:
    """rank → pid of the training processes started under ``parent``."""
    found = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        if b"TORCHELASTIC_RUN_ID=" not in b"".join(env):
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        rank = next((int(e[5:]) for e in env if e.startswith(b"RANK=")), None)
        if ppid == parent and rank is not None:
            found[rank] = int(pid)
    return found


@pytest.mark.parametrize("victim", [1, 0])
def test_a_process_killed_mid_epoch_leaves_last_pt_that_resumes(layout, tmp_path, victim):
    """kill -9 of one process mid-epoch, long before any periodic checkpoint: the process left
    (rank 0, or the lowest survivor when rank 0 is the one killed) keeps the last whole step in
    last.pt; one error line names the killed process and the file; --resume continues."""
    out = tmp_path / "run"
    long = [*TINY, "--set", "train.iters_per_epoch=60", "--set", "train.final_eval=false",
            "--set", "train.save_step=1000"]  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "udml_cli", "train", "--dataset", str(layout), "--out", str(out),
         *long, "--epochs", "1000", "--nproc", "2"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    log = out / "metrics.jsonl"
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            if log.is_file() and log.read_text().count('"event": "step"') >= 5:
                break
            time.sleep(0.2)
        assert not (out / "last.pt").exists()
        ranks = _ranks(proc.pid)
        assert set(ranks) == {0, 1}, ranks
        os.kill(ranks[victim], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    err = err.decode()
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert proc.returncode != 0 and "Traceback" not in err, err
    assert len(errors) == 1, err
    assert f"process {victim} of 2 was killed (signal 9)" in errors[0], err
    assert "last.pt holds the last whole step" in errors[0], err
    state = _weights(out)
    assert state["step"] >= 5
    r = inproc("train", "--out", out, "--resume", "--epochs", str(state["epoch"] + 1))
    assert r.returncode == 0, r.stderr.decode()
    assert _weights(out)["epoch"] == state["epoch"] + 1


def test_without_nproc_and_shards():
    from udml_cli.cli.launch import without_nproc
    from udml_cli.engine import Engine

    assert without_nproc(["train", "--nproc", "2", "--epochs", "3", "--nproc=4"]) == [
        "train", "--epochs", "3",
    ]  # fmt: skip
    for n in (0, 1, 7, 8, 100):
        for world in (1, 2, 3, 5):
            parts = [
                Engine(torch.device("cpu"), None, 0, False, rank, world).shard(n)
                for rank in range(world)
            ]
            assert [i for p in parts for i in p] == list(range(n))  # contiguous, whole, once
            assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_a_launched_process_ends_with_its_own_exit_code_and_output():
    """Under the launcher (TORCHELASTIC_RUN_ID set) a process ends by os._exit after its work:
    gloo's threads torn down at exit aborted a finished rank now and then. What it printed and
    its exit status must come out as a plain run's do."""
    env = {**os.environ, "TORCHELASTIC_RUN_ID": "test"}
    cases = [(["--version"], 0, "stdout"), (["train", "--no-such-flag"], 2, "stderr"),
             (["eval", "--backbone", "nope", "--dataset", "nope"], 2, "stderr")]  # fmt: skip
    for args, code, where in cases:
        plain = subprocess.run([sys.executable, "-m", "udml_cli", *args], capture_output=True,
                               text=True, timeout=120)  # fmt: skip
        launched = subprocess.run([sys.executable, "-m", "udml_cli", *args], capture_output=True,
                                  text=True, timeout=120, env=env)  # fmt: skip
        assert plain.returncode == launched.returncode == code, (args, launched.stderr)
        assert getattr(launched, where).strip() == getattr(plain, where).strip() != ""


def test_stml_in_two_processes_follows_one(layout, tmp_path):
    """STML gathers f, g and the teacher's g view by view: the single-process row order. With
    Adam the curves agree to 1e-6 (AdamP's projection test amplifies rounding more)."""
    stml = ["--set", "train.method=stml", "--set", "stml.neighbors=2", "--set", "stml.aux_dim=32",
            "--set", "train.up_step=1", "--set", "model.head_init=orthogonal"]  # fmt: skip
    one, two = _one_and_two(layout, tmp_path, [*stml, "--epochs", "3"], steps=9)
    torch.testing.assert_close(_weights(one)["neighbours"], _weights(two)["neighbours"])


def _one_and_two(layout, tmp_path, args: list, steps: int):
    """The same run in one process and in two: the same loss at every step (to rounding)."""
    one, two = tmp_path / "one", tmp_path / "two"
    _train(layout, one, *args)
    _train(layout, two, *args, "--nproc", "2")
    a, b = _losses(one), _losses(two)
    assert [s for s, _ in a] == [s for s, _ in b] == list(range(1, steps + 1))
    for (_, x), (_, y) in zip(a, b, strict=True):
        assert y == pytest.approx(x, rel=1e-5, abs=1e-6)
    return one, two


def test_invariance_in_two_processes_follows_one(layout, tmp_path):
    """The invariance method gathers its views view by view, with pseudo-classes and the
    entropy term on: two processes give the single-process curve and weights."""
    inv = ["--set", "train.method=invariance", "--set", "invariance.cluster_weight=0.5",
           "--set", "invariance.entropy_weight=0.1"]  # fmt: skip
    one, two = _one_and_two(layout, tmp_path, [*inv, "--epochs", "1"], steps=3)
    for key, value in _weights(one)["model"].items():
        torch.testing.assert_close(_weights(two)["model"][key], value, rtol=1e-4, atol=1e-5)


def test_the_launcher_reports_a_failure_once():
    from types import SimpleNamespace as Failure

    from udml_cli.cli.launch import _report
    from udml_cli.errors import TrainingError

    # every process refused alike; the launcher saw rank 1 fail first: rank 0's line, once,
    # with the exit code
    with pytest.raises(TrainingError, match=r"^bad$") as stop:
        _report({1: Failure(exitcode=2)}, {0: "bad", 1: "bad"}, 3)
    assert stop.value.exit_code == 2
    # a killed process is named, whatever else stopped, rank 0 too; with the kept last.pt
    with pytest.raises(TrainingError, match="process 1 of 2 was killed \\(signal 9\\)"):
        _report({0: Failure(exitcode=130), 1: Failure(exitcode=-9)}, {}, 2)
    with pytest.raises(TrainingError, match=r"process 0 of 2 was killed .*last\.pt holds"):
        _report({0: Failure(exitcode=-9), 1: Failure(exitcode=-15)}, {}, 2, Path("r/last.pt"))
    # a process's own error, when rank 0 had none
    with pytest.raises(TrainingError, match="process 2 of 4 stopped: disk full"):
        _report({2: Failure(exitcode=1)}, {2: "disk full"}, 4)


def test_index_and_embed_in_two_processes_equal_one(layout, tmp_path):
    """``udml index|embed --nproc 2``: each process embeds its contiguous share, rank 0 writes:
    the same files, in the same order, with the same vectors and hashes as one process."""
    import io

    from udml_cli.index import Index

    folder = layout / "train"
    model = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "16"]
    for name, extra in (("one", []), ("two", ["--nproc", "2"])):
        r = run_udml("index", folder, "--out", tmp_path / name, *model, *extra)
        assert r.returncode == 0, r.stderr
        assert r.stderr.decode().count("indexed 48 images") == 1, r.stderr  # rank 0 speaks
    one, two = Index.load(tmp_path / "one"), Index.load(tmp_path / "two")
    assert one.files == two.files
    np.testing.assert_allclose(two.vectors, one.vectors, atol=1e-5)
    assert np.array_equal(one.hashes, two.hashes)
    assert two.calibration["threshold"] == pytest.approx(one.calibration["threshold"], abs=1e-4)
    r = run_udml("embed", folder, "-r", *model, "--nproc", "2")  # rank 0 writes stdout
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(io.BytesIO(r.stdout)), one.vectors, atol=1e-5)


def test_an_interrupted_two_process_index_leaves_the_old_one_whole(layout, tmp_path):
    from test_hostile import no_partials, snapshot

    from udml_cli.index import Index

    model = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "16"]
    idx = tmp_path / "idx"
    assert run_udml("index", layout / "test", "--out", idx, *model).returncode == 0
    before = snapshot(idx)
    r = run_udml("index", layout / "train", "--out", idx, *model, "--yes", "--nproc", "2",
                 "--no-calibrate", env={"UDML_TEST_FAULT": "index-save:interrupt"})  # fmt: skip
    assert r.returncode != 0
    assert snapshot(idx) == before  # not one byte changed, no generation left behind
    no_partials(idx)
    assert len(Index.load(idx).files) == 32
