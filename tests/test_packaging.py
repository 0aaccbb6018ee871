"""The wheel holds every subpackage, every template (`--config demo` outside a checkout) and
udml serve's page."""

import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_ships_every_package_and_template(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    for init in REPO.glob("udml_cli/**/__init__.py"):
        assert init.relative_to(REPO).as_posix() in names
    for template in (REPO / "templates").glob("*.toml"):
        assert f"udml_cli/templates/{template.name}" in names
    for page in REPO.glob("udml_cli/**/*.html"):  # udml serve's page
        assert page.relative_to(REPO).as_posix() in names
