"""Parsed values that torch or Lightning would reject deep inside a run, checked right after
parsing: one line naming the argument and the value, before any run directory exists."""

from __future__ import annotations

import importlib
from typing import Any

import torch

from adlight.checks import check_int, is_int
from adlight.errors import ConfigError

# trainer argument -> smallest accepted value; -1 means "no limit" where Lightning allows it
_AT_LEAST = {"min_epochs": 0, "min_steps": 0, "check_val_every_n_epoch": 1,
             "accumulate_grad_batches": 1, "log_every_n_steps": 1, "num_sanity_val_steps": -1,
             "reload_dataloaders_every_n_epochs": 0}
_UNLIMITED = ("max_epochs", "max_steps")  # -1 or >= 1 (0 epochs trains nothing and says so quietly)


def check_trainer(trainer: dict[str, Any]) -> None:
    for name, minimum in _AT_LEAST.items():
        if trainer.get(name) is not None:
            check_int(f"trainer.{name}", trainer[name], minimum)
    for name in _UNLIMITED:
        value = trainer.get(name)
        if value is not None and (not is_int(value)
                                  or (value != -1 and value < 1)):
            raise ConfigError(f"trainer.{name} must be -1 (no limit) or an int >= 1, got {value!r}")
    clip = trainer.get("gradient_clip_val")
    if clip is not None and clip < 0:
        raise ConfigError(f"trainer.gradient_clip_val must be >= 0, got {clip!r}")


def check_seed_everything(seed: Any) -> None:
    # numpy's generators take 32-bit unsigned seeds; Lightning seeds them all
    if is_int(seed) and not 0 <= seed < 2**32:
        raise ConfigError(f"seed_everything must be in [0, 2**32 - 1], got {seed}")


def _class(class_path: str, name: str) -> type:
    module, _, attribute = class_path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError):
        raise ConfigError(f"{name}.class_path {class_path!r} cannot be imported") from None


def check_optimizer(spec: Any, name: str, scheduler: Any = None, scheduler_name: str = "") -> None:
    """Build the optimiser (and scheduler) of ``spec`` on one dummy parameter, so that torch's
    own checks (learning rate, betas, momentum, weight decay, ...) run now and name ``name``."""
    if not isinstance(spec, dict) or "class_path" not in spec:
        return
    parameter = torch.nn.Parameter(torch.zeros(1))
    try:
        optimizer = _class(spec["class_path"], name)([parameter], **(spec.get("init_args") or {}))
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{name}: {error} ({spec.get('init_args')})") from None
    if isinstance(scheduler, dict) and "class_path" in scheduler:
        try:
            _class(scheduler["class_path"], scheduler_name)(optimizer, **(scheduler.get("init_args") or {}))
        except (ValueError, TypeError) as error:
            raise ConfigError(f"{scheduler_name}: {error} ({scheduler.get('init_args')})") from None


def check_model_optimizers(model: dict[str, Any]) -> None:
    """Every ``*optimizer`` argument of a parsed ``model`` section (with its ``*scheduler``)."""
    init_args = model.get("init_args") or {}
    for name, spec in init_args.items():
        if name.endswith("optimizer"):
            scheduler_name = name.replace("optimizer", "scheduler")
            check_optimizer(spec, f"model.{name}", init_args.get(scheduler_name), f"model.{scheduler_name}")
