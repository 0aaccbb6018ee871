"""A trained embedding as one file other runtimes load: ONNX (onnxruntime, TensorRT, OpenVINO …)
or TorchScript (libtorch, no Python). One graph: RGB in [0, 1] (N, 3, S, S) → the ImageNet
normalisation → backbone → pooling → head → L2 normalisation → (N, dim), any batch size. The
image pipeline a caller must apply (shorter side to ``resize``, centre crop ``image_size``) is
written into the file's metadata (ONNX ``metadata_props``; TorchScript ``udml.json``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
from torch import nn

FORMATS = ("onnx", "torchscript")


class Embedder(nn.Module):
    """What is exported: the network's ``embed`` as ``forward``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.embed(images)


def metadata(cfg, source: str, dim: int) -> dict[str, str]:
    import udml_cli

    return {
        "udml_version": getattr(udml_cli, "__version__", "0"), "source": source,
        "backbone": cfg.model.backbone, "dim": str(dim),
        "image_size": str(cfg.data.image_size), "resize": str(cfg.data.resize),
        "input": "float32 RGB in [0, 1], shape (N, 3, image_size, image_size): shorter side "
                 "resized to `resize` (bilinear), centre crop `image_size`",
        "output": "float32 (N, dim), L2-normalised: cosine similarity = dot product",
    }  # fmt: skip


def export(model, cfg, out: Path, fmt: str, source: str) -> dict[str, str]:
    """Write ``model`` (an ``EmbeddingNet``, eval mode) to ``out`` in ``fmt``; the metadata."""
    from udml_cli.errors import UsageError
    from udml_cli.fileio import atomic_path

    net = Embedder(model.cpu().eval()).eval()
    size = cfg.data.image_size
    example = torch.rand(2, 3, size, size)
    meta = metadata(cfg, source, int(net(example).shape[1]))
    if fmt == "torchscript":
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(net, example)
        with atomic_path(out) as tmp:
            torch.jit.save(traced, str(tmp), _extra_files={"udml.json": json.dumps(meta)})
        return meta
    try:
        import onnx
    except ImportError:
        raise UsageError(
            "--format onnx needs the onnx package: pip install 'udml[export]'"
        ) from None
    with atomic_path(out) as tmp:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            try:
                torch.onnx.export(
                    net, (example,), str(tmp), dynamo=False, opset_version=17,
                    input_names=["images"], output_names=["embeddings"],
                    dynamic_axes={"images": {0: "batch"}, "embeddings": {0: "batch"}},
                )  # fmt: skip
            except torch.onnx.errors.OnnxExporterError as e:
                # an operator the exporter lacks (model.grid's regions are matrix products
                # for this reason: descriptor.regions)
                why = str(e).split("[Caused by")[0].strip().splitlines()[0][:160]
                raise UsageError(
                    f"this network does not export to ONNX ({why}); --format torchscript does"
                ) from None
        graph = onnx.load(str(tmp))
        for key, value in meta.items():
            graph.metadata_props.add(key=key, value=value)
        onnx.checker.check_model(graph)
        onnx.save(graph, str(tmp))
    return meta
