"""Writers of a :class:`~adlight.export.graphs.ScoringGraph` to ONNX, OpenVINO IR and TorchScript.

Every format is traced from the graph with one example batch (torch.onnx's TorchScript-based
exporter, ``dynamo=False``): the backbones tap their stages with forward hooks that stop the
pass early, which tracing records as the ops that ran, while torch.export cannot follow them.
The batch dimension stays dynamic; height, width and channels are those of the model.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import torch

from adlight.errors import ConfigError

FORMATS = ("onnx", "openvino", "torchscript")
#: the file each format writes into the export folder (OpenVINO adds ``model.bin`` beside it)
MODEL_FILES = {"onnx": "model.onnx", "openvino": "model.xml", "torchscript": "model.pt"}
OPSET = 17
INPUT_NAME = "images"


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return fmt


def write_onnx(graph, example: torch.Tensor, path: Path) -> None:
    try:
        import onnx  # noqa: F401  (torch.onnx needs it; say which extra when it is missing)
    except ImportError:
        raise ConfigError("--format onnx needs the onnx package: pip install 'adlight[export]'") from None
    axes = {name: {0: "batch"} for name in (INPUT_NAME, *graph.outputs)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about shapes it records as constants
        try:
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=OPSET,
                              input_names=[INPUT_NAME], output_names=list(graph.outputs),
                              dynamic_axes=axes)
        except torch.onnx.errors.UnsupportedOperatorError as error:
            if "_aa" in str(error):  # antialiased resizing has no ONNX form in this exporter
                raise ConfigError(
                    "the model resizes images with antialiasing inside (a backbone or raw-pixel "
                    "representation whose size differs from data.image_size), which ONNX cannot "
                    "express: fit with data.image_size equal to that size") from None
            raise


def write_openvino(graph, example: torch.Tensor, path: Path) -> None:
    try:
        import openvino as ov
    except ImportError:
        raise ConfigError("--format openvino needs the openvino package: "
                          "pip install 'adlight[openvino]'") from None
    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "model.onnx"
        write_onnx(graph, example, onnx_path)
        # float32 weights: OpenVINO's default fp16 compression would break score parity
        ov.save_model(ov.convert_model(str(onnx_path)), str(path), compress_to_fp16=False)


def write_torchscript(graph, example: torch.Tensor, path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated upstream but still the format
        traced = torch.jit.trace(graph, example, check_trace=False)
    traced.save(str(path))


WRITERS = {"onnx": write_onnx, "openvino": write_openvino, "torchscript": write_torchscript}
