"""Images/s of an exported embedding: onnxruntime on the `udml export` file against torch on the
same network as udml runs it (its engine: channels-last on the CPU), same batches, in one
process. Writes results/export.json.
    python benchmarks/export.py [--backbone efficientnet_lite0] [--image-size 224] [--batch 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results


def rate(run, x, repeats: int) -> float:
    run(x)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        run(x)
    return repeats * len(x) / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    import onnxruntime as ort
    import torch

    from udml_cli.api import load_model
    from udml_cli.export import export

    model, cfg = load_model(None, args.backbone, "imagenet", args.image_size, "cpu")
    model.eval()
    x = torch.rand(args.batch, 3, args.image_size, args.image_size)
    res = Results("export")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.onnx"
        export(model, cfg, path, "onnx", args.backbone)
        session = ort.InferenceSession(str(path))

        from udml_cli.engine import resolve_engine

        engine = resolve_engine(
            cfg.engine, inference=True
        )  # as udml embeds: device, layout, autocast
        fast = engine.prepare_model(model).eval()

        def with_torch(batch):
            with torch.no_grad(), engine.autocast():
                return fast.embed(engine.to_device(batch)).float().cpu()

        ours = rate(lambda b: session.run(None, {"images": b.numpy()}), x, args.repeats)
        base = rate(with_torch, x, args.repeats)
        diff = float(np.abs(session.run(None, {"images": x.numpy()})[0]
                            - with_torch(x).numpy()).max())  # fmt: skip
    case = f"{args.backbone} {args.image_size}px batch {args.batch}"
    res.add(case, "onnxruntime images/s (baseline: torch)", ours, base, higher_is_better=True)
    res.add(case, "max abs difference", diff)
    res.write()
    print(f"{case}: onnxruntime {ours:.1f} img/s, torch {base:.1f} img/s, max |diff| {diff:.1e}")


if __name__ == "__main__":
    main()
