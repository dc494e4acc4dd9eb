"""SimpleNet (Liu et al., CVPR 2023): a discriminator on adapted frozen patch features.

The network (:class:`~adlight.nets.FeatureDiscriminator`) is the whole scorer; this module
only trains it, as the paper's method section reads:

- the frozen backbone's patch features of every training normal are computed once, when
  training starts, and kept (float16) with the per-channel statistics that standardise
  them: the backbone never runs backward and never runs twice on one image;
- each training step takes the patches of the batch's images (looked up by their dataset
  ``index``), adapts them, adds Gaussian noise (``noise_std``, in standardised feature
  units) to make synthetic anomalous patches, and trains adaptor and discriminator with
  the truncated L1 loss (``margin``);
- a patch's anomaly score is minus the discriminator's output; the map and image score
  come from the network's ``forward``.

The training images' pixels are not used after the first epoch (only their index), so
train-time augmentations are not seen by this family: the features are those of the
training normals as validation and test see images.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn

from adlight.checks import check_int, is_number
from adlight.errors import ConfigError
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.models.training_normals import gather_training_features
from adlight.nets.feature_discriminator import FeatureDiscriminator


def adam_with_weight_decay(parameters) -> torch.optim.Optimizer:
    """SimpleNet's optimiser for the discriminator and adaptor (Adam, lr 2e-4, wd 1e-5)."""
    return torch.optim.Adam(parameters, lr=2e-4, weight_decay=1e-5)


