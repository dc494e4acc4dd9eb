"""AnoGAN's latent search (Schlegl et al., 2017), plain torch over a trained G and D.

It lives beside the networks rather than in the Lightning module because it is a
computation on two ``nn.Module``s alone: it can be tested, timed and reused without a
Trainer. :class:`~adlight.models.GANModel` calls it for its ``latent_search`` score.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class LatentSearchResult:
    """What :func:`latent_search` found for a batch.

    Attributes:
        latent: ``z*`` (N x latent_dim).
        reconstruction: ``G(z*)`` (network units, or image units once the caller converts).
        residual: mean |x - G(z*)| per image, times ``residual_scale``.
        feature_distance: mean |f(x) - f(G(z*))| per image.
        loss: ``(1 - weight) * residual + weight * feature_distance`` per image (the score).
        history: that loss per image before every step and after the last (steps + 1 x N).
    """

    latent: Tensor
    reconstruction: Tensor
    residual: Tensor
    feature_distance: Tensor
    loss: Tensor
    history: Tensor


def latent_search(
    generator: nn.Module,
    discriminator: nn.Module,
    target: Tensor,
    initial_latent: Tensor,
    steps: int,
    lr: float,
    weight: float,
    residual_scale: float = 1.0,
) -> LatentSearchResult:
    """Adam on ``z`` alone so that ``G(z)`` matches each ``target`` (in the networks' units).

    ``discriminator.features`` is AnoGAN's ``f``. Both networks run in eval mode (BatchNorm
    on its running statistics, so each image's search is independent of its batch) and are
    left as they were; gradients are on even inside ``torch.inference_mode`` (Lightning's
    validation and test loops).
    """
    states = (generator.training, discriminator.training)
    generator.eval()
    discriminator.eval()
    try:
        with torch.inference_mode(False), torch.enable_grad():
            # clone: tensors made under inference_mode cannot take part in autograd
            target = target.detach().clone()
            target_features = discriminator.features(target).detach()
            z = initial_latent.detach().clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=lr)

            def losses(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
                fake = generator(z)
                residual = (target - fake).abs().flatten(1).mean(1) * residual_scale
                feature = (target_features - discriminator.features(fake)).abs().flatten(1).mean(1)
                return fake, residual, feature, (1 - weight) * residual + weight * feature

            history = []
            for _ in range(steps):
                loss = losses(z)[3]
                history.append(loss.detach())
                # per-image losses are independent, so the sum's gradient is each image's own
                (grad,) = torch.autograd.grad(loss.sum(), [z])
                z.grad = grad
                optimizer.step()
            with torch.no_grad():
                fake, residual, feature, loss = losses(z)
            history.append(loss.detach())
    finally:
        generator.train(states[0])
        discriminator.train(states[1])
    return LatentSearchResult(latent=z.detach(), reconstruction=fake.detach(),
                              residual=residual.detach(), feature_distance=feature.detach(),
                              loss=loss.detach(), history=torch.stack(history))
