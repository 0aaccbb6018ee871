"""What ``udml serve`` serves, without the web: an index's rows, their files (only those, by row
id), thumbnails cached beside the index, searches by row or by an uploaded image, the clusters
and the duplicate groups (each computed once per setting and kept).

Every file it opens is one the index lists, found by row number, and only if it still resolves
inside the indexed folder: no request names a path on disk.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from udml_cli.errors import UsageError
from udml_cli.index import THUMBNAILS  # the cache folder inside the index folder

THUMB_SIZES = (96, 160, 320)  # the boxes a thumbnail is made for (a request's size snaps up)
UPLOAD_LIMIT = 20 << 20  # bytes an uploaded query image may have


class NotFound(Exception):
    """A row, path or cluster the index does not have (the server answers 404)."""


class BadRequest(Exception):
    """A request the server cannot answer as asked (400, with this message)."""


@dataclass
class Clusters:
    k: int
    order: list[int]  # cluster ids, largest first
    members: dict[int, list[int]]  # cluster id → rows, the most typical (nearest centre) first
    objective: float


class Library:
    def __init__(self, index_dir: Path, device: str = "auto", model=None) -> None:
        """The index in ``index_dir`` (checked whole) and the model it was built with (checked:
        the same checkpoint, the same dimension); ``model`` = ``(model, config)`` to reuse."""
        from udml_cli.api import index_model
        from udml_cli.index import Index

        self.index = Index.load(Path(index_dir))
        self.dir = Path(index_dir)
        self.folder = Path(self.index.folder)
        self.root = self.folder.resolve()
        self.model, self.cfg = model if model is not None else index_model(self.index, device)
        self.row_of = {p: i for i, p in enumerate(self.index.paths)}
        self._lock = threading.Lock()
        self._clusters: dict[int, Clusters] = {}
        self._found = None
        self._engine = None

    # ---- files, only by row --------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.index.files)

    def row(self, value) -> int:
        """``value`` (a path segment or a query value) as a row of the index; NotFound else."""
        text = str(value)
        if not (text.isascii() and text.isdigit()) or len(text) > 12 or int(text) >= len(self):
            raise NotFound(f"no row {text[:40]!r} in this index (0 … {len(self) - 1})")
        return int(text)

    def file(self, row: int) -> Path:
        """The file of ``row``, resolved, when it is still a file inside the indexed folder (a
        symlink that leads out of it, or a file gone since, is NotFound)."""
        path = (self.folder / self.index.files[row][0]).resolve()
        if not path.is_relative_to(self.root) or not path.is_file():
            raise NotFound(f"row {row}: its file is gone or lies outside {self.folder}")
        return path

    def item(self, row: int, similarity: float | None = None) -> dict:
        item = {"row": row, "path": self.index.files[row][0]}
        if similarity is not None:
            item["similarity"] = round(float(similarity), 4)
        return item

    def thumbnail(self, row: int, size: int = 160) -> bytes:
        """A JPEG of ``row``'s image within a ``size`` box (aspect kept), from the cache beside
        the index when made before (keyed by the file's path, bytes and time: an edited file
        gets a new one); a grey square for an image that no longer decodes."""
        from udml_cli.report import jpeg_thumbnail

        box = next((s for s in THUMB_SIZES if s >= size), THUMB_SIZES[-1])
        path = self.file(row)
        st = path.stat()
        key = hashlib.sha256(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{box}".encode()).hexdigest()
        cached = self.dir / THUMBNAILS / str(box) / f"{key[:32]}.jpg"
        try:
            return cached.read_bytes()
        except OSError:
            pass
        data = jpeg_thumbnail(path, (box, box), quality=82)
        try:  # a cache: a read-only index folder just goes without
            cached.parent.mkdir(parents=True, exist_ok=True)
            part = cached.with_name(f".{cached.name}.{os.getpid()}.{threading.get_ident()}")
            part.write_bytes(data)
            os.replace(part, cached)
        except OSError:
            pass
        return data

    # ---- search ----------------------------------------------------------------------------------
    def neighbours(self, row: int, k: int) -> list[dict]:
        """The ``k`` rows most similar to ``row``, itself first."""
        sims, rows = self.index.search(self.index.vectors[row : row + 1], k + 1)
        hits = [(int(r), float(s)) for r, s in zip(rows[0], sims[0], strict=True) if r != row]
        self_sim = float(self.index.vectors[row] @ self.index.vectors[row])
        return [self.item(row, self_sim)] + [self.item(r, s) for r, s in hits[: k - 1]]

    def by_path(self, path: str) -> int:
        """The row of a path as the index lists it (relative to its folder, or that folder's
        path joined to it); NotFound for any other (nothing on disk is looked at)."""
        text = path.strip()
        for prefix in (f"{self.folder}/", f"{self.root}/"):
            if text.startswith(prefix):
                text = text[len(prefix) :]
        if text not in self.row_of:
            raise NotFound(f"{path[:200]!r} is not a file of this index")
        return self.row_of[text]

    def embed_upload(self, data: bytes) -> np.ndarray:
        """The embedding of an uploaded image (decoded in memory by the one safe loader)."""
        import torch

        from udml_cli.data.images import ImageError, load_rgb
        from udml_cli.data.transforms import eval_transform
        from udml_cli.engine import resolve_engine

        if len(data) > UPLOAD_LIMIT:
            raise BadRequest(f"the upload is larger than {UPLOAD_LIMIT >> 20} MB")
        if not data:
            raise BadRequest("the upload is empty: send the image's bytes as the request body")
        try:
            im = load_rgb(io.BytesIO(data), name="the uploaded file")
        except ImageError as e:
            raise BadRequest(str(e)) from None
        with self._lock:
            if self._engine is None:
                self._engine = resolve_engine(self.cfg.engine, inference=True)
                self.model = self._engine.prepare_model(self.model).eval()
        engine = self._engine
        x = eval_transform(self.cfg.data)(im)[None]
        with torch.inference_mode(), engine.autocast():
            v = self.model.embed(engine.to_device(x)).float().cpu().numpy()
        if not np.isfinite(v).all():
            raise BadRequest("the model gives a NaN or infinite vector for this image")
        return v

    def search_vector(self, v: np.ndarray, k: int) -> list[dict]:
        sims, rows = self.index.search(v, k)
        return [self.item(int(r), s) for r, s in zip(rows[0], sims[0], strict=True) if r >= 0]

    # ---- clusters and duplicates -----------------------------------------------------------------
    def default_k(self) -> int:
        from udml_cli.clustering import auto_clusters

        return min(len(self), auto_clusters(len(self), 2))

    def clusters(self, k: int | None = None) -> Clusters:
        """k-means of the index's vectors as ``udml cluster --index`` runs it (``cluster``
        config; k: one per 50 images unless given), computed once per k."""
        from udml_cli.clustering import kmeans
        from udml_cli.config import load_config

        k = self.default_k() if k is None else k
        if not 1 <= k <= len(self):
            raise BadRequest(f"k = {k}: choose 1 … {len(self)} (the images in the index)")
        with self._lock:
            if k not in self._clusters:
                c = load_config().cluster
                x = self.index.vectors
                result = kmeans(x, k, c.niter, c.seed, c.init, n_init=c.n_init)
                labels = np.asarray(result.labels)
                dist = ((x - result.centroids[labels]) ** 2).sum(1)
                members: dict[int, list[int]] = {}
                for r in np.lexsort((dist, labels)).tolist():
                    members.setdefault(int(labels[r]), []).append(r)
                order = sorted(members, key=lambda c: (-len(members[c]), c))
                self._clusters[k] = Clusters(k, order, members, float(result.objective))
            return self._clusters[k]

    def duplicates(self, keep: str | None = None):
        """``review.find_duplicates`` of the index (its calibrated or default threshold, hashes
        joined), computed once; ``keep``: the row each group's rule keeps."""
        from udml_cli.review import RULES, find_duplicates, keeper

        if keep is not None and keep not in RULES:
            raise BadRequest(f"keep = {keep[:40]!r}: one of {', '.join(RULES)}")
        with self._lock:
            if self._found is None:
                self._found = find_duplicates(self.index)
        found = self._found
        groups = [replace(g, keep=keeper(g.members, keep, self.index.files, self.folder)
                          if keep else None) for g in found.groups]  # fmt: skip
        return replace(found, groups=groups)


def check_run(run_dir: Path) -> Path:
    """``--run``: a training run folder (its metrics.jsonl), one line when it is not."""
    run_dir = Path(run_dir)
    if not (run_dir / "metrics.jsonl").is_file():
        raise UsageError(f"--run {run_dir}: not a udml run folder (no metrics.jsonl)")
    return run_dir
