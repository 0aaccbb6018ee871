"""The web app of ``udml serve``: one page (``page.html``) and the JSON API under ``/api/`` it
uses (FastAPI documents it at ``/docs`` and ``/openapi.json``).

Safety: a file is served only as a thumbnail of a row of the index (``library.Library.file``);
an upload is read into memory up to ``UPLOAD_LIMIT`` and decoded by the safe loader; with
``hosts`` the ``Host`` header must name one of them (a page of another site that rebinds its
name to 127.0.0.1 is refused); no CORS headers are sent, so other sites' scripts cannot read it.
"""

from __future__ import annotations

import io
import time
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from udml_cli import __version__
from udml_cli.serve.library import UPLOAD_LIMIT, BadRequest, Library, NotFound

K = Query(24, ge=1, le=500, description="How many results.")
PER = Query(12, ge=1, le=200, description="Items per page.")
PAGE = Query(0, ge=0, description="Page number, from 0.")
CLUSTERS_K = Query(None, ge=1, description="Clusters (default: one per 50 images).")
KEEP = Query(None, description="Keep rule: largest, newest, oldest or first.")


def create_app(lib: Library, run_dir: Path | None = None, hosts: list[str] | None = None):
    app = FastAPI(
        title="udml serve", version=__version__,
        description=f"Search, clusters and duplicates of the udml index of {lib.folder}.",
    )  # fmt: skip
    if hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    @app.middleware("http")
    async def timing(request: Request, call_next):
        start = time.perf_counter()
        response = await call_next(request)
        response.headers["Server-Timing"] = f"app;dur={(time.perf_counter() - start) * 1e3:.2f}"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response

    @app.exception_handler(NotFound)
    async def not_found(_request, e: NotFound):
        return JSONResponse({"detail": str(e)}, status_code=404)

    @app.exception_handler(BadRequest)
    async def bad_request(_request, e: BadRequest):
        return JSONResponse({"detail": str(e)}, status_code=400)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home():
        return resources.files("udml_cli.serve").joinpath("page.html").read_text("utf-8")

    @app.get("/api/info")
    def info():
        """The index: its folder, size, model, and whether a run is shown."""
        return {"folder": str(lib.folder), "count": len(lib), "dim": lib.index.dim,
                "model": lib.index.model, "default_k": lib.default_k(),
                "run": run_dir is not None, "run_dir": str(run_dir) if run_dir else None}  # fmt: skip

    @app.get("/api/search")
    def search(row: str | None = None, path: str | None = None, k: int = K):
        """The k nearest of an indexed image, given by ``row`` or by ``path`` (as the index
        lists it, or under its folder); the query itself first."""
        if (row is None) == (path is None):
            raise BadRequest("give one of row= or path=")
        r = lib.row(row) if row is not None else lib.by_path(path)
        return {"query": lib.item(r), "results": lib.neighbours(r, k)}

    @app.post("/api/search", openapi_extra={"requestBody": {
        "required": True, "description": "The query image's bytes (any format Pillow reads).",
        "content": {"application/octet-stream": {"schema": {"type": "string",
                                                            "format": "binary"}}}}})  # fmt: skip
    async def search_upload(request: Request, k: int = K):
        """The k nearest of an uploaded image (the request body; at most 20 MB). It is decoded
        in memory and never written anywhere."""
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > UPLOAD_LIMIT:
            raise BadRequest(f"the upload is larger than {UPLOAD_LIMIT >> 20} MB")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > UPLOAD_LIMIT:
                raise BadRequest(f"the upload is larger than {UPLOAD_LIMIT >> 20} MB")
        v = await run_in_threadpool(lib.embed_upload, bytes(body))
        return {"query": None, "results": lib.search_vector(v, k)}

    @app.get("/api/neighbours/{row}")
    def neighbours(row: str, k: int = K):
        """The k nearest rows of ``row``, itself first."""
        return lib.neighbours(lib.row(row), k)

    @app.get("/api/clusters")
    def clusters(k: int | None = CLUSTERS_K, page: int = PAGE, per: int = PER,
                 strip: int = Query(12, ge=1, le=100)):  # fmt: skip
        """k-means clusters of the index, largest first, ``per`` a page; each with its size
        and its ``strip`` most typical images."""
        c = lib.clusters(k)
        ids = c.order[page * per : (page + 1) * per]
        return {"k": c.k, "total": len(c.order), "page": page, "per": per, "clusters": [
            {"id": i, "size": len(c.members[i]), "rows": [lib.item(r)
                                                          for r in c.members[i][:strip]]}
            for i in ids]}  # fmt: skip

    @app.get("/api/clusters/{cluster}")
    def cluster(cluster: str, k: int | None = CLUSTERS_K, page: int = PAGE,
                per: int = Query(120, ge=1, le=1000)):  # fmt: skip
        """One cluster's images, the most typical first."""
        c = lib.clusters(k)
        if not (cluster.isascii() and cluster.isdigit()) or int(cluster) not in c.members:
            raise NotFound(f"no cluster {cluster[:20]!r} among the {c.k}")
        rows = c.members[int(cluster)]
        return {"id": int(cluster), "k": c.k, "size": len(rows), "page": page, "per": per,
                "rows": [lib.item(r) for r in rows[page * per : (page + 1) * per]]}  # fmt: skip

    @app.get("/api/duplicates")
    def duplicates(keep: str | None = KEEP):
        """Groups of near-duplicates at the index's threshold (calibrated when it was),
        perceptual hashes joined, candidates checked by local features; each link's similarity; with ``keep``, the row kept."""
        found = lib.duplicates(keep)
        return {
            "threshold": found.threshold, "threshold_from": found.threshold_from,
            "hash_distance": found.hash_distance, "hashes_from": found.hashes_from,
            "verified": found.verified, "overruled": found.overruled,
            "verify_from": found.verify_from,
            "groups": [{"members": [lib.item(r) for r in g.members], "keep": g.keep,
                        "weakest": round(g.weakest, 4),
                        "links": [{"a": a, "b": b, "similarity": round(s, 4)}
                                  for a, b, s in g.pairs]} for g in found.groups],
        }  # fmt: skip

    @app.get("/api/duplicates.csv", response_class=Response)
    def duplicates_csv(keep: str = Query("largest", description="Keep rule.")):
        """The keep / remove-candidate CSV of ``udml duplicates --keep`` (nothing is deleted)."""
        from udml_cli.review import csv_rows, write_csv

        found = lib.duplicates(keep)
        out = io.StringIO()
        write_csv(csv_rows(found.groups, lib.index.vectors, lib.index.files, lib.folder), out)
        return Response(out.getvalue(), media_type="text/csv", headers={
            "Content-Disposition": f'attachment; filename="duplicates-{keep}.csv"'})  # fmt: skip

    @app.get("/api/thumb/{row}", response_class=Response)
    def thumb(row: str, size: int = Query(160, ge=16, le=1024)):
        """A JPEG thumbnail of an indexed image (aspect kept), cached beside the index."""
        data = lib.thumbnail(lib.row(row), size)
        return Response(data, media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=3600"})  # fmt: skip

    @app.get("/api/run")
    def run():
        """The run's score table and training curves (``udml report``'s), as HTML fragments."""
        from udml_cli.report import curves, run_evaluations, score_table

        if run_dir is None:
            raise NotFound("no run: start udml serve with --run RUN_DIR")
        scores = score_table(run_evaluations(run_dir)) or (
            '<p class="note">No labelled evaluation in this run yet.</p>'
        )
        return {"run_dir": str(run_dir), "scores": scores,
                "curves": curves(run_dir)}  # fmt: skip

    return app
