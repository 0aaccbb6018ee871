import json

from conftest import make_layout


def test_clean_layout_passes(cli, layout):
    r = cli("dataset", "check", layout, "--deep", "--json")
    assert r.code == 0, r.err
    report = json.loads(r.out)
    assert report["ok"] and report["errors"] == 0 and report["warnings"] == 0
    assert report["splits"]["train"] == {
        "images": 48, "classes": 6, "min_per_class": 8, "median_per_class": 8, "max_per_class": 8,
    }  # fmt: skip
    assert report["splits"]["test"]["classes"] == 4


def test_folder_layout_passes(cli, tmp_path):
    root = make_layout(tmp_path / "f", layout="folder")
    r = cli("dataset", "check", root, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["layout"] == "folder"
    assert json.loads(r.out)["splits"]["test"]["images"] == 32


def test_broken_layout_names_every_problem(cli, layout):
    jpg = layout / "train" / "c00" / "broken.jpg"
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 10, 10)).save(jpg, quality=95)
    jpg.write_bytes(jpg.read_bytes()[: len(jpg.read_bytes()) // 2])  # truncated JPEG
    lines = (layout / "train.txt").read_text().splitlines()
    lines[3] = "train/c00/missing.png 0"
    lines += [
        "foo.jpg notanint",
        "../../etc/passwd 3",
        lines[0],
        "train/c00/broken.jpg 0",
        "just-a-path",
    ]
    (layout / "train.txt").write_text("\n".join(lines) + "\n")
    r = cli("dataset", "check", layout, "--deep")
    assert r.code == 1
    assert "Traceback" not in r.err
    assert "train.txt:4: missing file 'train/c00/missing.png'" in r.err
    assert "train.txt:49: label 'notanint' is not an integer" in r.err
    assert "train.txt:50: path '../../etc/passwd' escapes the dataset root" in r.err
    assert "train.txt:51: duplicate entry" in r.err
    assert "train.txt:53: malformed line" in r.err
    assert "train/c00/broken.jpg: cannot decode image" in r.err


def test_absolute_path_outside_root_and_overlap_warning(cli, layout):
    with open(layout / "test.txt", "a") as fh:
        fh.write("/etc/hostname 7\n")
        fh.write("train/c00/0.png 0\n")  # a training class in the test split
    r = cli("dataset", "check", layout, "--json")
    report = json.loads(r.out)
    texts = [p["text"] for p in report["problems"]]
    assert any("'/etc/hostname' escapes" in t for t in texts)
    assert any(
        p["severity"] == "warning" and "both splits" in p["text"] for p in report["problems"]
    )
    assert r.code == 1


def test_empty_split_and_missing_file(cli, layout):
    (layout / "test.txt").write_text("\n")
    (layout / "train.txt").unlink()
    r = cli("dataset", "check", layout)
    assert r.code == 1
    assert "test.txt: split is empty" in r.err
    assert "train.txt: file missing" in r.err
