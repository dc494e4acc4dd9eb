"""Fitted heads that score through scikit-learn or faiss, as tensor constants and matrix products.

- :class:`KernelDensityHead`: KD-CAE's scaler and Gaussian KDE (``AutoencoderModel.fitted_kde``)
  in closed form, in float64 like scikit-learn's ``score_samples``.
- :class:`SSIMMap`: torchmetrics' per-pixel SSIM with five convolutions instead of one on
  a concatenation split by batch size, which tracing would freeze to the example's batch.
- :class:`NearestBankDistances`: PatchCore's k-nearest distances to the memory bank, the bank a
  constant, compared in chunks of rows so memory stays queries x chunk whatever the bank size.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.functional.image.ssim import _gaussian_kernel_2d


class KernelDensityHead(nn.Module):
    """``max`` or ``sum`` of the standardised error and the standardised KDE negative log-density."""

    def __init__(self, codes: Tensor, mean: Tensor, scale: Tensor, bandwidth: float,
                 stats: tuple[float, float, float, float], combination: str) -> None:
        super().__init__()
        self.register_buffer("codes", codes.double())  # the training codes, standardised
        self.register_buffer("mean", mean.double())
        self.register_buffer("scale", scale.double())
        n, d = codes.shape
        # scikit-learn's Gaussian kernel normalisation: -log n - d log h - d/2 log(2 pi)
        self.log_norm = -math.log(n) - d * math.log(bandwidth) - 0.5 * d * math.log(2 * math.pi)
        self.bandwidth = float(bandwidth)
        self.error_mean, self.error_std, self.nll_mean, self.nll_std = (float(v) for v in stats)
        self.combination = combination

    @classmethod
    def from_model(cls, model) -> KernelDensityHead:
        scaler, kde, stats = model.fitted_kde()
        codes = torch.from_numpy(scaler.transform(model.kde_codes.cpu().numpy()))
        return cls(codes, torch.from_numpy(scaler.mean_), torch.from_numpy(scaler.scale_),
                   float(kde.bandwidth_), tuple(float(v) for v in stats), model.kde_combination)

    def forward(self, error: Tensor, codes: Tensor) -> Tensor:
        x = (codes.double() - self.mean) / self.scale
        d2 = x.pow(2).sum(1, keepdim=True) - 2.0 * x @ self.codes.T + self.codes.pow(2).sum(1)
        nll = -(torch.logsumexp(-0.5 * d2.clamp_min(0.0) / self.bandwidth ** 2, dim=1) + self.log_norm)
        z_error = (error.double() - self.error_mean) / self.error_std
        z_density = (nll - self.nll_mean) / self.nll_std
        combined = torch.maximum(z_error, z_density) if self.combination == "max" else z_error + z_density
        return combined.float()


class NearestBankDistances(nn.Module):
    """Queries Q x D -> Euclidean distances Q x k to the k nearest bank rows (ascending).

    ``|q - b|^2 = |q|^2 + (|b|^2 - 2 q.b)``: the bracket is one Gemm per chunk against the
    stored ``-2 bank^T`` with ``|b|^2`` as its bias, and ``|q|^2`` is added after the min,
    which it does not change. Measured on 2 cores (256 px bottle, 21k-row bank), ONNX
    Runtime took 284 ms per image with the three Q x chunk passes of the plain formula.
    """

    def __init__(self, bank: Tensor, k: int, chunk: int) -> None:
        super().__init__()
        bank = bank.float()
        self.register_buffer("bank_t", (-2.0 * bank).T.contiguous())  # D x M
        self.register_buffer("bank_sq", bank.pow(2).sum(1))
        self.k = int(k)
        self.chunk = max(1, int(chunk))

    def forward(self, queries: Tensor) -> Tensor:
        best = None
        for start in range(0, self.bank_sq.shape[0], self.chunk):
            stop = start + self.chunk
            partial = torch.addmm(self.bank_sq[start:stop], queries, self.bank_t[:, start:stop])
            if self.k == 1:
                part = partial.amin(1, keepdim=True)
                best = part if best is None else torch.minimum(best, part)
            else:
                part = torch.topk(partial, min(self.k, partial.shape[1]), dim=1, largest=False).values
                both = part if best is None else torch.cat([best, part], dim=1)
                best = torch.topk(both, min(self.k, both.shape[1]), dim=1, largest=False).values
        return (best + queries.pow(2).sum(1, keepdim=True)).clamp_min(0.0).sqrt()


class SSIMMap(nn.Module):
    """``adlight.losses.ssim_map`` (torchmetrics, data range 1, sigma 1.5) for any batch size."""

    def __init__(self, channels: int, sigma: float = 1.5) -> None:
        super().__init__()
        size = int(3.5 * sigma + 0.5) * 2 + 1  # torchmetrics' Gaussian kernel size
        self.register_buffer("kernel", _gaussian_kernel_2d(channels, [size, size], [sigma, sigma],
                                                           torch.float32, "cpu"))
        self.pad, self.channels = (size - 1) // 2, channels
        self.c1, self.c2 = 0.01 ** 2, 0.03 ** 2

    def forward(self, preds: Tensor, target: Tensor) -> Tensor:
        preds, target = (F.pad(t.float(), [self.pad] * 4, mode="reflect") for t in (preds, target))
        mu_p, mu_t, p2, t2, pt = (F.conv2d(t, self.kernel, groups=self.channels)
                                  for t in (preds, target, preds * preds, target * target, preds * target))
        mu_p_sq, mu_t_sq, mu_pt = mu_p.pow(2), mu_t.pow(2), mu_p * mu_t
        sigma_p_sq, sigma_t_sq = (p2 - mu_p_sq).clamp(min=0.0), (t2 - mu_t_sq).clamp(min=0.0)
        upper = 2 * (pt - mu_pt) + self.c2
        lower = (sigma_p_sq + sigma_t_sq) + self.c2
        return ((2 * mu_pt + self.c1) * upper) / ((mu_p_sq + mu_t_sq + self.c1) * lower)
