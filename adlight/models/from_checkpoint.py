"""``SomeModel.load_from_checkpoint(path)`` from the checkpoint alone, as Lightning users expect.

The modules a family is handed by config (its network, feature extractor, optimiser) are not
hyper-parameters, so Lightning alone cannot rebuild them ("arguments are required: module.network").
Every adlight checkpoint carries its run's config (``adlight.tracking.ConfigToLoggers``); those
arguments are built from it, with the data's ``image_size`` given to the network as ``adlight
fit`` links it, and handed to Lightning's own loader beside whatever the caller passes.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import torch
import yaml

from adlight.errors import CheckpointError

#: the key under which ConfigToLoggers stores the run config (adlight.tracking.CONFIG_STATE_KEY;
#: repeated here because models do not import the tracking layer)
CONFIG_STATE_KEY = "adlight_run_config"
#: (source, target) in the run config, as adlight.cli.LINKED_SIZES links them at fit
LINKED = (("data", "image_size"), ("network", "image_size"))


def run_config_of(path: str | Path) -> dict[str, Any] | None:
    """The run config stored in the checkpoint at ``path`` (else ``config.yaml`` beside its run)."""
    path = Path(path)
    content = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    for state in (content.get("callbacks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get(CONFIG_STATE_KEY), str):
            return yaml.safe_load(state[CONFIG_STATE_KEY])
    beside = path.parent.parent / "config.yaml"
    return yaml.safe_load(beside.read_text()) if beside.is_file() else None


def _required_missing(cls: type, path: Path, given: dict[str, Any]) -> list[str]:
    hparams = torch.load(path, map_location="cpu", weights_only=True, mmap=False).get("hyper_parameters") or {}
    parameters = inspect.signature(cls.__init__).parameters
    return [name for name, p in parameters.items() if name != "self" and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in hparams and name not in given]


def built_arguments(cls: type, path: str | Path, given: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` that its checkpoint's hyper-parameters lack (its
    network, features, optimiser...), built from the run config the checkpoint holds."""
    path = Path(path)
    if not isinstance(path, Path) or not path.is_file() or not _required_missing(cls, path, given):
        return {}
    config = run_config_of(path)
    model = (config or {}).get("model") or {}
    if not model:
        raise CheckpointError(f"checkpoint {path} holds no run config and has no config.yaml beside its "
                              f"checkpoints/ folder: pass {', '.join(_required_missing(cls, path, given))} "
                              f"to {cls.__name__}.load_from_checkpoint")
    saved_class = model.get("class_path", "")
    if saved_class and saved_class.rsplit(".", 1)[-1] != cls.__name__ and cls.__name__ != "AnomalyModule":
        raise CheckpointError(f"checkpoint {path} holds a {saved_class}, not a {cls.__name__}")
    init_args = dict(model.get("init_args") or {})
    size = ((config.get("data") or {}).get("init_args") or {}).get("image_size")
    network = init_args.get("network")
    if size is not None and isinstance(network, dict) and "class_path" in network:
        _link_size(network, size)
    from lightning.pytorch.cli import LightningArgumentParser

    parser = LightningArgumentParser(exit_on_error=False)
    parser.add_class_arguments(cls, "model", fail_untyped=False)
    parsed = parser.parse_object({"model": init_args})
    built = parser.instantiate_classes(parsed, instantiate_groups=False).model
    wanted = [name for name in inspect.signature(cls.__init__).parameters if name not in given]
    hparams = torch.load(path, map_location="cpu", weights_only=True, mmap=False).get("hyper_parameters") or {}
    return {name: built[name] for name in wanted if name in init_args and name not in hparams and name in built}


def _link_size(network: dict[str, Any], size: int) -> None:
    module, _, name = network["class_path"].rpartition(".")
    try:
        import importlib

        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    except Exception:  # noqa: BLE001 - the parser names a class path that does not import
        return
    if "image_size" in parameters:
        network.setdefault("init_args", {})
        network["init_args"] = {**network["init_args"], "image_size": size}
