"""A searchable index of a folder of images: embeddings, paths, a faiss index, the model's identity.

An index folder is one unit. ``index.json`` is its manifest: the folder indexed, the model's
identity, the row count, the dimension, and the *generation* folder that holds the data:
    gen-<id>/vectors.npy   (N, dim) float32, L2-normalised, one row per image
    gen-<id>/files.jsonl   one JSON array per row: relative path, size, mtime_ns (any file name
                           round-trips, a newline or a tab included)
    gen-<id>/index.faiss   inner-product index over the rows: exact below IVF_FROM rows, IVF above
with each file's byte count and SHA-256. A save writes a whole new generation, then switches with
one atomic rewrite of ``index.json``, then removes the old one: an interrupted save leaves the
previous index whole. A load checks the manifest against the files (sizes, checksums, rows of
vectors = rows of files = vectors in the faiss file, the dimension, finite vectors) and refuses
anything else with one line that says what is wrong and how to rebuild.
Re-indexing a grown folder embeds only new or changed files (same folder and model), keeps the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udml_cli.calibration import DEFAULT_THRESHOLD  # the uncalibrated default
from udml_cli.errors import DatasetError, UdmlError, UsageError

FORMAT = "udml-index"
VERSION = 2
MANIFEST = "index.json"
DATA_FILES = ("vectors.npy", "files.jsonl", "index.faiss")
HASHES = "hashes.npy"  # optional: perceptual hashes, listed in the manifest when written
LEGACY_FILES = ("vectors.npy", "files.tsv", "index.faiss")  # version 1: flat, no generations
THUMBNAILS = "thumbnails"  # udml serve's thumbnail cache (deletable at any time)
IVF_FROM = 20_000  # rows from which duplicates use an IVF index (exact below)


class DamagedIndex(DatasetError):
    """An index folder whose files do not agree with its manifest (or each other)."""


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def model_identity(checkpoint: Path | None, cfg) -> dict:
    """What an index's vectors depend on: the exact checkpoint file, or backbone + weights."""
    ident = {"image_size": cfg.data.image_size, "resize": cfg.data.resize}
    if checkpoint is not None:
        return ident | {"checkpoint": str(Path(checkpoint).resolve()),
                        "sha256": file_sha256(Path(checkpoint))}  # fmt: skip
    return ident | {"backbone": cfg.model.backbone, "weights": cfg.model.weights}


def rebuild_hint(out: Path, folder: Path | str | None = None) -> str:
    return f"rebuild it: udml index {folder or 'FOLDER'} --out {out} --yes"


