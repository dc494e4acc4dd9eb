"""``adlight export --config FILE.yaml --ckpt_path X.ckpt --format onnx|openvino|torchscript --out DIR``.

The model and datamodule are built from the config as ``adlight fit`` builds them (any
override works), the checkpoint's weights and fitted head are loaded, and
:func:`adlight.export.export_model` writes the folder.
"""

from __future__ import annotations

import argparse
import errno
import shutil
import tempfile
from pathlib import Path

import torch

from adlight.errors import ConfigError, OutputError
from adlight.export import export_model
from adlight.export.writers import FORMATS


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one :class:`ConfigError` line, not a usage block."""

    def error(self, message: str):
        raise ConfigError(f"{self.prog}: {message}")


def check_out(out: Path) -> None:
    """``--out`` is a new or empty folder whose parent can be written: an export never puts its
    model file beside another export's metadata (checked before the model is built)."""
    if out.exists() and not out.is_dir():
        raise OutputError(f"--out {out} is a file, not a folder")
    if out.is_dir() and any(out.iterdir()):
        held = ", ".join(sorted(p.name for p in out.iterdir())[:4])
        raise OutputError(f"--out {out} already holds files ({held}): give a new folder, or remove "
                          "it first; an export is never mixed with or written over another")
    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise OutputError(f"--out {out} cannot be created: {existing} is not a folder")


def write_export(out: Path, write) -> Path:
    """Run ``write(folder)`` into a hidden folder beside ``out`` and rename it to ``out`` once
    every file is complete, so that a failed or interrupted export (a full disk) leaves nothing
    under ``out``; a write failure is one line naming the file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        path = write(staging)
        if out.is_dir():
            out.rmdir()  # empty (check_out); rename does not replace a folder
        staging.rename(out)
    except OSError as error:
        what = error.filename or staging
        reason = "the disk is full" if error.errno == errno.ENOSPC else (error.strerror or str(error))
        raise OutputError(f"export to {out} failed writing {what}: {reason}; nothing was written "
                          f"to {out}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out / path.relative_to(staging)


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = OneLineParser(prog="adlight export", description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt_path", required=True, help="the fitted model's checkpoint")
    parser.add_argument("--format", required=True, help=f"one of {', '.join(FORMATS)}")
    parser.add_argument("--out", required=True, help="folder for the model file and metadata.json")
    parser.add_argument("--bank_chunk", type=int, default=4096,
                        help="PatchCore: memory-bank rows compared at once (bounds the search's memory)")
    return parser.parse_known_args(argv)


def load_fitted(cli_class, config_args: list[str], checkpoint: str):
    """(model with the checkpoint's weights, datamodule) built by ``cli_class`` (``AdlightCLI``)
    from ``--config`` and overrides, as ``adlight fit`` builds them."""
    path = Path(checkpoint)
    if not path.is_file():
        raise ConfigError(f"--ckpt_path {path} does not exist")
    cli = cli_class(args=config_args, run=False)
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
        state = saved["state_dict"]
    except Exception as error:  # a truncated or foreign file: one line naming it
        raise ConfigError(f"--ckpt_path {path} is not a Lightning checkpoint "
                          f"({type(error).__name__}: {error})") from None
    cli.model.on_load_checkpoint(saved)
    cli.model.load_state_dict(state)
    return cli.model, cli.datamodule


def main(argv: list[str], cli_class) -> Path:
    """Run ``adlight export``; ``cli_class`` builds the model (the CLI hands in ``AdlightCLI``)."""
    options, config_args = _parse(argv)
    if options.format not in FORMATS:  # before building anything
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {options.format!r}")
    out = Path(options.out).resolve()  # "." or "x/" have a real name and parent
    check_out(out)
    model, datamodule = load_fitted(cli_class, config_args, options.ckpt_path)
    try:
        class_names = datamodule.class_names
    except Exception:  # noqa: BLE001  the names need the data; an export does not
        class_names = []
    path = write_export(out, lambda folder: export_model(
        model, options.format, folder, datamodule.image_size, datamodule.channels, class_names,
        str(options.ckpt_path), options.bank_chunk))
    print(f"adlight export: wrote {path.parent} ({options.format})")
    return path
