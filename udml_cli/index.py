"""A searchable index of a folder of images: embeddings, paths, a faiss index, the model's identity.

An index directory holds
    vectors.npy   (N, dim) float32, L2-normalised, one row per image
    files.tsv     relative path, size, mtime_ns per row (what an update compares)
    index.faiss   inner-product index over the rows: exact below IVF_FROM rows, IVF above
    index.json    format, folder, model identity, dim, image size, count
Re-indexing a grown folder embeds only new or changed files (same model), keeps the rest.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from udml_cli.errors import DatasetError, UsageError
from udml_cli.fileio import atomic_write_bytes, atomic_write_text

FORMAT = "udml-index"
IVF_FROM = 20_000  # rows from which duplicates use an IVF index (exact below)
# Near-duplicate threshold on cosine similarity: see BENCHMARKS.md ("duplicates") for how it was
# chosen: resized + re-encoded copies score above it, distinct images below.
DEFAULT_THRESHOLD = 0.95


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


@dataclass
class Index:
    folder: Path
    model: dict
    vectors: np.ndarray  # (N, dim) float32
    files: list[tuple[str, int, int]]  # (relative path, size, mtime_ns)

    @property
    def paths(self) -> list[str]:
        return [f[0] for f in self.files]

    # ---- files on disk -----------------------------------------------------------------------
    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(self.vectors, dtype=np.float32))
        atomic_write_bytes(out / "vectors.npy", buf.getvalue())
        atomic_write_text(out / "files.tsv", "".join(f"{r}\t{s}\t{m}\n" for r, s, m in self.files))
        import faiss

        atomic_write_bytes(out / "index.faiss", faiss.serialize_index(self.faiss()).tobytes())
        meta = {
            "format": FORMAT, "version": 1, "folder": str(self.folder), "model": self.model,
            "count": len(self.files), "dim": int(self.vectors.shape[1]),
        }  # fmt: skip
        atomic_write_text(out / "index.json", json.dumps(meta, indent=2) + "\n")  # last: complete

    @classmethod
    def load(cls, out: Path) -> Index:
        meta_path = out / "index.json"
        if not meta_path.is_file():
            raise UsageError(
                f"{out} is not a udml index (no index.json); build one with udml index"
            )
        try:
            meta = json.loads(meta_path.read_text())
            vectors = np.load(out / "vectors.npy", allow_pickle=False)
            rows = [ln.split("\t") for ln in (out / "files.tsv").read_text().splitlines()]
            files = [(r[0], int(r[1]), int(r[2])) for r in rows]
        except (OSError, ValueError, IndexError, json.JSONDecodeError) as e:
            raise DatasetError(f"{out}: damaged index ({type(e).__name__}); rebuild it") from None
        if meta.get("format") != FORMAT or len(files) != len(vectors) or vectors.ndim != 2:
            raise DatasetError(f"{out}: damaged or foreign index; rebuild it with udml index")
        return cls(Path(meta["folder"]), meta["model"], vectors.astype(np.float32), files)

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


def read_index_faiss(out: Path):
    import faiss

    data = np.fromfile(out / "index.faiss", dtype=np.uint8)
    return faiss.deserialize_index(data)


def duplicate_groups(
    vectors: np.ndarray, threshold: float, index=None
) -> list[tuple[list[int], float]]:
    """Groups of rows joined by pairs with similarity ≥ ``threshold`` (connected components),
    largest first; each with its smallest joining similarity. ``index``: a faiss index over
    ``vectors``; an IVF one answers approximately (only pairs within a cell are compared: a pair
    split across two cells is missed; BENCHMARKS.md measures how often), a flat one exactly."""
    import faiss
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

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
                rows.append(ids[a])
                cols.append(ids[b])
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
    r, c, s = (np.concatenate(a) if a else np.zeros(0) for a in (rows, cols, sims))
    graph = coo_matrix((np.ones(len(r)), (r.astype(np.int64), c.astype(np.int64))), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    members: dict[int, list[int]] = {}
    for i in np.unique(np.concatenate([r, c]).astype(np.int64)) if len(r) else []:
        members.setdefault(int(comp[i]), []).append(int(i))
    weakest: dict[int, float] = {}
    for a, sim in zip(r.astype(np.int64), s, strict=True):
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
