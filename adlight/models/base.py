"""The shared base of every adlight LightningModule.

A model only says how a batch becomes anomaly scores (:meth:`AnomalyModule.anomaly_outputs`);
this base owns what every family shares: validation chooses thresholds, test computes the
metrics and hands them to the callbacks as one :class:`~adlight.results.TestResults`, and
predict returns per-image results. Models with a fitted head add
:class:`~adlight.models.fitted_head.FittedHeadMixin`.
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from adlight.epoch_outputs import EpochCollector, EpochOutputs
from adlight.metrics import (
    auroc,
    evaluate,
    f1_optimal_threshold,
    has_both_classes,
    parse_threshold,
    per_class_metrics,
)
from adlight.results import TestResults

ThresholdArg = float | str | None


class AnomalyModule(L.LightningModule):
    """Base class: subclasses implement :meth:`anomaly_outputs` (and ``training_step``).

    Args:
        image_threshold: image scores at or above it are anomalous. A number (raw score
            units), ``"val_f1"`` (the F1-optimal threshold on the validation split,
            chosen after every validation epoch), or ``None`` (report threshold-free
            metrics only).
        pixel_threshold: the same for anomaly-map pixels (the papers' tau).
        num_examples: how many normal and how many anomalous test images to keep for the
            example figure.
    """

    #: the nu of each column of ``score_sweep`` (a model scoring with several fitted
    #: variants); the evaluator reports the AUROC of each and their mean and std
    sweep_nus: tuple[float, ...] = ()

    def __init__(
        self,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__()
        self.image_threshold_mode = parse_threshold(image_threshold, "image_threshold")
        self.pixel_threshold_mode = parse_threshold(pixel_threshold, "pixel_threshold")
        # thresholds are buffers so that they live in the checkpoint with the weights
        self.register_buffer("image_threshold", self._initial(self.image_threshold_mode))
        self.register_buffer("pixel_threshold", self._initial(self.pixel_threshold_mode))
        self.num_examples = num_examples
        self.val_collector = EpochCollector()
        self.test_collector = EpochCollector()
        #: what the last test epoch measured, for the reporting callbacks
        self.test_results: TestResults | None = None
        self.test_examples: list[dict[str, Any]] = []

    @staticmethod
    def _initial(mode: ThresholdArg) -> Tensor:
        return torch.tensor(mode if isinstance(mode, float) else math.nan, dtype=torch.float64)

    # ----- what a model implements ------------------------------------------------------
    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        """``score`` (N) and optionally ``anomaly_map`` (N x 1 x H x W), ``reconstruction``."""
        raise NotImplementedError

    # ----- validation: thresholds -------------------------------------------------------
    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self.val_collector.update(batch, self.anomaly_outputs(batch))

    def on_validation_epoch_end(self) -> None:
        if not self.val_collector.updated:
            return
        outputs = self.val_collector.compute()
        self.val_collector.reset()
        if self.trainer.sanity_checking:
            return  # two batches are no basis for a threshold
        if has_both_classes(outputs.label):
            self.log("val/image_AUROC", auroc(outputs.score, outputs.label), sync_dist=True)
        if self.image_threshold_mode == "val_f1":
            self.image_threshold.fill_(self._val_threshold(outputs.score, outputs.label, "image"))
        if outputs.has_pixels:
            pixel_scores, pixel_labels = outputs.anomaly_map.flatten(), outputs.mask.flatten().long()
            if has_both_classes(pixel_labels):
                self.log("val/pixel_AUROC", auroc(pixel_scores, pixel_labels), sync_dist=True)
            if self.pixel_threshold_mode == "val_f1":
                self.pixel_threshold.fill_(self._val_threshold(pixel_scores, pixel_labels, "pixel"))

    def _val_threshold(self, scores: Tensor, labels: Tensor, level: str) -> float:
        if not has_both_classes(labels.long()):
            missing = "anomalous" if not bool((labels.long() == 1).any()) else "normal"
            rank_zero_warn(
                f"the validation split has no {missing} {level}s, so no F1-optimal {level} "
                f"threshold can be chosen; {level} F1/precision/recall will not be reported. "
                f"Give a validation split with {missing} {level}s or a fixed {level}_threshold."
            )
            return math.nan
        return f1_optimal_threshold(scores, labels)

    # ----- test: metrics ----------------------------------------------------------------
    def on_test_epoch_start(self) -> None:
        self.test_examples = []

    def test_step(self, batch: dict, batch_idx: int) -> None:
        outputs = self.anomaly_outputs(batch)
        self.test_collector.update(batch, outputs)
        self._keep_examples(batch, outputs)

    def on_test_epoch_end(self) -> None:
        outputs = self.test_collector.compute()
        self.test_collector.reset()
        image_t, pixel_t = float(self.image_threshold), float(self.pixel_threshold)
        report: dict[str, Any] = evaluate(outputs, image_t, pixel_t, nu_sweep=self.sweep_nus)
        sources = {}
        for level, mode, value in (
            ("image", self.image_threshold_mode, image_t),
            ("pixel", self.pixel_threshold_mode, pixel_t),
        ):
            sources[level] = (
                "validation split, F1-optimal" if mode == "val_f1" and not math.isnan(value)
                else "fixed" if isinstance(mode, float) else "none"
            )
            report[f"{level}_threshold"] = None if math.isnan(value) else value
            report[f"{level}_threshold_source"] = sources[level]
        class_names = list(getattr(self.trainer.datamodule, "class_names", None) or [])
        # each anomaly class against all normal test images, then ALL (Zhao & Karray's
        # Tables 3-4, MVTec defect types)
        per_class = per_class_metrics(outputs, class_names, image_t, pixel_t)
        report["per_class"] = per_class
        logged = {f"test/{k}": v for k, v in report.items()}
        for name, row in per_class.items():
            logged.update({f"test/per_class/{name}/{k}": v for k, v in row.items()})
        self.log_dict(
            {k: float(v) for k, v in logged.items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)
             and math.isfinite(v) and not k.rsplit("/", 1)[-1].startswith("n_")},
            sync_dist=True,
        )
        self.test_results = TestResults(
            model_name=type(self).__name__,
            report=report,
            outputs=EpochOutputs(**{k: (v.cpu() if isinstance(v, Tensor) else v)
                                    for k, v in vars(outputs).items()}),
            examples=self.test_examples,
            image_threshold=report["image_threshold"],
            pixel_threshold=report["pixel_threshold"],
            image_threshold_source=sources["image"],
            pixel_threshold_source=sources["pixel"],
            class_names=class_names,
        )

    @property
    def test_report(self) -> dict[str, Any]:
        """The last test's metrics (``test_results.report``; empty before any test)."""
        return self.test_results.report if self.test_results is not None else {}

    @property
    def test_outputs(self) -> EpochOutputs | None:
        """The last test's gathered per-image outputs (``test_results.outputs``)."""
        return self.test_results.outputs if self.test_results is not None else None

    def _keep_examples(self, batch: dict, outputs: dict) -> None:
        """Keep a few normal and anomalous images (rank 0) for the example figure."""
        if self.global_rank != 0:
            return
        for i in range(batch["image"].shape[0]):
            label = int(batch["label"][i])
            if sum(e["label"] == label for e in self.test_examples) >= self.num_examples:
                continue
            example = {"label": label, "path": batch["path"][i], "image": batch["image"][i].cpu(),
                       "score": float(outputs["score"][i])}
            for key in ("reconstruction", "anomaly_map"):
                if key in outputs:
                    example[key] = outputs[key][i].detach().float().cpu()
            if "mask" in batch:
                example["mask"] = batch["mask"][i].cpu()
            self.test_examples.append(example)

    # ----- predict ----------------------------------------------------------------------
    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        outputs = self.anomaly_outputs(batch)
        result: dict[str, Any] = {"path": list(batch["path"]), "score": outputs["score"].detach().cpu()}
        image_t, pixel_t = float(self.image_threshold), float(self.pixel_threshold)
        if not math.isnan(image_t):
            result["prediction"] = (outputs["score"] >= image_t).long().cpu()
        if "anomaly_map" in outputs:
            result["anomaly_map"] = outputs["anomaly_map"].detach().float().cpu()
            result["pixel_threshold"] = None if math.isnan(pixel_t) else pixel_t  # scales the map PNGs
            if not math.isnan(pixel_t):
                result["defect_mask"] = (result["anomaly_map"] >= pixel_t).to(torch.uint8)
        return result
