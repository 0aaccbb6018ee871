"""The wheel holds every subpackage and every template (`--config demo` outside a checkout)."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_package_and_template(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ into the source tree
    top = {".git", "build", "runs", "data", "udml.egg-info"}

    def skip(folder, names):
        return [n for n in names if (folder == str(REPO) and n in top) or n == "__pycache__"]

    shutil.copytree(REPO, src, ignore=skip)
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(src)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = zipfile.ZipFile(next(tmp_path.glob("udml-*.whl"))).namelist()
    for init in REPO.glob("udml_cli/**/__init__.py"):
        assert init.relative_to(REPO).as_posix() in names
    for template in (REPO / "templates").glob("*.toml"):
        assert f"udml_cli/templates/{template.name}" in names
