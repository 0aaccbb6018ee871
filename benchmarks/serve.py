"""``udml serve``'s speed: server-side time of ``/api/search`` by row on a 100,000 × 512 index
(the index's exact search) against that search called directly and against faiss's exact
IndexFlatIP (what a user would write by hand), all in one process; search by upload (the model's
single-image forward + the search); and the search page with 60 cached thumbnails rendered in
headless Chromium (Debian chromium + chromedriver). Writes results/serve.json.
    python benchmarks/serve.py [--rows 100000] [--dim 512] [--requests 300]
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from common import Results, clustered_unit_vectors


def pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def server_ms(response) -> float:
    return float(response.headers["server-timing"].split("dur=")[1])


def big_index(tmp: Path, rows: int, dim: int):
    """An index of ``rows`` clustered unit vectors of ``dim`` (files that need not exist: search
    by row reads no image), made for resnet18 (512-d) so an upload is embedded by a real net."""
    from udml_cli.index import Index

    x, _ = clustered_unit_vectors(rows, dim, 1000)
    files = [(f"img/{i:06d}.jpg", 1000, 0) for i in range(rows)]
    model = {"image_size": 224, "resize": 256, "backbone": "resnet18", "weights": "none"}
    idx = Index(tmp / "photos", model, x, files)
    idx.save(tmp / "idx")
    return tmp / "idx"


def api_speed(res: Results, rows: int, dim: int, requests: int) -> None:
    import faiss
    from fastapi.testclient import TestClient
    from PIL import Image

    from udml_cli.serve.app import create_app
    from udml_cli.serve.library import Library

    with tempfile.TemporaryDirectory() as tmp:
        lib = Library(big_index(Path(tmp), rows, dim))
        client = TestClient(create_app(lib))
        rng = np.random.default_rng(0)
        picks = rng.integers(0, rows, requests).tolist()
        client.get("/api/search?row=0&k=24")  # warm-up
        ours, round_trip = [], []
        for r in picks:
            t0 = time.perf_counter()
            resp = client.get(f"/api/search?row={r}&k=24")
            round_trip.append((time.perf_counter() - t0) * 1e3)
            assert resp.status_code == 200
            ours.append(server_ms(resp))
        direct, flat = [], []
        fi = faiss.IndexFlatIP(dim)
        fi.add(lib.index.vectors)
        for r in picks:
            q = lib.index.vectors[r : r + 1]
            t0 = time.perf_counter()
            lib.index.search(q, 25)
            direct.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            fi.search(q, 25)
            flat.append((time.perf_counter() - t0) * 1e3)
        case = f"{rows} x {dim}, k 24, {requests} requests"
        res.add(case, "GET /api/search?row= p95 ms server-side (baseline: faiss IndexFlatIP)",
                pct(ours, 95), pct(flat, 95), target=100, unit="ms")  # fmt: skip
        res.add(case, "GET /api/search?row= p50 ms server-side", pct(ours, 50), unit="ms")
        res.add(case, "GET /api/search?row= p95 ms round trip (in-process client)",
                pct(round_trip, 95), unit="ms")  # fmt: skip
        res.add(case, "Index.search called directly p95 ms", pct(direct, 95), unit="ms")
        buf = io.BytesIO()
        Image.effect_mandelbrot((640, 480), (-2, -1.2, 1, 1.2), 60).convert("RGB").save(buf, "JPEG")
        up = []
        for _ in range(min(40, requests)):
            resp = client.post("/api/search?k=24", content=buf.getvalue())
            assert resp.status_code == 200, resp.text
            up.append(server_ms(resp))
        res.add(f"{case}, resnet18 224 px, 640x480 JPEG", "POST /api/search (upload) p95 ms",
                pct(up[1:], 95), unit="ms")  # fmt: skip


def page_speed(res: Results) -> None:
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from test_photos import _emoji_pngs, _photo

    from udml_cli.api import build_index
    from udml_cli.serve.app import create_app
    from udml_cli.serve.library import Library
    from udml_cli.serve.run import start_in_thread

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "photos").mkdir()
        for src in _emoji_pngs(80):
            _photo(src).resize((640, 640)).save(tmp / "photos" / f"{src.stem}.jpg", quality=90)
        build_index(tmp / "photos", tmp / "idx", None, "efficientnet_lite0", "imagenet", 128,
                    calibrate=False, hashes=False)  # fmt: skip
        lib = Library(tmp / "idx")
        for row in range(len(lib)):
            lib.thumbnail(row, 160)  # cached: the page's thumbnails are read, not made
        url, stop = start_in_thread(create_app(lib))
        opts = Options()
        opts.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,900"):
            opts.add_argument(arg)
        driver = webdriver.Chrome(options=opts,
                                  service=Service(executable_path=shutil.which("chromedriver")))  # fmt: skip
        wait_all = """const done = arguments[arguments.length - 1];
            (function poll() {
              const imgs = [...document.querySelectorAll('#results img')];
              if (imgs.length >= 60 && imgs.every((i) => i.complete && i.naturalWidth > 0))
                done(performance.now());
              else requestAnimationFrame(poll);
            })();"""
        times = []
        try:
            driver.set_script_timeout(30)
            for n in range(6):
                driver.get("about:blank")
                driver.get(f"{url}#search/{n}/60")
                times.append(driver.execute_async_script(wait_all))
        finally:
            driver.quit()
            stop()
    res.add("80 images, 60 results, thumbnails cached",
            "search page: navigation → 60 thumbnails shown, median ms (first load dropped)",
            float(np.median(times[1:])), target=1000, unit="ms")  # fmt: skip
    res.add("80 images, 60 results, thumbnails cached", "search page: slowest of 5 ms",
            float(max(times[1:])), unit="ms")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--no-browser", action="store_true")
    args = ap.parse_args()
    res = Results("serve")
    api_speed(res, args.rows, args.dim, args.requests)
    if not args.no_browser:
        page_speed(res)
    res.write()


if __name__ == "__main__":
    main()
