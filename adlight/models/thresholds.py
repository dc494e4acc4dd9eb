"""Thresholds chosen on validation outputs of the weights they belong to: :class:`ThresholdMixin`.

A model's image and pixel thresholds are buffers (they live in the checkpoint with the
weights), each beside the ``trained_steps`` of the weights it was chosen on, so a threshold
chosen on other weights is never used (:meth:`ThresholdMixin.usable_threshold`).

Validation epochs choose the ``val_f1`` thresholds (:meth:`ThresholdMixin.choose_thresholds`),
but the last of them may have run on earlier weights than the saved ones (``max_epochs`` below
``check_val_every_n_epoch``), or none may have run (``limit_val_batches 0``). After the fit,
:meth:`ThresholdMixin.choose_thresholds_after_fit` runs the validation split once more with
the weights in memory and with those of every checkpoint a ModelCheckpoint keeps (best and
last), and writes each file's thresholds, with the step of the weights they were chosen on,
into that file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from adlight.metrics import f1_optimal_threshold, has_both_classes, parse_threshold
from adlight.metrics.epoch_outputs import EpochOutputs
from adlight.models.normal_threshold import image_threshold_from_normals, image_threshold_source

ThresholdArg = float | str | None

#: buffers that hold a threshold and the step of the weights it was chosen on
THRESHOLD_BUFFERS = ("image_threshold", "image_threshold_step", "image_threshold_normals",
                     "pixel_threshold", "pixel_threshold_step")
LEVELS = ("image", "pixel")


def _is_current(state: dict[str, Tensor], level: str) -> bool:
    return int(state[f"{level}_threshold_step"]) == int(state["trained_steps"])


class ThresholdMixin:
    """For an :class:`~adlight.models.base.AnomalyModule` (which owns ``trained_steps``, the
    validation collector and ``anomaly_outputs``): the image and pixel thresholds.

    The model calls :meth:`register_thresholds` in ``__init__``, :meth:`choose_thresholds`
    after a validation epoch and :meth:`choose_thresholds_after_fit` after a fit; test,
    predict and export read :meth:`usable_threshold`.
    """

    def register_thresholds(self, image_threshold: ThresholdArg, pixel_threshold: ThresholdArg) -> None:
        """``image_threshold`` / ``pixel_threshold``: a number (fixed, raw score units),
        ``"val_f1"`` (the F1-optimal threshold on the validation split) or ``None`` (none)."""
        self.image_threshold_mode = parse_threshold(image_threshold, "image_threshold")
        self.pixel_threshold_mode = parse_threshold(pixel_threshold, "pixel_threshold")
        for level in LEVELS:
            mode = getattr(self, f"{level}_threshold_mode")
            initial = mode if isinstance(mode, float) else math.nan
            self.register_buffer(f"{level}_threshold", torch.tensor(initial, dtype=torch.float64))
            # the trained_steps of the weights it was chosen on (a stale one is never used)
            self.register_buffer(f"{level}_threshold_step", torch.tensor(-1, dtype=torch.int64))
        # how many held-out training normals chose the image threshold (0: the validation split)
        self.register_buffer("image_threshold_normals", torch.tensor(0, dtype=torch.int64))
        #: why no threshold was chosen, per level (shown as the threshold's source)
        self.threshold_notes: dict[str, str] = {}

    # ----- choosing --------------------------------------------------------------------------
    def choose_thresholds(self, outputs: EpochOutputs) -> None:
        """Choose the ``val_f1`` thresholds on validation outputs of the current weights."""
        if self.image_threshold_mode == "val_f1":
            # a validation split too small for F1: held-out training normals (normal_threshold.py)
            value, normals = image_threshold_from_normals(self) or (
                self.threshold_from_validation(outputs.score, outputs.label, "image"), 0)
            self.image_threshold.fill_(value)
            self.image_threshold_normals.fill_(normals)
            self.image_threshold_step.fill_(int(self.trained_steps))
        if self.pixel_threshold_mode == "val_f1":
            if outputs.has_pixels:
                pixel_scores, pixel_labels = outputs.anomaly_map.flatten(), outputs.mask.flatten().long()
                self.pixel_threshold.fill_(self.threshold_from_validation(pixel_scores, pixel_labels, "pixel"))
            else:
                self.pixel_threshold.fill_(math.nan)
                self.threshold_notes["pixel"] = "none: the validation split has no masks or the model no anomaly maps"
            self.pixel_threshold_step.fill_(int(self.trained_steps))

    def threshold_from_validation(self, scores: Tensor, labels: Tensor, level: str) -> float:
        """The one rule that turns validation scores into a threshold: F1-optimal, or nan (with
        a note and a warning) when the split lacks one of the classes."""
        if not has_both_classes(labels.long()):
            missing = "anomalous" if not bool((labels.long() == 1).any()) else "normal"
            self.threshold_notes[level] = f"none: the validation split has no {missing} {level}s"
            rank_zero_warn(
                f"the validation split has no {missing} {level}s, so no F1-optimal {level} "
                f"threshold can be chosen; {level} F1/precision/recall will not be reported. "
                f"Give a validation split with {missing} {level}s or a fixed {level}_threshold."
            )
            return math.nan
        self.threshold_notes.pop(level, None)
        return f1_optimal_threshold(scores, labels)

    # ----- using -----------------------------------------------------------------------------
    def usable_threshold(self, level: str) -> tuple[float, str]:
        """``(threshold, source)`` for ``level`` with the current weights; nan when there is none
        (the source then says why). A threshold chosen on other weights is never returned."""
        mode = getattr(self, f"{level}_threshold_mode")
        value = float(getattr(self, f"{level}_threshold"))
        if isinstance(mode, float):  # the configured value, over whatever a checkpoint held
            return mode, "fixed"
        if mode is None:
            return math.nan, "none"  # asked for: threshold-free metrics only
        chosen_at, weights_at = int(getattr(self, f"{level}_threshold_step")), int(self.trained_steps)
        if not math.isnan(value) and chosen_at != weights_at:
            rank_zero_warn(
                f"the {level} threshold {value:.6g} was chosen on the weights of training step "
                f"{chosen_at}, these are of step {weights_at}: it is not used; validate these "
                f"weights (adlight validate --ckpt_path ...) to choose one"
            )
            return math.nan, f"none: the threshold was chosen on other weights (step {chosen_at}, these are {weights_at})"
        if math.isnan(value):
            return value, self.threshold_notes.get(
                level, "none: no threshold was chosen on the validation split for these weights")
        return value, image_threshold_source(int(self.image_threshold_normals) if level == "image" else 0)

    # ----- after a fit: the kept weights' own thresholds --------------------------------------
    def _chosen_levels(self) -> list[str]:
        return [level for level in LEVELS if getattr(self, f"{level}_threshold_mode") == "val_f1"]

    def validation_loader(self) -> Any | None:
        """The datamodule's validation loader (``None`` when there is no validation split)."""
        datamodule = getattr(self.trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "val_dataloader"):
            return None
        loader = datamodule.val_dataloader()
        return loader or None

    @torch.no_grad()
    def validation_outputs(self, loader: Any) -> EpochOutputs:
        """Scores (and maps) of the whole validation split with the current weights.

        Every process scores the whole split (no sampler is injected), and the collector drops
        the repeats by index, so all processes choose the same thresholds without a broadcast.
        """
        was_training = self.training
        self.eval()
        strategy, precision = self.trainer.strategy, self.trainer.precision_plugin
        self.val_collector.reset()
        try:
            for batch in loader:
                batch = strategy.batch_to_device(batch, self.device)
                with precision.val_step_context():
                    self.val_collector.update(batch, self.anomaly_outputs(batch))
            return self.val_collector.compute()
        finally:
            self.val_collector.reset()
            self.train(was_training)

    def _rethreshold_file(self, path: Path, loader: Any, levels: list[str]) -> None:
        """Choose the thresholds of the checkpoint at ``path`` on its own weights; write them into it."""
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
        state = checkpoint.get("state_dict", {})
        if "trained_steps" not in state or all(_is_current(state, level) for level in levels):
            return
        if int(state["trained_steps"]) == int(self.trained_steps):
            chosen = {name: getattr(self, name) for name in THRESHOLD_BUFFERS}  # the weights in memory
        else:
            in_memory = {k: v.detach().clone() for k, v in self.state_dict().items()}
            self.load_state_dict(state)
            self.choose_thresholds(self.validation_outputs(loader))
            chosen = {name: getattr(self, name).detach().clone() for name in THRESHOLD_BUFFERS}
            self.load_state_dict(in_memory)
        for name, value in chosen.items():
            state[name] = value.detach().cpu().clone()
        self.trainer.strategy.barrier("adlight-checkpoint-read")  # no process still reads the file
        self.trainer.strategy.save_checkpoint(checkpoint, path)  # rank 0 writes

    def kept_checkpoints(self) -> list[Path]:
        """Best (every kept top-k) and last checkpoint file of every ModelCheckpoint, once each.

        Only files in this run's checkpoint folders: a resumed fit restores ``best_model_path``
        from the run it resumed, whose files are never rewritten."""
        paths: list[Path] = []
        for callback in self.trainer.checkpoint_callbacks:
            folder = Path(callback.dirpath).resolve() if callback.dirpath else None
            for name in (*getattr(callback, "best_k_models", {}), callback.best_model_path,
                         callback.last_model_path):
                path = Path(name) if name else None
                if path is not None and path.is_file() and path.resolve().parent == folder and path not in paths:
                    paths.append(path)
        return paths

    def choose_thresholds_after_fit(self) -> None:
        """Thresholds for the weights in memory and for every kept checkpoint, on the validation split."""
        levels = self._chosen_levels()
        if not levels:
            return
        current = {name: getattr(self, name) for name in (*THRESHOLD_BUFFERS, "trained_steps")}
        files = self.kept_checkpoints()
        if all(_is_current(current, level) for level in levels) and not files:
            return
        loader = self.validation_loader()
        if loader is None:
            for level in levels:
                self.threshold_notes[level] = "none: there is no validation split to choose it on"
            return
        if not all(_is_current(current, level) for level in levels):
            self.choose_thresholds(self.validation_outputs(loader))
        for path in files:
            self._rethreshold_file(path, loader, levels)
        self.trainer.strategy.barrier("adlight-thresholds-written")

    # ----- loading -------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # checkpoints from before the step counters came from a fit: their thresholds were
        # chosen on their own weights (trained_steps -1 when the counter is missing too)
        weights_at = int(self.trained_steps) if prefix + "trained_steps" in state_dict else -1
        for level in LEVELS:
            name = prefix + f"{level}_threshold_step"
            if name in missing_keys:
                missing_keys.remove(name)
                getattr(self, f"{level}_threshold_step").fill_(weights_at)
        if prefix + "image_threshold_normals" in missing_keys:  # from before held-out normals
            missing_keys.remove(prefix + "image_threshold_normals")
            self.image_threshold_normals.fill_(0)
