"""What the benchmarks say about label-free checkpoint selection: quality.py's pick from a run's
evaluations and selection_summary.py's tally over results files, both against hand-worked
examples (ranks and shortfalls worked on paper)."""

import json
import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


def _run(tmp_path, evals):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"event": "step", "epoch": 0, "step": 1}] + [
        {"event": "eval", "epoch": e, "step": 10 * e, "recall_at": {"1": r1}, "nmi": nmi,
         "map_at_r": 0.3, "label_free": {"score": free}}
        for e, r1, nmi, free in evals
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n")
    return run


def test_quality_picks_by_the_label_free_score_and_ranks_by_hand(tmp_path):
    import quality

    run = _run(tmp_path, [(10, 0.50, 0.80, 60.0), (20, 0.52, 0.79, 61.0), (30, 0.51, 0.81, 59.0)])
    picked, trace = quality.selection(run)
    # highest score: epoch 20 (R@1 52, NMI 79); best R@1 52, best NMI 81
    assert picked["label-free pick R@1"] == pytest.approx(52.0)
    assert picked["best eval R@1"] == pytest.approx(52.0)
    assert picked["label-free pick NMI"] == pytest.approx(79.0)
    assert picked["best eval NMI"] == pytest.approx(81.0)
    # score ranks 2,3,1; R@1 ranks 1,3,2: d = 1,0,-1, rho = 1 - 6*2/(3*8) = 0.5
    assert picked["label-free rho"] == pytest.approx(0.5)
    # NMI ranks 2,1,3: d = 0,2,-2, rho = 1 - 6*8/24 = -1
    assert picked["label-free rho NMI"] == pytest.approx(-1.0)
    assert [t["epoch"] for t in trace] == [10, 20, 30]
    assert trace[2] == pytest.approx({"epoch": 30, "R@1": 51.0, "NMI": 81.0, "MAP@R": 30.0,
                                      "label_free": 59.0})  # fmt: skip


def test_quality_needs_two_evaluations_to_pick(tmp_path):
    import quality

    picked, trace = quality.selection(_run(tmp_path, [(10, 0.5, 0.8, 60.0)]))
    assert picked == {} and len(trace) == 1


def test_summary_tallies_each_seed(tmp_path, monkeypatch):
    import selection_summary

    monkeypatch.setattr(selection_summary, "RESULTS", tmp_path)
    (tmp_path / "explore").mkdir()

    def rec(case, metric, values):
        return {"case": case, "metric": metric, "values": values, "ours": sum(values) / len(values)}

    (tmp_path / "explore" / "a-emoji.json").write_text(json.dumps([
        rec("emoji start (n=1)", "R@1", [30.0]),
        rec("emoji INV (n=2)", "R@1", [33.0, 34.0]),
        rec("emoji INV (n=2)", "label-free pick R@1", [33.0, 32.5]),
        rec("emoji INV (n=2)", "best eval R@1", [33.5, 34.0]),
        rec("emoji INV (n=2)", "label-free rho", [0.5, -1.0]),
    ]))  # fmt: skip
    (tmp_path / "other.json").write_text(json.dumps({"not": "a quality file"}))
    rows = [r for p in sorted(tmp_path.rglob("*.json")) for r in selection_summary.runs_of(p)]
    assert [(r["file"], r["run"]) for r in rows] == [("explore/a-emoji.json", 0),
                                                     ("explore/a-emoji.json", 1)]  # fmt: skip
    assert [r["short R@1"] for r in rows] == pytest.approx([0.5, 1.5])
    s = selection_summary.summary(rows)
    assert s["runs"] == 2 and s["pick within 1 R@1 of the best"] == 1
    assert s["pick is the best"] == 0
    assert s["mean shortfall R@1"] == pytest.approx(1.0)
    assert s["worst shortfall R@1"] == pytest.approx(1.5)
    assert s["mean rho R@1"] == pytest.approx(-0.25) and s["mean rho NMI"] is None
