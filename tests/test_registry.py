import json
import os

import pytest

from udml_cli.data.registry import resolve_dataset
from udml_cli.errors import DatasetError


def test_add_list_remove_round_trip(cli, layout):
    r = cli("dataset", "add", "syn", layout)
    assert r.code == 0, r.err
    listed = json.loads(cli("dataset", "list", "--json").out)
    assert listed["datasets"]["syn"] == {"path": str(layout.resolve()), "layout": "txt"}
    assert resolve_dataset("syn").root == layout.resolve()
    r = cli("dataset", "remove", "syn")
    assert r.code == 0
    assert json.loads(cli("dataset", "list", "--json").out)["datasets"] == {}
    assert layout.is_dir()  # remove forgets, never deletes


def test_second_add_needs_force(cli, layout, tmp_path):
    assert cli("dataset", "add", "syn", layout).code == 0
    r = cli("dataset", "add", "syn", layout)
    assert r.code == 2 and "already registered" in r.err and "--force" in r.err
    assert cli("dataset", "add", "syn", layout, "--force").code == 0


def test_add_without_path_and_no_terminal_fails(cli):
    r = cli("dataset", "add", "syn")
    assert r.code == 2 and "missing PATH" in r.err


def test_add_rejects_non_layout_folder(cli, tmp_path):
    (tmp_path / "empty").mkdir()
    r = cli("dataset", "add", "x", tmp_path / "empty")
    assert r.code == 1 and "no train.txt" in r.err


def test_corrupt_registry_is_reported_not_overwritten(cli, layout, udml_home):
    udml_home.mkdir(parents=True)
    reg = udml_home / "datasets.toml"
    reg.write_text("[datasets.syn\npath = ")
    r = cli("dataset", "add", "other", layout)
    assert r.code == 1 and "corrupt" in r.err and str(reg) in r.err
    assert reg.read_text() == "[datasets.syn\npath = "
    assert cli("dataset", "list").code == 1


def test_builtin_names_resolve_under_data_root(tmp_path, monkeypatch):
    (tmp_path / "CUB_200_2011").mkdir()
    (tmp_path / "CUB_200_2011" / "train.txt").write_text("")
    assert resolve_dataset("cub", str(tmp_path)).root == tmp_path / "CUB_200_2011"
    monkeypatch.setenv("UDML_DATA_ROOT", str(tmp_path))
    assert resolve_dataset("cub").layout == "txt"
    with pytest.raises(DatasetError, match="Cars196"):
        resolve_dataset("car")


def test_unknown_dataset_lists_known(cli, layout):
    cli("dataset", "add", "syn", layout)
    with pytest.raises(DatasetError, match=r"unknown dataset 'nope'.*syn"):
        resolve_dataset("nope")
    r = cli("dataset", "check", "nope")
    assert r.code == 1 and "unknown dataset" in r.err and "Traceback" not in r.err


def test_every_named_thing_has_one_lookup_and_one_error_line():
    from udml_cli.data.prepare import KINDS
    from udml_cli.data.registry import BUILTIN
    from udml_cli.errors import UsageError
    from udml_cli.models.backbones import REGISTRY

    for registry, noun, known in (
        (REGISTRY, "backbone", "resnet18"),
        (KINDS, "dataset kind", "emoji"),
        (BUILTIN, "built-in dataset", "cub"),
    ):
        assert registry.lookup(known) is registry[known]
        with pytest.raises(UsageError, match=rf"^unknown {noun} 'nope' \(valid: .*{known}"):
            registry.lookup("nope")
    assert "tiny-test" not in REGISTRY.names() and REGISTRY.lookup("tiny-test")


def test_plugins_load_from_udml_plugins_and_a_broken_one_is_one_line(tmp_path):
    from conftest import run_udml, write_image

    write_image(tmp_path / "a.png", (200, 30, 30))
    # this process loaded the tests' plug-in through UDML_PLUGINS (conftest): its backbone works
    r = run_udml("embed", tmp_path, "--backbone", "tiny-test", "--weights", "imagenet")
    assert r.returncode == 2 and b"tiny-test has no ImageNet weights" in r.stderr
    (tmp_path / "broken_plugin.py").write_text("raise RuntimeError('half-written plug-in')\n")
    env = {"UDML_PLUGINS": "udml_testkit, broken_plugin",
           "PYTHONPATH": os.pathsep.join([str(tmp_path), os.environ["PYTHONPATH"]])}  # fmt: skip
    r = run_udml("train", "--backbone", "nope", env=env)
    err = r.stderr.decode()
    assert r.returncode == 2 and "Traceback" not in err, err
    assert err.strip() == (
        "error: cannot load plug-in broken_plugin (named by UDML_PLUGINS): half-written "
        "plug-in; fix or remove it"
    )


def test_an_installed_package_plugs_in_through_its_entry_point(tmp_path):
    """A package declaring ``[project.entry-points."udml.plugins"]`` (here: its dist-info, as
    pip writes it) adds a backbone that every command lists, with no UDML_PLUGINS."""
    from conftest import run_udml

    site = tmp_path / "site"
    info = site / "udml_fakeplug-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: udml-fakeplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[udml.plugins]\nfake = udml_fakeplug\n")
    (site / "udml_fakeplug.py").write_text(
        "from udml_cli.models.backbones import register\n"
        "@register('fake-bb', 'a backbone from an installed plug-in')\n"
        "def build(weights):\n    raise NotImplementedError\n"
    )
    env = {"UDML_PLUGINS": "", "PYTHONPATH": str(site), "COLUMNS": "200"}
    r = run_udml("eval", "--help", env=env)
    assert r.returncode == 0 and b"fake-bb" in r.stdout, r.stdout.decode()
    r = run_udml("eval", "--help", env={**env, "PYTHONPATH": str(tmp_path)})  # not installed
    assert r.returncode == 0 and b"fake-bb" not in r.stdout
