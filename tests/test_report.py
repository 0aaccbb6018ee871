"""The report as a person sees it: rendered by headless Chromium, every picture really loads."""

from __future__ import annotations

import base64
import io
import os
import re
import shutil
import subprocess

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

pytestmark = pytest.mark.browser
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _screenshot(page, png):
    if CHROMIUM is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing: scripts/setup.sh installs it")
        pytest.skip("chromium is not installed (scripts/setup.sh installs it)")
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--window-size=1100,2600", f"--screenshot={png}", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    return np.asarray(Image.open(png).convert("RGB"))


def _images(text):
    """Every <img>: a data URI (no network, no file) that decodes as an image."""
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert srcs
    decoded = []
    for src in srcs:
        assert src.startswith("data:image/jpeg;base64,"), src[:40]
        decoded.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))))
    return decoded


def test_run_report_renders_with_its_pictures(cli, layout, tmp_path):
    run = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "4").code == 0
    r = cli("report", run)
    assert r.code == 0, r.err
    text = (run / "report.html").read_text()
    assert "http://" not in text and "https://" not in text  # self-contained
    thumbs = _images(text)
    assert "loss per step" in text and "<polyline" in text
    # 8 sampled queries × their 5 nearest, each marked right or wrong (the labels are known)
    assert text.count('class="cell ok"') + text.count('class="cell bad"') == 8 * 5
    _shows(_screenshot(run / "report.html", tmp_path / "run.png"), thumbs[:6])


