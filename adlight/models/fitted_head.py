"""Models with a head fitted once on the features of all training normals (KDE, OCSVM, memory bank).

:class:`FittedHeadMixin` owns the head's lifecycle: when it is fitted, where its state lives
(registered buffers beside a persisted ``is_fitted``, so it loads with the weights through
the ordinary state dict) and the refusal to test without it. :class:`FrozenFeaturesModule`
adds what every model on a frozen feature extractor shares: nothing is learnt by gradient.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from adlight.errors import ConfigError
from adlight.models.base import AnomalyModule, ThresholdArg
from adlight.models.training_normals import (
    gather_training_features,
    is_last_epoch,
    training_normals_dataset,
)
from adlight.process_memory import available_bytes, release_freed_memory


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


class FittedHeadMixin:
    """For an :class:`AnomalyModule` whose head is fitted on features of the training normals.

    A model calls :meth:`register_head` in ``__init__`` with its head's buffers (empty until
    fitted) and implements :meth:`head_features` and :meth:`compute_head`; that is all.
    During ``fit`` the head is fitted before every validation epoch (so the thresholds are
    chosen for the head that will score the test set) and, when the last epoch ran no
    validation, before its checkpoint is written. Under DDP every process fits it on the
    features gathered from all processes (``adlight/models/training_normals.py``).
    """

    _head_names: tuple[str, ...] = ()
    #: the dtype training features are gathered in (a model may keep them smaller)
    head_feature_dtype: torch.dtype = torch.float32
    _head_fitted_at_step: int | None = None

    def register_head(self, **buffers: Tensor) -> None:
        """Register the head's buffers (their shapes may change when fitted) and ``is_fitted``."""
        self.register_buffer("is_fitted", torch.tensor(False))
        # the representation the head was fitted on, as JSON bytes (empty: not recorded)
        self.register_buffer("head_representation", torch.empty(0, dtype=torch.uint8))
        for name, value in buffers.items():
            self.register_buffer(name, value)
        self._head_names = tuple(buffers)

    @property
    def uses_fitted_head(self) -> bool:
        """Whether this model (as configured) has a head: :meth:`register_head` was called."""
        return "is_fitted" in self._buffers

    # ----- what a model implements ------------------------------------------------------
    def head_features(self, batch: dict) -> Tensor:
        """Features of a batch of training normals (N x ...), for fitting the head."""
        raise NotImplementedError

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        """The head's buffers (name -> value) fitted on the features of all training normals."""
        raise NotImplementedError

    def check_saved_head(self, saved: dict[str, Tensor]) -> None:
        """Refuse (ConfigError) a loaded head that does not belong to this configuration."""

    def on_head_changed(self) -> None:
        """Drop anything derived from the head's buffers (they were fitted or loaded)."""

    def _head_changed(self) -> None:
        self.drop_scorer()  # its buffers are the head's old tensors, or derived from them
        self.on_head_changed()

    def scorer(self):
        """A new scorer in eval mode; refuses (ConfigError) a head that is not fitted."""
        if self.uses_fitted_head and not bool(self.is_fitted):
            raise ConfigError(f"{type(self).__name__}'s head is not fitted: fit the model first "
                              "(adlight fit), or load a checkpoint written after fitting (--ckpt_path)")
        return super().scorer()

    # ----- the representation the head belongs to ---------------------------------------
    def representation_identity(self) -> dict[str, str]:
        """What the head's features depend on: the extractor's ``identity()`` (backbone,
        weights, layers, pooling, input size, normalisation) and the data's image size and
        channels."""
        extractor = getattr(self, "extractor", None)
        identity = dict(extractor.identity()) if hasattr(extractor, "identity") else {}
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        for field in ("image_size", "channels"):
            value = getattr(datamodule, field, None)
            if value is not None:
                identity[f"data {field}"] = str(value)
        return identity

    @property
    def fitted_representation(self) -> dict[str, str]:
        """The :meth:`representation_identity` recorded when the head was fitted ({}: none)."""
        raw = bytes(self.head_representation.cpu().tolist())
        return json.loads(raw.decode()) if raw else {}

    def require_same_representation(self) -> None:
        """Refuse (ConfigError), naming each difference, to score with another representation."""
        fitted, now = self.fitted_representation, self.representation_identity()
        differences = [f"{field}: {fitted[field]} at fit vs {now[field]} now"
                       for field in fitted if field in now and fitted[field] != now[field]]
        if differences:
            raise ConfigError(
                f"{type(self).__name__}'s head was fitted on another representation ("
                + "; ".join(differences) + "): score with the settings it was fitted with "
                "(the run's config.yaml) or refit it"
            )

    def _check_head_before_scoring(self) -> None:
        if self.uses_fitted_head:
            self.require_fitted_head()
            self.require_same_representation()

    # ----- fitting ----------------------------------------------------------------------
    def fit_head(self, features: Tensor) -> None:
        state = self.compute_head(features)
        if set(state) != set(self._head_names):
            raise RuntimeError(f"compute_head returned {sorted(state)}, the head has {sorted(self._head_names)}")
        for name, value in state.items():
            setattr(self, name, value.detach().to(self.is_fitted.device))
        record = json.dumps(self.representation_identity(), sort_keys=True).encode()
        self.head_representation = torch.tensor(list(record), dtype=torch.uint8, device=self.is_fitted.device)
        self.is_fitted.fill_(True)
        self._head_changed()

    def head_missing_in_sanity_check(self) -> bool:
        """Lightning's sanity check validates before any head exists; its outputs are discarded."""
        return not bool(self.is_fitted) and self._trainer is not None and self.trainer.sanity_checking

    def require_fitted_head(self) -> None:
        if not bool(self.is_fitted):
            raise ConfigError(
                f"{type(self).__name__}'s one-class head is not fitted: fit the model first "
                "(adlight fit), or load a checkpoint written after fitting (--ckpt_path)"
            )

    def _fit_head_on_training_normals(self) -> None:
        self.fit_head(gather_training_features(self.trainer, self))
        release_freed_memory()  # the training features and the coreset's working set
        self._head_fitted_at_step = self.trainer.global_step

    def on_fit_start(self) -> None:
        super().on_fit_start()
        self._head_fitted_at_step = None
        if self.uses_fitted_head:
            self.check_fit_memory()

    # ----- limits before work starts ----------------------------------------------------
    def fit_memory_bytes(self, n_images: int) -> int | None:
        """Bytes the head's fit needs for ``n_images`` training normals (features and working
        set); ``None``: this family does not estimate (its features are small)."""
        return None

    def fit_memory_advice(self, n_images: int, available: int) -> str:
        """The setting that would make the fit fit in ``available`` bytes (one clause)."""
        return "use smaller images (--data.image_size) or fewer training images"

    def check_fit_memory(self) -> None:
        """Refuse, before any feature is extracted, a fit that needs more memory than the device
        has free, with one line saying what would fit."""
        try:
            n_images = len(training_normals_dataset(self.trainer))
        except (ConfigError, TypeError):
            return  # no adlight datamodule: gather_training_features names the problem
        need = self.fit_memory_bytes(n_images)
        available = available_bytes(self.device)
        if need is None or available is None or need <= 0.9 * available:
            return
        raise ConfigError(
            f"{type(self).__name__}'s fit needs about {_size(need)} for {n_images} training "
            f"images, more than the {_size(available)} free on {self.device}: "
            f"{self.fit_memory_advice(n_images, int(0.9 * available))}")

    def on_validation_epoch_start(self) -> None:
        super().on_validation_epoch_start()
        if self.uses_fitted_head and not self.trainer.sanity_checking and self.trainer.state.fn == "fit":
            self._fit_head_on_training_normals()

    def on_train_epoch_end(self) -> None:
        super().on_train_epoch_end()
        # ModelCheckpoint saves in its on_train_epoch_end, which Lightning runs after this
        # hook: when the last epoch ran no validation, fit now so the checkpoint holds the head
        if self.uses_fitted_head and self._head_fitted_at_step != self.trainer.global_step \
                and is_last_epoch(self.trainer):
            self._fit_head_on_training_normals()

    def on_train_end(self) -> None:
        super().on_train_end()
        # validation every n epochs, or none: the last weights may still lack their head
        if self.uses_fitted_head and self._head_fitted_at_step != self.trainer.global_step:
            self._fit_head_on_training_normals()

    def on_test_start(self) -> None:
        super().on_test_start()
        self._check_head_before_scoring()

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self._check_head_before_scoring()

    def on_validation_start(self) -> None:
        super().on_validation_start()
        if self.trainer.state.fn == "validate":
            self._check_head_before_scoring()

    # ----- loading: the head's buffers take the saved shapes ------------------------------
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        if self.uses_fitted_head and "is_fitted" not in checkpoint.get("state_dict", {}):
            raise ConfigError(
                f"this checkpoint has no fitted head for {type(self).__name__} (no 'is_fitted' in "
                "its state_dict: written by an adlight that saved heads apart); refit with adlight fit"
            )

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        saved = {name: state_dict[prefix + name] for name in self._head_names if prefix + name in state_dict}
        if self.uses_fitted_head and bool(state_dict.get(prefix + "is_fitted", False)):
            self.check_saved_head(saved)
        record = prefix + "head_representation"
        for name, value in [*saved.items(), *([("head_representation", state_dict[record])]
                                              if self.uses_fitted_head and record in state_dict else [])]:
            current = getattr(self, name)
            setattr(self, name, torch.empty(value.shape, dtype=current.dtype, device=current.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)
        if record in missing_keys:  # a head fitted before the record existed: nothing to check
            missing_keys.remove(record)
            self.head_representation = torch.empty(0, dtype=torch.uint8, device=self.is_fitted.device)
        if self.uses_fitted_head:
            self._head_changed()


class FrozenFeaturesModule(FittedHeadMixin, AnomalyModule):
    """A head on a frozen feature extractor: nothing is learnt by gradient.

    ``adlight fit`` runs training epochs whose steps only count (no optimiser), so that
    ``global_step`` moves and ModelCheckpoint saves the fitted head. Under DDP,
    ``adlight/strategies.py`` leaves such a parameter-free model unwrapped.
    """

    def __init__(self, image_threshold: ThresholdArg = "val_f1",
                 pixel_threshold: ThresholdArg = "val_f1", num_examples: int = 4) -> None:
        super().__init__(image_threshold, pixel_threshold, num_examples)
        self.automatic_optimization = False

    #: the head's ``is_fitted`` says whether it can score; untrained weights are the point
    learns_by_gradient = False

    @property
    def extractor(self) -> nn.Module:
        """The frozen network the head's features come from."""
        raise NotImplementedError

    def train(self, mode: bool = True):
        super().train(mode)
        self.extractor.eval()  # frozen: BatchNorm keeps the pretrained statistics
        return self

    def training_step(self, batch: dict, batch_idx: int) -> None:
        # Lightning counts global_step in optimizer steps and ModelCheckpoint skips saving
        # while it is 0: count each batch seen as one step
        self.trainer.fit_loop.epoch_loop.manual_optimization.optim_step_progress.increment_completed()

    def configure_optimizers(self):
        return None
