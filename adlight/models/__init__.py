"""LightningModules: one per method family, built on :class:`AnomalyModule`."""

from adlight.models.autoencoder import AutoencoderModel
from adlight.models.base import AnomalyModule
from adlight.models.classifier import SupervisedClassifier
from adlight.models.feature_discriminator import FeatureDiscriminatorModel
from adlight.models.fitted_head import FittedHeadMixin, FrozenFeaturesModule
from adlight.models.gan import GANModel
from adlight.models.nearest_neighbour import NearestNeighbourModel
from adlight.models.ocsvm import OneClassSVMModel
from adlight.models.patch import PadimModel, PatchCoreModel
from adlight.models.student_teacher import StudentTeacherModel

__all__ = [
    "AnomalyModule",
    "AutoencoderModel",
    "FeatureDiscriminatorModel",
    "FittedHeadMixin",
    "FrozenFeaturesModule",
    "GANModel",
    "NearestNeighbourModel",
    "OneClassSVMModel",
    "PadimModel",
    "PatchCoreModel",
    "StudentTeacherModel",
    "SupervisedClassifier",
]
