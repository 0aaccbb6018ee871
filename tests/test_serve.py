"""``udml serve``'s JSON API, in process (FastAPI's TestClient), against plain references: a
brute-force cosine search, ``udml cluster --index`` and ``udml duplicates --json/--keep``; every
request that should find nothing (traversal, rows out of range, symlinks out of the folder) and
every bad upload; the command's start-up refusals and its clean stop on Ctrl-C."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import urllib.request
import zlib

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

from conftest import TINY, make_layout
from fastapi.testclient import TestClient

MODEL = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "16"]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An index of 32 synthetic images (tiny model), a run folder, and the API client."""
    from udml_cli.cli.app import main
    from udml_cli.serve.app import create_app
    from udml_cli.serve.library import Library

    tmp = tmp_path_factory.mktemp("serve")
    root = make_layout(tmp / "syn")
    folder = root / "test"
    from PIL import Image

    Image.new("RGB", (600, 200), (200, 30, 30)).save(folder / "wide.png")  # aspect 3:1
    idx = tmp / "idx"
    with pytest.raises(SystemExit) as e:
        main(["index", str(folder), "--out", str(idx), *MODEL, "--no-calibrate"])
    assert e.value.code in (0, None)
    run = tmp / "run"
    with pytest.raises(SystemExit) as e:
        main(["train", "--dataset", str(root), "--out", str(run), *TINY, "--epochs", "2"])
    assert e.value.code in (0, None)
    lib = Library(idx)
    client = TestClient(create_app(lib, run))
    return client, lib, folder, idx


