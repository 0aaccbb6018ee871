"""Converters on tiny fake archives in the official formats, and on the real offline sources."""

import gzip
import json
import struct

import numpy as np
import pytest
from conftest import real_data_available, write_image

from udml_cli.data.layout import read_split
from udml_cli.data.registry import resolve_dataset


def _labels(root, split):
    return {int(line.split()[1]) for line in (root / f"{split}.txt").read_text().splitlines()}


def test_cub_official_split(cli, tmp_path):
    src = tmp_path / "CUB_200_2011"
    images, labels, classes = [], [], []
    image_id = 0
    for c in range(1, 201):
        name = f"{c:03d}.Bird_{c}"
        classes.append(f"{c} {name}")
        for j in range(2):
            image_id += 1
            rel = f"{name}/Bird_{c}_{j}.jpg"
            write_image(src / "images" / rel, (c, 100, 50), size=8)
            images.append(f"{image_id} {rel}")
            labels.append(f"{image_id} {c}")
    for fname, rows in (("images", images), ("image_class_labels", labels), ("classes", classes)):
        (src / f"{fname}.txt").write_text("\n".join(rows) + "\n")
    r = cli("dataset", "prepare", "cub", "--source", tmp_path, "--out", tmp_path / "out")
    assert r.code == 0, r.err
    out = tmp_path / "out"
    assert _labels(out, "train") == set(range(0, 100))
    assert _labels(out, "test") == set(range(100, 200))
    assert len(read_split(resolve_dataset(str(out)), "train")) == 200
    # registered as "cub": the name now finds it without a data root
    assert cli("dataset", "check", "cub", "--deep").code == 0
    first = (out / "train.txt").read_text().splitlines()[0]
    assert first == "train/001.Bird_1/Bird_1_0.jpg 0"  # the official line format


def test_cars_official_split(cli, tmp_path):
    from scipy.io import savemat

    src = tmp_path / "cars"
    rows = []
    for c in range(1, 197):
        for j in range(2):
            rel = f"car_ims/{c:03d}{j:03d}.jpg"
            write_image(src / rel, (c, 10, 200), size=8)
            rows.append((rel, c, j % 2))
    dtype = [("relative_im_path", "O"), ("class", "O"), ("test", "O")]
    annos = np.array([tuple(r) for r in rows], dtype=dtype)
    savemat(src / "cars_annos.mat", {"annotations": annos.reshape(1, -1)})
    r = cli("dataset", "prepare", "cars", "--source", src, "--out", tmp_path / "out", "--name", "c")
    assert r.code == 0, r.err
    assert _labels(tmp_path / "out", "train") == set(range(0, 98))
    assert _labels(tmp_path / "out", "test") == set(range(98, 196))
    assert len(read_split(resolve_dataset("c"), "test")) == 98 * 2


def test_sop_official_split(cli, tmp_path):
    src = tmp_path / "Stanford_Online_Products"
    split_classes = {"train": range(1, 11), "test": range(11, 21)}
    image_id = 0
    for split, classes in split_classes.items():
        rows = ["image_id class_id super_class_id path"]
        for c in classes:
            for j in range(3):
                image_id += 1
                rel = f"bicycle_final/{c}_{j}.JPG"
                write_image(src / rel, (c * 10, 0, 0), size=8)
                rows.append(f"{image_id} {c} 1 {rel}")
        (src / f"Ebay_{split}.txt").write_text("\n".join(rows) + "\n")
    r = cli("dataset", "prepare", "sop", "--source", src, "--out", tmp_path / "out", "--name", "s")
    assert r.code == 0, r.err
    assert _labels(tmp_path / "out", "train") == set(range(0, 10))
    assert _labels(tmp_path / "out", "test") == set(range(10, 20))


def _write_idx(path, arr):
    header = struct.pack(">HBB", 0, 8, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_on_fake_idx(cli, tmp_path):
    src = tmp_path / "fm"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 30)):
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    r = cli("dataset", "prepare", "fashion-mnist", "--source", src, "--out", tmp_path / "o")
    assert r.code == 0, r.err
    assert _labels(tmp_path / "o", "train") == {0, 1, 2, 3, 4}
    assert _labels(tmp_path / "o", "test") == {5, 6, 7, 8, 9}
    assert len((tmp_path / "o" / "train.txt").read_text().splitlines()) == 20
    assert len((tmp_path / "o" / "test.txt").read_text().splitlines()) == 15


