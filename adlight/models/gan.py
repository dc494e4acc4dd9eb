"""DCGAN training and its two anomaly scores: the discriminator, and AnoGAN's latent search.

Method, as the papers describe it:
- Radford et al.'s DCGAN, trained as in Goodfellow et al.'s Algorithm 1: ``k``
  discriminator steps (one per training batch) for every generator step, the generator
  trained with the non-saturating loss ``-log D(G(z))``; Adam with lr 2e-4 and beta1 = 0.5
  unless the config says otherwise.
- Optionally (``generator_ema_decay``) an exponential moving average of the generator's
  weights (Yazici et al., 2019) draws the samples and is searched by AnoGAN: on MVTec bottle
  it roughly halved the Frechet distance of the raw generator (``docs/results.md``).
- Scores (``score``): ``discriminator``: ``-logit D(x)``; ``latent_search``: AnoGAN
  (:func:`adlight.nets.anogan.latent_search`): the loss at ``z*`` and the residual map
  |x - G(z*)| (max over channels, [0, 1] image units).

What runs beside training reads the model through :meth:`GANModel.sample_latent` and
:meth:`GANModel.generate`: sample grids and the Frechet distance are callbacks
(:mod:`adlight.callbacks.gan_samples`, :mod:`adlight.callbacks.frechet`), and
:mod:`adlight.models.gan_export` writes the generator to a ``.pt2`` file.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from adlight.checks import check_int
from adlight.errors import ConfigError
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.nets.anogan import LatentSearchResult, latent_search
from adlight.nets.maps import smooth
from adlight.nets.scorers.discriminator import DiscriminatorScorer

ScoreName = Literal["discriminator", "latent_search"]
SCORES = ("discriminator", "latent_search")

__all__ = ["GANModel", "LatentSearchResult"]


def default_dcgan_optimizer(params) -> torch.optim.Optimizer:
    """The DCGAN paper's optimiser: Adam, lr 2e-4, beta1 0.5."""
    return torch.optim.Adam(params, lr=2e-4, betas=(0.5, 0.999))


