"""Real data from ../shared/data (skipped when it is absent): floors measured on this machine."""

from pathlib import Path

import lightning as L
import pytest
import torch

from adlight.data import LoaderOptions, MVTecDataModule
from adlight.models import AutoencoderModel
from adlight.nets import FadaeinejadAE

MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad"

pytestmark = [
    pytest.mark.realdata,
    pytest.mark.skipif(not (MVTEC / "bottle").is_dir(), reason=f"no MVTec AD bottle at {MVTEC}"),
]


@pytest.mark.slow
def test_l2_autoencoder_on_mvtec_bottle_clears_its_measured_floor(tmp_path):
    L.seed_everything(0)
    data = MVTecDataModule(root=str(MVTEC), category="bottle", image_size=64, loader=LoaderOptions(batch_size=16))
    model = AutoencoderModel(
        FadaeinejadAE(in_channels=3, image_size=64, latent_dim=100),
        loss="l2", smoothing_sigma=2.0, pixel_threshold="val_f1",
        optimizer=lambda params: torch.optim.Adam(params, lr=1e-3),
    )
    trainer = L.Trainer(max_epochs=EPOCHS, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                        check_val_every_n_epoch=EPOCHS)
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    report = model.test_report
    assert report["n_images"] == 62  # 83 test images less the 21 of the validation split
    assert report["image_AUROC"] >= IMAGE_AUROC_FLOOR
    assert report["pixel_AUROC"] >= PIXEL_AUROC_FLOOR


# measured 2026-11-23 on the 2-core CI-class machine (seeded): image AUROC 0.818, pixel
# AUROC 0.733 after 12 epochs at 64 px (18 s); the floors leave room for other CPUs' arithmetic
EPOCHS = 12
IMAGE_AUROC_FLOOR = 0.75
PIXEL_AUROC_FLOOR = 0.68
