"""Plain-torch networks (no Lightning): one file per paper family.

Autoencoders subclass :class:`~adlight.nets.autoencoder.Autoencoder` and follow the
"Networks" contract in ``docs/contracts.md``.
"""

from adlight.nets.autoencoder import Autoencoder, AutoencoderOutput
from adlight.nets.backbones import Backbone
from adlight.nets.dcgan import DCGANDiscriminator, DCGANGenerator
from adlight.nets.fadaeinejad import FadaeinejadAE
from adlight.nets.feature_discriminator import FeatureDiscriminator
from adlight.nets.features import RawPixels, TransferFeatures
from adlight.nets.patch_features import PatchFeatures
from adlight.nets.small_cnn import SmallCNN
from adlight.nets.student_teacher import StudentTeacher
from adlight.nets.wilmet import KDCAE, NICAE
from adlight.nets.zhao_karray import ZhaoKarrayAE

__all__ = [
    "KDCAE",
    "NICAE",
    "Autoencoder",
    "Backbone",
    "DCGANDiscriminator",
    "DCGANGenerator",
    "FeatureDiscriminator",
    "PatchFeatures",
    "RawPixels",
    "SmallCNN",
    "StudentTeacher",
    "TransferFeatures",
    "AutoencoderOutput",
    "FadaeinejadAE",
    "ZhaoKarrayAE",
]
