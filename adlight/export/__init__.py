"""Export a fitted model to ONNX, OpenVINO or TorchScript, with a ``metadata.json``.

:func:`export_model` writes a folder that :class:`adlight.inference.Inferencer` runs without
torch: the model file (8-bit images in, ``score`` and maybe ``anomaly_map`` out, scaling and
post-processing inside) and what a user needs beside it (see ``docs/export.md``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

import adlight
from adlight.checks import image_shape
from adlight.export.graphs import scoring_graph, threshold_entry
from adlight.export.writers import FORMATS, INPUT_NAME, MODEL_FILES, OPSET, WRITERS, check_format

__all__ = ["FORMATS", "export_model", "file_sha256", "scoring_graph"]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_model(model, fmt: str, out: str | Path, image_size: int | tuple[int, int], channels: int,
                 class_names: list[str] | None = None, checkpoint: str | None = None,
                 bank_chunk: int = 4096) -> Path:
    """Write ``out/<model file>`` and ``out/metadata.json``; returns the metadata's path."""
    fmt = check_format(fmt)
    graph = scoring_graph(model, bank_chunk)
    facts = model.export_facts()  # the model's class and representation: the family says them
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    height, width = image_shape(image_size)
    example = torch.randint(0, 256, (2, channels, height, width), dtype=torch.uint8)
    model_path = out / MODEL_FILES[fmt]
    with torch.no_grad():
        WRITERS[fmt](graph, example, model_path)
    metadata = {
        "adlight_version": adlight.__version__,
        "torch_version": torch.__version__,
        "format": fmt,
        "opset": OPSET if fmt != "torchscript" else None,
        "model_file": model_path.name,
        "model_sha256": file_sha256(model_path),
        "model_class": facts["model_class"],
        "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NCHW", "channels": channels,
                  "height": height, "width": width},
        "normalisation": "inside the graph: pixels / 255, then the model's own (network input "
                         "range, backbone mean and std)",
        "outputs": list(graph.outputs),
        "image_threshold": threshold_entry(model, "image"),
        "pixel_threshold": threshold_entry(model, "pixel") if "anomaly_map" in graph.outputs
        else {"value": None, "source": "none"},
        "class_names": list(class_names or []),
        "representation": facts["representation"],
        "checkpoint": checkpoint,
    }
    path = out / "metadata.json"
    path.write_text(json.dumps(metadata, indent=2) + "\n")
    return path