def _brute(vectors: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    sims = [(float(np.dot(q, v)), i) for i, v in enumerate(vectors)]
    return [i for _, i in sorted(sims, key=lambda t: (-t[0], t[1]))[:k]]


def test_search_by_row_and_path_is_the_exact_cosine_search(served):
    client, lib, folder, _ = served
    x = lib.index.vectors
    for row in (0, 7, 19, len(x) - 1):
        r = client.get(f"/api/search?row={row}&k=6")
        assert r.status_code == 200 and "app;dur=" in r.headers["server-timing"]
        body = r.json()
        got = [h["row"] for h in body["results"]]
        assert body["query"]["row"] == row and got[0] == row  # the query itself first
        want = [i for i in _brute(x, x[row], 7) if i != row][:5]
        assert set(got[1:]) == set(want)
        sims = [h["similarity"] for h in body["results"][1:]]
        assert sims == sorted(sims, reverse=True)
        assert sims == pytest.approx([float(x[row] @ x[i]) for i in got[1:]], abs=1e-4)
    rel = lib.index.paths[5]
    for given in (rel, str(folder / rel)):
        r = client.get("/api/search", params={"path": given, "k": 3})
        assert r.status_code == 200 and r.json()["query"]["row"] == 5
    assert client.get("/api/neighbours/5?k=3").json()[0]["row"] == 5


def test_upload_finds_its_own_file_first_and_writes_nothing(served):
    client, lib, folder, _ = served
    before = sorted(p for p in folder.rglob("*"))
    row = lib.index.paths.index("c07/2.png")
    r = client.post("/api/search?k=4", content=(folder / "c07/2.png").read_bytes())
    assert r.status_code == 200, r.text
    hits = r.json()["results"]
    assert hits[0]["row"] == row and hits[0]["similarity"] == pytest.approx(1.0, abs=1e-4)
    assert [h["row"] for h in hits] == _brute(lib.index.vectors, lib.index.vectors[row], 4)
    assert sorted(p for p in folder.rglob("*")) == before


def _png(width: int, height: int) -> bytes:
    """A PNG header claiming ``width`` × ``height`` pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + \
        chunk(b"IEND", b"")  # fmt: skip


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "empty"),
        (b"just some text, not an image", "cannot decode image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot decode image"),  # corrupt
        ("truncated", "cannot decode image"),
        (_png(40_000, 40_000), "decompression bomb"),
        ("huge", "larger than 20 MB"),
    ],
    ids=["empty", "text", "corrupt", "truncated", "bomb", "too-large"],
)
def test_bad_uploads_are_400_with_a_message(served, body, says):
    client, _, folder, _ = served
    if body == "truncated":
        body = (folder / "c06/0.png").read_bytes()[:-60]
    if body == "huge":
        body = b"\xff" * ((20 << 20) + 1)
    r = client.post("/api/search", content=body)
    assert r.status_code == 400 and says in r.json()["detail"], r.text
    assert "BytesIO" not in r.json()["detail"]


@pytest.mark.parametrize(
    "url",
    [
        "/api/thumb/-1", "/api/thumb/33", "/api/thumb/99999999999999999999", "/api/thumb/1.0",
        "/api/thumb/%D9%A1",  # an Arabic-Indic digit one: a digit to Python, not a row
        "/api/thumb/..%2F..%2Fetc%2Fpasswd", "/api/thumb/%2Fetc%2Fpasswd",
        "/api/thumb/../../etc/passwd", "/api/thumb/..%252F..%252Fetc%252Fpasswd",
        "/api/search?row=..%2F1", "/api/search?path=../syn/test/c06/1.png",
        "/api/search?path=/etc/passwd", "/api/search?path=%2Fetc%2Fpasswd",
        "/api/neighbours/40", "/api/clusters/9999", "/etc/passwd", "/static/../index.json",
    ],
)  # fmt: skip
def test_only_indexed_rows_are_served(served, url):
    client = served[0]
    assert client.get(url).status_code == 404


def test_thumbnails_keep_aspect_are_cached_and_stop_at_the_folder(served, cli, tmp_path):
    from PIL import Image

    client, lib, folder, idx = served
    row = lib.index.paths.index("wide.png")
    r = client.get(f"/api/thumb/{row}?size=160")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    im = Image.open(io.BytesIO(r.content))
    assert im.size == (160, 53)  # 600 × 200 within a 160 box
    cached = list((idx / "thumbnails").rglob("*.jpg"))
    assert any(c.read_bytes() == r.content for c in cached)
    # a file replaced by a symlink that leaves the folder: not served
    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    victim = folder / lib.index.paths[3]
    saved = victim.read_bytes()
    victim.unlink()
    victim.symlink_to(outside)
    try:
        assert client.get("/api/thumb/3").status_code == 404
    finally:
        victim.unlink()
        victim.write_bytes(saved)
    assert client.get("/api/thumb/3").status_code == 200
    # the cache does not stop udml index from updating the index beside it
    import shutil

    copy = tmp_path / "idx"
    shutil.copytree(idx, copy)
    assert (copy / "thumbnails").is_dir()
    r = cli("index", folder, "--out", copy, *MODEL, "--no-calibrate")
    assert r.code == 0 and (copy / "thumbnails").is_dir(), r.err


def test_clusters_are_udml_cluster_index_largest_first(served, cli, tmp_path):
    client, lib, _, idx = served
    r = cli("cluster", "--index", idx, "--assignments", tmp_path / "a.csv")
    assert r.code == 0, r.err
    with open(tmp_path / "a.csv") as fh:
        want: dict[int, set] = {}
        for rec in csv.DictReader(fh):
            want.setdefault(int(rec["cluster"]), set()).add(rec["path"])
    body = client.get("/api/clusters?per=100&strip=100").json()
    assert body["k"] == len(want) == body["total"]
    got = {c["id"]: {lib.index.paths[it["row"]] for it in c["rows"]} for c in body["clusters"]}
    assert sorted(map(sorted, got.values())) == sorted(map(sorted, want.values()))
    sizes = [c["size"] for c in body["clusters"]]
    assert sizes == sorted(sizes, reverse=True) and sum(sizes) == len(lib)
    first = body["clusters"][0]
    one = client.get(f"/api/clusters/{first['id']}?per=2&page=1").json()
    assert [it["row"] for it in one["rows"]] == [it["row"] for it in first["rows"][2:4]]
    k3 = client.get("/api/clusters?k=3").json()
    assert k3["k"] == 3 and sum(c["size"] for c in k3["clusters"]) == len(lib)
    assert client.get(f"/api/clusters?k={len(lib) + 1}").status_code == 400


def test_duplicates_and_csv_are_udml_duplicates(served, cli):
    client, lib, _, idx = served
    r = cli("duplicates", "--index", idx, "--json")
    assert r.code == 0, r.err
    want = json.loads(r.out)
    body = client.get("/api/duplicates?keep=largest").json()
    assert body["threshold"] == pytest.approx(want["threshold"])
    paths = lib.index.paths
    assert [[paths[m["row"]] for m in g["members"]] for g in body["groups"]] == [
        g["paths"] for g in want["groups"]
    ]
    for g, w in zip(body["groups"], want["groups"], strict=True):
        assert g["keep"] in [m["row"] for m in g["members"]]
        assert [(paths[x["a"]], paths[x["b"]], x["similarity"]) for x in g["links"]] == [
            (x["a"], x["b"], round(x["similarity"], 4)) for x in w["pairs"]
        ]
    r = cli("duplicates", "--index", idx, "--keep", "newest")
    csv_text = client.get("/api/duplicates.csv?keep=newest")
    assert csv_text.headers["content-disposition"].startswith("attachment")
    assert csv_text.text == r.out
    assert client.get("/api/duplicates?keep=biggest").status_code == 400


def test_run_page_and_openapi(served):
    client = served[0]
    run = client.get("/api/run").json()
    assert "R@1" in run["scores"] and "<svg" in run["curves"]
    page = client.get("/")
    assert page.status_code == 200 and 'id="results"' in page.text
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/search", "/api/thumb/{row}", "/api/clusters", "/api/duplicates"} <= set(paths)
    assert "access-control-allow-origin" not in client.get("/api/info",
                                                           headers={"Origin": "http://evil.example"}).headers  # fmt: skip


def test_a_foreign_host_header_is_refused(served):
    from udml_cli.serve.app import create_app

    _, lib, _, _ = served
    client = TestClient(create_app(lib, None, ["testserver"]))
    assert client.get("/api/info").status_code == 200
    assert client.get("/api/info", headers={"Host": "evil.example"}).status_code == 400
    assert client.get("/api/run").status_code == 404  # no --run


# ---- the command ------------------------------------------------------------------------------
def _udml(*args):
    env = {**os.environ, "UDML_PLUGINS": "udml_testkit"}
    return subprocess.Popen([sys.executable, "-m", "udml_cli", "serve", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip


def _one_error(err: str) -> bool:
    return (
        sum(line.startswith("error:") for line in err.splitlines()) == 1 and "Traceback" not in err
    )


def test_serve_refuses_in_one_line(served, cli, tmp_path):
    _, _, _, idx = served
    r = cli("serve", tmp_path / "nowhere")
    assert r.code != 0 and _one_error(r.err) and "no index at" in r.err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "index.json").write_text("{not json")
    r = cli("serve", broken)
    assert r.code != 0 and _one_error(r.err) and "unreadable" in r.err
    other = tmp_path / "other"
    import shutil

    shutil.copytree(idx, other, ignore=shutil.ignore_patterns("thumbnails"))
    meta = json.loads((other / "index.json").read_text())
    meta["model"]["backbone"] = "resnet18"
    meta["model"]["weights"] = "none"
    (other / "index.json").write_text(json.dumps(meta))
    r = cli("serve", other)
    assert r.code != 0 and _one_error(r.err) and "16-d vectors" in r.err, r.err
    r = cli("serve", idx, "--run", tmp_path)
    assert r.code != 0 and "not a udml run folder" in r.err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        r = cli("serve", idx, "--port", port)
    assert r.code != 0 and _one_error(r.err) and f"port {port}" in r.err, r.err


def test_serve_prints_its_url_answers_and_stops_cleanly_on_ctrl_c(served):
    _, _, _, idx = served
    proc = _udml(idx, "--port", "0")
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read()
        info = json.load(urllib.request.urlopen(url + "api/info", timeout=30))
        assert info["count"] == 33
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=30)[1]
    finally:
        proc.kill()
    assert proc.returncode == 0 and "Traceback" not in err and "stopped" in err, err


def test_without_the_serve_extra_it_says_what_to_install(served, cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # as if not installed
    r = cli("serve", served[3])
    assert r.code != 0 and _one_error(r.err) and "pip install 'udml[serve]'" in r.err, r.err