def read_manifest(out: Path) -> dict:
    """``index.json`` of ``out`` when it is a udml index's; one line naming the problem else."""
    path = out / MANIFEST
    if not out.exists():
        raise UsageError(f"no index at {out}; build one with udml index FOLDER --out {out}")
    if not out.is_dir():
        raise UsageError(f"{out} is not a folder, so not a udml index")
    if not path.is_file():
        raise UsageError(f"{out} is not a udml index (no {MANIFEST}); build one with udml index")
    try:
        if path.stat().st_size > 1 << 24:
            raise ValueError("larger than 16 MB")
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DamagedIndex(f"{path}: unreadable ({_why(e)}); {rebuild_hint(out)}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise UsageError(f"{path} is not a udml index's manifest (no format = {FORMAT!r})")
    return meta


def _why(e: Exception) -> str:
    text = getattr(e, "strerror", None) or str(e) or type(e).__name__
    return text.splitlines()[0][:160]


@dataclass
class Index:
    folder: Path
    model: dict
    vectors: np.ndarray  # (N, dim) float32
    files: list[tuple[str, int, int]]  # (relative path, size, mtime_ns)
    out: Path | None = None  # the index folder it was loaded from or saved to
    generation: str | None = None
    # the duplicate threshold calibrated on these images (``calibration.Calibration.to_dict``)
    calibration: dict | None = None
    hashes: np.ndarray | None = None  # (N,) uint64 perceptual hashes (``phash.py``), if made

    @property
    def paths(self) -> list[str]:
        return [f[0] for f in self.files]

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    # ---- files on disk -----------------------------------------------------------------------
    def save(self, out: Path) -> None:
        """Write a new generation beside the current one, switch ``index.json`` to it (the one
        atomic step), then remove the old. Interrupted at any point before the switch, the
        previous index is still the one ``index.json`` names, whole."""
        import faiss

        from udml_cli.fileio import atomic_write_text

        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        legacy = _manifest_field(out, "version") == 1
        gen = f"gen-{secrets.token_hex(6)}"
        tmp, final = out / f".{gen}.partial", out / gen
        try:
            tmp.mkdir()
            vectors = np.ascontiguousarray(self.vectors, dtype=np.float32)
            with open(tmp / "vectors.npy", "wb") as fh:
                np.save(fh, vectors)
            rows = "".join(json.dumps([r, int(s), int(m)]) + "\n" for r, s, m in self.files)
            (tmp / "files.jsonl").write_text(rows, encoding="ascii")
            (tmp / "index.faiss").write_bytes(faiss.serialize_index(self.faiss()).tobytes())
            names = list(DATA_FILES)
            if self.hashes is not None:
                with open(tmp / HASHES, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(self.hashes, dtype=np.uint64))
                names.append(HASHES)
            listed = {}
            for name in names:
                _fsync(tmp / name)
                listed[name] = {"bytes": (tmp / name).stat().st_size,
                                "sha256": file_sha256(tmp / name)}  # fmt: skip
            os.rename(tmp, final)
            _fsync(out, folder=True)
            meta = {
                "format": FORMAT, "version": VERSION, "folder": str(self.folder),
                "model": self.model, "count": len(self.files), "dim": self.dim,
                "generation": gen, "files": listed,
            }  # fmt: skip
            if self.calibration is not None:
                meta["duplicates"] = self.calibration
            atomic_write_text(out / MANIFEST, json.dumps(meta, indent=2) + "\n")  # the switch
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            if _manifest_field(out, "generation") != gen:
                shutil.rmtree(final, ignore_errors=True)
            raise
        self.out, self.generation = out, gen
        prune(out, keep=gen, legacy=legacy)

    @classmethod
    def load(cls, out: Path) -> Index:
        """The index in ``out``, checked whole against its manifest; one line when it is not."""
        out = Path(out)
        meta = read_manifest(out)
        hint = rebuild_hint(out, meta.get("folder"))
        version = meta.get("version")
        if version == 1:
            raise UsageError(f"{out} was written by an older udml (index format 1); {hint}")
        if version != VERSION:
            raise UsageError(f"{out}: index format {version!r} is not one this udml reads; {hint}")
        manifest = out / MANIFEST
        try:
            folder, model = Path(meta["folder"]), meta["model"]
            count, dim, gen, listed = (int(meta["count"]), int(meta["dim"]), meta["generation"],
                                       meta["files"])  # fmt: skip
            if not (isinstance(model, dict) and isinstance(gen, str) and gen.startswith("gen-")
                    and "/" not in gen and count >= 0 and dim >= 1):  # fmt: skip
                raise ValueError
            names = [*DATA_FILES, *([HASHES] if HASHES in listed else [])]
            sums = {n: (int(listed[n]["bytes"]), str(listed[n]["sha256"])) for n in names}
        except (KeyError, TypeError, ValueError):
            raise DamagedIndex(f"{manifest}: a field is missing or malformed; {hint}") from None
        gdir = out / gen
        for name, (size, digest) in sums.items():
            path = gdir / name
            if not path.is_file():
                raise DamagedIndex(f"{path}: missing ({MANIFEST} names it); {hint}")
            if path.stat().st_size != size or file_sha256(path) != digest:
                raise DamagedIndex(
                    f"{path}: does not match its checksum in {MANIFEST} (changed or damaged "
                    f"since it was written); {hint}"
                )
        path = gdir / "vectors.npy"
        try:
            vectors = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            raise DamagedIndex(f"{path}: not a .npy array ({_why(e)}); {hint}") from None
        if vectors.dtype != np.float32 or vectors.shape != (count, dim):
            raise DamagedIndex(
                f"{path}: holds {vectors.shape} {vectors.dtype} but {MANIFEST} says ({count}, "
                f"{dim}) float32; {hint}"
            )
        files = _read_files(gdir / "files.jsonl", count, hint)
        bad = ~np.isfinite(vectors).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DamagedIndex(
                f"{path}: {int(bad.sum())} rows hold NaN or infinite values (first: "
                f"{files[first][0]!r}); the model that made them is broken; {hint}"
            )
        hashes = None
        if HASHES in sums:
            try:
                hashes = np.load(gdir / HASHES, allow_pickle=False)
            except (OSError, ValueError, EOFError) as e:
                raise DamagedIndex(
                    f"{gdir / HASHES}: not a .npy array ({_why(e)}); {hint}"
                ) from None
            if hashes.dtype != np.uint64 or hashes.shape != (count,):
                raise DamagedIndex(f"{gdir / HASHES}: not {count} uint64 hashes; {hint}")
        calibration = meta.get("duplicates")
        if calibration is not None:
            from udml_cli.calibration import Calibration

            if Calibration.from_dict(calibration) is None:
                raise DamagedIndex(f"{manifest}: its duplicates entry is malformed; {hint}")
        return cls(folder, model, vectors, files, out, gen, calibration, hashes)

    def stored_faiss(self):
        """The faiss index saved with these rows (checked: same count and dimension)."""
        import faiss

        if self.out is None or self.generation is None:
            return self.faiss()
        path = self.out / self.generation / "index.faiss"
        hint = rebuild_hint(self.out, self.folder)
        try:
            index = faiss.deserialize_index(np.fromfile(path, dtype=np.uint8))
        except (OSError, RuntimeError, ValueError, MemoryError) as e:
            raise DamagedIndex(f"{path}: not a faiss index ({_why(e)}); {hint}") from None
        if index.ntotal != len(self.files) or index.d != self.dim:
            raise DamagedIndex(
                f"{path}: holds {index.ntotal} vectors of dimension {index.d} but {MANIFEST} says "
                f"{len(self.files)} of {self.dim}; {hint}"
            )
        return index

    def check_model(self, model_dim: int, what: str) -> None:
        """Refuse a query model whose vectors are not this index's dimension."""
        if model_dim != self.dim:
            raise DamagedIndex(
                f"{self.out}: holds {self.dim}-d vectors but {what} gives {model_dim}-d ones: "
                f"{MANIFEST} names another model than the one its vectors came from; "
                f"{rebuild_hint(self.out, self.folder)}"
            )

    def faiss(self):
        """Inner product (= cosine on these rows): exact below IVF_FROM rows, IVF above."""
        import faiss

        d = self.vectors.shape[1]
        n = len(self.vectors)
        if n < IVF_FROM:
            index = faiss.IndexFlatIP(d)
        else:
            nlist = int(4 * np.sqrt(n))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            index.cp.max_points_per_centroid = (
                32  # train the cells on a sample: seconds, not minutes
            )
            index.train(self.vectors)
        index.add(self.vectors)
        return index

    # ---- queries -----------------------------------------------------------------------------
    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by cosine similarity: ``(similarities, rows)``, each (Q, k), best first.
        One matrix product per block of rows (BLAS), no index to build."""
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.vectors))
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_i = np.zeros((len(q), 0), np.int64)
        for start in range(0, len(self.vectors), 262_144):
            block = self.vectors[start : start + 262_144]
            sims = q @ block.T
            kk = min(k, block.shape[0])
            part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
            best_s = np.concatenate([best_s, np.take_along_axis(sims, part, 1)], 1)
            best_i = np.concatenate([best_i, part + start], 1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)


def _read_files(path: Path, count: int, hint: str) -> list[tuple[str, int, int]]:
    files = []
    try:
        lines = path.read_text(encoding="ascii").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for line in lines:
            rel, size, mtime = json.loads(line)
            if not (isinstance(rel, str) and isinstance(size, int) and isinstance(mtime, int)):
                raise ValueError("a row is not [path, size, mtime_ns]")
            files.append((rel, size, mtime))
    except (OSError, ValueError, TypeError) as e:
        raise DamagedIndex(f"{path}: row {len(files) + 1} is damaged ({_why(e)}); {hint}") from None
    if len(files) != count:
        raise DamagedIndex(f"{path}: {len(files)} rows but {MANIFEST} says {count}; {hint}")
    return files


def _manifest_field(out: Path, key: str):
    """One field of ``out``'s manifest, None when there is none to read (no index yet)."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return json.loads((out / MANIFEST).read_text()).get(key)
    return None


def _fsync(path: Path, folder: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def own_leftover(name: str) -> bool:
    """A name only udml's index writer makes: a generation folder or an unfinished one."""
    return name.startswith("gen-") or (name.startswith(".gen-") and name.endswith(".partial"))


def prune(out: Path, keep: str, legacy: bool = False) -> None:
    """Remove every generation but ``keep`` (and a format-1 index's flat files)."""
    for entry in out.iterdir():
        if own_leftover(entry.name) and entry.name != keep and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
    if legacy:
        for name in LEGACY_FILES:
            with contextlib.suppress(OSError):
                (out / name).unlink()


def refuse_foreign(out: Path) -> bool:
    """Whether ``out`` is new (missing, or empty but for udml's own leftovers); raises when it
    is a folder udml index must not write into (a file, or a folder of anything but an index).
    Cheap: the files of an index are not read."""
    if not out.exists():
        return True
    if not out.is_dir():
        raise UsageError(f"--out {out} is a file, not an index folder")
    if (out / MANIFEST).is_file():
        return False
    others = [e.name for e in out.iterdir() if not own_leftover(e.name) and e.name != THUMBNAILS]
    if not others:
        return True
    raise UsageError(
        f"{out} is not a udml index (it holds {others[0]!r} and no {MANIFEST}): udml index "
        "writes only into a new or empty folder or an index it made; choose another --out"
    )


def index_state(out: Path) -> tuple[str, Index | str | None]:
    """What ``out`` holds before ``udml index`` writes there: ``("new", None)`` (missing, or
    empty but for udml's own leftovers), ``("index", Index)``, ``("damaged", why)`` (a udml
    index that does not load). A folder that is not a udml index raises."""
    if refuse_foreign(out):
        return "new", None
    try:
        read_manifest(out)
    except DamagedIndex as e:  # an index.json that does not parse: replaceable with --yes
        return "damaged", str(e)
    # an index.json of something else than udml raises here: never replaced
    try:
        return "index", Index.load(out)
    except UdmlError as e:
        return "damaged", str(e)


def hash_distance(idx: Index, given: int | None, off: bool) -> tuple[int | None, str]:
    """The perceptual-hash distance ``udml duplicates`` joins pairs at, and what to say."""
    from udml_cli.phash import DEFAULT_DISTANCE

    if off:
        if given is not None:
            raise UsageError(
                "--hash-distance has no effect with --no-hash, which turns that step off: drop "
                "one of the two"
            )
        return None, "the embedding alone (--no-hash)"
    if idx.hashes is None:
        if given is not None:
            raise UsageError(
                "--hash-distance: this index holds no perceptual hashes; re-run udml index "
                "(it makes them unless --no-hashes)"
            )
        return None, "the embedding alone (this index holds no perceptual hashes)"
    d = DEFAULT_DISTANCE if given is None else given
    return d, f"joined with perceptual hashes at most {d} bits apart (--hash-distance; --no-hash)"


def duplicate_threshold(idx: Index, given: float | None) -> tuple[float, str]:
    """The threshold ``udml duplicates`` uses and why: ``given`` (--threshold), else the one
    calibrated when the index was built, else the default."""
    if given is not None:
        return given, f"--threshold {given:g}"
    if idx.calibration is not None:
        c = idx.calibration
        return float(c["threshold"]), (
            f"threshold {c['threshold']:.4f}, calibrated on {c['sample']} of these images for "
            f"precision {c['precision']:g} when the index was built (--threshold overrides it)"
        )
    return DEFAULT_THRESHOLD, (
        f"the default threshold {DEFAULT_THRESHOLD} (this index holds no calibration: re-run "
        "udml index to calibrate one on these images)"
    )


def duplicate_pairs(
    vectors: np.ndarray, threshold: float, index=None, device=None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every pair of rows ``(a, b, similarity)`` with ``a < b`` and similarity ≥ ``threshold``.
    ``index``: a faiss index over ``vectors``; an IVF one answers approximately (only pairs
    within a cell are compared: a pair split across two cells is missed; BENCHMARKS.md measures
    how often), a flat one exactly. With CUDA (``device_ops.hot_device``) every pair is
    compared exactly on the GPU instead."""
    import faiss

    from udml_cli.device_ops import hot_device, pairs_above

    on = hot_device(device)
    if on is not None:
        return pairs_above(vectors, threshold, on)

    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(x)
    rows, cols, sims = [], [], []
    ivf = faiss.try_extract_index_ivf(index) if index is not None else None
    if ivf is not None:
        # pairs inside each inverted list: one matrix product per cell (a vector's cell was fixed
        # when it was added, so no query is assigned again; like nprobe = 1)
        from threadpoolctl import threadpool_limits

        lists = ivf.invlists
        with threadpool_limits(1):  # ~80x512 products: threads only spin (worse when busy)
            for cell in range(ivf.nlist):
                size = lists.list_size(cell)
                if size < 2:
                    continue
                ids = faiss.rev_swig_ptr(lists.get_ids(cell), size).astype(np.int64).copy()
                block = x[ids]
                sim = block @ block.T
                a, b = np.nonzero(np.triu(sim >= threshold, 1))
                lo, hi = np.minimum(ids[a], ids[b]), np.maximum(ids[a], ids[b])
                rows.append(lo)
                cols.append(hi)
                sims.append(sim[a, b])
    else:
        if index is None:
            index = faiss.IndexFlatIP(x.shape[1])
            index.add(x)
        for start in range(0, n, 8192):
            lims, dist, found = index.range_search(x[start : start + 8192], float(threshold))
            counts = np.diff(lims).astype(np.int64)  # faiss gives size_t limits
            q = np.repeat(np.arange(start, start + len(counts)), counts)
            found = found.astype(np.int64)
            keep = found > q  # each pair once, no self-pairs
            rows.append(q[keep])
            cols.append(found[keep])
            sims.append(dist[keep])
    r, c = (np.concatenate(a).astype(np.int64) if a else np.zeros(0, np.int64)
            for a in (rows, cols))  # fmt: skip
    s = np.concatenate(sims).astype(np.float32) if sims else np.zeros(0, np.float32)
    return r, c, s


def joined_pairs(vectors: np.ndarray, threshold: float, index=None, hashes=None,
                 distance: int | None = None):  # fmt: skip
    """``duplicate_pairs`` joined with the pairs whose perceptual ``hashes`` are at most
    ``distance`` bits apart (None: the embedding alone); every pair carries its embedding
    similarity."""
    r, c, s = duplicate_pairs(vectors, threshold, index)
    if hashes is None or distance is None:
        return r, c, s
    from udml_cli.phash import hash_pairs

    hr, hc = hash_pairs(hashes, distance)
    n = len(vectors)
    have = set((r * n + c).tolist())
    new = np.array([k for k in (hr * n + hc).tolist() if k not in have], np.int64)
    if not len(new):
        return r, c, s
    nr, nc = new // n, new % n
    ns = np.einsum("ij,ij->i", vectors[nr], vectors[nc]).astype(np.float32)
    return np.concatenate([r, nr]), np.concatenate([c, nc]), np.concatenate([s, ns])


def duplicate_groups(
    vectors: np.ndarray, threshold: float, index=None, pairs=None
) -> list[tuple[list[int], float]]:
    """Groups of rows joined by pairs with similarity ≥ ``threshold`` (connected components),
    largest first; each with its smallest joining similarity. ``pairs``: ``duplicate_pairs``'
    answer, when the caller has it (else it is asked, with ``index``)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vectors)
    r, c, s = duplicate_pairs(vectors, threshold, index) if pairs is None else pairs
    graph = coo_matrix((np.ones(len(r)), (r, c)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for i in np.unique(np.concatenate([r, c])) if len(r) else []:
        members.setdefault(int(comp[i]), []).append(int(i))
    weakest: dict[int, float] = {}
    for a, sim in zip(r, s, strict=True):
        g = int(comp[a])
        weakest[g] = min(weakest.get(g, 1.0), float(sim))
    groups = [(sorted(m), weakest[g]) for g, m in members.items()]
    return sorted(groups, key=lambda t: (-len(t[0]), t[0][0]))


def folder_files(folder: Path) -> list[tuple[str, int, int, Path]]:
    from udml_cli.data.layout import scan_images

    return [
        (p.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns, p)
        for p, st in scan_images(folder)
    ]


def plan_update(old: Index | None, folder: Path, model: dict):
    """``(files, reuse, todo)``: the folder's images now; rows of ``old`` to keep, by position;
    the positions to embed."""
    files = folder_files(folder)
    if not files:
        raise DatasetError(f"no images in {folder} (searched recursively)")
    known = {}
    if old is not None and old.model == model and old.folder == folder:
        known = {f[0]: (i, f[1], f[2]) for i, f in enumerate(old.files)}
    reuse, todo = {}, []
    for pos, (rel, size, mtime, _) in enumerate(files):
        hit = known.get(rel)
        if hit is not None and hit[1:] == (size, mtime):
            reuse[pos] = hit[0]
        else:
            todo.append(pos)
    return files, reuse, todo
