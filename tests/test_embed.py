"""udml embed in a subprocess: binary .npy on stdout, skipped files, errors without output."""

import io

import numpy as np
import pytest
from conftest import make_layout, run_udml, write_image

LITE = ["--backbone", "efficientnet_lite0", "--weights", "imagenet", "--image-size", "32"]


@pytest.fixture
def folder(tmp_path):
    for i in range(5):
        write_image(tmp_path / "imgs" / f"{i}.png", (i * 50, 80, 20), size=20, seed=i)
    write_image(tmp_path / "imgs" / "sub" / "deep.png", (0, 0, 0), size=20)
    return tmp_path / "imgs"


def test_embed_to_stdout_with_offline_lite0(folder, tmp_path):
    proc = run_udml("embed", folder, *LITE, "--paths", tmp_path / "p.txt")
    assert proc.returncode == 0, proc.stderr.decode()
    v = np.load(io.BytesIO(proc.stdout))
    assert v.shape == (5, 1280) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert (tmp_path / "p.txt").read_text().split() == [f"{i}.png" for i in range(5)]
    assert b"embedded 5 images" in proc.stderr
    proc = run_udml("embed", folder, *LITE, "--recursive", "--out", tmp_path / "v.npy")
    assert proc.returncode == 0 and proc.stdout == b""
    assert np.load(tmp_path / "v.npy").shape == (6, 1280)


def test_unreadable_files_are_skipped_or_strict(folder, tmp_path):
    (folder / "3.png").write_bytes(b"not an image at all")
    proc = run_udml(
        "embed", folder, *LITE, "--out", tmp_path / "v.npy", "--paths", tmp_path / "p.txt"
    )
    assert proc.returncode == 0
    assert b"skipped 1 unreadable images" in proc.stderr and b"3.png" in proc.stderr
    assert np.load(tmp_path / "v.npy").shape == (4, 1280)
    assert "3.png" not in (tmp_path / "p.txt").read_text()
    proc = run_udml("embed", folder, *LITE, "--strict", "--out", tmp_path / "s.npy")
    assert proc.returncode == 1 and not (tmp_path / "s.npy").exists()


def test_empty_folder_is_an_error_with_no_output(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    proc = run_udml("embed", tmp_path / "empty", *LITE, "--out", tmp_path / "v.npy")
    assert proc.returncode == 1 and b"no images" in proc.stderr
    assert b"Traceback" not in proc.stderr and not (tmp_path / "v.npy").exists()


def test_embed_with_checkpoint_gives_head_dim(tmp_path, folder, udml_home):
    root = make_layout(tmp_path / "syn")
    run = tmp_path / "run"
    proc = run_udml(
        "train", "--dataset", root, "--out", run, "--backbone", "tiny-test", "--weights", "none",
        "--image-size", "16", "--epochs", "1", "--set", "cluster.num_clusters=6",
        "--set", "train.batch_size=8", "--set", "train.instances=2", "--set", "model.dim=24", "--set", "loss.rot_batch=4",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode()
    proc = run_udml("embed", folder, "--checkpoint", run / "last.pt")
    assert proc.returncode == 0, proc.stderr.decode()
    v = np.load(io.BytesIO(proc.stdout))
    assert v.shape == (5, 24)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)


def test_refuses_binary_to_a_terminal(folder):
    import os
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "udml_cli", "embed", str(folder), *LITE],
            stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=300,
        )  # fmt: skip
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2 and b"refusing to write binary" in proc.stderr


# ---- rows on disk: flat memory for any number of images -----------------------------------------
@pytest.mark.parametrize("longer_header", [False, True])
def test_row_file_keeps_the_readable_rows_in_order(tmp_path, monkeypatch, longer_header):
    from udml_cli import npyfile
    from udml_cli.inference import compact

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(20_000, 7)).astype(np.float32)
    keep = rng.random(20_000) > 0.3
    target = npyfile.RowFile(tmp_path / "v.npy")
    mapped = target.allocate(20_000, 7)
    assert len(mapped) == 20_000 and mapped.shape == (20_000, 7)
    for start in range(0, 20_000, 999):  # batch by batch, as extraction writes them
        mapped[start : start + 999] = rows[start : start + 999]
    front = compact(mapped, keep, chunk=1000)
    assert len(front) == keep.sum()
    if longer_header:  # force the rewrite path: a valid header 64 bytes longer
        import struct

        real = npyfile.npy_header

        def longer(count, dim):
            head = real(count, dim)
            text = head[10:-1] + b" " * 64 + b"\n"
            return head[:8] + struct.pack("<H", len(text)) + text

        monkeypatch.setattr(npyfile, "npy_header", longer)
    del front, mapped
    target.finish(int(keep.sum()))
    np.testing.assert_array_equal(np.load(tmp_path / "v.npy"), rows[keep])  # the reference


def test_one_listing_for_embed_and_index(tmp_path):
    """embed (flat and -r) and index list a folder the same way: sorted, hidden files and
    folders (.thumbnails/, .DS_Store-like files) left out; a plain walk is the reference."""
    from udml_cli.data.layout import image_files
    from udml_cli.index import folder_files

    for rel in ["b.png", "a.jpg", "sub/c.png", "sub/deeper/d.png", ".thumbs/e.png", ".f.png",
                "sub/.g.png", "notes.txt"]:  # fmt: skip
        if rel.endswith((".png", ".jpg")):
            write_image(tmp_path / rel, (10, 20, 30), size=8)
        else:
            (tmp_path / rel).write_text("x")
    expected = sorted(
        p for p in tmp_path.rglob("*")
        if p.suffix in (".png", ".jpg") and not any(part.startswith(".") for part in p.relative_to(tmp_path).parts)
    )  # fmt: skip
    assert image_files(tmp_path, True) == expected
    assert [f[3] for f in folder_files(tmp_path)] == expected
    assert image_files(tmp_path, False) == [tmp_path / "a.jpg", tmp_path / "b.png"]
