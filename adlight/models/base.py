"""The shared base of every adlight LightningModule.

A model says how images become anomaly scores by building its plain-torch scorer
(:meth:`AnomalyModule.build_scorer`, ``adlight/nets/scorers``), which every step calls through
:meth:`AnomalyModule.anomaly_outputs`; this base owns what every family shares: validation chooses thresholds
(:class:`~adlight.models.thresholds.ThresholdMixin`), test computes the
metrics and hands them to the callbacks as one :class:`~adlight.metrics.results.TestResults`, and
predict returns per-image results. Models with a fitted head add
:class:`~adlight.models.fitted_head.FittedHeadMixin`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from adlight.checks import is_number
from adlight.errors import ConfigError
from adlight.metrics import (
    evaluate,
    per_class_metrics,
    pixel_ranking,
    threshold_outside_scores,
    validation_summary,
)
from adlight.metrics.epoch_outputs import EpochCollector, EpochOutputs
from adlight.metrics.results import TestResults
from adlight.models.thresholds import ThresholdArg, ThresholdMixin
from adlight.nets.scorers import describe_network
from adlight.process_memory import release_freed_memory

__all__ = ["AnomalyModule", "ThresholdArg"]


class AnomalyModule(ThresholdMixin, L.LightningModule):
    """Base class: subclasses implement :meth:`build_scorer` (and ``training_step``).

    Args:
        image_threshold: image scores at or above it are anomalous. A number (raw score
            units), ``"val_f1"`` (the F1-optimal threshold on the validation split,
            chosen after every validation epoch), or ``None`` (report threshold-free
            metrics only).
        pixel_threshold: the same for anomaly-map pixels (the papers' tau).
        num_examples: how many normal and how many anomalous test images to keep for the
            example figure.
        allow_untrained: test, validate or predict with the weights the model was built
            with, never trained (a model that learns by gradient refuses that by default).
    """

    #: whether the model learns its weights by gradient (so untrained weights mean nothing)
    learns_by_gradient: bool = True
    # whether fit_memory.py measures a training step on images before the first batch (a family
    # whose steps read features gathered at train start says False)
    measures_training_step: bool = True

    #: the nu of each column of ``score_sweep`` (a model scoring with several fitted
    #: variants); the evaluator reports the AUROC of each and their mean and std
    sweep_nus: tuple[float, ...] = ()


    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, hparams_file=None, strict=None,
                             **kwargs):
        """Lightning's loader, with the arguments a family is handed by config (network,
        features, optimiser) rebuilt from the run config the checkpoint holds, so that
        ``PatchCoreModel.load_from_checkpoint(path)`` needs nothing else."""
        from adlight.models.from_checkpoint import built_arguments

        kwargs = {**built_arguments(cls, checkpoint_path, kwargs), **kwargs}
        return super().load_from_checkpoint(checkpoint_path, map_location=map_location,
                                            hparams_file=hparams_file, strict=strict, **kwargs)

    def __init__(
        self,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__()
        self.allow_untrained = bool(allow_untrained)
        # training batches seen, saved with the weights: 0 means never trained; -1 is a
        # checkpoint from before the counter (it came from a fit, so it counts as trained)
        self.register_buffer("trained_steps", torch.tensor(0, dtype=torch.int64))
        # buffers beside the weights, each with the trained_steps it was chosen at (thresholds.py)
        self.register_thresholds(image_threshold, pixel_threshold)
        self.num_examples = num_examples
        self.val_collector = EpochCollector()
        self.test_collector = EpochCollector()
        #: what the last test epoch measured, for the reporting callbacks
        self.test_results: TestResults | None = None
        self.test_examples: list[dict[str, Any]] = []

    # ----- what a model implements: its scorer ------------------------------------------
    #: the attributes holding the networks an export's ``metadata.json`` describes
    described_networks: tuple[str, ...] = ()

    def build_scorer(self) -> nn.Module:
        """This family's plain-torch scorer (``adlight.nets.scorers``), built on the model's own
        networks and fitted head: ``[0, 1]`` images in, the tuple its ``outputs`` name out."""
        raise NotImplementedError

    @classmethod
    def examples(cls, image_size: int = 32) -> list[AnomalyModule]:
        """Small working instances of this family (tiny networks, random weights), one per
        variant whose scoring differs, for 3-channel images of ``image_size``: what
        ``tests/test_scorer_contract.py`` fits, tests, predicts and exports for every family."""
        raise NotImplementedError(f"{cls.__name__} gives no examples(): the scorer contract test needs them")

    def scorer(self) -> nn.Module:
        """A new scorer in eval mode, for use without the Trainer (export, the contract test).

        Raises :class:`ConfigError` (one line) where this model cannot score alone."""
        return self.build_scorer().eval()

    def export_facts(self) -> dict[str, Any]:
        """The model's class and the representation its scores belong to, for ``metadata.json``."""
        networks = {name: getattr(self, name, None) for name in self.described_networks}
        return {"model_class": type(self).__name__,
                "representation": {name: describe_network(module) for name, module in networks.items()
                                   if isinstance(module, nn.Module)}}

    def scoring_module(self) -> nn.Module:
        """The scorer the steps call, built once and kept until the head or the device changes."""
        scorer = self.__dict__.get("_scorer")
        if scorer is None:
            scorer = self.build_scorer()
            self.__dict__["_scorer"] = scorer  # not a submodule: no state-dict keys of its own
        return scorer

    def drop_scorer(self) -> None:
        """Forget the kept scorer (its buffers were derived from a head that changed)."""
        self.__dict__.pop("_scorer", None)

    def _apply(self, fn, *args, **kwargs):
        self.drop_scorer()  # .to(), .half(): the scorer's derived buffers are rebuilt where the model is
        return super()._apply(fn, *args, **kwargs)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        """``score`` (N) and optionally ``anomaly_map`` (N x 1 x H x W), from the scorer; a family
        may add extras (a ``reconstruction`` for the figures, a ``score_sweep``)."""
        scorer = self.scoring_module()
        return dict(zip(scorer.outputs, scorer(batch["image"]), strict=True))

    # ----- training: count the steps the weights have seen --------------------------------
    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        self.trained_steps += 1

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.set_intensity_references()
        if self.learns_by_gradient and self.measures_training_step:
            self.check_training_step_memory()

    def set_intensity_references(self) -> None:
        """Every backbone with intensity="image" that has no reference yet (a resumed fit's
        checkpoint brings its own) gets the training normals' average mean and std, before
        any feature is taken."""
        from adlight.models.training_normals import training_intensity_reference
        from adlight.nets.backbones import Backbone

        for module in self.modules():
            if isinstance(module, Backbone) and module.needs_intensity_reference:
                module.set_intensity_reference(*training_intensity_reference(self.trainer, module))

    def check_training_step_memory(self) -> None:
        """Refuse, before the first batch, a training step that needs more memory than the device
        has free, with one line naming the batch size that would fit (fit_memory.py)."""
        from adlight.models.fit_memory import (
            batch_size_that_fits,
            readable_bytes,
            training_step_bytes,
        )
        from adlight.models.training_normals import training_normals_dataset
        from adlight.process_memory import available_bytes

        datamodule = self.trainer.datamodule
        batch_size = getattr(datamodule, "batch_size", None)
        if not isinstance(batch_size, int):
            return
        try:
            dataset = training_normals_dataset(self.trainer)
        except (ConfigError, TypeError):
            return  # no adlight datamodule: nothing to measure with
        measured = training_step_bytes(self, dataset, batch_size)
        available = available_bytes(self.device)
        if measured is None or available is None or measured[0] <= 0.9 * available:
            return
        need, per_image = measured
        fits = batch_size_that_fits(per_image, need - batch_size * per_image, int(0.9 * available))
        advice = (f"use --data.loader.batch_size {fits}" if fits >= 1 else
                  "use smaller images (--data.image_size): not even one image fits")
        raise ConfigError(
            f"{type(self).__name__}'s training step needs about {readable_bytes(need)} at image_size "
            f"{getattr(datamodule, 'image_size', '?')} with batch_size {batch_size} "
            f"({readable_bytes(per_image)} per image), more than 90 % of the {readable_bytes(available)} "
            f"free on {self.device}: {advice}")

    def on_fit_end(self) -> None:
        # the thresholds must belong to the weights that are kept: the last validation epoch
        # may have run on earlier ones, or none may have run (thresholds.py)
        if not self.trainer.interrupted:
            self.choose_thresholds_after_fit()

    def require_trained(self) -> None:
        """Refuse (ConfigError) to score with the weights the model was built with."""
        if self.learns_by_gradient and int(self.trained_steps) == 0 and not self.allow_untrained:
            raise ConfigError(
                f"{type(self).__name__} was never trained: fit it first (adlight fit), load a "
                "checkpoint written by a fit (--ckpt_path), or score with the weights it was "
                "built with on purpose (--model.allow_untrained true)"
            )

    def on_validation_start(self) -> None:
        if self.trainer.state.fn == "validate":
            self.require_trained()

    def on_test_start(self) -> None:
        self.require_trained()

    def on_predict_start(self) -> None:
        self.require_trained()

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
        release_freed_memory()  # before the thresholds' sort of every validation pixel
        ranked = pixel_ranking(outputs)  # one numpy sort: torchmetrics' took 5x as long at 512 px
        #: the last validation epoch's figures, reported beside the test's (recipes are chosen on them)
        self.validation_report = validation_summary(outputs, ranked)
        del ranked
        for key in ("image_AUROC", "pixel_AUROC"):
            if key in self.validation_report:
                self.log(f"val/{key}", self.validation_report[key], sync_dist=True)
        self.choose_thresholds(outputs)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        # checkpoints from before the step counter came from a fit: trained
        if prefix + "trained_steps" in missing_keys:
            missing_keys.remove(prefix + "trained_steps")
            self.trained_steps.fill_(-1)

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
        release_freed_memory()  # the loop's freed batches, before the report's sort of every pixel
        (image_t, image_source), (pixel_t, pixel_source) = map(self.usable_threshold, ("image", "pixel"))
        for level, scores in (("image", outputs.score), ("pixel", outputs.anomaly_map)):
            mode = getattr(self, f"{level}_threshold_mode")
            outside = isinstance(mode, float) and scores is not None and \
                threshold_outside_scores(mode, scores, f"{level}_threshold")
            if outside:
                rank_zero_warn(outside)
        ranked = pixel_ranking(outputs)  # one sort of every pixel for the report and its classes
        report: dict[str, Any] = evaluate(outputs, image_t, pixel_t, nu_sweep=self.sweep_nus, ranked=ranked)
        sources = {"image": image_source, "pixel": pixel_source}
        for level, value in (("image", image_t), ("pixel", pixel_t)):
            report[f"{level}_threshold"] = None if math.isnan(value) else value
            report[f"{level}_threshold_source"] = sources[level]
        class_names = list(getattr(self.trainer.datamodule, "class_names", None) or [])
        # each anomaly class against all normal test images, then ALL (Zhao & Karray's
        # Tables 3-4, MVTec defect types)
        per_class = per_class_metrics(outputs, class_names, image_t, pixel_t, ranked=ranked)
        report["per_class"] = per_class
        if getattr(self, "validation_report", None):
            report["validation"] = dict(self.validation_report)
        pro_curve = None
        if ranked is not None and ranked.both_classes:
            # from the ranking while it exists: the results page's curve without another sort
            with contextlib.suppress(ValueError):  # no defect region: no curve
                pro_curve = ranked.pro_points(outputs.mask)
        del ranked
        logged = {f"test/{k}": v for k, v in report.items()}
        for name, row in per_class.items():
            logged.update({f"test/per_class/{name}/{k}": v for k, v in row.items()})
        self.log_dict(
            {k: float(v) for k, v in logged.items()
             if is_number(v)
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
            pro_curve=pro_curve,
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
    def on_predict_epoch_start(self) -> None:
        # once per run, not per batch: a stale threshold warns once and is not used
        self._predict_thresholds = (self.usable_threshold("image")[0], self.usable_threshold("pixel")[0])

    def predict_step(self, batch: dict, batch_idx: int) -> dict[str, Any]:
        outputs = self.anomaly_outputs(batch)
        result: dict[str, Any] = {"path": list(batch["path"]), "score": outputs["score"].detach().cpu()}
        image_t, pixel_t = getattr(self, "_predict_thresholds", None) or (
            self.usable_threshold("image")[0], self.usable_threshold("pixel")[0])
        if not math.isnan(image_t):
            result["prediction"] = (outputs["score"] >= image_t).long().cpu()
        if "anomaly_map" in outputs:
            result["anomaly_map"] = outputs["anomaly_map"].detach().float().cpu()
            result["pixel_threshold"] = None if math.isnan(pixel_t) else pixel_t  # scales the map PNGs
            if not math.isnan(pixel_t):
                result["defect_mask"] = (result["anomaly_map"] >= pixel_t).to(torch.uint8)
        return result
