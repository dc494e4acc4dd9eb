"""Andrews et al.: a linear one-class SVM on transferred (frozen) representations.

The representation (``adlight.nets.TransferFeatures``, ``RawPixels``, or any module from
images to N x D vectors) is fixed; nothing is trained by gradient. At the end of fitting the
:class:`~adlight.callbacks.heads.OneClassHeadFitter` gathers the features of every training
normal from every process and :meth:`OneClassSVMModel.fit_head` fits scikit-learn's
``OneClassSVM`` for each nu of the paper's sweep (21 values evenly spaced in [0.01, 0.99]).

All fits share one Gram matrix (``kernel="precomputed"``): the measured reason is in the
issue (n = 2048, d = 1280: 82 s refitting on raw features against 4 s). Because the kernel is
linear, each fitted SVM is kept as its primal weight vector w = sum_i alpha_i x_i and offset,
so scoring is one matrix product and the head in the checkpoint is K x D numbers.

Scores are the negated decision function (higher = more anomalous). ``score`` is the SVM of
``nu`` (used for thresholds and predictions); the test report adds the AUROC of every nu and
their mean and standard deviation (``image_AUROC_nu_mean``), the paper's figure.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from sklearn.svm import OneClassSVM
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.metrics import auroc, has_both_classes
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.models.feature_cache import FeatureCache

#: the paper's sweep: 21 evenly spaced values in [0.01, 0.99]
PAPER_NUS = tuple(float(v) for v in np.linspace(0.01, 0.99, 21).round(4))


def fit_linear_ocsvms(features: Tensor, nus: Sequence[float], tol: float = 1e-3) -> tuple[Tensor, Tensor]:
    """Fit a linear nu-OCSVM per nu on one precomputed Gram matrix.

    Returns ``(weights K x D, offsets K)`` such that scikit-learn's decision function of the
    SVM fitted with ``nus[k]`` is ``features @ weights[k] + offsets[k]``.
    """
    x = features.double().cpu().numpy()
    gram = x @ x.T
    weights, offsets = [], []
    for nu in nus:
        svm = OneClassSVM(kernel="precomputed", nu=float(nu), tol=tol).fit(gram)
        weights.append(svm.dual_coef_[0] @ x[svm.support_])
        offsets.append(float(svm.intercept_[0]))
    return torch.from_numpy(np.stack(weights)), torch.tensor(offsets, dtype=torch.float64)


class OneClassSVMModel(AnomalyModule):
    """Args:
        representation: module from [0, 1] images to N x D features (frozen).
        nu: the nu whose SVM gives ``score`` (thresholds, F1, predictions).
        nu_sweep: number of evenly spaced nu in [0.01, 0.99] whose AUROC the test report
            averages (21 in the paper; 0 for none).
        feature_cache: a folder for cached features (``None``: no cache); a re-run with the
            same representation and images skips extraction.
        tol: scikit-learn's stopping tolerance.
    """

    has_head = True

    def __init__(
        self,
        representation: nn.Module,
        nu: float = 0.5,
        nu_sweep: int = 21,
        feature_cache: str | None = None,
        tol: float = 1e-3,
        image_threshold: ThresholdArg = "val_f1",
        num_examples: int = 4,
    ) -> None:
        super().__init__(image_threshold, None, num_examples)
        self.save_hyperparameters(ignore=["representation"])
        if isinstance(nu, bool) or not isinstance(nu, (int, float)) or not 0.0 < nu <= 1.0:
            raise ConfigError(f"nu must be a number in (0, 1], got {nu!r}")
        if isinstance(nu_sweep, bool) or not isinstance(nu_sweep, int) or nu_sweep < 0 or nu_sweep == 1:
            raise ConfigError(f"nu_sweep must be 0 or an int >= 2, got {nu_sweep!r}")
        self.representation = representation.requires_grad_(False)
        self.sweep_nus = [float(v) for v in np.linspace(0.01, 0.99, nu_sweep).round(4)] if nu_sweep else []
        self.nus = sorted(set(self.sweep_nus) | {float(nu)})
        self.nu = float(nu)
        self.tol = tol
        self.feature_cache_dir = feature_cache
        self._cache: FeatureCache | None = None
        self.svm_weights: Tensor | None = None  # K x D (float64)
        self.svm_offsets: Tensor | None = None  # K
        # Lightning needs a parameter-free model to run a "training" epoch without an optimizer
        self.automatic_optimization = False

    # ----- features ---------------------------------------------------------------------
    def train(self, mode: bool = True):
        super().train(mode)
        self.representation.eval()  # frozen: BatchNorm keeps the pretrained statistics
        return self

    @property
    def cache(self) -> FeatureCache | None:
        if self.feature_cache_dir is None:
            return None
        if self._cache is None:
            key = getattr(self.representation, "cache_key", None)
            if key is None:
                raise ConfigError(
                    f"feature_cache needs a representation with cache_key(); "
                    f"{type(self.representation).__name__} has none"
                )
            self._cache = FeatureCache(self.feature_cache_dir, key(), rank=self.global_rank)
        return self._cache

    @torch.no_grad()
    def features(self, images: Tensor) -> Tensor:
        if self.cache is None:
            return self.representation(images).float()
        return self.cache.features(images, lambda x: self.representation(x).float())

    def _save_cache(self) -> None:
        if self._cache is not None:
            self._cache.save()

    def on_train_end(self) -> None:
        self._save_cache()

    def on_validation_end(self) -> None:
        self._save_cache()

    def on_test_end(self) -> None:
        self._save_cache()

    def on_predict_end(self) -> None:
        self._save_cache()

    # ----- "training": nothing to learn by gradient; the head fitter does the work -----
    def training_step(self, batch: dict, batch_idx: int) -> None:
        self.count_step_without_optimizer()  # so the fitted head gets a checkpoint
        return None

    def configure_optimizers(self):
        return None

    # ----- the head ---------------------------------------------------------------------
    def head_features(self, batch: dict) -> Tensor:
        return self.features(batch["image"])

    def fit_head(self, features: Tensor) -> None:
        if features.shape[0] < 2:
            raise ConfigError(f"the one-class SVM needs at least 2 training normals, got {features.shape[0]}")
        self.svm_weights, self.svm_offsets = fit_linear_ocsvms(features, self.nus, self.tol)
        self._save_cache()

    def head_is_fitted(self) -> bool:
        return self.svm_weights is not None

    def decision_scores(self, features: Tensor) -> Tensor:
        """N x K anomaly scores (negated decision functions), one column per nu."""
        if self.svm_weights is None:
            raise ConfigError("the one-class SVM is not fitted: fit the model first")
        w = self.svm_weights.to(features.device, torch.float64)
        b = self.svm_offsets.to(features.device, torch.float64)
        return -(features.double() @ w.T + b)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        features = self.features(batch["image"])
        if self.svm_weights is None and self._trainer is not None and self.trainer.sanity_checking:
            # Lightning's sanity check runs before the head exists; its outputs are discarded
            return {"score": torch.zeros(features.shape[0], device=features.device)}
        scores = self.decision_scores(features)
        outputs = {"score": scores[:, self.nus.index(self.nu)].float()}
        if self.sweep_nus:
            columns = [self.nus.index(v) for v in self.sweep_nus]
            outputs["score_sweep"] = scores[:, columns].float()
        return outputs

    def on_test_epoch_end(self) -> None:
        super().on_test_epoch_end()
        outputs = self.test_outputs
        if not self.sweep_nus or outputs is None or outputs.score_sweep is None:
            return
        if not has_both_classes(outputs.label):
            return
        values = [auroc(outputs.score_sweep[:, k], outputs.label) for k in range(len(self.sweep_nus))]
        finite = [v for v in values if not math.isnan(v)]
        self.test_report["image_AUROC_nu_mean"] = float(np.mean(finite)) if finite else math.nan
        self.test_report["image_AUROC_nu_std"] = float(np.std(finite)) if finite else math.nan
        self.test_report["image_AUROC_by_nu"] = dict(zip((f"{v:g}" for v in self.sweep_nus), values, strict=True))
        self.log("test/image_AUROC_nu_mean", self.test_report["image_AUROC_nu_mean"], sync_dist=True)

    # ----- checkpoint -------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if self.svm_weights is not None:
            checkpoint["adlight_ocsvm"] = {"nus": torch.tensor(self.nus, dtype=torch.float64),
                                           "weights": self.svm_weights.clone(),
                                           "offsets": self.svm_offsets.clone()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = checkpoint.get("adlight_ocsvm")
        if state is None:
            return
        saved = [round(float(v), 6) for v in state["nus"]]
        if saved != [round(v, 6) for v in self.nus]:
            raise ConfigError(
                f"the checkpoint's SVMs were fitted for nu {saved}, this model asks for "
                f"{self.nus}: use the nu and nu_sweep of the run that wrote it"
            )
        self.svm_weights = state["weights"].double()
        self.svm_offsets = state["offsets"].double()
