from pathlib import Path

import pytest
import tomllib

from udml_cli.config import Config, load_config
from udml_cli.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parents[1] / "templates"


def test_defaults_are_the_official_cub_recipe():
    c = Config()
    assert (c.loss.alpha, c.loss.beta, c.loss.base, c.loss.margin) == (40, 2, 0.5, 0.1)
    assert (c.loss.rot_weight, c.loss.rot_batch) == (0.1, 16)
    assert (c.train.batch_size, c.train.instances, c.train.epochs) == (80, 5, 600)
    assert (c.train.lr, c.train.weight_decay, c.train.up_step, c.train.save_step) == (
        1e-5, 5e-4, 5, 50,
    )  # fmt: skip
    # k: one per 50 images unless given (the paper templates give 100 for CUB)
    assert (c.cluster.num_clusters, c.model.backbone, c.model.dim) == ("auto", "googlenet", 512)
    assert (c.data.image_size, c.data.resize, c.data.crop_scale_min) == (227, 256, 0.16)


@pytest.mark.parametrize(
    "name", ["cub", "cars", "sop", "demo", "demo-fashion-mnist", "photos", "drawings"]
)
def test_templates_load(name):
    path = TEMPLATES / f"{name}.toml"
    cfg = load_config(path).model_dump(mode="json")
    for section, values in tomllib.loads(path.read_text()).items():
        for key, value in values.items():  # every value in the file is the one the run gets
            assert cfg[section][key] == value, (name, section, key)
    if name == "sop":
        assert cfg["cluster"]["num_clusters"] == 10000
        assert cfg["eval"]["recall_at"] == [1, 10, 100, 1000]


def test_priority_toml_flags_set(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nlr = 0.1\nepochs = 3\n")
    cfg = load_config(f, ["train.lr=0.3"], {"train.lr": 0.2, "train.epochs": 7})
    assert cfg.train.lr == 0.3 and cfg.train.epochs == 7


def test_show_prints_valid_toml_with_override(cli):
    r = cli("config", "show", "--config", TEMPLATES / "cub.toml", "--set", "train.lr=0.001")
    assert r.code == 0
    assert tomllib.loads(r.out)["train"]["lr"] == 0.001


@pytest.mark.parametrize(
    "override, needle",
    [("train.lrr=1", "train.lrr: unknown key"), ("train.lr=abc", "train.lr:"),
     ("nosection=1", "section.key"), ("cluster.num_clusters=0", "cluster.num_clusters")],
)  # fmt: skip
def test_bad_overrides_fail_with_one_line(cli, override, needle):
    r = cli("config", "show", "--set", override)
    assert r.code == 2
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.err
    assert r.out == ""


def test_batch_must_be_multiple_of_instances():
    with pytest.raises(ConfigError, match="multiple"):
        load_config(overrides=["train.batch_size=81"])


def test_bad_toml_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[train\nlr=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(f)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")


def test_cross_section_checks_need_no_data():
    import pytest

    from udml_cli.config import load_config
    from udml_cli.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_config(None, ["loss.rot_batch=100"])
    assert str(e.value) == "--set: loss.rot_batch (100) exceeds train.batch_size (80)"
    with pytest.raises(ConfigError, match="both 0: nothing to train"):
        load_config(None, ["loss.rot_weight=0", "loss.metric_weight=0"])
    assert load_config(None, ["loss.rot_batch=8", "train.batch_size=8", "train.instances=2"])
