"""engine.threads = "auto": all cores on an idle machine, the workers' cores left free when
another process is busy (benchmarks/threads.py measured both)."""

import subprocess
import sys
import time

import pytest

from udml_cli import engine
from udml_cli.config import EngineConfig


def test_a_busy_process_is_seen():
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        assert engine.others_busy() >= 0.5
    finally:
        hog.kill()
        hog.wait()


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