class GANModel(AnomalyModule):
    """A DCGAN trained with manual optimisation, scored by its discriminator or AnoGAN.

    Args:
        generator: ``z -> image`` in [-1, 1] (e.g. ``adlight.nets.DCGANGenerator``); needs
            ``latent_dim`` and ``sample_latent(n, generator, device)``.
        discriminator: ``image -> logit`` with ``features(x)`` (e.g.
            ``adlight.nets.DCGANDiscriminator``).
        score: ``discriminator`` or ``latent_search`` (AnoGAN), see the module docstring.
        discriminator_steps: k, discriminator steps per generator step (Goodfellow: 1).
        generator_ema_decay: average the generator's weights and BatchNorm statistics after
            every generator step with this decay (e.g. 0.995) and draw and search with the
            average; ``None``: the trained generator itself (the DCGAN paper).
        latent_search_steps, latent_search_lr: Adam steps on ``z`` per batch (AnoGAN: 500)
            and their learning rate.
        latent_search_weight: lambda, the weight of the discriminator-feature loss (AnoGAN: 0.1).
        latent_search_seed: seeds each image's starting ``z`` (with its dataset ``index``),
            so an image's score does not depend on its batch or on the global RNG.
        smoothing_sigma: Gaussian blur of the residual map, in pixels (0 = none).
        generator_optimizer, discriminator_optimizer: factories (``None``: Adam, lr 2e-4,
            betas (0.5, 0.999), as in the DCGAN paper).
        allow_untrained: score with the weights it was built with, never trained (see AnomalyModule).
    """

    #: each optimiser's step leaves the other network out of its backward pass, which
    #: torch's DDP must be told about (see adlight/strategies.py)
    ddp_find_unused_parameters = True

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        score: ScoreName = "latent_search",
        discriminator_steps: int = 1,
        generator_ema_decay: float | None = None,
        latent_search_steps: int = 100,
        latent_search_lr: float = 0.05,
        latent_search_weight: float = 0.1,
        latent_search_seed: int = 0,
        smoothing_sigma: float = 0.0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        num_examples: int = 4,
        allow_untrained: bool = False,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples, allow_untrained)
        self.save_hyperparameters(ignore=["generator", "discriminator",
                                          "generator_optimizer", "discriminator_optimizer"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self._check_networks()
        if score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}, got {score!r}")
        self.score_name = score
        self.k = check_int("discriminator_steps", discriminator_steps)
        if generator_ema_decay is not None and not 0.0 < generator_ema_decay < 1.0:
            raise ConfigError(
                f"generator_ema_decay must be in (0, 1) or null, got {generator_ema_decay!r}")
        self.generator_ema_decay = generator_ema_decay
        # Always a submodule, so every checkpoint has the same keys and loads into a model with
        # or without averaging; without, it is a copy of the generator (decay 0) kept up to date
        # after every step, so a model that averages starts from the trained generator.
        self.generator_ema = AveragedModel(
            generator, multi_avg_fn=get_ema_multi_avg_fn(generator_ema_decay or 0.0),
            use_buffers=True)
        self.generator_ema.requires_grad_(False)
        self.latent_search_steps = check_int("latent_search_steps", latent_search_steps)
        if not latent_search_lr > 0:
            raise ConfigError(f"latent_search_lr must be > 0, got {latent_search_lr!r}")
        if not 0.0 <= latent_search_weight <= 1.0:
            raise ConfigError(f"latent_search_weight must be in [0, 1], got {latent_search_weight!r}")
        self.latent_search_lr = float(latent_search_lr)
        self.latent_search_weight = float(latent_search_weight)
        self.latent_search_seed = int(latent_search_seed)
        self.smoothing_sigma = float(smoothing_sigma)
        self.generator_optimizer_factory = generator_optimizer or default_dcgan_optimizer
        self.discriminator_optimizer_factory = discriminator_optimizer or default_dcgan_optimizer
        # saved with the weights, so that a resumed run keeps the k:1 rhythm
        self.register_buffer("discriminator_step_count", torch.zeros((), dtype=torch.long))

    def _check_networks(self) -> None:
        g, d = self.generator, self.discriminator
        for name, net, needs in (("generator", g, ("latent_dim", "sample_latent")),
                                 ("discriminator", d, ("features",))):
            missing = [a for a in needs if not hasattr(net, a)]
            if missing:
                raise ConfigError(
                    f"{name} {type(net).__name__} lacks {missing}; use adlight.nets."
                    f"{'DCGANGenerator' if name == 'generator' else 'DCGANDiscriminator'} or "
                    "a network with the same methods"
                )
        for attr in ("image_size", "channels"):
            if getattr(g, attr, None) != getattr(d, attr, None):
                raise ConfigError(
                    f"generator.{attr}={getattr(g, attr, None)} but discriminator.{attr}="
                    f"{getattr(d, attr, None)}: set both to the data's {attr}"
                )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(channels, size, size)`` of the images :meth:`generate` returns."""
        size = int(self.generator.image_size)
        return int(self.generator.channels), size, size

    # ----- [0, 1] images <-> the networks' [-1, 1] -----------------------------------------
    @property
    def input_range(self) -> tuple[float, float]:
        return tuple(getattr(self.generator, "input_range", (-1.0, 1.0)))

    def to_network(self, images: Tensor) -> Tensor:
        low, high = self.input_range
        return images * (high - low) + low

    def to_image(self, values: Tensor) -> Tensor:
        low, high = self.input_range
        return ((values - low) / (high - low)).clamp(0.0, 1.0)

    # ----- what callbacks and the export read ----------------------------------------------
    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that draws images: the weight average when there is one."""
        return self.generator if self.generator_ema_decay is None else self.generator_ema.module

    def sample_latent(self, n: int, rng: torch.Generator | None = None) -> Tensor:
        """``n`` codes on the CPU, reproducible from ``rng``."""
        return self.generator.sample_latent(n, rng)

    @torch.no_grad()
    def generate(self, z: Tensor) -> Tensor:
        """``G(z)`` in [0, 1] image units, with the (sampling) generator in eval mode."""
        generator = self.sampling_generator
        was_training = generator.training
        generator.eval()
        try:
            return self.to_image(generator(z.to(self.device)))
        finally:
            generator.train(was_training)

    # ----- training -------------------------------------------------------------------------
    def configure_optimizers(self):
        return [self.generator_optimizer_factory(self.generator.parameters()),
                self.discriminator_optimizer_factory(self.discriminator.parameters())]

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt_g, opt_d = self.optimizers()
        real = self.to_network(batch["image"])
        n = real.shape[0]
        generator_turn = int(self.discriminator_step_count + 1) % self.k == 0
        z = self.generator.sample_latent(n, device=real.device)
        with torch.set_grad_enabled(generator_turn):  # the graph through G is only needed then
            fake = self.generator(z)

        # discriminator: real -> 1, fake -> 0, separate batches (DCGAN's BatchNorm practice)
        with self.toggled_optimizer(opt_d):
            d_real = self.discriminator(real)
            d_fake = self.discriminator(fake.detach())
            d_loss = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
                      + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
            opt_d.zero_grad(set_to_none=True)
            self.manual_backward(d_loss)
            opt_d.step()
        self.discriminator_step_count += 1
        self.log("train/d_loss", d_loss, prog_bar=True)
        self.log("train/d_real", torch.sigmoid(d_real).mean())
        self.log("train/d_fake", torch.sigmoid(d_fake).mean())

        if generator_turn:
            # the non-saturating loss -log D(G(z)): strong gradients while D rejects G(z)
            with self.toggled_optimizer(opt_g):
                g_logits = self.discriminator(fake)
                g_loss = F.binary_cross_entropy_with_logits(g_logits, torch.ones_like(g_logits))
                opt_g.zero_grad(set_to_none=True)
                self.manual_backward(g_loss)
                opt_g.step()
            self.log("train/g_loss", g_loss, prog_bar=True)
        # the copy (no averaging) follows G's BatchNorm statistics, which D's turns move too
        if generator_turn or self.generator_ema_decay is None:
            self.generator_ema.update_parameters(self.generator)

    def memory_probe_step(self, batch: dict) -> None:
        """The graphs one training step builds (D on real and generated images, G on latents),
        without an optimiser step: what ``adlight/models/fit_memory.py`` measures before a fit."""
        real = self.to_network(batch["image"])
        fake = self.generator(self.generator.sample_latent(real.shape[0], device=real.device))
        (self.discriminator(real).sum() + self.discriminator(fake).sum()).detach()

    # ----- anomaly scores -------------------------------------------------------------------
    described_networks = ("discriminator",)

    @classmethod
    def examples(cls, image_size: int = 32) -> list[GANModel]:
        from adlight.nets import DCGANDiscriminator, DCGANGenerator

        return [cls(DCGANGenerator(latent_dim=8, image_size=image_size, width=8),
                    DCGANDiscriminator(image_size=image_size, width=8), score=score, latent_search_steps=2)
                for score in SCORES]

    def build_scorer(self) -> DiscriminatorScorer:
        if self.score_name != "discriminator":
            raise ConfigError(
                f"{type(self).__name__} with score: {self.score_name} cannot be exported: AnoGAN's latent "
                "search optimises a latent code per image by gradient descent, which a fixed graph cannot "
                "run; export the DCGAN's discriminator score (score: discriminator) instead")
        return DiscriminatorScorer(self.discriminator, self.input_range)

    @torch.no_grad()
    def discriminator_score(self, images: Tensor) -> Tensor:
        """``-logit D(x)`` (the scorer's) with the discriminator in eval mode."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            return self.scoring_module()(images)[0]
        finally:
            self.discriminator.train(was_training)

    def initial_latent(self, indices: Tensor | None, n: int) -> Tensor:
        """Each image's starting ``z``, drawn from ``latent_search_seed`` and its index."""
        ids = range(n) if indices is None else indices.tolist()
        return torch.cat([
            self.generator.sample_latent(
                1, torch.Generator().manual_seed(self.latent_search_seed * 1_000_003 + int(i)))
            for i in ids
        ]).to(self.device)

    def latent_search(self, images: Tensor, indices: Tensor | None = None) -> LatentSearchResult:
        """AnoGAN on [0, 1] images: ``z*`` per image, ``G(z*)`` in [0, 1] image units."""
        low, high = self.input_range
        found = latent_search(
            self.sampling_generator, self.discriminator, self.to_network(images.float()),
            self.initial_latent(indices, images.shape[0]), steps=self.latent_search_steps,
            lr=self.latent_search_lr, weight=self.latent_search_weight,
            # residuals in [0, 1] image units, so the loss minimised is the score reported
            residual_scale=1.0 / (high - low))
        return dataclasses.replace(found, reconstruction=self.to_image(found.reconstruction))

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        images = batch["image"]
        if self.score_name == "discriminator":
            return {"score": self.discriminator_score(images)}
        found = self.latent_search(images, batch.get("index"))
        maps = (images.float() - found.reconstruction).abs().amax(1, keepdim=True)
        return {"score": found.loss, "anomaly_map": smooth(maps, self.smoothing_sigma),
                "reconstruction": found.reconstruction}
