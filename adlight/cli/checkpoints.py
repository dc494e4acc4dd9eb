"""Reading a ``--ckpt_path`` before anything is built: is it a Lightning checkpoint, which run
config made it, and does the model about to load it have the same network.

A run's config travels inside its checkpoints (:class:`adlight.tracking.ConfigToLoggers` stores it
as its callback state); older checkpoints fall back to the run's ``config.yaml`` beside their
``checkpoints/`` folder. Every problem is one :class:`CheckpointError` line naming the path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from adlight.errors import CheckpointError

#: ``--ckpt_path`` values Lightning resolves itself (no file to read yet)
SPECIAL_PATHS = ("last", "best", "hpc", "registry")
#: model arguments whose difference does not change the weights (a test may use another optimiser)
NOT_COMPARED = ("optimizer", "scheduler", "lr_scheduler")


@dataclass
class Checkpoint:
    """What adlight needs from a checkpoint file: its run config and its parameters' shapes."""

    path: Path
    hyper_parameters: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    run_config: dict[str, Any] | None  # the fit's config section, None when not found
    config_source: str  # where run_config came from, for messages

    @property
    def model_class(self) -> str | None:
        model = (self.run_config or {}).get("model") or {}
        return model.get("class_path") or self.hyper_parameters.get("_class_path")


# what a file written by torch.save starts with: a zip archive, or a pickle (the legacy format)
_TORCH_SAVE_HEADS = (b"PK\x03\x04", b"\x80")


def _load(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, not a .ckpt file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes)")
    with path.open("rb") as f:
        head = f.read(4)
    if not head.startswith(_TORCH_SAVE_HEADS):
        # torch's own message would advise weights_only=False, which cannot help here
        raise CheckpointError(f"checkpoint {path} cannot be read: it is not a file torch.save writes "
                              "(no zip or pickle header; a config, an image, a text file?)")
    try:
        # weights_only: as Lightning reads hyper-parameters; a checkpoint runs no code when read
        content = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as error:  # torch raises RuntimeError, UnpicklingError, EOFError, ... here
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CheckpointError(f"checkpoint {path} cannot be read (truncated or corrupt?): {reason}") from None
    if not isinstance(content, dict) or "state_dict" not in content:
        what = "a plain state dict" if isinstance(content, dict) else f"a {type(content).__name__}"
        raise CheckpointError(f"checkpoint {path} is not a Lightning checkpoint: it holds {what}, "
                              "no state_dict (adlight fit writes them under <run>/checkpoints/)")
    return content


def _embedded_config(content: dict[str, Any]) -> dict[str, Any] | None:
    from adlight.tracking import CONFIG_STATE_KEY

    for state in (content.get("callbacks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get(CONFIG_STATE_KEY), str):
            return yaml.safe_load(state[CONFIG_STATE_KEY])
    return None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint at ``path``, checked to be a readable Lightning checkpoint."""
    path = Path(path)
    content = _load(path)
    shapes = {name: tuple(value.shape) for name, value in content["state_dict"].items()
              if isinstance(value, torch.Tensor)}
    config, source = _embedded_config(content), f"the config stored in {path}"
    beside = path.parent.parent / "config.yaml"  # <run>/checkpoints/x.ckpt -> <run>/config.yaml
    if config is None and beside.is_file():
        config, source = yaml.safe_load(beside.read_text()), str(beside)
    elif beside.is_file():
        source = str(beside)  # the same config, and a file the user can open
    return Checkpoint(path, dict(content.get("hyper_parameters") or {}), shapes, config, source)


def with_run_config(args: list[str], checkpoint: Checkpoint, subcommands: tuple[str, ...]) -> list[str]:
    """``args`` with the checkpoint's run config as the first ``--config`` after the subcommand,
    so that the model and data are what they were at fit and later arguments still override."""
    if checkpoint.run_config is None:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds no run config and has no config.yaml "
                              "beside its checkpoints/ folder: give the run's config with --config")
    config = {key: value for key, value in checkpoint.run_config.items() if key != "ckpt_path"}
    index = next(i for i, arg in enumerate(args) if arg in subcommands)
    return [*args[: index + 1], "--config", yaml.safe_dump(config, sort_keys=False), *args[index + 1:]]


def _first_difference(fitted: Any, given: Any, key: str) -> tuple[str, Any, Any] | None:
    if isinstance(fitted, dict) and isinstance(given, dict):
        # only what the run config holds: link targets (a network's image_size) are not saved
        for name in sorted(fitted):
            found = _first_difference(fitted.get(name), given.get(name), f"{key}.{name}")
            if found:
                return found
        return None
    return None if fitted == given else (key, fitted, given)


def check_same_model(checkpoint: Checkpoint, model: dict[str, Any]) -> None:
    """The model ``model`` (a parsed ``model`` section) is the one ``checkpoint`` was fitted as.

    Arguments Lightning restores from the checkpoint's hyper-parameters are not compared.
    """
    fitted_class, given_class = checkpoint.model_class, model.get("class_path")
    if fitted_class and given_class and fitted_class != given_class:
        raise CheckpointError(f"checkpoint {checkpoint.path} holds model {fitted_class}, the config builds "
                              f"{given_class}: give the config it was fitted with, or no --config to use "
                              f"{checkpoint.config_source}")
    fitted = ((checkpoint.run_config or {}).get("model") or {}).get("init_args") or {}
    given = model.get("init_args") or {}
    restored = set(checkpoint.hyper_parameters) | set(NOT_COMPARED)
    for name in sorted(fitted):
        if name in restored:
            continue
        found = _first_difference(fitted.get(name), given.get(name), f"model.{name}")
        if found:
            key, was, now = found
            key = key.replace(".init_args", "")
            raise CheckpointError(f"checkpoint {checkpoint.path} was fitted with {key}={was!r}, the config "
                                  f"gives {now!r}: see {checkpoint.config_source}, or drop --config to "
                                  "rebuild the run from the checkpoint")


def check_same_linked(checkpoint: Checkpoint, section: dict[str, Any], links: tuple[tuple[str, str], ...]) -> None:
    """A linked source (``data.image_size``) has the value it had at fit, when its target exists."""
    for source, target in links:
        given_target, fitted, given = section, checkpoint.run_config or {}, section
        for key in target.split("."):
            given_target = given_target.get(key) if isinstance(given_target, dict) else None
        for key in source.split("."):
            fitted = fitted.get(key) if isinstance(fitted, dict) else None
            given = given.get(key) if isinstance(given, dict) else None
        if given_target is not None and fitted is not None and fitted != given:
            name = source.replace(".init_args", "")
            raise CheckpointError(f"checkpoint {checkpoint.path} was fitted with {name}={fitted!r} (which sizes "
                                  f"the network), the config gives {given!r}: see {checkpoint.config_source}")


def check_parameter_shapes(checkpoint: Checkpoint, module: torch.nn.Module) -> None:
    """Every parameter of ``module`` has the shape the checkpoint holds for it.

    Run before Lightning loads the weights, whose size-mismatch error dumps every tensor.
    Buffers are not compared: fitted heads size theirs when they load.
    """
    for name, parameter in module.named_parameters():
        if isinstance(parameter, torch.nn.parameter.UninitializedParameter):
            continue  # a lazy module takes its shape from the checkpoint
        saved = checkpoint.shapes.get(name)
        if saved is not None and saved != tuple(parameter.shape):
            raise CheckpointError(f"checkpoint {checkpoint.path} does not fit the model: {name} has shape "
                                  f"{list(saved)} there and {list(parameter.shape)} in the model built from the "
                                  f"config; see {checkpoint.config_source}")
