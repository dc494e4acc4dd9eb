"""The scorer contract, for every family ``adlight.models`` exports (a new one is picked up with
no edit here): on tiny synthetic data each example a family gives (``examples()``) is fitted,
tested and predicted through Lightning, and its scores and maps equal those of its plain-torch
scorer (``model.scorer()``) and of its exported ONNX graph run by the Inferencer.

Tolerances (``docs/export.md``): the LightningModule and the scorer run the same code, so they
agree to float32 rounding of other batch sizes (1e-5 of the largest value); ONNX Runtime runs
the graph with its own kernels, 1e-4 of the largest value, or the scorer's own ``export_rtol``
(the SSIM map's float32 cancellation: 1e-3). Decisions at the exported threshold are identical
for every image not within that tolerance of it. A family that cannot export refuses from
``scorer()``, and so from ``adlight export``, with one line.
"""

from __future__ import annotations

import inspect
import json

import lightning as L
import numpy as np
import pytest
import torch
from synthetic import make_mvtec_tree

import adlight.models
from adlight.data import LoaderOptions, MVTecDataModule
from adlight.errors import ConfigError
from adlight.export import export_model
from adlight.inference import Inferencer
from adlight.models import AnomalyModule

SIZE = 32
EAGER_RTOL = 1e-5
EXPORT_RTOL = 1e-4


def families() -> list[type]:
    """Every concrete LightningModule family ``adlight.models`` exports (it builds a scorer)."""
    found = []
    for name in adlight.models.__all__:
        cls = getattr(adlight.models, name)
        if inspect.isclass(cls) and issubclass(cls, AnomalyModule) and not inspect.isabstract(cls) \
                and cls.build_scorer is not AnomalyModule.build_scorer:
            found.append(cls)
    return found


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=6, n_good_test=4,
                           defects={"scratch": 4}, size=SIZE)


def test_the_walk_finds_the_families():
    names = {cls.__name__ for cls in families()}
    assert {"AutoencoderModel", "PatchCoreModel", "PadimModel", "OneClassSVMModel",
            "SupervisedClassifier", "GANModel"} <= names


def close(got, want, rtol: float, what: str) -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, what
    scale = max(float(np.abs(want).max()), 1e-12)
    assert np.abs(got - want).max() <= rtol * scale, f"{what}: off by {np.abs(got - want).max():.3g} of {scale:.3g}"


def fit_test_predict(model, data, folder):
    torch.manual_seed(0)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        default_root_dir=folder, accelerator="cpu", devices=1)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    batches = trainer.predict(model, datamodule=data)
    predicted = {key: torch.cat([b[key] for b in batches]).numpy()
                 for key in ("score", "anomaly_map") if key in batches[0]}
    images = torch.cat([batch["image"] for batch in data.predict_dataloader()])
    return model.test_results.outputs, predicted, (images * 255).round().to(torch.uint8)


@pytest.mark.parametrize("family", families(), ids=lambda cls: cls.__name__)
def test_lightning_scorer_and_export_agree(family, mvtec_root, tmp_path):
    for variant, model in enumerate(family.examples(SIZE)):
        data = MVTecDataModule(root=str(mvtec_root), category="bottle", image_size=SIZE, val_fraction=0.34,
                               loader=LoaderOptions(batch_size=4))
        tested, predicted, images = fit_test_predict(model, data, tmp_path / str(variant))
        # test and predict score the same test split
        close(np.sort(tested.score.numpy()), np.sort(predicted["score"]), EAGER_RTOL, "test vs predict")
        try:
            scorer = model.scorer()
        except ConfigError as refusal:  # a family that cannot export says why in one line
            assert "\n" not in str(refusal) and str(refusal)
            with pytest.raises(ConfigError) as exported:
                export_model(model, "onnx", tmp_path / f"refused{variant}", SIZE, 3)
            assert str(exported.value) == str(refusal)
            continue
        assert not scorer.training and tuple(scorer.outputs) in (("score",), ("score", "anomaly_map"))
        assert set(scorer.outputs) == set(predicted), "the scorer's outputs are what predict gives"
        with torch.no_grad():
            eager = dict(zip(scorer.outputs, (t.numpy() for t in scorer(images.float() / 255)), strict=True))
        assert eager["score"].dtype == np.float32 and eager["score"].shape == (len(images),)
        if "anomaly_map" in eager:
            assert eager["anomaly_map"].shape == (len(images), 1, SIZE, SIZE)
        for key, value in eager.items():
            close(value, predicted[key], EAGER_RTOL, f"{family.__name__}[{variant}] scorer vs predict: {key}")

        folder = tmp_path / f"export{variant}"
        export_model(model, "onnx", folder, SIZE, 3)
        metadata = json.loads((folder / "metadata.json").read_text())
        assert metadata["model_class"] == family.__name__ and metadata["representation"]
        assert metadata["outputs"] == list(scorer.outputs)
        got = Inferencer(folder).predict(images.numpy(), batch_size=5)
        rtol = getattr(scorer, "export_rtol", EXPORT_RTOL)
        for key, value in eager.items():
            close(got[key], value, rtol, f"{family.__name__}[{variant}] ONNX vs scorer: {key}")
        threshold = metadata["image_threshold"]["value"]
        if threshold is not None:
            clear = np.abs(eager["score"] - threshold) > rtol * np.abs(eager["score"]).max()
            np.testing.assert_array_equal(got["prediction"][clear], (eager["score"] >= threshold)[clear])
