"""Run a folder written by ``adlight export`` with ONNX Runtime or OpenVINO: no torch, no Lightning.

``Inferencer("exported/").predict(["a.png", "b.png"])`` returns what ``adlight predict`` does:
``score`` (N), ``prediction`` (at the exported image threshold), and for a localising model
``anomaly_map`` (N x 1 x H x W) and ``defect_mask`` (at the pixel threshold). This package
imports numpy, PIL and the runtime only (a test runs it where importing torch fails).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np

from adlight.errors import ConfigError, DataError
from adlight.inference.images import image_batch

__all__ = ["Inferencer", "MetadataError", "check_batch_size"]


class MetadataError(ConfigError, DataError):
    """A ``metadata.json`` field that is missing or of the wrong type (a config of the export and
    data the runner reads: either ``except`` catches it)."""


def check_batch_size(value, name: str = "batch_size") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise DataError(f"{name} must be an int >= 1, got {value!r}")
    return int(value)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_field(path: Path, name: str, value, ok: bool, expected: str) -> None:
    if not ok:
        raise MetadataError(f"{path}: field {name} must be {expected}, got {value!r}")


def _load_metadata(folder: Path) -> dict:
    path = folder / "metadata.json"
    if not path.is_file():
        raise ConfigError(f"exported folder {folder} has no metadata.json: write it with adlight export")
    try:
        metadata = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise MetadataError(f"{path} is not an adlight export's metadata ({type(error).__name__}: {error})") from None
    _check_field(path, "(top level)", type(metadata).__name__, isinstance(metadata, dict), "a JSON object")
    for name in ("model_file", "format", "model_sha256"):
        value = metadata.get(name)
        _check_field(path, name, value, isinstance(value, str) and bool(value), "a non-empty string")
    _check_field(path, "model_file", metadata["model_file"], Path(metadata["model_file"]).name == metadata["model_file"],
                 "a file name inside the exported folder")
    spec = metadata.get("input")
    _check_field(path, "input", spec, isinstance(spec, dict), "an object")
    _check_field(path, "input.name", spec.get("name"), isinstance(spec.get("name"), str), "a string")
    for name in ("channels", "height", "width"):
        value = spec.get(name)
        _check_field(path, f"input.{name}", value, _is_int(value) and value >= 1, "an int >= 1")
    _check_field(path, "input.channels", spec["channels"], spec["channels"] in (1, 3), "1 or 3")
    outputs = metadata.get("outputs")
    _check_field(path, "outputs", outputs, isinstance(outputs, list) and bool(outputs)
                 and all(o in OUTPUT_NAMES for o in outputs) and "score" in outputs,
                 f"a list of {', '.join(OUTPUT_NAMES)} holding score")
    for kind in ("image_threshold", "pixel_threshold"):
        entry = metadata.get(kind, {})
        _check_field(path, kind, entry, isinstance(entry, dict), 'an object {"value": number or null}')
        value = entry.get("value")
        _check_field(path, f"{kind}.value", value, value is None or (_is_number(value) and math.isfinite(value)),
                     "a finite number or null")
    return metadata


class _OnnxRuntime:
    def __init__(self, model_path: Path, threads: int | None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ConfigError("running an onnx export needs onnxruntime: pip install 'adlight[export]'") from None
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self.inputs = [(i.name, i.shape) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.outputs, self.session.run(None, {self.inputs[0][0]: batch}), strict=True))


class _OpenVinoRuntime:
    def __init__(self, model_path: Path, threads: int | None) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise ConfigError("running an openvino export needs openvino: pip install 'adlight[openvino]'") from None
        core = ov.Core()
        config = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        # f32 inference: the default bf16/f16 hints on some CPUs would break score parity
        config["INFERENCE_PRECISION_HINT"] = "f32"
        self.compiled = core.compile_model(core.read_model(str(model_path)), "CPU", config)
        self.inputs = [(i.get_any_name(), list(i.get_partial_shape().to_string().strip("[]").split(",")))
                       for i in self.compiled.inputs]
        # a tensor may carry several names (the ONNX output's and its producer's): take ours
        self.outputs = [next((n for n in sorted(o.get_names()) if n in OUTPUT_NAMES), o.get_any_name())
                        for o in self.compiled.outputs]

    def __call__(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        result = self.compiled(batch)
        return {name: result[output] for name, output in zip(self.outputs, self.compiled.outputs, strict=True)}


#: the outputs an exported graph may have (a scorer's ``outputs``, adlight/nets/scorers)
OUTPUT_NAMES = ("score", "anomaly_map")
RUNTIMES = {"onnx": _OnnxRuntime, "openvino": _OpenVinoRuntime}


class Inferencer:
    """An exported folder, ready to score images.

    Args:
        path: the folder ``adlight export`` wrote (``metadata.json`` and the model file).
        threads: intra-op threads of the runtime (``None``: the runtime's default).
    """

    def __init__(self, path: str | os.PathLike, threads: int | None = None) -> None:
        self.folder = Path(path)
        if not self.folder.is_dir():
            raise ConfigError(f"exported folder {self.folder} does not exist or is not a directory")
        self.metadata = metadata = _load_metadata(self.folder)
        fmt = metadata.get("format")
        if fmt not in RUNTIMES:
            raise ConfigError(f"{self.folder} holds a {fmt} export; the Inferencer runs onnx and openvino "
                              "(a torchscript export loads with torch.jit.load)")
        model_path = self.folder / metadata["model_file"]
        if not model_path.is_file():
            raise ConfigError(f"metadata.json of {self.folder} names {metadata['model_file']}, which is missing")
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        if digest != metadata.get("model_sha256"):
            raise ConfigError(f"metadata.json of {self.folder} does not match {model_path.name} (its sha256 "
                              "differs: the model file was replaced or edited); export the model again")
        self.runtime = RUNTIMES[fmt](model_path, threads)
        self._check_signature()
        spec = metadata["input"]
        self.channels, self.height, self.width = spec["channels"], spec["height"], spec["width"]
        self.image_threshold = metadata.get("image_threshold", {}).get("value")
        self.pixel_threshold = metadata.get("pixel_threshold", {}).get("value")

    def _check_signature(self) -> None:
        expected_in, expected_out = self.metadata["input"]["name"], list(self.metadata["outputs"])
        names_in = [name for name, _ in self.runtime.inputs]
        if names_in != [expected_in] or sorted(self.runtime.outputs) != sorted(expected_out):
            raise ConfigError(
                f"metadata.json of {self.folder} does not match its model file: metadata says input "
                f"{expected_in!r}, outputs {expected_out}; the model has inputs {names_in}, outputs "
                f"{self.runtime.outputs}")
        shape = [str(v).strip() for v in self.runtime.inputs[0][1]][1:]
        spec = self.metadata["input"]
        if shape != [str(spec["channels"]), str(spec["height"]), str(spec["width"])]:
            raise ConfigError(f"metadata.json of {self.folder} says C x H x W = {spec['channels']} x "
                              f"{spec['height']} x {spec['width']}; the model file takes {shape}")

    @property
    def outputs(self) -> list[str]:
        return list(self.metadata["outputs"])

    def predict(self, images, batch_size: int = 32) -> dict[str, np.ndarray]:
        """Paths or arrays -> ``score``, ``prediction`` and, when it localises, maps and masks.

        Arrays: uint8 as they are; uint16 / 65535; other integer dtypes when every value is in
        [0, 255]; float when finite and in [0, 1]. Anything else (a float image in 0-255, NaN,
        values out of range, an empty batch) and ``batch_size`` < 1 raise a one-line
        :class:`DataError` naming the dtype, the range or the argument: never a score of
        wrapped or clipped pixels.
        """
        batch_size = check_batch_size(batch_size)
        batch = image_batch(images, self.channels, self.height, self.width)
        parts = [self.runtime(batch[i:i + batch_size]) for i in range(0, len(batch), batch_size)]
        result = {name: np.concatenate([p[name] for p in parts]) for name in self.outputs}
        if self.image_threshold is not None:
            result["prediction"] = (result["score"] >= self.image_threshold).astype(np.int64)
        if "anomaly_map" in result and self.pixel_threshold is not None:
            result["defect_mask"] = (result["anomaly_map"] >= self.pixel_threshold).astype(np.uint8)
        return result
