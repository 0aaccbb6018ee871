"""Label-free checkpoint selection, judged over every recorded training run.

Reads what `benchmarks/quality.py` wrote with `--set train.eval_step=N` (the records "label-free
pick R@1" and "best eval R@1", one value per seed; runs since 2026-12-03 also the NMI ones)
under benchmarks/results/ (explore/ included) and says, per run: the R@1 (and NMI) of the evaluation the label-free score ranks
highest, the best of the run's evaluations, the shortfall, and the score's rank correlation with
R@1 and NMI over the run's evaluations. No training: minutes of reading.
    python benchmarks/selection_summary.py → results/selection_summary.{json,md}
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import RESULTS

PICK, BEST = "label-free pick R@1", "best eval R@1"


def runs_of(path: Path) -> list[dict]:
    """One row per training run (seed) of a quality.py results file; [] for any other file."""
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(records, list):
        return []
    by_case: dict[str, dict[str, list]] = {}
    for r in records:
        if (
            isinstance(r, dict)
            and "values" in r
            and str(r.get("metric", "")).startswith(("label-free", "best eval"))
        ):
            by_case.setdefault(r["case"], {})[r["metric"]] = r["values"]
    rows = []
    for case, m in by_case.items():
        if PICK not in m or BEST not in m:
            continue
        for i, (pick, best) in enumerate(zip(m[PICK], m[BEST], strict=True)):
            row = {"file": str(path.relative_to(RESULTS)), "case": case, "run": i,
                   "pick R@1": pick, "best R@1": best, "short R@1": best - pick}  # fmt: skip
            for key, name in (("label-free rho", "rho R@1"), ("label-free rho NMI", "rho NMI")):
                if key in m and not math.isnan(m[key][i]):
                    row[name] = m[key][i]
            if "label-free pick NMI" in m and "best eval NMI" in m:
                row["pick NMI"], row["best NMI"] = (
                    m["label-free pick NMI"][i],
                    m["best eval NMI"][i],
                )
                row["short NMI"] = row["best NMI"] - row["pick NMI"]
            rows.append(row)
    return rows


def summary(rows: list[dict]) -> dict:
    short = [r["short R@1"] for r in rows]
    out = {
        "runs": len(rows),
        "pick within 1 R@1 of the best": sum(s <= 1.0 for s in short),
        "pick is the best": sum(s <= 1e-9 for s in short),
        "mean shortfall R@1": statistics.fmean(short) if short else None,
        "worst shortfall R@1": max(short, default=None),
    }
    for name in ("rho R@1", "rho NMI"):
        values = [r[name] for r in rows if name in r]
        out[f"mean {name}"] = statistics.fmean(values) if values else None
        out[f"runs with {name}"] = len(values)
    nmi = [r["short NMI"] for r in rows if "short NMI" in r]
    out["mean shortfall NMI"] = statistics.fmean(nmi) if nmi else None
    return out


def main() -> None:
    rows = [row for path in sorted(RESULTS.rglob("*.json")) for row in runs_of(path)]
    if not rows:
        sys.exit("error: no quality.py run with train.eval_step under " + str(RESULTS))
    result = {"summary": summary(rows), "runs": rows}
    (RESULTS / "selection_summary.json").write_text(json.dumps(result, indent=1) + "\n")

    def cell(row, key):
        return f"{row[key]:.2f}" if key in row else ""

    lines = ["| results file | run | label-free pick R@1 | best R@1 | shortfall | ρ R@1 | "
             "pick NMI | best NMI | ρ NMI |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        keys = ["pick R@1", "best R@1", "short R@1", "rho R@1", "pick NMI", "best NMI", "rho NMI"]
        lines.append(f"| {r['file']} {r['case']} | {r['run']} | "
                     + " | ".join(cell(r, k) for k in keys) + " |")  # fmt: skip
    lines += ["", *(f"- {k}: {v:.3g}" if isinstance(v, float) else f"- {k}: {v}"
                    for k, v in result["summary"].items())]  # fmt: skip
    (RESULTS / "selection_summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
