"""Reviewing duplicates: every link's similarity in --json (against a plain pair loop), the keep
rules against hand-worked groups, the CSV a spreadsheet reads, nothing deleted, the HTML's
groups at one height with their aspect kept (rendered in Chromium)."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from udml_cli.index import Index

# (file, width, height, mtime in s); vectors: a/b/c one group, d/e another, f alone
FILES = [("a.png", 40, 30, 300), ("b.png", 80, 60, 100), ("c.jpg", 20, 40, 350),
         ("d.png", 30, 30, 500), ("e.png", 30, 30, 400), ("f.png", 50, 20, 600)]  # fmt: skip


@pytest.fixture
def index(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for name, w, h, t in FILES:
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / name)
        os.utime(folder / name, (t, t))
        st = (folder / name).stat()
        files.append((name, st.st_size, st.st_mtime_ns))
    base = rng.normal(size=(3, 16))
    x = np.stack([base[0], base[0] + 0.1 * rng.normal(size=16), base[0] + 0.15 * rng.normal(size=16),
                  base[1], base[1] + 0.1 * rng.normal(size=16), base[2]]).astype(np.float32)  # fmt: skip
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16}, x,
          files).save(tmp_path / "idx")  # fmt: skip
    return tmp_path / "idx", folder, x


def test_json_lists_every_link_with_its_similarity(cli, index):
    idx, _, x = index
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--json")
    assert r.code == 0, r.err
    groups = json.loads(r.out)["groups"]
    names = [f[0] for f in FILES]
    want = {(names[i], names[j]): float(x[i] @ x[j]) for i in range(6) for j in range(i + 1, 6)
            if x[i] @ x[j] >= 0.9}  # fmt: skip
    got = {(p["a"], p["b"]): p["similarity"] for g in groups for p in g["pairs"]}
    assert set(got) == set(want) and want
    for pair, sim in want.items():
        assert abs(got[pair] - sim) < 1e-5
    assert [g["paths"] for g in groups] == [["a.png", "b.png", "c.jpg"], ["d.png", "e.png"]]
    assert all("keep" not in g for g in groups)
    import udml_cli as udml  # the Python API the command is a layer over: the same groups

    found = udml.find_duplicates(Index.load(idx), 0.9, keep="first")
    assert [[names[i] for i in g.members] for g in found.groups] == [g["paths"] for g in groups]
    assert [names[g.keep] for g in found.groups] == ["a.png", "d.png"]


@pytest.mark.parametrize("rule, kept", [
    ("largest", ["b.png", "d.png"]),  # 80x60 beats 40x30 and 20x40; d and e tie → path order
    ("newest", ["c.jpg", "d.png"]),
    ("oldest", ["b.png", "e.png"]),
    ("first", ["a.png", "d.png"]),
])  # fmt: skip
def test_keep_rules_write_a_csv_and_delete_nothing(cli, index, rule, kept):
    idx, folder, x = index
    before = sorted(p.name for p in folder.iterdir())
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--keep", rule)
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out)))
    assert [Path(row["path"]).name for row in rows if row["action"] == "keep"] == kept
    assert len(rows) == 5 and {row["action"] for row in rows} == {"keep", "remove-candidate"}
    names = [f[0] for f in FILES]
    for row in rows:  # the similarity to the kept file of its group, from the vectors
        if row["action"] == "remove-candidate":
            group = [r2 for r2 in rows if r2["group"] == row["group"] and r2["action"] == "keep"]
            i, k = names.index(Path(row["path"]).name), names.index(Path(group[0]["path"]).name)
            assert abs(float(row["similarity_to_kept"]) - float(x[i] @ x[k])) < 1e-5
        w, h = next((w, h) for n, w, h, _ in FILES if n == Path(row["path"]).name)
        assert (int(row["width"]), int(row["height"])) == (w, h)
    assert "nothing was deleted" in r.err
    assert sorted(p.name for p in folder.iterdir()) == before


def test_keep_csv_to_a_file_and_refusals(cli, index, tmp_path):
    idx, _, _ = index
    out = tmp_path / "review.csv"
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--keep", "newest", "--csv", out,
            "--json")  # fmt: skip
    assert r.code == 0, r.err
    assert json.loads(r.out)["groups"][0]["keep"] == "c.jpg"
    assert out.read_text().startswith("group,action,path,similarity_to_kept")
    r = cli("duplicates", "--index", idx, "--keep", "newest", "--json")
    assert r.code == 2 and "add --csv FILE" in r.err
    r = cli("duplicates", "--index", idx, "--csv", out)
    assert r.code == 2 and "add --keep" in r.err
    r = cli("duplicates", "--index", idx, "--keep", "biggest")
    assert r.code == 2 and "biggest" in r.err and "Traceback" not in r.err


@pytest.mark.browser
def test_html_groups_keep_their_aspect_and_mark_the_kept_file(cli, index, tmp_path):
    from test_report import _screenshot, _shows

    idx, _, _ = index
    page = tmp_path / "dupes.html"
    r = cli("duplicates", "--index", idx, "--threshold", "0.9", "--keep", "largest",
            "--csv", tmp_path / "r.csv", "--html", page)  # fmt: skip
    assert r.code == 0, r.err
    text = page.read_text()
    assert text.count('class="tile keep"') == 2 and "keep (largest)" in text
    assert re.search(r"\d\.\d{3} ↔ b\.png", text)  # a member's link to another, with its value
    thumbs = []
    for src in re.findall(
        r'<div class="tile[^"]*"><img src="data:image/jpeg;base64,([^"]+)"', text
    ):
        thumbs.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(src)))))
    sizes = {(t.shape[1], t.shape[0]) for t in thumbs}
    assert {(40, 30), (80, 60), (20, 40)} <= sizes  # never squashed into a square
    _shows(_screenshot(page, tmp_path / "dupes.png"), thumbs)


def test_the_csv_round_trips_names_with_a_newline_a_tab_and_spaces(cli, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    names = ["a b\tc.png", "new\nline.png"]
    files = []
    for n in names:
        Image.new("RGB", (10, 10), (9, 9, 9)).save(folder / n)
        files.append((n, (folder / n).stat().st_size, (folder / n).stat().st_mtime_ns))
    x = np.ones((2, 4), np.float32) / 2
    Index(folder, {"backbone": "tiny-test", "weights": "none", "image_size": 16}, x,
          files).save(tmp_path / "idx")  # fmt: skip
    r = cli("duplicates", "--index", tmp_path / "idx", "--keep", "first", "--no-hash")
    assert r.code == 0, r.err
    rows = list(csv.DictReader(io.StringIO(r.out, newline="")))
    assert [Path(row["path"]).name for row in rows] == names
    assert [row["action"] for row in rows] == ["keep", "remove-candidate"]
