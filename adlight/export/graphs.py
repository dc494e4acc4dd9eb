"""Scoring graphs: a fitted model as one plain-torch module from 8-bit images to scores.

:func:`scoring_graph` turns a fitted :class:`~adlight.models.AnomalyModule` into a
:class:`ScoringGraph`: ``uint8 N x C x H x W`` in, ``score`` (N) and, where the family
localises, ``anomaly_map`` (N x 1 x H x W, the input's resolution) out. The graphs call the
models' own scoring methods where those are plain torch; the fitted heads that score through
scikit-learn or faiss (KD-CAE's kernel density, PatchCore's search) become tensor
constants and matrix products here (:mod:`adlight.export.heads`).
"""

from __future__ import annotations

import math

from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.export.heads import KernelDensityHead, NearestBankDistances, SSIMMap
from adlight.losses import full_precision
from adlight.nets.maps import smooth


class ScoringGraph(nn.Module):
    """uint8 images -> ``(score,)`` or ``(score, anomaly_map)``; scaling to [0, 1] inside."""

    def __init__(self, scorer: nn.Module, outputs: tuple[str, ...]) -> None:
        super().__init__()
        self.scorer = scorer
        self.outputs = outputs

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        # the datamodules hand models 8-bit pixels / 255 (adlight/data/datasets.py)
        return self.scorer(images.float() / 255.0)


def _refer(scorer: nn.Module, model, *parts: str) -> None:
    """Call ``model``'s methods from ``scorer`` while registering only its networks ``parts``:
    tracing (torch.jit above all) walks registered submodules, and a LightningModule's
    properties (``trainer``) raise outside a Trainer."""
    scorer.__dict__["model"] = model
    scorer.parts = nn.ModuleDict({name: getattr(model, name) for name in parts})


class AutoencoderScorer(nn.Module):
    """Reconstruction, map and score of :class:`~adlight.models.AutoencoderModel`."""

    def __init__(self, model) -> None:
        super().__init__()
        _refer(self, model, "network")
        self.kde = KernelDensityHead.from_model(model) if model.uses_fitted_head else None
        self.ssim = SSIMMap(model.network.in_channels) if model.map_kind == "ssim" else None

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        out, reconstruction = self.model.reconstruct(images)
        if self.ssim is None:
            maps = self.model.anomaly_maps(images, reconstruction)
        else:  # AutoencoderModel.anomaly_maps with an SSIM that exports at any batch size
            maps = (1.0 - self.ssim(reconstruction, images)).mean(1, keepdim=True)
            maps = smooth(maps, self.model.smoothing_sigma)
        if self.model.image_score == "mean":
            score = (images - reconstruction.float()).pow(2).flatten(1).mean(1)
        else:
            score = maps.flatten(1).amax(1)
        if self.kde is not None:
            score = self.kde(score, self.model.latent_code(out))
        return score, maps


class PatchScorer(nn.Module):
    """PatchCore (bank search as matrix products) and PaDiM (the model's own Mahalanobis)."""

    def __init__(self, model, bank_chunk: int) -> None:
        super().__init__()
        _refer(self, model, "features")
        self.search = None
        if type(model).__name__ == "PatchCoreModel":
            self.search = NearestBankDistances(model.memory_bank, model.num_neighbours, bank_chunk)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        features = self.model.patch_features(images).float()
        with full_precision(features):
            if self.search is None:
                scores = self.model.patch_scores(features)
            else:
                n, d, h, w = features.shape
                queries = features.permute(0, 2, 3, 1).reshape(-1, d)
                scores = self.search(queries).mean(1).reshape(n, h, w)
            maps = self.model.maps_from_patch_scores(scores, images.shape[-2:])
        return maps.flatten(1).amax(1), maps


class OneClassSVMScorer(nn.Module):
    """The linear SVM of the model's ``nu`` in primal form: ``-(w . f + b)``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.representation = model.representation
        column = model.nus.index(model.nu)
        self.register_buffer("weight", model.svm_weights[column].double().clone())
        self.register_buffer("offset", model.svm_offsets[column].double().clone())

    def forward(self, images: Tensor) -> tuple[Tensor]:
        features = self.representation(images).float().double()
        return (-(features @ self.weight + self.offset)).float(),


class ModelMethodScorer(nn.Module):
    """Families whose score is already one plain-torch method of the model."""

    def __init__(self, model, score, network: str) -> None:
        super().__init__()
        _refer(self, model, network)
        self.score = score

    def forward(self, images: Tensor) -> tuple[Tensor]:
        return self.score(images).float(),


def _refuse_unfitted(model) -> None:
    if getattr(model, "uses_fitted_head", False) and not bool(model.is_fitted):
        raise ConfigError(f"{type(model).__name__}'s head is not fitted: export a checkpoint "
                          "written after fitting (--ckpt_path)")


def scoring_graph(model, bank_chunk: int = 4096) -> ScoringGraph:
    """The model (in eval mode, on the CPU) as a :class:`ScoringGraph`.

    ``bank_chunk``: PatchCore bank rows compared at once (the memory of the search is
    queries x bank_chunk floats). Raises :class:`ConfigError` naming why a model cannot export.
    """
    from adlight.models import AutoencoderModel, GANModel, OneClassSVMModel, SupervisedClassifier
    from adlight.models.patch import PatchModel

    model = model.to("cpu").eval().requires_grad_(False)  # float64 buffers (thresholds, heads) stay
    _refuse_unfitted(model)
    name = type(model).__name__
    if isinstance(model, AutoencoderModel):
        return ScoringGraph(AutoencoderScorer(model), ("score", "anomaly_map"))
    if isinstance(model, PatchModel):
        return ScoringGraph(PatchScorer(model, bank_chunk), ("score", "anomaly_map"))
    if isinstance(model, OneClassSVMModel):
        return ScoringGraph(OneClassSVMScorer(model), ("score",))
    if isinstance(model, SupervisedClassifier):
        return ScoringGraph(ModelMethodScorer(
            model, lambda x: model._score(model.logits(x)), "network"), ("score",))
    if isinstance(model, GANModel):
        if model.score_name != "discriminator":
            raise ConfigError(
                f"{name} with score: {model.score_name} cannot be exported: AnoGAN's latent search "
                "optimises a latent code per image by gradient descent, which a fixed graph cannot "
                "run; export the DCGAN's discriminator score (score: discriminator) instead")
        return ScoringGraph(ModelMethodScorer(
            model, model.discriminator_score, "discriminator"), ("score",))
    raise ConfigError(f"no exporter for {name}: adlight exports AutoencoderModel, PatchCoreModel, "
                      "PadimModel, OneClassSVMModel, SupervisedClassifier and GANModel (discriminator)")


def threshold_entry(model, level: str) -> dict:
    """``{"value", "source"}`` of the model's image or pixel threshold, as its test report says:
    a threshold chosen on other weights than the exported ones is not exported (the source says why)."""
    value, source = model.usable_threshold(level)
    if math.isnan(value):
        return {"value": None, "source": source}
    return {"value": value, "source": source}