def test_folder_converter_and_refusals(cli, tmp_path):
    src = tmp_path / "tree"
    for c in range(5):
        for j in range(2):
            write_image(src / f"class {c}" / f"{j}.png", (c * 40, 0, 0), size=8)
    out = tmp_path / "out"
    r = cli("dataset", "prepare", "folder", "--source", src, "--out", out, "--name", "t")
    assert r.code == 0, r.err
    assert _labels(out, "train") == {0, 1, 2} and _labels(out, "test") == {3, 4}
    # replacing an existing output folder needs confirmation
    r = cli("dataset", "prepare", "folder", "--source", src, "--out", out, "--name", "t")
    assert r.code == 2 and "already exists" in r.err
    r = cli("dataset", "prepare", "folder", "--source", src, "--out", out, "--name", "t",
            "--split-ratio", "0.2", "--yes")  # fmt: skip
    assert r.code == 0 and _labels(out, "train") == {0}


def test_failed_conversion_leaves_nothing(cli, tmp_path):
    src = tmp_path / "CUB_200_2011"
    src.mkdir()
    (src / "images.txt").write_text("1 a/b.jpg\n")
    (src / "image_class_labels.txt").write_text("1 1\n")
    (src / "classes.txt").write_text("1 a\n")
    out = tmp_path / "out"
    r = cli("dataset", "prepare", "cub", "--source", src, "--out", out)
    assert r.code == 1 and "source image missing" in r.err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    assert json.loads(cli("dataset", "list", "--json").out)["datasets"] == {}


def test_unknown_kind(cli, tmp_path):
    r = cli("dataset", "prepare", "imagenet", "--out", tmp_path / "x")
    assert r.code == 2 and "fashion-mnist" in r.err


realdata = pytest.mark.skipif(
    not real_data_available(), reason="Debian dataset-fashion-mnist missing"
)


@realdata
@pytest.mark.realdata
def test_fashion_mnist_real(cli, tmp_path):
    out = tmp_path / "fm"
    r = cli("dataset", "prepare", "fashion-mnist", "--out", out)
    assert r.code == 0, r.err
    r = cli("dataset", "check", out, "--deep", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["splits"]["train"]["classes"] == 5 and report["splits"]["test"]["classes"] == 5
    assert (
        report["splits"]["train"]["images"] == 30000 and report["splits"]["test"]["images"] == 5000
    )
    assert _labels(out, "train").isdisjoint(_labels(out, "test"))


@realdata
@pytest.mark.realdata
def test_emoji_real(cli, tmp_path):
    out = tmp_path / "emoji"
    r = cli("dataset", "prepare", "emoji", "--out", out)
    assert r.code == 0, r.err
    r = cli("dataset", "check", out, "--deep", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    classes = report["splits"]["train"]["classes"] + report["splits"]["test"]["classes"]
    assert classes >= 1000
    for split in ("train", "test"):
        s = report["splits"][split]
        assert s["min_per_class"] == s["max_per_class"] == 3
    assert (out / "subgroups.txt").is_file()


def test_icons_from_a_stand_in_theme_tree(cli, tmp_path):
    """Three themes in their real folder shapes; ``b`` is an alias of ``a`` in one theme (the
    same file): dropped, so no two classes share a drawing; ``lonely`` is drawn by two themes."""
    from conftest import write_image

    root = tmp_path / "icons"
    shapes = {"adwaita": "Adwaita/48x48/{ctx}", "mate": "mate/48x48/{ctx}",
              "elementary": "elementary-xfce/{ctx}/48"}  # fmt: skip
    names = ["a", "b", "c", "d", "e", "f", "g", "lonely"]
    for t, (theme, shape) in enumerate(shapes.items()):
        folder = root / shape.format(ctx="apps")
        for i, name in enumerate(names):
            if name == "lonely" and theme == "mate":
                continue
            if name == "b" and theme == "mate":
                (folder / "b.png").symlink_to(folder / "a.png")
                continue
            write_image(folder / f"{name}.png", (30 * i, 200 - 20 * t, 90), size=48, seed=i + t)
        write_image(folder / "x-symbolic.png", (0, 0, 0), size=48)  # symbolic: left out
    out = tmp_path / "prepared"
    r = cli("dataset", "prepare", "icons", "--source", root, "--out", out)
    assert r.code == 0, r.err
    rows = [
        line.split()
        for s in ("train", "test")
        for line in (out / f"{s}.txt").read_text().splitlines()
    ]
    classes = {row[0].split("/")[1].split("_", 1)[1] for row in rows}
    assert classes == {"a", "c", "d", "e", "f", "g"}  # b aliases a; lonely has 2 themes
    assert len(rows) == 6 * 3 and all(len(row) == 3 for row in rows)
    train = {row[1] for row in rows if row[0].startswith("train/")}
    test = {row[1] for row in rows if row[0].startswith("test/")}
    assert train and test and not train & test  # class-disjoint halves
    assert (out / "contexts.txt").read_text() == "apps\n"
    (tmp_path / "nothing").mkdir()
    r = cli("dataset", "prepare", "icons", "--source", tmp_path / "nothing", "--out", tmp_path / "o2",
            "--name", "other")  # fmt: skip
    assert r.code != 0 and "apt-get install" in r.err
