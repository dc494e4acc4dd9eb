"""Benchmark: batch-1 latency of the SimpleNet and STPM scorers exported to ONNX (ONNX Runtime).

    python benchmarks/new_families_latency.py [--size 256] [--repeats 30] [--threads 2] [--config PATH ...]

Builds each family's network from its shipped config (``feature_discriminator/mvtec_simplenet``,
``student_teacher/mvtec_stpm``, the backbones' ``input_size`` set to ``--size``; latency does not
depend on the trained weights, so the learnt parts keep their initial values), wraps the scorer as
``adlight/export/graphs.py`` does (uint8 in, / 255 inside), exports it with ``torch.onnx.export``,
checks ONNX Runtime against torch (largest difference relative to the largest value) and prints
the median latency per image at batch 1 over ``--repeats`` runs after 3 warm-up runs. The
families' runs are interleaved (one run of each in turn), so a change of the machine's load
touches every row alike; ``--config`` adds a config (e.g. a variant's copy) as another row.
"""

from __future__ import annotations

import argparse
import importlib
import platform
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adlight.cli.config_files import load_config

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"SimpleNet (feature discriminator)": REPO / "configs/feature_discriminator/mvtec_simplenet.yaml",
           "STPM (student-teacher)": REPO / "configs/student_teacher/mvtec_stpm.yaml"}


class Uint8Graph(torch.nn.Module):
    def __init__(self, scorer: torch.nn.Module) -> None:
        super().__init__()
        self.scorer = scorer

    def forward(self, images):
        return self.scorer(images.float() / 255.0)


def build(node: Any, size: int) -> Any:
    """A config's ``class_path`` / ``init_args`` tree built bottom-up, every ``input_size`` = size."""
    if isinstance(node, list):
        return [build(item, size) for item in node]
    if not isinstance(node, dict):
        return node
    if "class_path" not in node:
        return {key: build(value, size) for key, value in node.items()}
    module, _, name = node["class_path"].rpartition(".")
    arguments = {key: build(value, size) for key, value in (node.get("init_args") or {}).items()}
    if "input_size" in arguments:
        arguments["input_size"] = size
    return getattr(importlib.import_module(module), name)(**arguments)


def networks(size: int, configs: dict[str, Path]) -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build(load_config(path)["model"]["init_args"]["network"], size).eval()
            for name, path in configs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--config", type=Path, action="append", default=[],
                        help="another config with a model.init_args.network to time (repeatable)")
    args = parser.parse_args()
    configs = {**CONFIGS, **{str(path): path for path in args.config}}
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    image = (torch.rand(1, 3, args.size, args.size) * 255).to(torch.uint8)
    sessions, errors = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        for number, (name, network) in enumerate(networks(args.size, configs).items()):
            path = Path(folder) / f"model{number}.onnx"
            graph = Uint8Graph(network).eval()
            torch.onnx.export(graph, (image,), str(path), input_names=["images"],
                              output_names=list(network.outputs), dynamic_axes={"images": {0: "n"}},
                              opset_version=17, dynamo=False)
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            with torch.no_grad():
                expected = graph(image)
            got = session.run(None, {"images": image.numpy()})
            errors[name] = max(float(np.abs(g - e.numpy()).max() / max(float(e.abs().max()), 1e-12))
                               for g, e in zip(got, expected, strict=True))
            for _ in range(3):
                session.run(None, {"images": image.numpy()})
            sessions[name] = session
        times: dict[str, list[float]] = {name: [] for name in sessions}
        for _ in range(args.repeats):
            for name, session in sessions.items():
                start = time.perf_counter()
                session.run(None, {"images": image.numpy()})
                times[name].append(time.perf_counter() - start)
    rows = [(name, statistics.median(times[name]) * 1000, errors[name]) for name in sessions]
    print(f"{date.today()}, {platform.machine()}, {args.threads} ONNX Runtime threads, {args.size} px, batch 1\n")
    print("| family | median ms / image | max relative difference vs torch |")
    print("|---|---|---|")
    for name, ms, error in rows:
        print(f"| {name} | {ms:.1f} | {error:.1e} |")
    print(f"\n    python {' '.join(sys.argv)}")


if __name__ == "__main__":
    main()
