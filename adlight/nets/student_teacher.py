"""Student-teacher feature pyramid matching (STPM, Wang et al., BMVC 2021), plain torch.

A frozen pretrained **teacher** (the offline EfficientNet-Lite weights) and a **student** of
the same architecture from random weights both describe an image at several stages
(``blocks.1``, ``blocks.2``, ``blocks.3`` of EfficientNet-Lite: strides 4, 8 and 16). The
student is trained on normal images only to reproduce the teacher's L2-normalised features;
on an anomaly, which it never saw, it fails. Per stage, a position's anomaly score is
``1 - cos(teacher, student)`` (half the squared distance of the unit vectors, STPM's loss);
the stages' maps are upsampled to the image and multiplied (STPM) or summed (``combine``),
then blurred; the image score is the map's maximum.

The student only runs to the deepest tapped stage, so a step costs the forward and backward
of EfficientNet-Lite's first four stages (see the config's header for what that is here).

:class:`StudentTeacher` in eval mode is the whole inference path: ``forward`` takes [0, 1]
images and returns ``(score, anomaly_map)`` (the scorer interface).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adlight.checks import is_number
from adlight.errors import ConfigError
from adlight.nets.backbones import HEAD_TAPS, Backbone
from adlight.nets.maps import smooth

Combine = Literal["product", "sum"]


def cosine_distance_maps(teacher: Tensor, student: Tensor) -> Tensor:
    """N x C x h x w feature maps -> N x 1 x h x w maps of ``1 - cos`` per position
    (0.5 ||t/|t| - s/|s| ||^2: STPM's per-position loss)."""
    return 1.0 - F.cosine_similarity(teacher.float(), student.float(), dim=1, eps=1e-6).unsqueeze(1)


class StudentTeacher(nn.Module):
    """A frozen teacher, a student trained to match it, maps from their disagreement.

    Args:
        teacher: the pretrained :class:`Backbone` (frozen; its weights and input size).
        student: a :class:`Backbone` of the same architecture that learns (``weights: none``
            for STPM's randomly initialised student); its ``input_size`` must be the teacher's.
            It sees the teacher's preprocessed input (resized, normalised and, with the
            teacher's ``intensity="image"``, standardised per image), so its own ``intensity``
            stays ``"dataset"``.
        layers: the stages compared (module names that give feature maps).
        combine: ``product`` (STPM) or ``sum`` of the per-stage maps at image resolution.
        smoothing_sigma: Gaussian blur of the combined map, in image pixels (0: none).
    """

    outputs = ("score", "anomaly_map")

    def __init__(self, teacher: Backbone, student: Backbone,
                 layers: str | Sequence[str] = ("blocks.1", "blocks.2", "blocks.3"),
                 combine: Combine = "product", smoothing_sigma: float = 4.0) -> None:
        super().__init__()
        for argument, value in (("teacher", teacher), ("student", student)):
            if not isinstance(value, Backbone):
                raise ConfigError(f"{argument} must be an adlight.nets.Backbone, got {type(value).__name__}")
        if student.name != teacher.name or student.input_size != teacher.input_size:
            raise ConfigError(
                f"the student ({student.name} at {student.input_size} px) must have the teacher's "
                f"architecture and input_size ({teacher.name} at {teacher.input_size} px)")
        if student.intensity != "dataset":
            # feature_pairs feeds the student the teacher's preprocessed input: the student's
            # own standardisation would never run, and its reference would cost a pass for nothing
            raise ConfigError(
                f"student intensity={student.intensity!r}: the student sees the teacher's input; set "
                "intensity on the teacher only (teacher.init_args.intensity)")
        self.layers = teacher.check_layers(layers)
        vector_taps = [name for name in self.layers if name in HEAD_TAPS]
        if vector_taps:
            raise ConfigError(f"layers {vector_taps} are pooled vectors; the student-teacher "
                              "compares feature maps, e.g. layers: [blocks.1, blocks.2, blocks.3]")
        if combine not in ("product", "sum"):
            raise ConfigError(f"combine must be 'product' or 'sum', got {combine!r}")
        if not is_number(smoothing_sigma) or smoothing_sigma < 0:
            raise ConfigError(f"smoothing_sigma must be a number >= 0, got {smoothing_sigma!r}")
        self.teacher = teacher.requires_grad_(False)
        self.student = student
        self.combine = combine
        self.smoothing_sigma = float(smoothing_sigma)
        self.train(False)

    def train(self, mode: bool = True):
        super().train(mode)
        self.teacher.eval()  # frozen: BatchNorm keeps the pretrained statistics
        return self

    def feature_pairs(self, images: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(teacher, student) feature maps per layer for [0, 1] images."""
        inputs = self.teacher.preprocess(images)  # the student sees the teacher's inputs
        with torch.no_grad():
            teacher = self.teacher.network_taps(inputs, self.layers)
        student = self.student.network_taps(inputs, self.layers)
        return [(teacher[name], student[name]) for name in self.layers]

    def loss(self, images: Tensor) -> Tensor:
        """STPM's loss: per layer, the mean over positions of 1 - cos; summed over layers."""
        return sum(cosine_distance_maps(t, s).mean() for t, s in self.feature_pairs(images))

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """[0, 1] images N x C x H x W -> (score N, anomaly_map N x 1 x H x W)."""
        size = tuple(images.shape[-2:])
        maps = None
        for teacher, student in self.feature_pairs(images):
            layer_map = F.interpolate(cosine_distance_maps(teacher, student), size=size,
                                      mode="bilinear", align_corners=False)
            if maps is None:
                maps = layer_map
            elif self.combine == "product":
                maps = maps * layer_map
            else:
                maps = maps + layer_map
        maps = smooth(maps, self.smoothing_sigma)
        return maps.flatten(1).amax(1), maps
