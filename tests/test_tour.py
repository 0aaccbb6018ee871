"""README's tour, run as written from an installed wheel, outside the checkout.

The wheel goes into a fresh venv (``--system-site-packages`` for torch & co., which the machine
has; udml itself comes from the wheel alone), ``HOME`` holds a ``photos/`` folder of nested
images with a broken file and a text file, and each command of the tour's first block runs in
bash from another directory. Two things differ from a person's run, both said here: every
``udml train`` line gets ``--epochs 1`` (the photos recipe is 10 epochs at 128 px, several
minutes on a CPU), and the labelled set the last line evaluates on (``emoji``) is a small
synthetic labelled layout registered under that name (the real one is prepared by the demo).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, make_layout, write_image

pytestmark = pytest.mark.slow


def tour_commands() -> list[str]:
    text = (REPO / "README.md").read_text()
    block = text[text.index("## A tour") :].split("```bash\n", 1)[1].split("```", 1)[0]
    commands = []
    for line in block.splitlines():
        line = line.split("  #", 1)[0].strip()
        if line:
            commands.append(re.sub(r"\s\[[^\]]*\]", "", line))  # [--json]: optional, left out
    return commands


def test_readme_tour_from_an_installed_wheel(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", venv], check=True)
    pip = [venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel]
    subprocess.run(pip, check=True, timeout=300)
    home, work = tmp_path / "home", tmp_path / "work"
    colours = np.random.default_rng(0).integers(0, 255, (16, 3))
    for i in range(80):  # 16 looks, 5 photos each, in nested folders
        write_image(home / "photos" / f"trip{i % 4}" / f"day{i % 3}" / f"{i:03d}.png",
                    colours[i // 5], size=48, seed=i)  # fmt: skip
    (home / "photos" / "trip0" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (home / "photos" / "notes.txt").write_text("not an image")
    work.mkdir()
    (work / "holiday.jpg").write_bytes(
        (home / "photos" / "trip1" / "day1" / "001.png").read_bytes()
    )
    env = {
        **os.environ, "HOME": str(home), "UDML_HOME": str(home / ".config" / "udml"),
        "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "120",
    }  # fmt: skip
    env.pop("PYTHONPATH", None)
    env.pop("UDML_PLUGINS", None)  # a fresh user: no plug-ins
    where = subprocess.run(
        [venv / "bin" / "python", "-c", "import udml_cli; print(udml_cli.__file__)"],
        capture_output=True, text=True, cwd=work, env=env, check=True,
    ).stdout  # fmt: skip
    assert where.startswith(str(venv)), where  # the wheel's copy, not the checkout's
    labelled = make_layout(tmp_path / "labelled")
    reg = subprocess.run(["udml", "dataset", "add", "emoji", labelled], cwd=work, env=env,
                         capture_output=True, text=True)  # fmt: skip
    assert reg.returncode == 0, reg.stderr

    commands = tour_commands()
    assert commands[0].startswith("udml train --dataset ~/photos --config photos")
    said = {}
    for command in commands:
        if command.startswith("udml train"):
            command += " --epochs 1"
        proc = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, command
        if command.startswith("udml index"):
            assert "unreadable" in proc.stderr and "broken.jpg" in proc.stderr, proc.stderr
        said[command.split()[1]] = proc.stderr
    # holiday.jpg is a copy of one indexed photo: it is the first hit, at similarity 1
    table = said["search"].splitlines()
    first = table[next(i for i, ln in enumerate(table) if ln.startswith("┡")) + 1]  # row 1
    assert "trip1/day1/001.png" in first and "1.0000" in first, said["search"]
    assert "groups of near-duplicates" in said["duplicates"]
    run = work / "runs" / "photos"
    assert (run / "last.pt").is_file() and (run / "skipped.txt").read_text().split() == [
        "trip0/broken.jpg"
    ]
    page = (work / "photos.html").read_text()
    for section in (
        "Search: sample queries",
        "Near-duplicates",
        "Cluster sizes",
        "biggest clusters",
    ):
        assert section in page, section
    assert page.count("data:image/jpeg;base64,") >= 40  # 8 queries × (1 + 5) and contact sheets
    rows = (work / "clusters.csv").read_text().splitlines()
    assert rows[0] == "path,cluster,similarity_to_centre" and len(rows) == 81
    log = (work / "runs" / "p2" / "metrics.jsonl").read_text().splitlines()
    events = [json.loads(x) for x in log]
    assert [e["at"] for e in events if e["event"] == "eval"] == ["start", "end"]
