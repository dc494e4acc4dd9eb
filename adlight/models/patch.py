"""Pixel-level anomaly maps from pretrained patch features: PatchCore and PaDiM.

Andrews et al.'s idea, a one-class model on transferred representations, carried down to
image patches: a frozen backbone describes every patch of an image
(:class:`~adlight.nets.patch_features.PatchFeatures`), a model of the training normals'
patches says how unusual each test patch is, and that grid of patch scores, upsampled to the
image and Gaussian-smoothed, is the anomaly map; the image score is its maximum.

Two heads on the same features:

- :class:`PatchCoreModel` (Roth et al., "Towards Total Recall in Industrial Anomaly
  Detection", 2022): a memory bank of normal patch features, reduced by greedy coreset
  selection; a patch's score is its distance to the nearest bank patch (mean over k).
- :class:`PadimModel` (Defard et al., "PaDiM", 2021): a Gaussian per grid position (mean and
  covariance of the normals' features there); a patch's score is its Mahalanobis distance.
  No search at test time, but D x D numbers per position.

Nothing is trained by gradient: the head is fitted on the N x D x h x w patch features of
every training normal (:class:`~adlight.models.fitted_head.FrozenFeaturesModule`) and its
buffers live in the checkpoint.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from adlight.checks import check_fraction, check_int, is_int, is_number
from adlight.errors import ConfigError
from adlight.models.base import ThresholdArg
from adlight.models.fitted_head import FrozenFeaturesModule
from adlight.models.training_normals import training_normals_dataset
from adlight.nets.memory_bank import (
    SEARCH_BACKENDS,
    BankSearch,
    SearchBackend,
    check_coreset_fraction,
    greedy_coreset,
)
from adlight.nets.patch_features import PatchFeatures
from adlight.nets.precision import full_precision
from adlight.nets.scorers.patch import (
    PadimScorer,
    PatchCoreScorer,
    PatchScorer,
    chunked_patch_features,
)


class PatchModel(FrozenFeaturesModule):
    """What PatchCore and PaDiM share: patch features, maps from patch scores.

    Subclasses register their head's buffers and implement :meth:`fit_patches` (training
    patch features N x D x h x w -> the buffers) and :meth:`build_scorer` (a
    :class:`~adlight.nets.scorers.patch.PatchScorer` on those buffers, which scores patches
    and makes the maps).

    Args:
        features: the patch representation (frozen).
        smoothing_sigma: Gaussian blur of the upsampled map, in image pixels (PatchCore and
            PaDiM use 4 at 224-256 px); 0 for none.
    """

    def __init__(
        self,
        features: PatchFeatures,
        smoothing_sigma: float = 4.0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples)
        if not isinstance(features, PatchFeatures):
            raise ConfigError(
                f"features must be an adlight.nets.PatchFeatures, got {type(features).__name__}"
            )
        if not is_number(smoothing_sigma) \
                or smoothing_sigma < 0:
            raise ConfigError(f"smoothing_sigma must be a number >= 0, got {smoothing_sigma!r}")
        self.features = features.requires_grad_(False)
        self.smoothing_sigma = float(smoothing_sigma)

    @property
    def extractor(self) -> PatchFeatures:
        return self.features

    @torch.no_grad()
    def patch_features(self, images: Tensor) -> Tensor:
        """Patch features of a batch, the backbone run on chunks (as the scorer runs it)."""
        return chunked_patch_features(self.features, images)

    def head_features(self, batch: dict) -> Tensor:
        return self.patch_features(batch["image"])

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        if features.ndim != 4:
            raise ConfigError(f"patch features must be N x D x h x w, got shape {tuple(features.shape)}")
        features = features.to(self.device, torch.float32)
        with full_precision(features):  # covariances and coreset distances in float32 or more
            return self.fit_patches(features)

    # ----- scoring: adlight.nets.scorers.patch ------------------------------------------
    described_networks = ("features",)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        images = batch["image"]
        if self.head_missing_in_sanity_check():
            zeros = images.new_zeros(images.shape[0], 1, *images.shape[-2:])
            return {"score": zeros.flatten(1).amax(1), "anomaly_map": zeros}
        self.require_fitted_head()
        return super().anomaly_outputs(batch)

    def patch_scores(self, features: Tensor) -> Tensor:
        """N x D x h x w patch features -> N x h x w patch scores (the scorer's)."""
        return self.scoring_module().patch_scores(features)

    # ----- for subclasses -------------------------------------------------------------
    def fit_patches(self, features: Tensor) -> dict[str, Tensor]:
        """The head's buffers fitted on the training patch features (N x D x h x w, float32)."""
        raise NotImplementedError

    def build_scorer(self) -> PatchScorer:
        raise NotImplementedError


class PatchCoreModel(PatchModel):
    """PatchCore: nearest-neighbour distance to a coreset of normal patch features.

    Args:
        features: the patch representation (``adlight.nets.PatchFeatures``).
        coreset_fraction: share of the training patches kept in the memory bank, in (0, 1]
            (PatchCore: 0.1 or 0.01; 1 keeps all).
        projection_dim: coreset selection runs on a Gaussian random projection to this
            many dimensions (``null``: on the features); the bank keeps the full features.
        num_neighbours: a patch's score is its mean distance to this many nearest bank
            patches (PatchCore: 1).
        search: nearest-neighbour backend: ``auto`` (faiss on the CPU, scikit-learn where
            faiss is missing, torch on accelerators), ``faiss``, ``sklearn`` or ``torch``
            (all exact), or ``faiss_ivf`` (approximate: an inverted file of k-means cells
            over the bank; a query is compared with the bank rows of ``ivf_probes`` cells).
        search_batch_size: query patches per search block (bounds memory).
        ivf_lists, ivf_probes: cells of the ``faiss_ivf`` index (``null``: 4 sqrt(bank
            size)) and cells visited per query. Recall against exact search is measured in
            ``benchmarks/patch_mvtec.py --recall``.
        patch_sample: share of each training image's patches kept as coreset candidates
            (seeded by the image's index, so the same under DDP); 1 keeps all. The bank is
            still ``coreset_fraction`` of *all* training patches, so it must not exceed this.
            Fewer candidates make selection faster and the training features smaller, but a
            random sample drops rare normal patches (issue 25): prefer ``coreset_chunk``.
        coreset_chunk: candidate patches per coreset: the candidates are cut, in dataset
            order and at whole images, into chunks of about this many rows; each chunk gets
            its own greedy coreset of the same fraction and the bank is their union
            (``null``: one coreset over all candidates). A greedy coreset costs candidates x
            picks, so one over everything grows with the square of the training set; in
            chunks it grows linearly, and every patch stays a candidate, so each chunk's
            rarest patches (the farthest-point rule's first picks) reach the bank. Measured in
            ``docs/results.md`` (issue 25): the same metrics as one coreset.
        memory_limit_gb: refuse to fit, before any feature is extracted, when the training
            candidates and the coreset's working set would need more than this (``null``: no
            limit); the error says what to lower.
        seed: seeds the projection, the coreset's first pick and the patch sample.
        smoothing_sigma, image_threshold, pixel_threshold, num_examples: see
            :class:`PatchModel` and :class:`~adlight.models.base.AnomalyModule`.
    """

    head_feature_dtype = torch.float16  # training candidates: see head_features

    def __init__(
        self,
        features: PatchFeatures,
        coreset_fraction: float = 0.1,
        projection_dim: int | None = 64,
        num_neighbours: int = 1,
        search: SearchBackend = "auto",
        search_batch_size: int = 16384,
        ivf_lists: int | None = None,
        ivf_probes: int = 8,
        patch_sample: float = 1.0,
        coreset_chunk: int | None = 65536,
        memory_limit_gb: float | None = 4.0,
        seed: int = 0,
        smoothing_sigma: float = 4.0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__(features, smoothing_sigma, image_threshold, pixel_threshold, num_examples)
        self.save_hyperparameters(ignore=["features"])
        self.coreset_fraction = check_coreset_fraction(coreset_fraction)
        self.patch_sample = check_fraction("patch_sample", patch_sample, zero=False, one=True)
        if self.coreset_fraction > self.patch_sample:
            raise ConfigError(
                f"coreset_fraction={coreset_fraction} keeps more patches than patch_sample="
                f"{patch_sample} offers as candidates: lower coreset_fraction or raise patch_sample"
            )
        if coreset_chunk is not None:
            check_int("coreset_chunk", coreset_chunk)
        self.coreset_chunk = coreset_chunk
        if ivf_lists is not None:
            check_int("ivf_lists", ivf_lists)
        check_int("ivf_probes", ivf_probes)
        if memory_limit_gb is not None and (not is_number(memory_limit_gb) or memory_limit_gb <= 0):
            raise ConfigError(f"memory_limit_gb must be a number > 0 or null, got {memory_limit_gb!r}")
        if projection_dim is not None and (not is_int(projection_dim) or projection_dim < 1):
            raise ConfigError(f"projection_dim must be an int >= 1 or null, got {projection_dim!r}")
        check_int("num_neighbours", num_neighbours)
        if search not in SEARCH_BACKENDS:
            raise ConfigError(f"search must be one of {SEARCH_BACKENDS}, got {search!r}")
        check_int("search_batch_size", search_batch_size)
        self.projection_dim = projection_dim
        self.num_neighbours = num_neighbours
        self.search = search
        self.search_batch_size = search_batch_size
        self.ivf_lists = ivf_lists
        self.ivf_probes = ivf_probes
        self.memory_limit_gb = memory_limit_gb
        self.seed = seed
        self.register_head(memory_bank=torch.empty(0, features.feature_dim))

    # ----- fitting: candidates, memory, coreset -------------------------------------------
    def candidates_per_image(self) -> int:
        positions = self.features.grid_size[0] * self.features.grid_size[1]
        return max(1, round(self.patch_sample * positions))

    def images_per_coreset(self, n_images: int) -> int:
        """Training images whose candidates go through one greedy coreset (see ``coreset_chunk``)."""
        if self.coreset_chunk is None:
            return max(1, n_images)
        return max(1, min(n_images, self.coreset_chunk // self.candidates_per_image()))

    def fit_memory_bytes(self, n_images: int) -> int:
        """Training candidates (float16) plus one coreset's working set (projection, distances)."""
        per_image = self.candidates_per_image()
        projected = min(self.projection_dim or self.features.feature_dim, self.features.feature_dim)
        working_rows = self.images_per_coreset(n_images) * per_image
        return n_images * per_image * 2 * self.features.feature_dim + working_rows * (4 * projected + 8)

    def fit_memory_advice(self, n_images: int, available: int) -> str:
        share = max(0.01, round(self.patch_sample * available / self.fit_memory_bytes(n_images) * 0.9, 2))
        return f"keep fewer candidates (--model.init_args.patch_sample {share}) or use smaller images"

    def on_fit_start(self) -> None:
        self._check_memory_limit()
        super().on_fit_start()  # then the memory the device has free

    def _check_memory_limit(self) -> None:
        if self.memory_limit_gb is None:
            return
        n_images = len(training_normals_dataset(self.trainer))
        need = self.fit_memory_bytes(n_images) / 2**30
        if need > self.memory_limit_gb:
            grid = "x".join(map(str, self.features.grid_size))
            share = max(0.01, round(self.patch_sample * self.memory_limit_gb / need * 0.9, 2))
            raise ConfigError(
                f"PatchCore's training patches need {need:.1f} GB ({n_images} images x "
                f"{self.candidates_per_image()} patches of the {grid} grid x {self.features.feature_dim} "
                f"features), over memory_limit_gb={self.memory_limit_gb}: keep fewer candidates "
                f"(--model.init_args.patch_sample {share}), use smaller images, or raise "
                "--model.init_args.memory_limit_gb"
            )

    def head_features(self, batch: dict) -> Tensor:
        """N x K x D float16 candidates: K = ``patch_sample`` of each image's grid positions."""
        features = self.patch_features(batch["image"])
        rows = features.flatten(2).transpose(1, 2)  # N x positions x D
        k = self.candidates_per_image()
        if k < rows.shape[1]:
            # seeded by the image's dataset index: the same sample whichever process or batch
            picks = torch.stack([
                torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(
                    self.seed * 1_000_003 + int(index)))[:k]
                for index in batch["index"]
            ]).to(rows.device)
            rows = rows.gather(1, picks.unsqueeze(-1).expand(-1, -1, rows.shape[2]))
        # float16 halves the training features (measured: no change in the results, see
        # docs/results.md); the coreset and the bank are float32
        return rows.to(torch.float16)

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        if features.ndim == 4:  # N x D x h x w feature maps: every position a candidate
            features = features.flatten(2).transpose(1, 2)
        if features.ndim != 3:
            raise ConfigError(f"PatchCore fits on N x K x D patches or N x D x h x w maps, got shape "
                              f"{tuple(features.shape)}")
        features = features.to(self.device)
        with full_precision(features):  # coreset distances in float32
            return self.fit_patches(features)

    def fit_patches(self, patches: Tensor) -> dict[str, Tensor]:
        """The memory bank chosen from candidate patches (N x K x D per image, or rows x D as
        one image; any float dtype): a greedy coreset per chunk of images (``coreset_chunk``)."""
        if patches.ndim == 2:
            patches = patches.unsqueeze(0)
        rows = patches.shape[0] * patches.shape[1]
        if rows < self.num_neighbours:
            raise ConfigError(
                f"num_neighbours={self.num_neighbours} but the training normals give only "
                f"{rows} patches"
            )
        # the bank is coreset_fraction of all training patches, taken from the candidates
        fraction = min(1.0, self.coreset_fraction / self.patch_sample)
        chunk = self.images_per_coreset(patches.shape[0])
        parts = []
        for number, images in enumerate(patches.split(chunk)):
            candidates = images.reshape(-1, images.shape[-1])
            # each chunk seeded apart: its projection and first pick do not depend on the others
            chosen = greedy_coreset(candidates, fraction, self.projection_dim, self.seed + number)
            parts.append(candidates[chosen].float())
        bank = torch.cat(parts).contiguous()
        if bank.shape[0] < self.num_neighbours:
            raise ConfigError(
                f"coreset_fraction={self.coreset_fraction} keeps {bank.shape[0]} patches, fewer "
                f"than num_neighbours={self.num_neighbours}"
            )
        return {"memory_bank": bank}

    @classmethod
    def examples(cls, image_size: int = 32) -> list[PatchCoreModel]:
        from adlight.nets import Backbone

        features = PatchFeatures(Backbone("efficientnet_lite0", weights=None, input_size=image_size))
        return [cls(features, coreset_fraction=0.5, num_neighbours=3, smoothing_sigma=1.0)]

    def build_scorer(self) -> PatchCoreScorer:
        # the faiss_ivf index is built on the scorer's first search, and dropped with the
        # scorer when the bank changes
        search = BankSearch(self.memory_bank, self.num_neighbours, self.search, self.search_batch_size,
                            ivf_lists=self.ivf_lists, ivf_probes=self.ivf_probes, seed=self.seed)
        return PatchCoreScorer(self.features, search, self.smoothing_sigma)

    @property
    def _ivf_index(self):
        """The ``faiss_ivf`` index the kept scorer searches (``None`` before its first search)."""
        scorer = self.__dict__.get("_scorer")
        return None if scorer is None else scorer.search.index


class PadimModel(PatchModel):
    """PaDiM: a Gaussian per grid position, Mahalanobis distance as the patch score.

    Args:
        features: the patch representation (``adlight.nets.PatchFeatures``).
        covariance_eps: added to the diagonal of every covariance (PaDiM: 0.01), so it is
            invertible with fewer training images than feature dimensions.
        position_chunk: grid positions whose covariances are inverted at once (bounds the
            memory of fitting: chunk x D x D in float64).
        smoothing_sigma, image_threshold, pixel_threshold, num_examples: see
            :class:`PatchModel` and :class:`~adlight.models.base.AnomalyModule`.
    """

    def __init__(
        self,
        features: PatchFeatures,
        covariance_eps: float = 0.01,
        position_chunk: int = 256,
        smoothing_sigma: float = 4.0,
        image_threshold: ThresholdArg = "val_f1",
        pixel_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__(features, smoothing_sigma, image_threshold, pixel_threshold, num_examples)
        self.save_hyperparameters(ignore=["features"])
        if not is_number(covariance_eps) \
                or covariance_eps <= 0:
            raise ConfigError(f"covariance_eps must be a number > 0, got {covariance_eps!r}")
        check_int("position_chunk", position_chunk)
        self.covariance_eps = float(covariance_eps)
        self.position_chunk = position_chunk
        d = features.feature_dim
        # positions x D, positions x D x D
        self.register_head(position_mean=torch.empty(0, d), position_precision=torch.empty(0, d, d))

    def fit_memory_bytes(self, n_images: int) -> int:
        """Training maps (float32) and their float64 copy, the precisions (float64 chunks, then
        float32), and one chunk's covariance work."""
        positions, d = self.features.grid_size[0] * self.features.grid_size[1], self.features.feature_dim
        chunk = min(self.position_chunk, positions)
        return n_images * d * positions * (4 + 8) + positions * d * d * (8 + 4) + 3 * chunk * d * d * 8

    def fit_memory_advice(self, n_images: int, available: int) -> str:
        backbone = getattr(self.features, "backbone", None)
        size = getattr(backbone, "input_size", None)
        if isinstance(size, int):
            # positions grow with the square of the backbone's input size
            fitting = int(size * math.sqrt(available / self.fit_memory_bytes(n_images))) // 8 * 8
            if fitting >= 8:
                return (f"use a smaller backbone input (--model.features.init_args.backbone.init_args."
                        f"input_size {fitting}), fewer feature layers or fewer training images")
        return "use a smaller backbone input size, fewer feature layers or fewer training images"

    def fit_patches(self, features: Tensor) -> dict[str, Tensor]:
        n, d, h, w = features.shape
        if n < 2:
            raise ConfigError(f"PaDiM needs at least 2 training normals for a covariance, got {n}")
        # positions x N x D, in float64: a covariance from few samples is ill-conditioned
        per_position = features.permute(2, 3, 0, 1).reshape(h * w, n, d).double()
        mean = per_position.mean(1)
        eye = torch.eye(d, dtype=torch.float64, device=features.device)
        precisions = []
        for start in range(0, h * w, self.position_chunk):
            centred = per_position[start:start + self.position_chunk] - mean[start:start + self.position_chunk, None]
            covariance = centred.transpose(1, 2) @ centred / (n - 1) + self.covariance_eps * eye
            # Cholesky, not a general inverse: the covariance is symmetric positive definite
            precisions.append(torch.cholesky_inverse(torch.linalg.cholesky(covariance)))
        return {"position_mean": mean.float(), "position_precision": torch.cat(precisions).float()}

    @classmethod
    def examples(cls, image_size: int = 32) -> list[PadimModel]:
        from adlight.nets import Backbone

        return [cls(PatchFeatures(Backbone("efficientnet_lite0", weights=None, input_size=image_size)),
                    smoothing_sigma=1.0)]

    def build_scorer(self) -> PadimScorer:
        return PadimScorer(self.features, self.position_mean, self.position_precision, self.smoothing_sigma)