class FeatureDiscriminatorModel(AnomalyModule):
    """Trains a :class:`FeatureDiscriminator` on cached patch features of the training normals.

    Args:
        network: the :class:`~adlight.nets.FeatureDiscriminator` (frozen features, adaptor,
            discriminator, map smoothing).
        noise_std: standard deviation of the Gaussian noise that makes a synthetic anomalous
            patch from an adapted normal one, in standardised feature units.
        margin: the truncated L1 loss's margin (SimpleNet: 0.5).
        patches_per_image: patches of each batch image trained on per step (random, every
            step anew); ``null`` takes all of them.
        optimizer: a factory for the adaptor's and discriminator's optimiser.
        seed: seeds the noise and the patch draws.
    """

    # its steps read the features gathered at train start, not images: fit_memory.py cannot
    # run one before them (and would draw from the seeded generator the steps use); the
    # features themselves are what a fit holds, checked by check_feature_memory
    measures_training_step = False

    def __init__(
        self,
        network: FeatureDiscriminator,
        noise_std: float = 0.5,
        margin: float = 0.5,
        patches_per_image: int | None = None,
        optimizer: OptimizerCallable = adam_with_weight_decay,
        seed: int = 0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples, allow_untrained)
        self.save_hyperparameters(ignore=["network", "optimizer"])
        if not isinstance(network, FeatureDiscriminator):
            raise ConfigError(f"network must be an adlight.nets.FeatureDiscriminator, got {type(network).__name__}")
        for argument, value in (("noise_std", noise_std), ("margin", margin)):
            if not is_number(value) or value <= 0:
                raise ConfigError(f"{argument} must be a number > 0, got {value!r}")
        if patches_per_image is not None:
            check_int("patches_per_image", patches_per_image)
        self.network = network
        self.noise_std = float(noise_std)
        self.margin = float(margin)
        self.patches_per_image = patches_per_image
        self.optimizer_factory = optimizer
        self.seed = seed
        #: training normals' patch features by dataset index (N x h w x D, float16), this fit only
        self._train_patches: Tensor | None = None
        self._generator: torch.Generator | None = None

    # ----- limits before work starts ----------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.check_feature_memory()

    def feature_bytes(self, n_images: int) -> int:
        """The training features a fit keeps (float16), twice: gathered, then laid out as rows."""
        height, width = self.network.features.grid_size
        return 2 * n_images * height * width * self.network.feature_dim * 2

    def check_feature_memory(self) -> None:
        """Refuse, before any feature is extracted, training features that would not fit in the
        memory the device has free, with one line saying how many images would."""
        from adlight.models.training_normals import training_normals_dataset
        from adlight.process_memory import available_bytes

        try:
            n_images = len(training_normals_dataset(self.trainer))
        except (ConfigError, TypeError):
            return  # no adlight datamodule: gather_training_features names the problem
        need, available = self.feature_bytes(n_images), available_bytes(self.device)
        if available is None or need <= 0.9 * available:
            return
        height, width = self.network.features.grid_size
        fits = int(0.9 * available) // max(self.feature_bytes(1), 1)
        raise ConfigError(
            f"FeatureDiscriminatorModel's training features need about {need / 2**20:.0f} MB for "
            f"{n_images} images x {height}x{width} patches x {self.network.feature_dim} features, "
            f"more than 90 % of the {available / 2**20:.0f} MB free on {self.device}: use smaller "
            f"images (--data.image_size) or at most {fits} training images")

    # ----- training: features once, then feature vectors only --------------------------
    def on_train_start(self) -> None:
        super().on_train_start()
        grids = gather_training_features(self.trainer, self)  # N x D x h x w float16, by index
        n, d, h, w = grids.shape
        training = getattr(self.trainer.datamodule, "train_dataset", None)
        if training is not None and len(training) != n:
            # the steps look a batch's features up by its index in the training normals
            raise ConfigError(
                f"FeatureDiscriminatorModel trains on normal images only, but the train split has "
                f"{len(training) - n} anomalous ones: set --data.abnormal_train_fraction 0")
        self._train_patches = grids.permute(0, 2, 3, 1).reshape(n, h * w, d)
        # per-channel statistics from a strided sample of the patches (a few hundred thousand
        # rows give them to 3 digits; all of them would double the peak memory)
        rows = self._train_patches.reshape(-1, d)
        self.network.set_standardisation(rows[:: max(1, len(rows) // 200_000)])
        self._generator = torch.Generator(device=self.device).manual_seed(self.seed)

    def head_features(self, batch: dict) -> Tensor:
        """Patch features of a batch of training normals (for :func:`gather_training_features`)."""
        with torch.no_grad():
            return self.network.features(batch["image"]).to(torch.float16)

    head_feature_dtype = torch.float16

    def on_train_end(self) -> None:
        super().on_train_end()
        self._train_patches = None  # the features are for this fit only

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        if self._train_patches is None:
            raise ConfigError("FeatureDiscriminatorModel trains through adlight fit (Trainer.fit)")
        patches = self._train_patches[batch["index"].cpu()].to(self.device)  # B x h w x D
        if self.patches_per_image is not None and self.patches_per_image < patches.shape[1]:
            picks = torch.rand(patches.shape[:2], generator=self._generator, device=self.device) \
                .argsort(1)[:, : self.patches_per_image]
            patches = patches.gather(1, picks.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
        loss = self.network.loss(patches.reshape(-1, patches.shape[-1]), self.noise_std, self.margin,
                                 generator=self._generator)
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return self.optimizer_factory([p for p in self.network.parameters() if p.requires_grad])

    # ----- scoring: the network is the scorer -------------------------------------------
    @classmethod
    def examples(cls, image_size: int = 32) -> list[FeatureDiscriminatorModel]:
        from adlight.nets import Backbone, PatchFeatures

        features = PatchFeatures(Backbone("efficientnet_lite0", weights=None, input_size=image_size))
        return [cls(FeatureDiscriminator(features, hidden=16, smoothing_sigma=1.0))]

    def build_scorer(self) -> nn.Module:
        return self.network

    described_networks = ("network",)

    def export_facts(self) -> dict[str, Any]:
        features = self.network.features
        return {"model_class": type(self).__name__,
                "representation": {"network": {"class": type(self.network).__name__,
                                               **features.identity(),
                                               "smoothing_sigma": self.network.smoothing_sigma}}}