def _shows(shot: np.ndarray, thumbs: list) -> None:
    """The page shows the pictures: the mean colour of each thumbnail is the mean of some 8x8
    block of the screenshot (a broken-image icon, or a blank page, would leave white there)."""
    assert thumbs
    h, w = (shot.shape[0] // 8) * 8, (shot.shape[1] // 8) * 8
    blocks = shot[:h, :w].reshape(h // 8, 8, w // 8, 8, 3).mean((1, 3)).reshape(-1, 3)
    for t in thumbs:
        mean = t.reshape(-1, 3).mean(0)
        assert np.abs(blocks - mean).max(1).min() < 24, "a thumbnail does not show on the page"


def test_index_report_shows_duplicates(cli, layout, tmp_path):
    folder = layout / "test"
    shutil.copy(folder / "c06" / "0.png", folder / "c07" / "copy.png")
    run = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1").code == 0
    idx = tmp_path / "idx"
    assert cli("index", folder, "--checkpoint", run / "last.pt", "--out", idx).code == 0
    out = tmp_path / "index.html"
    r = cli("report", idx, "-o", out, "--threshold", "0.99999")
    assert r.code == 0, r.err
    text = out.read_text()
    assert "copy.png" in text and "Near-duplicates" in text
    # the near-duplicate section shows the pair (the file and its byte copy) as pictures
    section = text.split("Near-duplicates", 1)[1].split("<h2>", 1)[0]
    pair = _images(section)
    assert len(pair) == 2 and np.array_equal(pair[0], pair[1])
    assert section.count("copy.png") >= 1 and section.count("0.png") >= 1
    _shows(_screenshot(out, tmp_path / "index.png"), pair[:1])


def test_search_and_duplicates_write_galleries(cli, layout, tmp_path):
    folder = layout / "test"
    run = tmp_path / "run"
    assert cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1").code == 0
    idx = tmp_path / "idx"
    assert cli("index", folder, "--checkpoint", run / "last.pt", "--out", idx).code == 0
    hits, groups = tmp_path / "hits.html", tmp_path / "groups.html"
    assert (
        cli("search", folder / "c06" / "0.png", "--index", idx, "--k", "3", "--html", hits).code
        == 0
    )
    assert cli("duplicates", "--index", idx, "--threshold", "0.5", "--html", groups).code == 0
    assert len(_images(hits.read_text())) == 4  # the query and its 3 neighbours
    assert len(_images(groups.read_text())) >= 2


def test_a_demo_like_run_report_opens_with_its_scores(cli, layout, tmp_path):
    """The demo evaluates outside ``udml train`` (``udml eval --json`` files beside the run):
    the report still leads with the start-vs-end table, numbers as the files hold them."""
    import json

    run = tmp_path / "run"
    r = cli("train", "--dataset", layout, "--out", run, *TINY, "--epochs", "1",
            "--set", "train.final_eval=false")  # fmt: skip
    assert r.code == 0, r.err
    r = cli("eval", "--dataset", layout, "--backbone", "tiny-test", "--weights", "none",
            "--image-size", "16", "--json")  # fmt: skip
    (run / "start.json").write_text(r.out)
    os.utime(run / "start.json", (1, 1))  # older: listed first
    r = cli("eval", run / "last.pt", "--json")
    (run / "udml-ss.json").write_text(r.out)
    assert cli("report", run).code == 0
    text = (run / "report.html").read_text()
    assert text.index("<h2>Scores</h2>") < text.index("<h2>Training</h2>")
    start, end = (json.loads((run / f).read_text()) for f in ("start.json", "udml-ss.json"))
    table = text[text.index("<table class='scores'>") : text.index("</table>")]
    assert "start.json" in table and "udml-ss.json" in table and "change, first → last" in table
    for result in (start, end):
        assert f"<td>{100 * result['recall_at']['1']:.2f}</td>" in table
        assert f"<td>{100 * result['map_at_r']:.2f}</td>" in table
    change = 100 * (end["nmi"] - start["nmi"])
    assert f">{change:+.2f}</td>" in table


def test_chart_ticks_are_round_and_cover_the_data():
    from udml_cli.report import line_chart, ticks

    assert ticks(0, 1) == pytest.approx([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert ticks(3, 97) == [0, 20, 40, 60, 80, 100]
    assert ticks(0.6, 0.78) == pytest.approx([0.6, 0.65, 0.7, 0.75, 0.8])
    assert ticks(0.31, 0.33)[0] <= 0.31 and ticks(0.31, 0.33)[-1] >= 0.33
    svg = line_chart("loss per step", {"a": [(1, 0.5), (30, 0.2)], "b": [(1, 0.4), (30, 0.3)]},
                     "step", "loss")  # fmt: skip
    assert ">step</text>" in svg and ">loss</text>" in svg and svg.count("<polyline") == 2
    assert ">30</text>" in svg and ">0.5</text>" in svg  # the x and y extremes as ticks
    tiny = line_chart("rot", {"r": [(1, 1.3881), (9, 1.3899)]})  # a narrow range stays legible
    labels = re.findall(r'text-anchor="end">([^<]+)<', tiny)
    assert len(labels) == len(set(labels)) >= 3
    lone = line_chart("loss", {"a": [(1, 0.5)], "b": [(1, 0.4), (2, 0.3)]})  # a one-step run
    dots = re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)"', lone)
    assert len(dots) == 1  # the lone point, inside the plot area (58..488 across, 44..174 down)
    assert 58 <= float(dots[0][0]) <= 488 and 44 <= float(dots[0][1]) <= 174
    one = line_chart("loss", {"a": [(1, 0.5)]})  # step 1 alone: whole steps around it, no 0.94
    steps = re.findall(r'text-anchor="middle">([^<]+)<', one)[:-1]  # the last is the axis label
    assert steps == ["0", "1", "2"]
    two = line_chart("R@1", {"r": [(0, 33.5), (1, 33.4)]}, "epoch")  # the start and epoch 1
    assert re.findall(r'text-anchor="middle">([^<]+)<', two)[:-1] == ["0", "1"]  # no 0.2 epoch
    half = line_chart("R@1", {"r": [(0, 33.5), (0.5, 33.4)]}, "epoch")  # not counts: ticks()
    assert "0.2" in re.findall(r'text-anchor="middle">([^<]+)<', half)
