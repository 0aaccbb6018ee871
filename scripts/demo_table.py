"""Print start vs trained metrics from two ``udml eval --json`` files as one table."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

COLUMNS = [("R@1", "1"), ("R@2", "2"), ("R@4", "4"), ("R@8", "8")]


def row(result: dict) -> list[float]:
    values = [100 * result["recall_at"][k] for _, k in COLUMNS]
    return [*values, 100 * result["nmi"], 100 * result["map_at_r"]]


def main(start_path: str, trained_path: str) -> None:
    with open(start_path) as a, open(trained_path) as b:
        start, trained = json.load(a), json.load(b)
    table = Table(
        title=f"held-out classes: {start['dataset']}/{start['split']} "
        f"({start['num_queries']} queries, {start['num_classes']} classes)"
    )
    table.add_column("model")
    for name in [c for c, _ in COLUMNS] + ["NMI", "MAP@R"]:
        table.add_column(name, justify="right")
    a, b = row(start), row(trained)
    table.add_row("pretrained start", *[f"{v:.2f}" for v in a])
    table.add_row("UDML-SS", *[f"{v:.2f}" for v in b])
    table.add_row("change", *[f"[{'green' if d > 0 else 'red'}]{d:+.2f}[/]" for d in
                              (y - x for x, y in zip(a, b, strict=True))])  # fmt: skip
    Console().print(table)


if __name__ == "__main__":
    main(*sys.argv[1:3])
