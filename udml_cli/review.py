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
    verify_from: str = "without local-feature checks (--no-verify)"
    checked: int = 0  # candidate pairs checked by local features
    verified: int = 0  # pairs only those checks joined
    overruled: int = 0  # pairs the embedding or hashes joined that those checks undid
    unchecked: int = 0  # looser candidates beyond the limit, not checked
    unsupported: int = 0  # links left out: they alone would have joined two groups

    @property
    def joined_by(self) -> str:
        """What joins a pair, for a heading: ``similarity ≥ 0.95, hashes, or 12 pairs by …``."""
        hashes = ", hashes" if self.hash_distance is not None else ""
        local = f", or {self.verified} pairs by local features" if self.verified else ""
        return f"similarity ≥ {self.threshold:.4g}{hashes}{local}"


def find_duplicates(index, threshold: float | None = None, hash_distance: int | None = None,
                    no_hash: bool = False, keep: str | None = None, verify: bool | None = None,
                    progress=None, verify_limit: int | None = None) -> Found:  # fmt: skip
    """The near-duplicate groups of ``index`` (an ``index.Index``) as ``udml duplicates`` finds
    them: the embedding's pairs at ``threshold`` (default: the calibrated one, else 0.95)
    joined with the perceptual hashes' at ``hash_distance`` (default 6 when the index holds
    hashes; ``no_hash``: the embedding alone) and, with ``verify`` (default: when OpenCV is
    installed), the looser candidates that local features confirm (``verify.py``; at most
    ``verify_limit``, default ``verify.CHECK_LIMIT``, the most similar first); with each group's
    links and, with a ``keep`` rule, the file it keeps."""
    from udml_cli.index import duplicate_groups, duplicate_threshold, joined_pairs
    from udml_cli.index import hash_distance as distance_of

    if verify is False and verify_limit is not None:
        from udml_cli.errors import UsageError

        raise UsageError("--verify-limit has no effect with --no-verify, which turns that step "
                         "off: drop one of the two")  # fmt: skip
    t, why = duplicate_threshold(index, threshold)
    d, joined = distance_of(index, hash_distance, no_hash)
    searchable = index.stored_faiss()
    pairs = joined_pairs(index.vectors, t, searchable, index.hashes, d)
    found = Found([], t, why, d, joined)
    if verify is not False:
        pairs = _verified(index, pairs, None if no_hash else index.hashes, verify, found,
                          progress, verify_limit, searchable)  # fmt: skip
    pairs, found.unsupported = supported(pairs, len(index.vectors))
    found.groups = review(duplicate_groups(index.vectors, t, pairs=pairs), pairs, index.files,
                          index.folder, keep)  # fmt: skip
    return found


def supported(pairs, n: int):
    """``(pairs, dropped)``: the links that do not bridge two groups alone. A link between two
    images that each have other links must share a linked neighbour (a triangle); otherwise
    one look-alike pair (two halves of one scene, two photos under one watermark) would merge
    two whole groups into one. A link to an image with no other link is kept."""
    import numpy as np
    from scipy.sparse import coo_matrix

    r, c, s = pairs
    if not len(r):
        return pairs, 0
    ri, ci = r.astype(np.int64), c.astype(np.int64)
    adj = coo_matrix((np.ones(2 * len(r), np.int32), (np.concatenate([ri, ci]),
                      np.concatenate([ci, ri]))), shape=(n, n)).tocsr()  # fmt: skip
    adj.data[:] = 1  # a pair listed twice is one link
    degree = np.asarray(adj.sum(1)).ravel()
    common = np.asarray((adj[ri].multiply(adj[ci])).sum(1)).ravel()
    keep = (common > 0) | (np.minimum(degree[ri], degree[ci]) <= 1)
    return (r[keep], c[keep], s[keep]), int((~keep).sum())


def _verified(index, pairs, hashes, asked: bool | None, found: Found, progress,
              limit: int | None = None, searchable=None):  # fmt: skip
    """``pairs`` and the candidate pairs local features confirm (``found`` says how many)."""
    import numpy as np

    from udml_cli import verify

    if not verify.available():
        if asked:
            from udml_cli.errors import UsageError

            raise UsageError("--verify needs OpenCV: pip install opencv-python-headless")
        found.verify_from = ("without local-feature checks (OpenCV is not installed: pip install "
                             "opencv-python-headless)")  # fmt: skip
        return pairs
    r, c, s = pairs
    limit = verify.CHECK_LIMIT if limit is None else limit
    got = verify.check_links([index.folder / p for p in index.paths], index.vectors, hashes, r, c,
                             progress, limit=limit, index=searchable)  # fmt: skip
    found.checked, found.verified = got["checked"], got["confirmed"]
    found.overruled, found.unchecked = got["overruled"], got["unchecked"]
    beyond = (
        f"; {found.unchecked} less similar candidates left unchecked (--verify-limit {limit} "
        "allowed: raise it to check them)"
        if found.unchecked
        else ""
    )
    found.verify_from = (
        f"{found.checked} possible pairs checked by local features: {found.verified} more "
        f"confirmed, {found.overruled} overruled (--no-verify skips it){beyond}"
    )
    keep, vr, vc = got["keep"], got["rows"], got["cols"]
    r, c, s = r[keep], c[keep], s[keep]
    vs = np.einsum("ij,ij->i", index.vectors[vr], index.vectors[vc]).astype(np.float32)
    return (np.concatenate([r, vr.astype(r.dtype)]), np.concatenate([c, vc.astype(c.dtype)]),
            np.concatenate([s, vs]))  # fmt: skip


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
