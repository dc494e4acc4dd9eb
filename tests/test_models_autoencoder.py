import math

import lightning as L
import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.data import LoaderOptions, MVTecDataModule
from adlight.errors import ConfigError
from adlight.losses import kl_divergence, reconstruction_error, sparsity_penalty
from adlight.models import AutoencoderModel
from adlight.nets import KDCAE, FadaeinejadAE, ZhaoKarrayAE


def tiny_trainer(tmp_path, **kwargs):
    defaults = dict(max_epochs=2, default_root_dir=tmp_path, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                    log_every_n_steps=1)
    defaults.update(kwargs)
    return L.Trainer(**defaults)


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=6,
                           defects={"scratch": 6}, size=64)


def test_losses_known_values():
    x = torch.zeros(2, 1, 4, 4)
    y = torch.full((2, 1, 4, 4), 0.5)
    assert reconstruction_error("l2", y, x).tolist() == pytest.approx([0.25, 0.25])
    assert sparsity_penalty(torch.tensor([[1.0, -2.0], [0.0, 0.5]])).tolist() == [3.0, 0.5]
    assert kl_divergence(torch.zeros(3, 5), torch.zeros(3, 5)).tolist() == [0.0, 0.0, 0.0]
    assert kl_divergence(torch.ones(1, 2), torch.zeros(1, 2)).item() == pytest.approx(1.0)
    flat = torch.rand(1, 1, 16, 16)  # SSIM's 11-pixel window needs at least 11x11
    assert reconstruction_error("ssim", flat, flat).abs().max() < 1e-4
    assert reconstruction_error("ssim", flat, 1 - flat).min() > 0.5
    bce = reconstruction_error("bce", torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))
    assert torch.isfinite(bce).all() and bce.item() < 1e-5


def test_unknown_loss_and_bad_options_name_the_argument():
    with pytest.raises(ConfigError, match="loss"):
        AutoencoderModel(FadaeinejadAE(image_size=32), loss="l3")
    with pytest.raises(ConfigError, match="noise_fraction"):
        AutoencoderModel(FadaeinejadAE(image_size=32), noise_fraction=1.5)
    with pytest.raises(ConfigError, match="image_threshold"):
        AutoencoderModel(FadaeinejadAE(image_size=32), image_threshold="best")


def test_tanh_network_is_fed_minus_one_to_one_and_maps_stay_in_image_units():
    model = AutoencoderModel(ZhaoKarrayAE(image_size=32, latent_dim=8)).eval()
    images = torch.rand(2, 3, 32, 32)
    assert model.to_network(images).min() < 0 and model.to_network(images).max() <= 1
    assert torch.allclose(model.to_image(model.to_network(images)), images, atol=1e-6)
    out = model.anomaly_outputs({"image": images})
    assert out["reconstruction"].min() >= 0 and out["reconstruction"].max() <= 1
    assert out["anomaly_map"].shape == (2, 1, 32, 32)
    assert out["anomaly_map"].max() <= 1


def test_residual_map_is_the_max_over_channels():
    model = AutoencoderModel(FadaeinejadAE(image_size=32, latent_dim=4))
    images = torch.zeros(1, 3, 32, 32)
    reconstruction = torch.zeros(1, 3, 32, 32)
    reconstruction[0, 0, 5, 5] = 0.3
    reconstruction[0, 2, 5, 5] = -0.6
    maps = model.anomaly_maps(images, reconstruction)
    assert maps[0, 0, 5, 5] == pytest.approx(0.6)
    assert maps.sum() == pytest.approx(0.6)


def test_noise_injection_hits_the_requested_fraction_with_the_requested_variance():
    torch.manual_seed(0)
    model = AutoencoderModel(FadaeinejadAE(image_size=32), noise_fraction=0.1, noise_variance=0.001)
    images = torch.full((2000, 1, 8, 8), 0.5)
    noisy = model.inject_noise(images)
    changed = (noisy != images).flatten(1).any(1)
    assert 0.07 < changed.float().mean() < 0.13
    assert (noisy[changed] - 0.5).var().item() == pytest.approx(0.001, rel=0.1)
    assert torch.equal(AutoencoderModel(FadaeinejadAE(image_size=32)).inject_noise(images), images)


def test_variational_training_adds_the_kl_term():
    torch.manual_seed(0)
    model = AutoencoderModel(FadaeinejadAE(image_size=32, latent_dim=8, variational=True))
    model.log = lambda *args, **kwargs: None
    batch = {"image": torch.rand(4, 3, 32, 32)}
    loss = model.training_step(batch, 0)
    out, reconstruction = model.reconstruct(batch["image"])
    assert out.mu is not None
    assert torch.isfinite(loss) and loss.item() > 0


def test_kd_cae_fits_on_synthetic_mvtec_and_its_kde_survives_a_checkpoint(tmp_path, mvtec_root):
    torch.manual_seed(0)
    data = MVTecDataModule(root=str(mvtec_root), category="bottle", image_size=32, loader=LoaderOptions(batch_size=4),
                           val_fraction=0.34)
    model = AutoencoderModel(KDCAE(image_size=32, latent_channels=8), kde=True,
                             optimizer=lambda p: torch.optim.Adam(p, lr=1e-3))
    trainer = tiny_trainer(tmp_path)
    trainer.fit(model, datamodule=data)
    assert bool(model.is_fitted)
    assert not math.isnan(float(model.image_threshold))
    trainer.test(model, datamodule=data, verbose=False)
    first = model.test_outputs.score.clone()
    path = tmp_path / "kd.ckpt"
    trainer.save_checkpoint(path)

    restored = AutoencoderModel.load_from_checkpoint(
        path, network=KDCAE(image_size=32, latent_channels=8), weights_only=False)
    assert bool(restored.is_fitted)
    assert float(restored.image_threshold) == float(model.image_threshold)
    tiny_trainer(tmp_path).test(restored, datamodule=data, verbose=False)
    assert torch.allclose(restored.test_outputs.score, first, atol=1e-6)
    assert restored.test_report["image_threshold_source"] == "validation split, F1-optimal"


def test_a_model_with_an_unfitted_head_refuses_to_test(tmp_path, mvtec_root):
    data = MVTecDataModule(root=str(mvtec_root), category="bottle", image_size=32, loader=LoaderOptions(batch_size=4))
    # allowed to score untrained, so that the missing head is what it refuses
    model = AutoencoderModel(KDCAE(image_size=32, latent_channels=8), kde=True, allow_untrained=True)
    with pytest.raises(ConfigError, match="not fitted"):
        tiny_trainer(tmp_path).test(model, datamodule=data, verbose=False)


def test_channel_mismatch_is_a_clear_error(tmp_path, mvtec_root):
    data = MVTecDataModule(root=str(mvtec_root), category="bottle", image_size=32, channels=1,
                           loader=LoaderOptions(batch_size=4))
    model = AutoencoderModel(FadaeinejadAE(in_channels=3, image_size=32))
    with pytest.raises(ConfigError, match="in_channels"):
        tiny_trainer(tmp_path, max_epochs=1).fit(model, datamodule=data)
