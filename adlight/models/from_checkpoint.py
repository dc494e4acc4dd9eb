"""``SomeModel.load_from_checkpoint(path)`` from the checkpoint alone, as Lightning users expect.

The modules a family is handed by config (its network, feature extractor, optimiser) are not
hyper-parameters, so Lightning alone cannot rebuild them ("arguments are required: module.network").
Every adlight checkpoint carries its run's config (``adlight.tracking.ConfigToLoggers``); those
arguments are built from it, with the data's ``image_size`` given to the network as ``adlight
fit`` links it, and handed to Lightning's own loader beside whatever the caller passes.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import torch
import yaml

from adlight.errors import CheckpointError

#: the key under which ConfigToLoggers stores the run config (adlight.tracking.CONFIG_STATE_KEY;
#: repeated here because models do not import the tracking layer)
CONFIG_STATE_KEY = "adlight_run_config"


def _run_config(content: dict[str, Any], path: Path) -> dict[str, Any] | None:
    """The run config stored in the checkpoint (else ``config.yaml`` beside its run folder)."""
    for state in (content.get("callbacks") or {}).values():
        if isinstance(state, dict) and isinstance(state.get(CONFIG_STATE_KEY), str):
            return yaml.safe_load(state[CONFIG_STATE_KEY])
    beside = path.parent.parent / "config.yaml"
    return yaml.safe_load(beside.read_text()) if beside.is_file() else None


def built_arguments(cls: type, checkpoint_path, given: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of ``cls`` that neither the caller (``given``) nor the
    checkpoint's hyper-parameters supply (its network, features, optimiser...), built from the
    run config the checkpoint holds; ``{}`` when nothing is missing."""
    if not isinstance(checkpoint_path, (str, Path)) or not Path(checkpoint_path).is_file():
        return {}  # a stream or a URL: Lightning's own loader, as before
    path = Path(checkpoint_path)
    content = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    hparams = content.get("hyper_parameters") or {}
    parameters = inspect.signature(cls.__init__).parameters
    missing = [name for name, p in parameters.items() if name != "self" and p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name not in hparams and name not in given]
    if not missing:
        return {}
    config = _run_config(content, path)
    model = (config or {}).get("model") or {}
    if not model:
        raise CheckpointError(f"checkpoint {path} holds no run config and has no config.yaml beside its "
                              f"checkpoints/ folder: pass {', '.join(missing)} to {cls.__name__}.load_from_checkpoint")
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
    # nested classes only (instantiate_groups=False): the model itself is built by Lightning
    built = parser.instantiate_classes(parser.parse_object({"model": init_args}), instantiate_groups=False).model
    return {name: built[name] for name in parameters
            if name in init_args and name not in hparams and name not in given and name in built}


def _link_size(network: dict[str, Any], size: int) -> None:
    """The data's ``image_size`` given to a network that takes one, as ``adlight fit`` links it."""
    module, _, name = network["class_path"].rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    except Exception:  # noqa: BLE001 - the parser names a class path that does not import
        return
    if "image_size" in parameters:
        network.setdefault("init_args", {})
        network["init_args"] = {**network["init_args"], "image_size": size}
