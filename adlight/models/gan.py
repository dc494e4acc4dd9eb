"""DCGAN training, sample quality, and GAN-based anomaly scores (AnoGAN).

Method, as the papers describe it:
- Radford et al.'s DCGAN, trained as in Goodfellow et al.'s Algorithm 1: ``k``
  discriminator steps (one per training batch) for every generator step, the generator
  trained with the non-saturating loss ``-log D(G(z))``; Adam with lr 2e-4 and
  beta1 = 0.5 unless the config says otherwise. Wilmet et al. use such a generator to add
  training images to a small MVTec category (see :mod:`adlight.data.generated`).
- Optionally (``generator_ema_decay``) an exponential moving average of the generator's
  weights (Yazici et al., "The Unusual Effectiveness of Averaging in GAN Training", 2019)
  is what draws samples, measures quality, generates training images and is searched by
  AnoGAN: on MVTec bottle it roughly halved the Frechet distance that the raw generator
  reached in the same 900 steps (see ``docs/results.md``).
- Sample quality is the Frechet distance (torchmetrics' ``FrechetInceptionDistance``)
  between the features of the training normals and of generated images, under a
  pluggable feature extractor (``fid_features``), logged every ``fid_every_n_epochs``;
  a fixed-noise sample grid is written and logged every epoch.
- Two anomaly scores, chosen by ``score``:
  ``discriminator``: ``-logit D(x)`` (the less real the discriminator finds an image, the
  more anomalous); ``latent_search``: Schlegl et al.'s AnoGAN: find ``z*`` such that
  ``G(z*)`` matches the image by minimising ``(1 - lambda) * R + lambda * D_f`` over ``z``
  alone (``R`` = mean |x - G(z)|, ``D_f`` = mean |f(x) - f(G(z))| with ``f`` the
  discriminator's last hidden feature map) for a fixed number of Adam steps, every image
  of a batch at once; the image score is that loss at ``z*`` and the anomaly map the
  residual |x - G(z*)| (max over channels, [0, 1] image units).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from lightning.pytorch.cli import OptimizerCallable
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, Subset
from torchmetrics.image.fid import FrechetInceptionDistance
from torchvision.utils import make_grid, save_image

from adlight.checks import check_int
from adlight.errors import ConfigError
from adlight.models.autoencoder import smooth
from adlight.models.base import AnomalyModule, ThresholdArg

ScoreName = Literal["discriminator", "latent_search"]
SCORES = ("discriminator", "latent_search")


@dataclass
class LatentSearchResult:
    """What :meth:`GANModel.latent_search` found for a batch.

    Attributes:
        latent: ``z*`` (N x latent_dim).
        reconstruction: ``G(z*)`` in [0, 1] image units.
        residual: mean |x - G(z*)| per image ([0, 1] units).
        feature_distance: mean |f(x) - f(G(z*))| per image.
        loss: ``(1 - lambda) * residual + lambda * feature_distance`` per image (the score).
        history: that loss per image before every step and after the last (steps + 1 x N).
    """

    latent: Tensor
    reconstruction: Tensor
    residual: Tensor
    feature_distance: Tensor
    loss: Tensor
    history: Tensor


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
        generator_ema_decay: keep an exponential moving average of the generator's weights
            and BatchNorm statistics, updated after every generator step with this decay
            (e.g. 0.995), and use it wherever images are generated or searched; ``None``:
            the trained generator itself (the DCGAN paper).
        latent_search_steps: Adam steps on ``z`` per batch (AnoGAN: 500).
        latent_search_lr: their learning rate.
        latent_search_weight: lambda, the weight of the discriminator-feature loss (AnoGAN: 0.1).
        latent_search_seed: seeds each image's starting ``z`` (with its dataset ``index``),
            so an image's score does not depend on its batch or on the global RNG.
        smoothing_sigma: Gaussian blur of the residual map, in pixels (0 = none).
        fid_features: feature extractor for the Frechet distance: an ``nn.Module`` mapping
            [0, 1] images (N x C x H x W, float) to N x D (e.g. ``adlight.nets.TransferFeatures``
            on the offline EfficientNet-Lite0, ``layers: pre_logits, unit_length: false``);
            ``None`` turns the measurement off. It is configuration, not fitted state, so it
            is kept out of the checkpoint.
        fid_num_samples: generated images per measurement (``None``: as many as the
            training normals).
        fid_every_n_epochs: measure after every n-th training epoch (and once before
            training, for the untrained generator).
        num_sample_images: images in the fixed-noise grid written every epoch (0 = none).
        sample_seed: seeds the grid's noise (kept in the checkpoint) and the Frechet
            distance's generated images (the same codes every epoch).
        generator_optimizer, discriminator_optimizer: factories (``None``: Adam, lr 2e-4,
            betas (0.5, 0.999), as in the DCGAN paper).
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
        fid_features: nn.Module | None = None,
        fid_num_samples: int | None = None,
        fid_every_n_epochs: int = 1,
        num_sample_images: int = 64,
        sample_seed: int = 0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        generator_optimizer: OptimizerCallable | None = None,
        discriminator_optimizer: OptimizerCallable | None = None,
        num_examples: int = 4,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples)
        self.save_hyperparameters(ignore=["generator", "discriminator", "fid_features",
                                          "generator_optimizer", "discriminator_optimizer"])
        self.automatic_optimization = False
        self.generator = generator
        self.discriminator = discriminator
        self._check_networks()
        if score not in SCORES:
            raise ConfigError(f"score must be one of {SCORES}, got {score!r}")
        self.score_name = score
        self.k = check_int("discriminator_steps", discriminator_steps)
        self.generator_ema: AveragedModel | None = None
        if generator_ema_decay is not None:
            if not 0.0 < generator_ema_decay < 1.0:
                raise ConfigError(
                    f"generator_ema_decay must be in (0, 1) or null, got {generator_ema_decay!r}")
            self.generator_ema = AveragedModel(
                generator, multi_avg_fn=get_ema_multi_avg_fn(generator_ema_decay), use_buffers=True)
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
        self.fid_num_samples = (None if fid_num_samples is None
                                else check_int("fid_num_samples", fid_num_samples))
        self.fid_every_n_epochs = check_int("fid_every_n_epochs", fid_every_n_epochs)
        if isinstance(num_sample_images, bool) or not isinstance(num_sample_images, int) or num_sample_images < 0:
            raise ConfigError(f"num_sample_images must be an int >= 0, got {num_sample_images!r}")
        self.sample_seed = int(sample_seed)
        self.generator_optimizer_factory = generator_optimizer or default_dcgan_optimizer
        self.discriminator_optimizer_factory = discriminator_optimizer or default_dcgan_optimizer
        # fitted state that must survive a checkpoint: the step counter that decides when the
        # generator steps (so a resumed run keeps the k:1 rhythm) and the grid's noise
        self.register_buffer("discriminator_step_count", torch.zeros((), dtype=torch.long))
        noise = torch.Generator().manual_seed(self.sample_seed)
        self.register_buffer("sample_noise", self.generator.sample_latent(num_sample_images, noise))
        # Not a submodule on purpose: the extractor (13 MB for EfficientNet-Lite0) is
        # configuration; as a submodule it would be written into every checkpoint and a
        # checkpoint could only be loaded with the same extractor configured.
        self.__dict__["_frechet"] = None if fid_features is None else FrechetInceptionDistance(
            feature=fid_features, normalize=True, reset_real_features=False,
            input_img_size=(self.channels, self.image_size, self.image_size),
        )
        self.frechet_history: list[tuple[int, float]] = []
        self.sample_grid_paths: list[str] = []

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
    def image_size(self) -> int:
        return int(self.generator.image_size)

    @property
    def channels(self) -> int:
        return int(self.generator.channels)

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

    @property
    def sampling_generator(self) -> nn.Module:
        """The generator that draws images: the weight average when there is one."""
        return self.generator if self.generator_ema is None else self.generator_ema.module

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
            if self.generator_ema is not None:
                self.generator_ema.update_parameters(self.generator)
            self.log("train/g_loss", g_loss, prog_bar=True)

    def on_train_start(self) -> None:
        if self.trainer.current_epoch == 0 and self.trainer.global_step == 0:
            self._write_sample_grid(0)  # the untrained generator: the reference for both
            value = self._measure_frechet(0)
            if value is not None:
                for logger in self.loggers:
                    logger.log_metrics({"train/frechet_distance": value}, step=0)

    def on_train_epoch_end(self) -> None:
        epoch = self.trainer.current_epoch + 1  # epochs completed
        self._write_sample_grid(epoch)
        if epoch % self.fid_every_n_epochs == 0:
            value = self._measure_frechet(epoch)
            if value is not None:
                self.log("train/frechet_distance", value, sync_dist=False)

    # ----- sample grids ---------------------------------------------------------------------
    def _write_sample_grid(self, epoch: int) -> None:
        if self.sample_noise.shape[0] == 0:
            return
        from adlight.callbacks.report import run_directory, unique_path

        directory = run_directory(self.trainer) / "samples"  # every rank: log_dir broadcasts
        if not self.trainer.is_global_zero:
            return
        images = self.generate(self.sample_noise).float().cpu()
        grid = make_grid(images, nrow=max(1, math.isqrt(images.shape[0])), padding=2)
        directory.mkdir(parents=True, exist_ok=True)
        path = unique_path(directory / f"epoch_{epoch:04d}.png")
        save_image(grid, path)
        self.sample_grid_paths.append(str(path))
        for logger in self.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image("samples", grid, global_step=self.global_step)
            elif hasattr(logger, "log_image"):
                logger.log_image(key="samples", images=[str(path)], step=self.global_step)

    # ----- Frechet distance -----------------------------------------------------------------
    @property
    def frechet(self) -> FrechetInceptionDistance | None:
        """The metric (``None`` without ``fid_features``); real features are kept across epochs."""
        return self.__dict__["_frechet"]

    def _measure_frechet(self, epoch: int) -> float | None:
        """Frechet distance of the generator now (``epoch``: training epochs completed)."""
        metric = self.frechet
        if metric is None:
            return None
        metric.to(self.device)
        rank, world = self.global_rank, self.trainer.world_size
        if int(metric.real_features_num_samples) == 0:
            from adlight.models.training_normals import training_normals_dataset

            dataset = training_normals_dataset(self.trainer)
            # each process takes every world-th image; the metric sums the shares over processes
            shard = Subset(dataset, list(range(rank, len(dataset), world)))
            for batch in DataLoader(shard, batch_size=self.trainer.datamodule.batch_size):
                metric.update(batch["image"].to(self.device), real=True)
            self._num_real = len(dataset)
        total = self.fid_num_samples or getattr(self, "_num_real", 64)
        own = len(range(rank, total, world))
        # the same codes every epoch, so the curve follows the generator, not the noise
        codes = self.generator.sample_latent(
            own, torch.Generator().manual_seed(self.sample_seed + 1 + rank))
        metric.reset()  # fake features only (reset_real_features=False)
        batch_size = getattr(self.trainer.datamodule, "batch_size", 32)
        for chunk in codes.split(batch_size):
            metric.update(self.generate(chunk), real=False)
        value = float(metric.compute())
        self.frechet_history.append((epoch, value))
        return value

    # ----- anomaly scores -------------------------------------------------------------------
    @torch.no_grad()
    def discriminator_score(self, images: Tensor) -> Tensor:
        """``-logit D(x)`` with the discriminator in eval mode."""
        was_training = self.discriminator.training
        self.discriminator.eval()
        try:
            return -self.discriminator(self.to_network(images)).float()
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
        """AnoGAN: optimise ``z`` (only ``z``) so that ``G(z)`` matches each image.

        Runs with gradients even inside Lightning's validation and test loops (which run
        under ``torch.inference_mode``); both networks are in eval mode, so BatchNorm uses
        its running statistics and each image's search is independent of its batch.
        """
        generator = self.sampling_generator
        states = (generator.training, self.discriminator.training)
        generator.eval()
        self.discriminator.eval()
        lam = self.latent_search_weight
        try:
            with torch.inference_mode(False), torch.enable_grad():
                # clone: tensors made under inference_mode cannot take part in autograd
                target = self.to_network(images.detach().clone().float())
                target_features = self.discriminator.features(target).detach()
                z = self.initial_latent(indices, images.shape[0]).requires_grad_(True)
                optimizer = torch.optim.Adam([z], lr=self.latent_search_lr)
                history = []

                # residuals in [0, 1] image units (the network's range is twice as wide), so
                # the loss minimised is the score reported
                scale = 1.0 / (self.input_range[1] - self.input_range[0])

                def losses(z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
                    fake = generator(z)
                    residual = (target - fake).abs().flatten(1).mean(1) * scale
                    feature = (target_features - self.discriminator.features(fake)).abs().flatten(1).mean(1)
                    return fake, residual, feature, (1 - lam) * residual + lam * feature

                for _ in range(self.latent_search_steps):
                    _, _, _, loss = losses(z)
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
            self.discriminator.train(states[1])
        return LatentSearchResult(
            latent=z.detach(), reconstruction=self.to_image(fake.detach()),
            residual=residual.detach(), feature_distance=feature.detach(), loss=loss.detach(),
            history=torch.stack(history),
        )

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        images = batch["image"]
        if self.score_name == "discriminator":
            return {"score": self.discriminator_score(images)}
        found = self.latent_search(images, batch.get("index"))
        maps = (images.float() - found.reconstruction).abs().amax(1, keepdim=True)
        return {"score": found.loss, "anomaly_map": smooth(maps, self.smoothing_sigma),
                "reconstruction": found.reconstruction}

    # ----- checkpoints ----------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        init_args = getattr(self.generator, "init_args", None)
        if callable(init_args):
            # what adlight.data.WithGeneratedNormals needs to rebuild the sampling generator alone
            cls = type(self.generator)
            checkpoint["adlight_generator"] = {
                "class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": init_args(),
                "state_prefix": "generator." if self.generator_ema is None
                else "generator_ema.module."}
        checkpoint["adlight_frechet_history"] = [list(p) for p in self.frechet_history]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # a run resumed or scored with another num_sample_images keeps the configured grid
        # (Lightning loads the state dict strictly, after this hook)
        state = checkpoint.get("state_dict", {})
        saved = state.get("sample_noise")
        if saved is not None and saved.shape != self.sample_noise.shape:
            state["sample_noise"] = self.sample_noise.detach().clone()
        # a checkpoint with and a model without the weight average, or the other way round
        has_ema = any(k.startswith("generator_ema.") for k in state)
        if has_ema and self.generator_ema is None:
            for key in [k for k in state if k.startswith("generator_ema.")]:
                del state[key]
        elif not has_ema and self.generator_ema is not None and state:
            # start the average from the checkpoint's generator
            for key, value in list(state.items()):
                if key.startswith("generator."):
                    state["generator_ema.module." + key[len("generator."):]] = value.clone()
            state["generator_ema.n_averaged"] = torch.ones_like(self.generator_ema.n_averaged)
        self.frechet_history = [(int(e), float(v)) for e, v in checkpoint.get("adlight_frechet_history", [])]
