"""Supervised anomaly classifiers: Minhas & Zelek's transfer learning, Wilmet et al.'s small CNN.

The network maps images to logits. With ``target: label`` it learns normal (0) against
anomalous (1) from a training split that holds both (e.g. ``OneVsRestDataModule``): one logit is a sigmoid probability (binary cross-entropy, Wilmet
et al.), two are a softmax (cross-entropy, Minhas & Zelek's 2-way head). The anomaly score is
the probability of the anomalous class.

With ``target: normal_subclass`` it learns the sub-categories of the normal class instead
(Andrews et al.'s auxiliary task, e.g. which digit of {1, 3, 5, 7, 9}); its layers are then
used as a representation for a one-class head (``OneClassSVMModel``). As a detector on its own
it scores 1 - the largest class probability (the maximum-softmax-probability baseline).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.nets.scorers.classifier import ClassifierScorer, checked_logits

Target = Literal["label", "normal_subclass"]


class SupervisedClassifier(AnomalyModule):
    """Args:
        network: an ``nn.Module`` from images ([0, 1], N x C x H x W) to logits (N x K), e.g.
            ``adlight.nets.Backbone`` with ``num_classes: 2`` or ``adlight.nets.SmallCNN``.
        target: ``label`` (normal vs anomalous) or ``normal_subclass`` (the datamodule's
            normal classes, ``normal_class_ids``; trained on normal images only).
        image_threshold: 0.5 (the classifier's own decision) by default; ``val_f1`` or null
            work as for every model.
        optimizer, scheduler: factories from the config (the paper's SGD is in the YAML).
        allow_untrained: score with the weights it was built with, never trained (see AnomalyModule).
    """

    def __init__(
        self,
        network: nn.Module,
        target: Target = "label",
        image_threshold: ThresholdArg = 0.5,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__(image_threshold, None, num_examples, allow_untrained)
        self.save_hyperparameters(ignore=["network", "optimizer", "scheduler"])
        if target not in ("label", "normal_subclass"):
            raise ConfigError(f"target must be 'label' or 'normal_subclass', got {target!r}")
        self.network = network
        self.target = target
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        # normal class_id -> sub-category index; rebuilt from the datamodule in setup()
        self.register_buffer("subclass_of", torch.empty(0, dtype=torch.long), persistent=False)

    # ----- targets ----------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        if self.target != "normal_subclass":
            return
        datamodule = self.trainer.datamodule if self.trainer is not None else None
        ids = getattr(datamodule, "normal_class_ids", None)
        if not ids or len(ids) < 2:
            raise ConfigError(
                "target: normal_subclass needs a datamodule with at least two normal classes "
                f"(normal_class_ids), got {ids!r} from {type(datamodule).__name__}"
            )
        table = torch.full((max(len(datamodule.class_names), max(ids) + 1),), -1, dtype=torch.long)
        table[torch.tensor(ids)] = torch.arange(len(ids))
        self.subclass_of = table.to(self.subclass_of.device)
        self._check_outputs(len(ids))

    def _check_outputs(self, classes: int) -> None:
        outputs = getattr(self.network, "num_classes", None)
        if outputs is not None and outputs not in (classes, 0):
            raise ConfigError(
                f"the network has {outputs} outputs but the target has {classes} classes: "
                f"set num_classes: {classes}"
            )

    def logits(self, images: Tensor) -> Tensor:
        return checked_logits(self.network, images)

    def loss(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape[1] == 1:
            return F.binary_cross_entropy_with_logits(logits[:, 0].float(), targets.float())
        return F.cross_entropy(logits.float(), targets)

    def targets(self, batch: dict) -> tuple[Tensor, Tensor]:
        """(targets, which samples count) for this batch."""
        if self.target == "label":
            return batch["label"].long(), torch.ones_like(batch["label"], dtype=torch.bool)
        sub = self.subclass_of[batch["class_id"].long().clamp_min(0)]
        keep = (batch["label"] == 0) & (batch["class_id"] >= 0) & (sub >= 0)
        return sub, keep

    # ----- training ---------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        targets, keep = self.targets(batch)
        logits = self.logits(batch["image"][keep])
        loss = self.loss(logits, targets[keep])
        self.log("train/loss", loss, prog_bar=True, batch_size=logits.shape[0])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        targets, keep = self.targets(batch)
        logits = self.logits(batch["image"])
        if keep.any():
            self.log("val/loss", self.loss(logits[keep], targets[keep]), sync_dist=True,
                     batch_size=int(keep.sum()))
        # the scorer's probability of the logits just computed: one pass for loss and score
        self.val_collector.update(batch, {"score": self.scoring_module().probability(logits)})

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ----- scoring: adlight.nets.scorers.classifier ---------------------------------------
    described_networks = ("network",)

    @classmethod
    def examples(cls, image_size: int = 32) -> list[SupervisedClassifier]:
        from adlight.nets import SmallCNN

        return [cls(SmallCNN(in_channels=3, image_size=image_size, blocks=2, num_outputs=n)) for n in (1, 2)]

    def build_scorer(self) -> ClassifierScorer:
        return ClassifierScorer(self.network, self.target)
