"""DCGAN networks: shapes and ranges, the paper's layer rules, configurable sizes, clear errors."""

import pytest
import torch
from torch import nn

from adlight.errors import ConfigError
from adlight.nets import DCGANDiscriminator, DCGANGenerator
from adlight.nets.dcgan import dcgan_widths


@pytest.mark.parametrize("size", [32, 64, 128])
def test_generator_and_discriminator_shapes_and_ranges(size):
    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=16, image_size=size, channels=3, width=8)
    d = DCGANDiscriminator(image_size=size, channels=3, width=8)
    images = g(g.sample_latent(5))
    assert images.shape == (5, 3, size, size)
    assert images.min() >= -1 and images.max() <= 1  # tanh output
    logits, features = d.forward_with_features(images)
    assert logits.shape == (5,)
    assert features.shape == (5, d.head.in_channels, 4, 4)
    assert torch.equal(d(images), logits)
    # a 4-d z (N x latent x 1 x 1) is the same as a flat one
    z = g.sample_latent(2, torch.Generator().manual_seed(1))
    g.eval()
    assert torch.allclose(g(z), g(z[:, :, None, None]))


def test_layers_follow_the_dcgan_rules():
    g = DCGANGenerator(latent_dim=100, image_size=64, width=64)
    d = DCGANDiscriminator(image_size=64, width=64)
    for net in (g, d):
        kinds = {type(m) for m in net.modules()}
        assert nn.Linear not in kinds, "no hidden fully-connected layers"
        assert not kinds & {nn.MaxPool2d, nn.AvgPool2d, nn.Upsample}, "no pooling or upsampling"
        assert nn.BatchNorm2d in kinds
    # G: fractionally-strided convs 100 -> 512 (4x4) -> 256 -> 128 -> 64 -> 3 (64x64)
    deconvs = [m for m in g.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.out_channels for m in deconvs] == [512, 256, 128, 64, 3]
    assert [m.stride for m in deconvs] == [(1, 1)] + [(2, 2)] * 4
    assert not any(isinstance(m, nn.Conv2d) for m in g.modules())
    layers = list(g.net)
    assert isinstance(layers[-1], nn.Tanh) and isinstance(layers[-2], nn.ConvTranspose2d)
    assert sum(isinstance(m, nn.ReLU) for m in layers) == 4
    assert sum(isinstance(m, nn.BatchNorm2d) for m in layers) == 4  # not on the output
    # D: strided convs 3 -> 64 -> 128 -> 256 -> 512, LeakyReLU(0.2), no BatchNorm on the input
    convs = [m for m in d.modules() if isinstance(m, nn.Conv2d)]
    assert [m.out_channels for m in convs] == [64, 128, 256, 512, 1]
    assert all(m.stride == (2, 2) for m in convs[:-1])
    body = list(d.body)
    assert isinstance(body[1], nn.LeakyReLU) and body[1].negative_slope == 0.2
    assert sum(isinstance(m, nn.BatchNorm2d) for m in body) == 3
    assert not any(isinstance(m, nn.ReLU) for m in d.modules())


def test_weights_start_as_in_the_paper():
    torch.manual_seed(0)
    g = DCGANGenerator(image_size=64, width=64)
    conv = g.net[3].weight
    assert conv.std().item() == pytest.approx(0.02, rel=0.05)
    assert g.net[1].weight.mean().item() == pytest.approx(1.0, abs=0.01)


def test_widths_double_towards_four_by_four_and_respect_the_cap():
    assert dcgan_widths(128, 32, None, "x") == [32, 64, 128, 256, 512]
    assert dcgan_widths(128, 32, 128, "x") == [32, 64, 128, 128, 128]
    g = DCGANGenerator(image_size=128, width=16, max_width=64)
    assert max(m.out_channels for m in g.modules() if isinstance(m, nn.ConvTranspose2d)) == 64
    assert DCGANGenerator(**g.init_args()).state_dict().keys() == g.state_dict().keys()


def test_bad_arguments_are_config_errors_naming_them():
    with pytest.raises(ConfigError, match="image_size=100.*try image_size=64 or 128"):
        DCGANGenerator(image_size=100)
    with pytest.raises(ConfigError, match="image_size"):
        DCGANDiscriminator(image_size=4)
    with pytest.raises(ConfigError, match="channels"):
        DCGANGenerator(channels=2)
    with pytest.raises(ConfigError, match="width"):
        DCGANDiscriminator(width=0)
    g = DCGANGenerator(latent_dim=8, image_size=32, width=4)
    with pytest.raises(ConfigError, match=r"z of shape \(N, 8\)"):
        g(torch.zeros(2, 9))
    d = DCGANDiscriminator(image_size=32, width=4)
    with pytest.raises(ConfigError, match=r"\(N, 3, 32, 32\).*\(2, 3, 64, 64\)"):
        d(torch.zeros(2, 3, 64, 64))


def test_anogan_latent_search_alone_finds_a_generated_image_from_its_own_code():
    """The plain-torch search (no Lightning): at the code that made an image the loss is 0,
    from elsewhere it falls; both networks come back in the mode they were in."""
    from adlight.nets.anogan import latent_search

    torch.manual_seed(0)
    g = DCGANGenerator(latent_dim=8, image_size=32, width=8)
    d = DCGANDiscriminator(image_size=32, width=8)
    g.eval()
    z = g.sample_latent(3, torch.Generator().manual_seed(1))
    with torch.no_grad():
        target = g(z)
    g.train()
    at_code = latent_search(g, d, target, z, steps=0, lr=0.05, weight=0.1)
    assert at_code.history.shape == (1, 3)
    assert torch.allclose(at_code.loss, torch.zeros(3), atol=1e-6)
    start = g.sample_latent(3, torch.Generator().manual_seed(2))
    with torch.inference_mode():  # as in Lightning's test loop
        found = latent_search(g, d, target, start, steps=30, lr=0.05, weight=0.1, residual_scale=0.5)
    assert (found.history[-1] < found.history[0]).all()
    assert torch.allclose(found.loss, 0.9 * found.residual + 0.1 * found.feature_distance)
    assert found.reconstruction.shape == target.shape and g.training and d.training
    assert all(p.grad is None for p in [*g.parameters(), *d.parameters()])
