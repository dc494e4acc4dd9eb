"""The fitted-head lifecycle (adlight/models/fitted_head.py) on a head of a few lines."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from torch import Tensor

from adlight.checks import check_fraction
from adlight.data import DigitsDataModule, LoaderOptions
from adlight.errors import ConfigError
from adlight.models.fitted_head import FrozenFeaturesModule
from adlight.nets import RawPixels


class DistanceToMean(FrozenFeaturesModule):
    """A whole new head: the distance of an image's pixels to the training normals' mean."""

    def __init__(self, representation: torch.nn.Module) -> None:
        super().__init__(pixel_threshold=None)
        self.representation = representation
        self.register_head(centre=torch.empty(0))  # its length is known only when fitted

    @property
    def extractor(self) -> torch.nn.Module:
        return self.representation

    def head_features(self, batch: dict) -> Tensor:
        return self.representation(batch["image"])

    def compute_head(self, features: Tensor) -> dict[str, Tensor]:
        self.fitted_on = features.shape[0]
        return {"centre": features.mean(0)}

    def anomaly_outputs(self, batch: dict) -> dict[str, Tensor]:
        features = self.representation(batch["image"])
        if self.head_missing_in_sanity_check():
            return {"score": features.new_zeros(features.shape[0])}
        self.require_fitted_head()
        return {"score": (features - self.centre).norm(dim=1)}


def trainer(tmp_path, **kwargs) -> L.Trainer:
    return L.Trainer(max_epochs=1, accelerator="cpu", logger=False, default_root_dir=tmp_path,
                     enable_progress_bar=False, enable_model_summary=False, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("fitted")
    data = DigitsDataModule(normal_digits=[0], image_size=8, loader=LoaderOptions(batch_size=16))
    model = DistanceToMean(RawPixels(size=8, unit_length=False))
    fit_trainer = trainer(tmp_path)
    fit_trainer.fit(model, datamodule=data)
    fit_trainer.test(model, datamodule=data, verbose=False)
    return data, model, fit_trainer.checkpoint_callback.best_model_path, tmp_path


def test_the_head_is_fitted_on_every_training_normal_and_the_checkpoint_is_written(fitted):
    data, model, checkpoint, _ = fitted
    assert bool(model.is_fitted) and model.centre.shape == (64,)
    assert model.fitted_on == len(data.train_eval_dataset())
    # no optimizer, yet global_step counted the batches, so ModelCheckpoint saved the head
    state = torch.load(checkpoint, weights_only=True)["state_dict"]
    assert bool(state["is_fitted"]) and torch.equal(state["centre"], model.centre)


def test_test_results_hold_what_the_reporters_read(fitted):
    data, model, _, _ = fitted
    results = model.test_results
    assert results.model_name == "DistanceToMean" and results.report is model.test_report
    assert results.image_threshold_source == "validation split, F1-optimal"
    assert results.image_threshold == pytest.approx(float(model.image_threshold))
    assert results.pixel_threshold is None and results.pixel_threshold_source == "none"
    assert results.outputs.score.shape[0] == results.report["n_images"]
    assert results.class_names == data.class_names and results.examples


def test_the_head_loads_with_the_weights_by_both_checkpoint_paths(fitted):
    data, model, checkpoint, tmp_path = fitted
    restored = DistanceToMean.load_from_checkpoint(checkpoint, representation=RawPixels(size=8, unit_length=False))
    assert bool(restored.is_fitted) and torch.equal(restored.centre, model.centre)
    fresh = DistanceToMean(RawPixels(size=8, unit_length=False))
    trainer(tmp_path).test(fresh, datamodule=data, ckpt_path=checkpoint, verbose=False)
    assert torch.equal(fresh.test_outputs.score, model.test_outputs.score)
    assert fresh.test_report["image_AUROC"] == model.test_report["image_AUROC"]


def test_an_unfitted_head_refuses_to_test_and_an_old_checkpoint_says_why(fitted, tmp_path):
    data, _, checkpoint, _ = fitted
    with pytest.raises(ConfigError, match="not fitted"):
        trainer(tmp_path).test(DistanceToMean(RawPixels(size=8)), datamodule=data, verbose=False)
    # the layout before heads were buffers: the head beside the state_dict, no is_fitted
    old = torch.load(checkpoint, weights_only=True)
    old["adlight_head"] = {"centre": old["state_dict"].pop("centre")}
    del old["state_dict"]["is_fitted"]
    torch.save(old, tmp_path / "old.ckpt")
    with pytest.raises(ConfigError, match="no fitted head .*refit"):
        DistanceToMean.load_from_checkpoint(tmp_path / "old.ckpt", representation=RawPixels(size=8))


def test_check_fraction_names_the_argument_and_the_interval():
    assert check_fraction("val_fraction", 0.0) == 0.0
    assert check_fraction("coreset_fraction", 1, zero=False, one=True) == 1.0
    for value in (1.0, True, "0.5", -0.1):
        with pytest.raises(ConfigError, match=r"val_fraction must be a number in \[0, 1\), got"):
            check_fraction("val_fraction", value)
    with pytest.raises(ConfigError, match=r"coreset_fraction must be a number in \(0, 1\], got 0"):
        check_fraction("coreset_fraction", 0, zero=False, one=True)
