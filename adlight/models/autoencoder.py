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
from sklearn.neighbors import KernelDensity
from sklearn.preprocessing import StandardScaler
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.losses import (
    LossName,
    check_loss_name,
    kl_divergence,
    reconstruction_error,
    sparsity_penalty,
    ssim_map,
)
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.models.fitted_head import FittedHeadMixin
from adlight.nets.maps import smooth


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
        self._kde: tuple[StandardScaler, KernelDensity, tuple[Tensor, ...]] | None = None

    # ----- the network in image units -----------------------------------------------
    @property
    def input_range(self) -> tuple[float, float]:
        return tuple(getattr(self.network, "input_range", (0.0, 1.0)))

    def to_network(self, images: Tensor) -> Tensor:
        low, high = self.input_range
        return images * (high - low) + low

    def to_image(self, values: Tensor) -> Tensor:
        low, high = self.input_range
        return (values - low) / (high - low)

    def reconstruct(self, images: Tensor):
        # the network checks the shape itself and names the argument to change
        out = self.network(self.to_network(images))
        return out, self.to_image(out.reconstruction)

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

    # ----- scoring --------------------------------------------------------------------
    def anomaly_maps(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        if self.map_kind == "ssim":
            maps = (1.0 - ssim_map(reconstruction, images)).mean(1, keepdim=True)
        else:
            maps = (images.float() - reconstruction.float()).abs().amax(1, keepdim=True)
        return smooth(maps, self.smoothing_sigma)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        images = batch["image"]
        out, reconstruction = self.reconstruct(images)
        maps = self.anomaly_maps(images, reconstruction)
        if self.image_score == "mean":
            score = (images.float() - reconstruction.float()).pow(2).flatten(1).mean(1)
        else:
            score = maps.flatten(1).amax(1)
        if self.uses_fitted_head:
            score = self.kde_score(score, self.latent_code(out))
        return {"score": score, "anomaly_map": maps, "reconstruction": reconstruction}

    @staticmethod
    def latent_code(out) -> Tensor:
        return (out.mu if out.mu is not None else out.latent).flatten(1).float()

    # ----- the KD-CAE head ------------------------------------------------------------
    def head_features(self, batch: dict) -> Tensor:
        images = batch["image"]
        out, reconstruction = self.reconstruct(images)
        error = (images.float() - reconstruction.float()).pow(2).flatten(1).mean(1, keepdim=True)
        return torch.cat([error, self.latent_code(out)], dim=1)

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        features = features.detach().double().cpu()
        return {"kde_errors": features[:, 0].contiguous(), "kde_codes": features[:, 1:].contiguous()}

    def on_head_changed(self) -> None:
        self._kde = None

    def fitted_kde(self) -> tuple[StandardScaler, KernelDensity, tuple[Tensor, ...]]:
        """The scaler and KDE on the training codes, and the mean and std of both criteria."""
        if self._kde is None:
            codes = self.kde_codes.cpu().numpy()
            scaler = StandardScaler().fit(codes)
            kde = KernelDensity(kernel="gaussian", bandwidth=self.kde_bandwidth).fit(scaler.transform(codes))
            # standardise both criteria by their spread on the training normals
            nll = torch.from_numpy(-kde.score_samples(scaler.transform(codes)))
            errors = self.kde_errors.cpu()
            stats = (errors.mean(), errors.std().clamp_min(1e-12), nll.mean(), nll.std().clamp_min(1e-12))
            self._kde = (scaler, kde, stats)
        return self._kde

    def kde_score(self, error: Tensor, codes: Tensor) -> Tensor:
        if not bool(self.is_fitted):
            # during fitting the head does not exist before the first validation
            return error
        scaler, kde, (e_mean, e_std, n_mean, n_std) = self.fitted_kde()
        nll = torch.from_numpy(-kde.score_samples(scaler.transform(codes.detach().double().cpu().numpy())))
        z_error = (error.detach().double().cpu() - e_mean) / e_std
        z_density = (nll - n_mean) / n_std
        combined = torch.maximum(z_error, z_density) if self.kde_combination == "max" else z_error + z_density
        return combined.to(device=error.device, dtype=torch.float32)
