"""engine.threads = "auto": all cores on an idle machine, the workers' cores left free when
another process is busy (benchmarks/threads.py measured both)."""

import subprocess
import sys
import time

import pytest

from udml_cli import engine
from udml_cli.config import EngineConfig


def _cpu_seconds(pid: int) -> float:
    """A process's user + system CPU time from /proc/PID/stat (the independent reference)."""
    import os

    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_busy_process_is_seen():
    """What others_busy reports covers what a busy process really used in the same window
    (measured from its own /proc entry), however busy the rest of the machine is."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        before, start = _cpu_seconds(hog.pid), time.monotonic()
        seen = engine.others_busy(seconds=1.0)
        used = (_cpu_seconds(hog.pid) - before) / (time.monotonic() - start)
    finally:
        hog.kill()
        hog.wait()
    if used < 0.2:
        pytest.skip(f"the busy process got {used:.2f} of a core: the machine is saturated")
    assert seen >= used - 0.15, (seen, used)


@pytest.mark.parametrize(
    "busy,expected", [(0.0, (2, 2)), (0.3, (2, 2)), (1.0, (1, 1)), (2.0, (1, 1))]
)
def test_auto_threads_follow_the_load(monkeypatch, busy, expected):
    monkeypatch.setattr(engine.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(engine, "others_busy", lambda: busy)
    eng = engine.resolve_engine(
        EngineConfig(device="cpu")
    )  # 2 cores: 1 training worker, 0 extracting
    assert (eng.workers, eng.extract_workers) == (1, 0)
    assert (eng.threads, eng.extract_threads) == expected
    fixed = engine.resolve_engine(EngineConfig(device="cpu", threads=3))
    assert (fixed.threads, fixed.extract_threads) == (3, 3)


def test_threads_are_set_only_on_a_change(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    eng = engine.resolve_engine(EngineConfig(device="cpu", threads=1))
    eng.use_threads(torch.get_num_threads())  # the current value: no call
    eng.use_threads(0)
    assert calls == []
    eng.use_threads(torch.get_num_threads() + 1)
    assert calls == [torch.get_num_threads() + 1]


def test_running_tells_a_live_process_from_a_dead_or_exiting_one():
    import os
    import subprocess
    import sys
    from pathlib import Path

    from udml_cli.engine import PF_EXITING, _running

    assert _running(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        pass  # exited, not reaped: a zombie
    assert not _running(child.pid)
    child.wait()
    assert not _running(child.pid)  # gone altogether
    assert PF_EXITING == 0x4  # include/linux/sched.h


def test_extract_on_host_copies_nothing_to_the_device(monkeypatch):
    """The decode-only scan (``on_host``) hands the batches to ``forward`` as decoded: no copy
    to the device (a GPU's memory traffic for nothing), and the same rows as a plain pass."""
    import torch

    data = [(torch.full((3, 2, 2), float(i)), i) for i in range(5)]
    eng = engine.resolve_engine(EngineConfig(device="cpu", threads=1, workers=0))
    plain = engine.extract(lambda x: x.flatten(1), data, eng, 2)
    copies = []
    monkeypatch.setattr(type(eng), "to_device", lambda self, b: copies.append(b) or b)
    rows, keys = engine.extract(lambda x: x.flatten(1), data, eng, 2, on_host=True)
    assert copies == [] and keys.tolist() == [0, 1, 2, 3, 4]
    assert (rows == plain[0]).all() and rows[:, 0].tolist() == [0, 1, 2, 3, 4]
    engine.extract(lambda x: x.flatten(1), data, eng, 2)
    assert len(copies) == 3  # the reference: a plain pass does copy, one batch at a time
