"""Andrews et al.: a linear one-class SVM on transferred (frozen) representations.

The representation (``adlight.nets.TransferFeatures``, ``RawPixels``, or any module from
images to N x D vectors) is frozen. The head is scikit-learn's ``OneClassSVM`` fitted on the
features of every training normal for each nu of the paper's sweep (21 values in
[0.01, 0.99]), all on one precomputed Gram matrix (n = 2048, d = 1280: 4 s against 82 s
refitting on raw features). The kernel is linear, so each SVM is kept as its primal weight
vector and offset: scoring is one matrix product, the head K x D numbers.

Scores are the negated decision function (higher = more anomalous). ``score`` is the SVM of
``nu``; ``score_sweep`` holds every nu of the sweep, whose AUROCs the evaluator averages.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.svm import OneClassSVM
from torch import Tensor, nn

from adlight.checks import is_int, is_number
from adlight.errors import ConfigError
from adlight.models.base import ThresholdArg
from adlight.models.cached_representation import CachedRepresentationModule
from adlight.nets.scorers.one_class_svm import LinearOneClassSVMScorer

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


class OneClassSVMModel(CachedRepresentationModule):
    """Args:
        representation: module from [0, 1] images to N x D features (frozen).
        nu: the nu whose SVM gives ``score`` (thresholds, F1, predictions).
        nu_sweep: number of evenly spaced nu in [0.01, 0.99] whose AUROC the test report
            averages (21 in the paper; 0 for none).
        feature_cache: a folder for cached features (``None``: no cache); a re-run with the
            same representation and images skips extraction.
        tol: scikit-learn's stopping tolerance.
    """

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
        super().__init__(representation, feature_cache, image_threshold, num_examples)
        self.save_hyperparameters(ignore=["representation"])
        if not is_number(nu) or not 0.0 < nu <= 1.0:
            raise ConfigError(f"nu must be a number in (0, 1], got {nu!r}")
        if not is_int(nu_sweep) or nu_sweep < 0 or nu_sweep == 1:
            raise ConfigError(f"nu_sweep must be 0 or an int >= 2, got {nu_sweep!r}")
        self.sweep_nus = tuple(float(v) for v in np.linspace(0.01, 0.99, nu_sweep).round(4)) if nu_sweep else ()
        self.nus = sorted(set(self.sweep_nus) | {float(nu)})
        self.nu = float(nu)
        self.tol = tol
        # K x D primal weights, K offsets, and the K nu they were fitted for (float64)
        self.register_head(svm_weights=torch.empty(0, 0, dtype=torch.float64),
                           svm_offsets=torch.empty(0, dtype=torch.float64),
                           svm_nus=torch.empty(0, dtype=torch.float64))

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        if features.shape[0] < 2:
            raise ConfigError(f"the one-class SVM needs at least 2 training normals, got {features.shape[0]}")
        weights, offsets = fit_linear_ocsvms(features, self.nus, self.tol)
        self._save_cache()
        return {"svm_weights": weights, "svm_offsets": offsets,
                "svm_nus": torch.tensor(self.nus, dtype=torch.float64)}

    def check_saved_head(self, saved: dict[str, Tensor]) -> None:
        fitted_for = [round(float(v), 6) for v in saved.get("svm_nus", [])]
        if fitted_for != [round(v, 6) for v in self.nus]:
            raise ConfigError(
                f"the checkpoint's SVMs were fitted for nu {fitted_for}, this model asks for "
                f"{self.nus}: use the nu and nu_sweep of the run that wrote it"
            )

    # ----- scoring: adlight.nets.scorers.one_class_svm -------------------------------------
    @classmethod
    def examples(cls, image_size: int = 32) -> list[OneClassSVMModel]:
        from adlight.nets import RawPixels

        return [cls(RawPixels(), nu=0.5, nu_sweep=3)]

    def build_scorer(self) -> LinearOneClassSVMScorer:
        return LinearOneClassSVMScorer(self.representation, self.svm_weights, self.svm_offsets,
                                       self.nus.index(self.nu))

    def decision_scores(self, features: Tensor) -> Tensor:
        """N x K anomaly scores (negated decision functions), one column per nu."""
        self.require_fitted_head()
        return self.scoring_module().decision_scores(features)

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        # the scorer's head on the (maybe cached) features: the same numbers as its forward
        features = self.features(batch["image"])
        if self.head_missing_in_sanity_check():
            return {"score": torch.zeros(features.shape[0], device=features.device)}
        scores = self.decision_scores(features)
        outputs = {"score": scores[:, self.scoring_module().column].float()}
        if self.sweep_nus:
            columns = [self.nus.index(v) for v in self.sweep_nus]
            outputs["score_sweep"] = scores[:, columns].float()
        return outputs
