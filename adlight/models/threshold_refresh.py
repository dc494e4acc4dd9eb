"""Thresholds chosen on the weights that are kept, after a fit.

Validation epochs choose the ``val_f1`` thresholds, but the last of them may have run on
earlier weights than the saved ones (``max_epochs`` below ``check_val_every_n_epoch``), or
none may have run (``limit_val_batches 0``). After the fit, :func:`choose_thresholds_after_fit`
runs the validation split once more with the weights in memory and with those of every
checkpoint a ModelCheckpoint keeps (best and last), and writes each file's thresholds, with
the step of the weights they were chosen on, into that file.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from adlight.epoch_outputs import EpochOutputs

if TYPE_CHECKING:
    from adlight.models.base import AnomalyModule

#: buffers that hold a threshold and the step of the weights it was chosen on
THRESHOLD_BUFFERS = ("image_threshold", "image_threshold_step", "image_threshold_normals",
                     "pixel_threshold", "pixel_threshold_step")


def _chosen_levels(module: AnomalyModule) -> list[str]:
    return [level for level in ("image", "pixel") if getattr(module, f"{level}_threshold_mode") == "val_f1"]


def _is_current(state: dict[str, Tensor], level: str) -> bool:
    return int(state[f"{level}_threshold_step"]) == int(state["trained_steps"])


def validation_loader(module: AnomalyModule) -> Any | None:
    """The datamodule's validation loader (``None`` when there is no validation split)."""
    datamodule = getattr(module.trainer, "datamodule", None)
    if datamodule is None or not hasattr(datamodule, "val_dataloader"):
        return None
    loader = datamodule.val_dataloader()
    return loader or None


@torch.no_grad()
def validation_outputs(module: AnomalyModule, loader: Any) -> EpochOutputs:
    """Scores (and maps) of the whole validation split with the module's current weights.

    Every process scores the whole split (no sampler is injected), and the collector drops
    the repeats by index, so all processes choose the same thresholds without a broadcast.
    """
    was_training = module.training
    module.eval()
    strategy, precision = module.trainer.strategy, module.trainer.precision_plugin
    module.val_collector.reset()
    try:
        for batch in loader:
            batch = strategy.batch_to_device(batch, module.device)
            with precision.val_step_context():
                module.val_collector.update(batch, module.anomaly_outputs(batch))
        return module.val_collector.compute()
    finally:
        module.val_collector.reset()
        module.train(was_training)


def _rethreshold_file(module: AnomalyModule, path: Path, loader: Any, levels: list[str]) -> None:
    """Choose the thresholds of the checkpoint at ``path`` on its own weights; write them into it."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    state = checkpoint.get("state_dict", {})
    if "trained_steps" not in state or all(_is_current(state, level) for level in levels):
        return
    if int(state["trained_steps"]) == int(module.trained_steps):
        chosen = {name: getattr(module, name) for name in THRESHOLD_BUFFERS}  # the weights in memory
    else:
        in_memory = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(state)
        module.choose_thresholds(validation_outputs(module, loader))
        chosen = {name: getattr(module, name).detach().clone() for name in THRESHOLD_BUFFERS}
        module.load_state_dict(in_memory)
    for name, value in chosen.items():
        state[name] = value.detach().cpu().clone()
    module.trainer.strategy.barrier("adlight-checkpoint-read")  # no process still reads the file
    module.trainer.strategy.save_checkpoint(checkpoint, path)  # rank 0 writes


def kept_checkpoints(module: AnomalyModule) -> list[Path]:
    """Best (every kept top-k) and last checkpoint file of every ModelCheckpoint, once each.

    Only files in this run's checkpoint folders: a resumed fit restores ``best_model_path``
    from the run it resumed, whose files are never rewritten."""
    paths: list[Path] = []
    for callback in module.trainer.checkpoint_callbacks:
        folder = Path(callback.dirpath).resolve() if callback.dirpath else None
        for name in (*getattr(callback, "best_k_models", {}), callback.best_model_path, callback.last_model_path):
            path = Path(name) if name else None
            if path is not None and path.is_file() and path.resolve().parent == folder and path not in paths:
                paths.append(path)
    return paths


def choose_thresholds_after_fit(module: AnomalyModule) -> None:
    """Thresholds for the weights in memory and for every kept checkpoint, on the validation split."""
    levels = _chosen_levels(module)
    if not levels:
        return
    current = {name: getattr(module, name) for name in (*THRESHOLD_BUFFERS, "trained_steps")}
    files = kept_checkpoints(module)
    if all(_is_current(current, level) for level in levels) and not files:
        return
    loader = validation_loader(module)
    if loader is None:
        for level in levels:
            module.threshold_notes[level] = "none: there is no validation split to choose it on"
        return
    if not all(_is_current(current, level) for level in levels):
        module.choose_thresholds(validation_outputs(module, loader))
    for path in files:
        _rethreshold_file(module, path, loader, levels)
    module.trainer.strategy.barrier("adlight-thresholds-written")

