"""Reviewing near-duplicate groups: which file of each group a rule keeps and which are
candidates to remove, written as CSV (``udml duplicates --keep``). udml deletes nothing: the
CSV is for the user, or a script of theirs, to act on.

Rules: ``largest`` (most pixels, then most bytes), ``newest`` / ``oldest`` (file modification
time), ``first`` (path order); ties go to the first path.
"""

from __future__ import annotations

import csv
import datetime
import enum
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

RULES = ("largest", "newest", "oldest", "first")
KeepRule = enum.Enum("KeepRule", {r: r for r in RULES}, type=str)  # the CLI's choices
COLUMNS = ("group", "action", "path", "similarity_to_kept", "width", "height", "bytes",
           "modified")  # fmt: skip


@dataclass
class Group:
    members: list[int]  # index rows, path order
    weakest: float  # its smallest joining similarity
    pairs: list[tuple[int, int, float]]  # its links: (row, row, similarity)
    keep: int | None = None  # the row the rule keeps


def pixels(path: Path) -> tuple[int, int] | None:
    """Width and height from the file's header (no decoding); None when it cannot be read."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # any unreadable file ranks last, it is not an error here
        return None


def keeper(rows: list[int], rule: str, files, folder: Path) -> int:
    """The row of ``rows`` that ``rule`` keeps (``files``: the index's (path, bytes, mtime_ns))."""
    if rule == "first":
        return min(rows, key=lambda r: files[r][0])
    if rule in ("newest", "oldest"):
        sign = -1 if rule == "newest" else 1
        return min(rows, key=lambda r: (sign * files[r][2], files[r][0]))
    if rule != "largest":
        raise ValueError(f"unknown keep rule {rule!r}; one of {', '.join(RULES)}")

    def size(r: int):
        wh = pixels(folder / files[r][0])
        return (-(wh[0] * wh[1]) if wh else 1, -files[r][1], files[r][0])

    return min(rows, key=size)


@dataclass
class Found:
    """What ``find_duplicates`` found, and the settings it used (with what to say of them)."""

    groups: list[Group]
    threshold: float
    threshold_from: str
    hash_distance: int | None
    hashes_from: str


def find_duplicates(index, threshold: float | None = None, hash_distance: int | None = None,
                    no_hash: bool = False, keep: str | None = None) -> Found:  # fmt: skip
    """The near-duplicate groups of ``index`` (an ``index.Index``) as ``udml duplicates`` finds
    them: the embedding's pairs at ``threshold`` (default: the calibrated one, else 0.95)
    joined with the perceptual hashes' at ``hash_distance`` (default 6 when the index holds
    hashes; ``no_hash``: the embedding alone), with each group's links and, with a ``keep``
    rule, the file it keeps."""
    from udml_cli.index import duplicate_groups, duplicate_threshold, joined_pairs
    from udml_cli.index import hash_distance as distance_of

    t, why = duplicate_threshold(index, threshold)
    d, joined = distance_of(index, hash_distance, no_hash)
    pairs = joined_pairs(index.vectors, t, index.stored_faiss(), index.hashes, d)
    groups = review(duplicate_groups(index.vectors, t, pairs=pairs), pairs, index.files,
                    index.folder, keep)  # fmt: skip
    return Found(groups, t, why, d, joined)


def review(groups, pairs, files, folder: Path, rule: str | None) -> list[Group]:
    """``Group`` records with their links and, with ``rule``, the row each keeps."""
    r, c, s = pairs
    out = [Group(list(m), w, []) for m, w in groups]
    where = {row: g for g, grp in enumerate(out) for row in grp.members}
    for a, b, sim in zip(r.tolist(), c.tolist(), s.tolist(), strict=True):
        out[where[a]].pairs.append((a, b, round(sim, 6)))
    for g in out:
        g.pairs.sort(key=lambda t: -t[2])
        if rule is not None:
            g.keep = keeper(g.members, rule, files, folder)
    return out


def csv_rows(groups: list[Group], vectors: np.ndarray, files, folder: Path) -> list[dict]:
    rows = []
    for n, g in enumerate(groups, 1):
        kept = vectors[g.keep]
        for r in sorted(g.members, key=lambda r: (r != g.keep, files[r][0])):
            wh = pixels(folder / files[r][0]) or ("", "")
            when = datetime.datetime.fromtimestamp(files[r][2] / 1e9, datetime.UTC)
            rows.append({
                "group": n, "action": "keep" if r == g.keep else "remove-candidate",
                "path": str(folder / files[r][0]),
                "similarity_to_kept": "" if r == g.keep else
                f"{float(vectors[r] @ kept):.6f}",
                "width": wh[0], "height": wh[1], "bytes": files[r][1],
                "modified": when.isoformat(timespec="seconds"),
            })  # fmt: skip
    return rows


def write_csv(rows: list[dict], stream) -> None:
    writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
