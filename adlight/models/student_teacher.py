"""STPM (Wang et al., BMVC 2021): a student network trained to mimic a frozen teacher.

The network (:class:`~adlight.nets.StudentTeacher`) is the whole scorer; this module only
trains it, as the paper's method section reads: on normal images, the student's features
at each tapped stage are pulled towards the teacher's (the mean over positions of
``1 - cos``, summed over stages); the map and image score come from the network's
``forward``. The optimiser is the config's (STPM: SGD, lr 0.4, momentum 0.9, wd 1e-4).
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.nets.student_teacher import StudentTeacher


class StudentTeacherModel(AnomalyModule):
    """Trains the student of a :class:`StudentTeacher` on the training normals.

    Args:
        network: the :class:`~adlight.nets.StudentTeacher` (teacher, student, layers, map).
        optimizer, scheduler: factories for the student's optimiser and its schedule.
    """

    def __init__(
        self,
        network: StudentTeacher,
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples, allow_untrained)
        self.save_hyperparameters(ignore=["network", "optimizer", "scheduler"])
        if not isinstance(network, StudentTeacher):
            raise ConfigError(f"network must be an adlight.nets.StudentTeacher, got {type(network).__name__}")
        self.network = network
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        loss = self.network.loss(batch["image"])
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.network.student.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ----- scoring: the network is the scorer -------------------------------------------
    @classmethod
    def examples(cls, image_size: int = 32) -> list[StudentTeacherModel]:
        from adlight.nets import Backbone

        def lite0():
            return Backbone("efficientnet_lite0", weights=None, input_size=image_size)

        return [cls(StudentTeacher(lite0(), lite0(), smoothing_sigma=1.0))]

    def build_scorer(self) -> nn.Module:
        return self.network

    described_networks = ("network",)

    def export_facts(self) -> dict[str, Any]:
        network = self.network
        return {"model_class": type(self).__name__,
                "representation": {"network": {"class": type(network).__name__,
                                               **network.teacher.identity(),
                                               "layers": list(network.layers),
                                               "combine": network.combine,
                                               "smoothing_sigma": network.smoothing_sigma}}}
