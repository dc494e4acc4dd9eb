"""Convolutional autoencoders for anomaly detection (Fadaeinejad; Zhao & Karray; Wilmet et al.).

The network is handed in (any :class:`adlight.nets.Autoencoder`), so one module serves every
autoencoder of the papers; the YAML names the network, the loss and the optimiser.

Method, as the papers describe it:
- train on normal images to reconstruct them (``loss``: L2, L2 + lambda*||z||_1, 1 - SSIM
  or BCE; a variational network adds the KL term of the ELBO);
- optionally inject Gaussian noise into a random fraction of the training images
  (Wilmet et al.'s NI-CAE);
- the anomaly map is the per-pixel residual |x - x_hat|, max over channels (Fadaeinejad's
  Algorithm 1), or 1 - SSIM; thresholding it at tau gives the defect mask;
- the image score is the mean squared reconstruction error or the max of the smoothed map,
  or (``kde: true``, Wilmet et al.'s KD-CAE) that error combined with the negative
  log-density of the image's latent code under a kernel density fitted on the latent
  codes of the training normals.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.losses import (
    LossName,
    check_loss_name,
    kl_divergence,
    reconstruction_error,
    sparsity_penalty,
)
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.models.fitted_head import FittedHeadMixin
from adlight.nets.scorers.reconstruction import (
    KernelDensityHead,
    ReconstructionScorer,
    latent_code,
    network_range,
    reconstruct,
)


class AutoencoderModel(FittedHeadMixin, AnomalyModule):
    """Reconstruction-based anomaly detection with any :class:`adlight.nets.Autoencoder`.

    Args:
        network: the autoencoder (e.g. ``adlight.nets.FadaeinejadAE``).
        loss: ``l2``, ``l1_sparse`` (L2 + ``sparsity_weight`` * ||z||_1), ``ssim``, ``bce``.
        sparsity_weight: lambda of ``l1_sparse`` (Zhao & Karray: 0.002 HAM10000, 4e-4 driving).
        kl_weight: weight of the KL term when the network is variational (1 = the ELBO).
        noise_fraction: fraction of training images that get Gaussian noise (NI-CAE: 0.1).
        noise_variance: variance of that noise (NI-CAE: 0.001).
        anomaly_map: ``residual`` (|x - x_hat|, max over channels) or ``ssim`` (1 - SSIM,
            mean over channels).
        smoothing_sigma: Gaussian blur of the anomaly map, in pixels (0 = none).
        image_score: ``mean`` (mean squared residual) or ``max_smoothed`` (max of the map).
        kde: score with a kernel density on the latent codes as well (KD-CAE).
        kde_bandwidth: a number (in standardised latent units), ``scott`` or ``silverman``.
        kde_combination: ``max`` of the two standardised scores (anomalous when either
            criterion is, as KD-CAE's two thresholds) or their ``sum``.
        optimizer, scheduler: factories given by the config (class_path + init_args).
        allow_untrained: score with the weights it was built with, never trained (see AnomalyModule).
    """

    def __init__(
        self,
        network: nn.Module,
        loss: LossName = "l2",
        sparsity_weight: float = 0.002,
        kl_weight: float = 1.0,
        noise_fraction: float = 0.0,
        noise_variance: float = 0.001,
        anomaly_map: Literal["residual", "ssim"] = "residual",
        smoothing_sigma: float = 0.0,
        image_score: Literal["mean", "max_smoothed"] = "mean",
        kde: bool = False,
        kde_bandwidth: float | str = "scott",
        kde_combination: Literal["max", "sum"] = "max",
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        optimizer: OptimizerCallable = torch.optim.Adam,
        scheduler: LRSchedulerCallable | None = None,
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples, allow_untrained)
        self.save_hyperparameters(ignore=["network", "optimizer", "scheduler"])
        self.network = network
        self.loss_name = check_loss_name(loss)
        if not 0.0 <= noise_fraction <= 1.0:
            raise ConfigError(f"noise_fraction must be in [0, 1], got {noise_fraction}")
        if anomaly_map not in ("residual", "ssim"):
            raise ConfigError(f"anomaly_map must be 'residual' or 'ssim', got {anomaly_map!r}")
        if image_score not in ("mean", "max_smoothed"):
            raise ConfigError(f"image_score must be 'mean' or 'max_smoothed', got {image_score!r}")
        if kde_combination not in ("max", "sum"):
            raise ConfigError(f"kde_combination must be 'max' or 'sum', got {kde_combination!r}")
        if isinstance(kde_bandwidth, str) and kde_bandwidth not in ("scott", "silverman"):
            raise ConfigError(
                f"kde_bandwidth must be a number, 'scott' or 'silverman', got {kde_bandwidth!r}"
            )
        self.sparsity_weight = sparsity_weight
        self.kl_weight = kl_weight
        self.noise_fraction = noise_fraction
        self.noise_std = math.sqrt(noise_variance)
        self.map_kind = anomaly_map
        self.smoothing_sigma = smoothing_sigma
        self.image_score = image_score
        self.kde_bandwidth = kde_bandwidth
        self.kde_combination = kde_combination
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        if kde:  # the KD-CAE's kernel density is a fitted head: the training normals'
            # squared errors and latent codes (float64), from which the KDE is rebuilt
            self.register_head(kde_errors=torch.empty(0, dtype=torch.float64),
                               kde_codes=torch.empty(0, 0, dtype=torch.float64))

    # ----- the network in image units -----------------------------------------------
    @property
    def input_range(self) -> tuple[float, float]:
        return network_range(self.network)

    def to_network(self, images: Tensor) -> Tensor:
        low, high = self.input_range
        return images * (high - low) + low

    def to_image(self, values: Tensor) -> Tensor:
        low, high = self.input_range
        return (values - low) / (high - low)

    def reconstruct(self, images: Tensor):
        return reconstruct(self.network, images)

    # ----- training -------------------------------------------------------------------
    def inject_noise(self, images: Tensor) -> Tensor:
        if self.noise_fraction <= 0:
            return images
        chosen = torch.rand(images.shape[0], device=images.device) < self.noise_fraction
        noise = torch.randn_like(images) * self.noise_std * chosen.view(-1, 1, 1, 1)
        return (images + noise).clamp(0.0, 1.0)

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        images = self.inject_noise(batch["image"])
        out, reconstruction = self.reconstruct(images)
        error = reconstruction_error(self.loss_name, reconstruction, images)
        loss = error.mean()
        if self.loss_name == "l1_sparse":
            penalty = sparsity_penalty(out.latent).mean()
            loss = loss + self.sparsity_weight * penalty
            self.log("train/sparsity", penalty)
        if out.mu is not None:
            # the ELBO: a log-likelihood summed over pixels against the KL summed over z
            kl = kl_divergence(out.mu, out.logvar).mean()
            loss = error.mean() * images[0].numel() + self.kl_weight * kl
            self.log("train/kl", kl)
        self.log("train/reconstruction", error.mean())
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": self.scheduler_factory(optimizer)}

    # ----- scoring: adlight.nets.scorers.reconstruction ---------------------------------
    @classmethod
    def examples(cls, image_size: int = 32) -> list[AutoencoderModel]:
        from adlight.nets import FadaeinejadAE

        def network():
            return FadaeinejadAE(in_channels=3, image_size=image_size, latent_dim=8)

        return [cls(network(), smoothing_sigma=1.0, image_score="max_smoothed", kde=True),  # KD-CAE's head
                cls(network(), loss="ssim", anomaly_map="ssim")]

    described_networks = ("network",)

    def build_scorer(self) -> ReconstructionScorer:
        density = None
        if self.uses_fitted_head and bool(self.is_fitted):
            # before the head is fitted (the first validation of a fit) the error scores alone
            density = KernelDensityHead.fit(self.kde_errors, self.kde_codes, self.kde_bandwidth,
                                            self.kde_combination)
        return ReconstructionScorer(self.network, self.map_kind, self.smoothing_sigma, self.image_score, density)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        return self.scoring_module().score_with_reconstruction(batch["image"])

    def anomaly_maps(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        """N x 1 x H x W maps of images and their reconstructions (the scorer's)."""
        return self.scoring_module().anomaly_maps(images, reconstruction)

    # ----- the KD-CAE head ------------------------------------------------------------
    def head_features(self, batch: dict) -> Tensor:
        images = batch["image"]
        out, reconstruction = self.reconstruct(images)
        error = (images.float() - reconstruction.float()).pow(2).flatten(1).mean(1, keepdim=True)
        return torch.cat([error, latent_code(out)], dim=1)

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        features = features.detach().double().cpu()
        return {"kde_errors": features[:, 0].contiguous(), "kde_codes": features[:, 1:].contiguous()}
