"""Peak memory of `udml embed` at 10,000 and 100,000 images: rows go to the .npy on disk batch by
batch, so peak RSS should not grow with N (target: 100k within 10 % of 10k). Baseline: the in-memory
path (``udml.embed_folder``, which returns the array) on the same 100,000 images.

Images: 1,000 distinct 32×32 PNGs hard-linked under 100,000 names (decoding cost is real, disk
use is not); ResNet-18 without weights at 32 px (512-d rows: 205 MB for 100k), CPU. Each run is a
fresh process; peak RSS from wait4.
    python benchmarks/embed_memory.py   → results/embed_memory.json
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, Timer

FLAGS = ["--backbone", "resnet18", "--weights", "none", "--image-size", "32", "--device", "cpu"]


def make_folder(root: Path, n: int, distinct: list[Path]) -> Path:
    folder = root / f"n{n}"
    for i in range(n):
        sub = folder / f"{i // 1000:03d}"
        if i % 1000 == 0:
            sub.mkdir(parents=True)
        os.link(distinct[i % len(distinct)], sub / f"{i:06d}.png")
    return folder


def peak_rss_mb(cmd: list[str]) -> tuple[float, float]:
    """(peak RSS in MB, seconds) of one command in a fresh process."""
    with Timer() as t:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err}")
    return usage.ru_maxrss / 1024, t.seconds


def main() -> None:
    import numpy as np
    from PIL import Image

    res = Results("embed_memory")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        distinct = []
        for i in range(1000):
            path = root / "distinct" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
            distinct.append(path)
        small, large = make_folder(root, 10_000, distinct), make_folder(root, 100_000, distinct)
        udml = [sys.executable, "-m", "udml_cli", "embed"]
        rss_small, s_small = peak_rss_mb([*udml, small, "-r", *FLAGS, "-o", root / "s.npy"])
        rss_large, s_large = peak_rss_mb([*udml, large, "-r", *FLAGS, "-o", root / "l.npy"])
        assert np.load(root / "l.npy", mmap_mode="r").shape == (100_000, 512)
        api = (
            "import sys, udml_cli as u; x, p = u.embed_folder(sys.argv[1], backbone='resnet18', "
            "weights='none', image_size=32, device='cpu'); print(x.shape)"
        )
        rss_api, s_api = peak_rss_mb([sys.executable, "-c", api, str(large)])
    # ratio = 10k ÷ 100k: ≥ 0.91 means the 100k peak is within 10 % of the 10k one
    res.add("udml embed peak RSS, 100k vs 10k images", "MB", rss_large, rss_small, target=0.91,
            unit="MB")  # fmt: skip
    res.add("peak RSS at 100k: udml embed vs in-memory udml.embed_folder", "MB", rss_large,
            rss_api, unit="MB")  # fmt: skip
    res.add("udml embed 100k images, seconds", "seconds", s_large, s_api, unit="s")
    res.add("udml embed 10k images, seconds", "seconds", s_small, unit="s")
    res.write()


if __name__ == "__main__":
    main()
