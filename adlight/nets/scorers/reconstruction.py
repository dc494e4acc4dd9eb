"""The autoencoders' scorer: reconstruction, residual or 1 - SSIM map, mean or max score, and
KD-CAE's kernel density on the latent code in closed form.

- :class:`ReconstructionScorer`: any :class:`~adlight.nets.Autoencoder` (Fadaeinejad; Zhao &
  Karray; Wilmet et al.), scored as ``AutoencoderModel`` configures it.
- :class:`KernelDensityHead`: scikit-learn's Gaussian ``KernelDensity`` over the training
  normals' standardised codes written out (float64, as ``score_samples``), so that it runs
  on any device and traces: the codes are a buffer, the density one matrix product and a
  ``logsumexp``.
- :class:`SSIMMap`: torchmetrics' per-pixel SSIM with five convolutions instead of one on a
  concatenation split by batch size, which tracing would freeze to the example's batch
  (bit-identical to ``adlight.losses.ssim_map`` in eager torch).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image.ssim import _gaussian_kernel_2d

from adlight.nets.maps import smooth
from adlight.nets.precision import full_precision
from adlight.nets.scorers.base import LOCALISING, Scorer


def network_range(network: nn.Module) -> tuple[float, float]:
    """The pixel range the network reads and writes (``input_range``, default [0, 1])."""
    low, high = getattr(network, "input_range", (0.0, 1.0))
    return float(low), float(high)


def reconstruct(network: nn.Module, images: Tensor):
    """``(network output, reconstruction in [0, 1] image units)`` of ``[0, 1]`` images."""
    low, high = network_range(network)
    # the network checks the shape itself and names the argument to change
    out = network(images * (high - low) + low)
    return out, (out.reconstruction - low) / (high - low)


def latent_code(out) -> Tensor:
    """N x d: the mean of a variational network, else its latent."""
    return (out.mu if out.mu is not None else out.latent).flatten(1).float()


class SSIMMap(nn.Module):
    """``adlight.losses.ssim_map`` (torchmetrics, data range 1, sigma 1.5) for any batch size."""

    def __init__(self, channels: int, sigma: float = 1.5) -> None:
        super().__init__()
        size = int(3.5 * sigma + 0.5) * 2 + 1  # torchmetrics' Gaussian kernel size
        # built with autocast off: the scorer may first be built inside a bf16-mixed step, where
        # torchmetrics' outer product of the two 1-D Gaussians would run (and stay) in bfloat16
        with torch.autocast(device_type="cpu", enabled=False):
            kernel = _gaussian_kernel_2d(channels, [size, size], [sigma, sigma], torch.float32, "cpu")
        self.register_buffer("kernel", kernel)
        self.pad, self.channels = (size - 1) // 2, channels
        self.c1, self.c2 = 0.01 ** 2, 0.03 ** 2

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        with full_precision(target):  # unstable in half precision
            preds, target = (F.pad(t.float(), [self.pad] * 4, mode="reflect") for t in (preds, target))
            mu_p, mu_t, p2, t2, pt = (F.conv2d(t, self.kernel, groups=self.channels)
                                      for t in (preds, target, preds * preds, target * target, preds * target))
            mu_p_sq, mu_t_sq, mu_pt = mu_p.pow(2), mu_t.pow(2), mu_p * mu_t
            sigma_p_sq, sigma_t_sq = (p2 - mu_p_sq).clamp(min=0.0), (t2 - mu_t_sq).clamp(min=0.0)
            upper = 2 * (pt - mu_pt) + self.c2
            lower = (sigma_p_sq + sigma_t_sq) + self.c2
            return ((2 * mu_pt + self.c1) * upper) / ((mu_p_sq + mu_t_sq + self.c1) * lower)


class KernelDensityHead(nn.Module):
    """``max`` or ``sum`` of the standardised error and the standardised KDE negative log-density.

    Built by :meth:`fit` from the training normals' errors and codes; the standardised codes
    are a buffer, the scaler, bandwidth and the two criteria's mean and spread are numbers.
    """

    def __init__(self, codes: Tensor, mean: Tensor, scale: Tensor, bandwidth: float,
                 combination: str, stats: tuple[float, float, float, float] = (0.0, 1.0, 0.0, 1.0)) -> None:
        super().__init__()
        self.register_buffer("codes", codes.double())  # the training codes, standardised
        self.register_buffer("mean", mean.double())
        self.register_buffer("scale", scale.double())
        n, d = codes.shape
        # scikit-learn's Gaussian kernel normalisation: -log n - d log h - d/2 log(2 pi)
        self.log_norm = -math.log(n) - d * math.log(bandwidth) - 0.5 * d * math.log(2 * math.pi)
        self.bandwidth = float(bandwidth)
        self.combination = combination
        self.error_mean, self.error_std, self.nll_mean, self.nll_std = (float(v) for v in stats)

    @classmethod
    def fit(cls, errors: Tensor, codes: Tensor, bandwidth: float | str, combination: str) -> KernelDensityHead:
        """scikit-learn's scaler and bandwidth rule on the codes (N x d), then the density in
        closed form; both criteria are standardised by their spread on the training normals."""
        from sklearn.neighbors import KernelDensity
        from sklearn.preprocessing import StandardScaler

        codes_np = codes.detach().double().cpu().numpy()
        scaler = StandardScaler().fit(codes_np)
        standardised = scaler.transform(codes_np)
        rule = KernelDensity(kernel="gaussian", bandwidth=bandwidth).fit(standardised)
        head = cls(torch.from_numpy(standardised), torch.from_numpy(scaler.mean_),
                   torch.from_numpy(scaler.scale_), float(rule.bandwidth_), combination).to(codes.device)
        nll = head.negative_log_density(codes)
        errors = errors.detach().double()
        head.error_mean, head.error_std = float(errors.mean()), float(errors.std().clamp_min(1e-12))
        head.nll_mean, head.nll_std = float(nll.mean()), float(nll.std().clamp_min(1e-12))
        return head

    def negative_log_density(self, codes: Tensor) -> Tensor:
        x = (codes.double() - self.mean) / self.scale
        d2 = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ self.codes.T + self.codes.pow(2).sum(1)
        return -(torch.logsumexp(-0.5 * d2.clamp_min(0.0) / self.bandwidth ** 2, dim=1) + self.log_norm)

    def forward(self, error: Tensor, codes: Tensor) -> Tensor:
        with full_precision(codes):
            z_error = (error.double() - self.error_mean) / self.error_std
            z_density = (self.negative_log_density(codes) - self.nll_mean) / self.nll_std
            combined = torch.maximum(z_error, z_density) if self.combination == "max" else z_error + z_density
            return combined.float()


class ReconstructionScorer(Scorer):
    """An autoencoder's score and map: see ``adlight.models.AutoencoderModel``'s arguments.

    Args:
        network: the autoencoder (shared with the LightningModule that trains it).
        map_kind: ``residual`` (|x - x_hat|, max over channels) or ``ssim`` (1 - SSIM, mean
            over channels).
        smoothing_sigma: Gaussian blur of the map, in pixels.
        image_score: ``mean`` (mean squared residual) or ``max_smoothed`` (max of the map).
        density: KD-CAE's fitted :class:`KernelDensityHead` (``None``: the error alone).
    """

    outputs = LOCALISING

    def __init__(self, network: nn.Module, map_kind: str = "residual", smoothing_sigma: float = 0.0,
                 image_score: str = "mean", density: KernelDensityHead | None = None) -> None:
        super().__init__()
        self.network = network
        self.ssim = SSIMMap(int(network.in_channels)) if map_kind == "ssim" else None
        if self.ssim is not None:
            # local variances are E[x^2] - E[x]^2 of 11 x 11 windows: a float32 cancellation
            # that turns other kernels' rounding (1e-7) into about 2e-4 of the map
            self.export_rtol = 1e-3
        self.smoothing_sigma = float(smoothing_sigma)
        self.image_score = image_score
        self.density = density

    def anomaly_maps(self, images: Tensor, reconstruction: Tensor) -> Tensor:
        if self.ssim is not None:
            maps = (1.0 - self.ssim(reconstruction, images)).mean(1, keepdim=True)
        else:
            maps = (images.float() - reconstruction.float()).abs().amax(1, keepdim=True)
        return smooth(maps, self.smoothing_sigma)

    def score_with_reconstruction(self, images: Tensor) -> dict[str, Tensor]:
        """``score``, ``anomaly_map`` and ``reconstruction`` (for the figures)."""
        out, reconstruction = reconstruct(self.network, images)
        maps = self.anomaly_maps(images, reconstruction)
        if self.image_score == "mean":
            score = (images.float() - reconstruction.float()).pow(2).flatten(1).mean(1)
        else:
            score = maps.flatten(1).amax(1)
        if self.density is not None:
            score = self.density(score, latent_code(out))
        return {"score": score, "anomaly_map": maps, "reconstruction": reconstruction}

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out = self.score_with_reconstruction(images)
        return out["score"].float(), out["anomaly_map"].float()
