"""``adlight predict --exported DIR --data.predict_dir IMAGES [--out DIR]``: score a folder
with an exported model and write ``scores.csv`` and map / mask PNGs as ``adlight predict`` does.

numpy, PIL and the runtime only; also runs as ``python -m adlight.inference``.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from adlight.errors import ConfigError, DataError
from adlight.inference import Inferencer, check_batch_size
from adlight.inference.images import list_images, read_image, to_uint8
from adlight.prediction_files import start_scores_csv, unique_path, write_prediction_rows

#: arguments of a checkpoint run, which an exported model does not take (it holds its model)
CHECKPOINT_ARGUMENTS = ("--ckpt_path", "--config", "--model", "--trainer", "--data.class_path", "--seed_everything")


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one :class:`ConfigError` line, not a usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def _parse(argv: list[str]) -> argparse.Namespace:
    mixed = [a.split("=", 1)[0] for a in argv
             if a.split("=", 1)[0].startswith(CHECKPOINT_ARGUMENTS) and a.startswith("--")]
    if mixed:
        raise ConfigError(f"--exported runs the exported model alone and takes no {', '.join(dict.fromkeys(mixed))}: "
                          "drop them, or drop --exported to predict from a checkpoint")
    parser = OneLineParser(prog="adlight predict --exported", description=__doc__.splitlines()[0])
    parser.add_argument("--exported", required=True, help="the folder adlight export wrote")
    parser.add_argument("--data.predict_dir", dest="predict_dir", required=True, help="images to score")
    parser.add_argument("--out", default=None, help="where predictions/ goes (default: the exported folder)")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--prediction_writer.map_max", dest="map_max", type=float, default=None,
                        help="map PNG scale (default: twice the pixel threshold)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads")
    options = parser.parse_args(argv)
    check_batch_size(options.batch_size, "--batch_size")
    if options.threads is not None and options.threads < 1:
        raise ConfigError(f"--threads must be an int >= 1, got {options.threads}")
    return options


def main(argv: list[str]) -> Path:
    options = _parse(argv)
    inferencer = Inferencer(options.exported, threads=options.threads)
    paths = list_images(options.predict_dir)
    directory = unique_path(Path(options.out or options.exported) / "predictions")
    csv_path = start_scores_csv(directory)
    size = (inferencer.height, inferencer.width)
    for start in range(0, len(paths), max(1, options.batch_size)):
        readable, arrays, unreadable = [], [], []
        for path in paths[start:start + options.batch_size]:
            try:
                arrays.append(to_uint8(read_image(path, inferencer.channels), *size))
                readable.append(str(path))
            except DataError as error:
                warnings.warn(f"{error}; it is not scored and is listed in scores.csv with its error",
                              UserWarning, stacklevel=2)
                unreadable.append({"path": str(path), "error": str(error)})
        prediction = {"path": readable, "pixel_threshold": inferencer.pixel_threshold}
        if arrays:
            prediction.update(inferencer.predict(np.stack(arrays), options.batch_size))
        write_prediction_rows(csv_path, prediction, unreadable, options.map_max)
    print(f"adlight predict: wrote {csv_path}")
    return csv_path
