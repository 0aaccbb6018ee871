"""Images/s of udml's CPU embedding with the engine's channels-last layout off (the layout
training keeps) and on (what "auto" now picks for commands that only embed), for every
torchvision-style backbone family udml registers, same batches, in one process; the largest
difference between the two embeddings. Writes results/channels_last.json.
    python benchmarks/channels_last.py [--image-size 224] [--batch 32] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results

BACKBONES = ["efficientnet_lite0", "efficientnet_b0", "resnet18", "googlenet", "bvlc_googlenet",
             "mobilenet_v3_large", "convnext_tiny"]  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    import torch

    from udml_cli.api import load_model
    from udml_cli.engine import resolve_engine

    torch.manual_seed(0)
    x = torch.rand(args.batch, 3, args.image_size, args.image_size)
    res = Results("channels_last")
    for name in BACKBONES:
        weights = "imagenet" if name == "efficientnet_lite0" else "none"  # speed: weights aside
        model, cfg = load_model(None, name, weights, args.image_size, "cpu")
        rates, outs = {}, {}
        for inference in (False, True):
            engine = resolve_engine(cfg.engine, inference=inference)
            net = engine.prepare_model(model).eval()
            with torch.inference_mode(), engine.autocast():
                net.embed(engine.to_device(x))  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.repeats):
                    outs[inference] = net.embed(engine.to_device(x)).float()
                rates[inference] = args.repeats * len(x) / (time.perf_counter() - t0)
        diff = float((outs[True] - outs[False]).abs().max())
        case = f"{name} {args.image_size}px batch {args.batch}, CPU"
        res.add(case, "images/s channels-last (baseline: NCHW)", rates[True], rates[False],
                higher_is_better=True)  # fmt: skip
        res.add(case, "max abs difference", diff)
    res.write()


if __name__ == "__main__":
    main()
