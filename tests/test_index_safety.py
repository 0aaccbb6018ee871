"""An index folder is one unit: written whole or not at all, never replaced without --yes, never
misread. Every case runs ``udml`` as its own process (test_hostile's ``udml``/``refused``/``ok``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import inproc as run
from conftest import write_image
from test_hostile import no_partials, ok, refused, snapshot, udml

MODEL = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "16"]


def _folder(root: Path, n: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        write_image(root / f"sub{i % 2}" / f"img{i:03d}.png", rng.integers(0, 255, 3), seed=i)
    return root


@pytest.fixture
def small(tmp_path) -> Path:
    return _folder(tmp_path / "small", 8)


@pytest.fixture
def big(tmp_path) -> Path:
    return _folder(tmp_path / "big", 20, seed=1)


@pytest.fixture
def idx(tmp_path, small) -> Path:
    out = tmp_path / "idx"
    ok(run("index", small, "-o", out, *MODEL))
    return out


def _meta(out: Path) -> dict:
    return json.loads((out / "index.json").read_text())


def _search_json(out: Path, query: Path) -> dict:
    proc = run("search", query, "--index", out, "--k", "3", "--json")
    ok(proc)
    return json.loads(proc.stdout)


# ---- 1. one unit: an interrupted save leaves the old index whole ---------------------------
@pytest.mark.parametrize("where", ["faiss.serialize_index", "udml_cli.fileio.atomic_write_text"])
def test_ctrl_c_while_saving_leaves_the_old_index_whole(idx, big, where):
    before = snapshot(idx)
    module, name = where.rsplit(".", 1)
    patch = (
        f"import {module} as m\ndef stop(*a, **k):\n    raise KeyboardInterrupt\nm.{name} = stop\n"
    )
    proc = udml("index", big, "-o", idx, *MODEL, "--yes", patch=patch)
    assert proc.returncode == 130, proc.stderr.decode()
    # one line says so (Typer itself would exit 130 without a word)
    assert proc.stderr.decode().count("interrupted: stopped") == 1, proc.stderr.decode()
    assert snapshot(idx) == before  # not one byte changed, no new generation left behind
    no_partials(idx)
    assert _meta(idx)["count"] == 8
    hits = _search_json(idx, next(big.rglob("*.png")))
    assert all(Path(_meta(idx)["folder"], h["path"]).is_file()
               for r in hits["results"] for h in r["neighbours"])  # fmt: skip
    ok(run("duplicates", "--index", idx))


def test_a_replacement_switches_in_one_step_and_leaves_one_generation(idx, big):
    ok(run("index", big, "-o", idx, *MODEL, "--yes"))
    meta = _meta(idx)
    assert meta["count"] == 20 and meta["folder"] == str(big.resolve())
    gens = sorted(p.name for p in idx.iterdir() if p.is_dir())
    assert gens == [meta["generation"]]
    files = meta["files"]
    assert set(files) == {"vectors.npy", "files.jsonl", "index.faiss", "hashes.npy"}
    assert np.load(idx / meta["generation"] / "vectors.npy").shape == (20, meta["dim"])


# ---- any file name round-trips; names no list can hold are skipped, named -------------------
def test_names_with_a_newline_or_tab_never_break_a_list(tmp_path, small):
    write_image(small / "new\nline.png", (10, 20, 30), seed=5)
    write_image(small / "tab\there.png", (30, 20, 10), seed=6)
    write_image(small / "odd name, ü – ok.png", (90, 20, 10), seed=7)
    out = tmp_path / "idx"
    err = ok(run("index", small, "-o", out, *MODEL))
    assert "skipped 2 files" in err and ("new\\nline.png" in err or "tab\\there.png" in err)
    assert _meta(out)["count"] == 9
    ok(run("index", small, "-o", out, *MODEL))  # re-run: readable, incremental
    from udml_cli.index import Index

    assert "odd name, ü – ok.png" in Index.load(out).paths
    _search_json(out, small / "odd name, ü – ok.png")
    # embed --paths: one line per row, whatever the names
    vec, listed = tmp_path / "v.npy", tmp_path / "v.txt"
    ok(run("embed", small, "-r", *MODEL, "-o", vec, "--paths", listed))
    assert len(listed.read_text().splitlines()) == len(np.load(vec)) == 9


# ---- never clobbered ----------------------------------------------------------------------
def test_a_folder_that_is_not_an_index_is_refused_even_with_yes(tmp_path, small):
    mine = tmp_path / "notindex"
    mine.mkdir()
    (mine / "vectors.npy").write_bytes(b"my own work")
    (mine / "files.tsv").write_text("mine\n")
    before = snapshot(mine)
    for extra in ([], ["--yes"]):
        refused(run("index", small, "-o", mine, *MODEL, *extra), "is not a udml index", 2)
        assert snapshot(mine) == before


def test_an_index_of_another_folder_or_model_is_replaced_only_with_yes(idx, big, small):
    before = snapshot(idx)
    refused(run("index", big, "-o", idx, *MODEL), "index of another folder", 2)
    other_model = ["--backbone", "tiny-test", "--weights", "none", "--image-size", "24"]
    refused(run("index", small, "-o", idx, *other_model), "another model", 2)
    assert snapshot(idx) == before
    err = ok(run("index", small, "-o", idx, *MODEL))  # same folder and model: incremental
    assert "0 embedded, 8 unchanged kept" in err
    ok(run("index", big, "-o", idx, *MODEL, "--yes"))
    assert _meta(idx)["count"] == 20


def test_a_second_indexer_is_refused_while_one_writes(idx, small):
    from udml_cli.runs import RunLock

    with RunLock(idx, "udml index"):
        refused(run("index", small, "-o", idx, *MODEL), "in use by another udml index")


# ---- never misread: damaged or mismatched files are one line naming the file ---------------
def _gen(out: Path) -> Path:
    return out / _meta(out)["generation"]


def test_a_faiss_file_of_random_bytes_is_named(idx):
    (_gen(idx) / "index.faiss").write_bytes(os.urandom(4096))
    for cmd in (["duplicates", "--index", idx], ["cluster", "--index", idx, "--k", "2"],
                ["report", idx, "-o", idx.parent / "r.html"]):  # fmt: skip
        refused(run(*cmd), "index.faiss: does not match its checksum")


def _rewrite(out: Path, vectors: np.ndarray, model: dict | None = None) -> None:
    """A consistent index (checksums right) with other vectors or another model entry."""
    from udml_cli.index import Index

    old = Index.load(out)
    Index(old.folder, model or old.model, vectors.astype(np.float32), old.files).save(out)


def test_vectors_of_another_dimension_than_the_model(idx, small):
    _rewrite(idx, np.eye(8, 7))
    refused(run("search", next(small.rglob("*.png")), "--index", idx), "holds 7-d vectors")
    refused(run("index", small, "-o", idx, *MODEL), "holds 7-d vectors")


def test_an_index_json_naming_another_model(idx, small):
    meta = _meta(idx)
    _rewrite(idx, np.load(_gen(idx) / "vectors.npy"), dict(meta["model"], backbone="resnet18"))
    proc = run("search", next(small.rglob("*.png")), "--index", idx)
    refused(proc, "another model")
    meta = _meta(idx)
    meta["model"] = "garbage"
    (idx / "index.json").write_text(json.dumps(meta))
    refused(run("search", next(small.rglob("*.png")), "--index", idx), "index.json: a field")


def test_nan_vectors_are_refused_at_load_and_never_written(idx, small, tmp_path):
    v = np.load(_gen(idx) / "vectors.npy")
    v[3] = np.nan
    _rewrite(idx, v)
    for cmd in (["search", next(small.rglob("*.png")), "--index", idx, "--json"],
                ["duplicates", "--index", idx, "--json"]):  # fmt: skip
        refused(run(*cmd), "rows hold NaN or infinite values")
    patch = (
        "import udml_cli.engine as e\n_orig = e.extract\n"
        "def nan(*x, **k):\n    v, i = _orig(*x, **k)\n    return v * float('nan'), i\n"
        "e.extract = nan\n"
    )
    out = tmp_path / "nan"
    refused(udml("index", small, "-o", out, *MODEL, patch=patch), "NaN or infinite vectors")
    assert not (out / "index.json").exists()


def test_damaged_manifests_and_rows(idx, small):
    q = next(small.rglob("*.png"))
    (_gen(idx) / "files.jsonl").write_text("not json\n")
    refused(run("search", q, "--index", idx), "files.jsonl: does not match its checksum")
    (idx / "index.json").write_text("{ cut")
    refused(run("search", q, "--index", idx), "index.json: unreadable")
    (idx / "index.json").write_text(json.dumps({"format": "udml-index", "version": 1}))
    refused(run("search", q, "--index", idx), "older udml")
    (idx / "index.json").write_text(json.dumps({"format": "something else"}))
    refused(run("search", q, "--index", idx), "not a udml index")
    # damaged: replaced only with --yes; then whole again
    (idx / "index.json").write_text("{ cut")
    refused(run("index", small, "-o", idx, *MODEL), "does not load")
    ok(run("index", small, "-o", idx, *MODEL, "--yes"))
    assert _meta(idx)["count"] == 8


# ---- 2. output discipline at the edges ----------------------------------------------------
def _closed_stdout(*args) -> subprocess.CompletedProcess:
    code = "import sys\nfrom udml_cli.cli.app import main\nmain(sys.argv[1:])\n"
    return subprocess.run(
        [sys.executable, "-c", code, *map(str, args)], stdin=subprocess.DEVNULL,
        capture_output=True, preexec_fn=lambda: os.close(1),
        timeout=300,
    )  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["config", "show"],
        ["dataset", "list", "--json"],
        ["search", "Q", "--index", "I", "--json"],
        ["embed", "F", "-r", *MODEL],
    ],
)
def test_data_with_nowhere_to_go_is_one_line(idx, small, args):
    q = next(small.rglob("*.png"))
    args = [{"Q": q, "I": idx, "F": small}.get(a, a) for a in args]
    refused(_closed_stdout(*args), "stdout is closed", 2)
    with open("/dev/full", "wb") as full:
        proc = subprocess.run(
            [sys.executable, "-m", "udml_cli", *map(str, args)], stdin=subprocess.DEVNULL,
            stdout=full, stderr=subprocess.PIPE, timeout=300,
        )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: cannot write stdout: No space left on device; free some space or write elsewhere"
    ], err
    assert "Traceback" not in err and "Exception ignored" not in err, err


@pytest.mark.parametrize("args", [["--version"], ["eval", "--help"], []])
def test_help_with_nowhere_to_go_is_one_line(args):
    refused(_closed_stdout(*args), "stdout is closed", 2)
