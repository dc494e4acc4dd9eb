"""Unit tests for the autoencoders in adlight.nets (small synthetic tensors, CPU)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adlight.errors import ConfigError
from adlight.nets import (
    KDCAE,
    NICAE,
    Autoencoder,
    AutoencoderOutput,
    FadaeinejadAE,
    ZhaoKarrayAE,
)

NETS = [FadaeinejadAE, ZhaoKarrayAE, KDCAE, NICAE]
# Smallest image size each net accepts, and one it must reject.
MULTIPLE = {FadaeinejadAE: 16, ZhaoKarrayAE: 16, KDCAE: 16, NICAE: 32}
BAD_SIZE = {FadaeinejadAE: 100, ZhaoKarrayAE: 40, KDCAE: 72, NICAE: 48}
ids = [cls.__name__ for cls in NETS]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def sample(net: Autoencoder, n: int = 2) -> torch.Tensor:
    """A batch in the net's own input range."""
    lo, hi = net.input_range
    return torch.rand(n, net.in_channels, net.image_size, net.image_size) * (hi - lo) + lo


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "cls,size",
    [
        (FadaeinejadAE, 16),
        (FadaeinejadAE, 64),
        (FadaeinejadAE, 256),
        (ZhaoKarrayAE, 32),
        (ZhaoKarrayAE, 64),
        (KDCAE, 32),
        (KDCAE, 64),
        (NICAE, 32),
        (NICAE, 64),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_reconstruction_has_input_shape(cls, size, channels):
    net = cls(in_channels=channels, image_size=size).eval()
    x = sample(net, n=1 if size > 128 else 2)
    with torch.no_grad():
        out = net(x)
    assert isinstance(out, AutoencoderOutput)
    assert out.reconstruction.shape == x.shape
    assert out.latent.shape == (x.shape[0], *net.latent_shape)
    assert out.mu is None and out.logvar is None


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_output_within_input_range(cls):
    net = cls(image_size=32 if cls is NICAE else 16).eval()
    assert net.input_range == ((-1.0, 1.0) if cls is ZhaoKarrayAE else (0.0, 1.0))
    # large inputs push the last pre-activation far out: the squashing must hold it
    x = sample(net, n=3) * 50
    with torch.no_grad():
        rec = net(x).reconstruction
    lo, hi = net.input_range
    assert rec.min() >= lo and rec.max() <= hi


def test_latent_shapes_at_defaults():
    expected = {
        FadaeinejadAE: (500,),
        ZhaoKarrayAE: (300,),
        KDCAE: (128, 8, 8),
        NICAE: (512,),
    }
    for cls, shape in expected.items():
        net = cls().eval()
        assert net.image_size == 128
        assert net.latent_shape == shape
        with torch.no_grad():
            z = net.encode(sample(net, n=1))
        assert z.shape == (1, *shape), cls.__name__
    assert NICAE().in_channels == 1
    assert FadaeinejadAE().in_channels == 3


def test_fadaeinejad_batchnorm_settings():
    net = FadaeinejadAE()
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 16  # every hidden conv, 8 each way
    for bn in bns:
        assert bn.eps == 1e-6 and bn.momentum == 0.1
    slopes = {m.negative_slope for m in net.modules() if isinstance(m, nn.LeakyReLU)}
    assert slopes == {0.01}
    assert isinstance(net.decoder[-1], nn.Sigmoid)


def test_zhao_karray_no_batchnorm_on_input_and_output_layers():
    net = ZhaoKarrayAE()
    enc, dec = list(net.encoder), list(net.decoder)
    assert isinstance(enc[0], nn.Conv2d) and isinstance(enc[1], nn.LeakyReLU)
    assert isinstance(enc[-2], nn.Linear) and isinstance(enc[-1], nn.Sigmoid)
    assert isinstance(dec[0], nn.Linear) and not isinstance(dec[1], nn.BatchNorm1d)
    assert isinstance(dec[-2], nn.ConvTranspose2d) and isinstance(dec[-1], nn.Tanh)
    # hidden blocks do have it: conv2..conv4 and deconv1..deconv3
    assert sum(isinstance(m, nn.BatchNorm2d) for m in net.modules()) == 6
    convs = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) for m in convs)
    assert [m.out_channels for m in convs[:4]] == [32, 64, 128, 256]


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_variational(cls):
    net = cls(image_size=MULTIPLE[cls], variational=True)
    x = sample(net)
    shape = (2, *net.latent_shape)

    mu, logvar = net.encode(x)
    assert mu.shape == shape and logvar.shape == shape

    net.train()
    a, b = net(x), net(x)
    assert a.mu.shape == shape and a.logvar.shape == shape and a.latent.shape == shape
    assert not torch.equal(a.latent, b.latent)
    assert not torch.equal(a.latent, a.mu)

    net.eval()
    with torch.no_grad():
        c, d = net(x), net(x)
        assert torch.equal(c.reconstruction, d.reconstruction)
        assert torch.equal(c.latent, c.mu)
        assert torch.allclose(c.reconstruction, net.decode(c.mu))
    lo, hi = net.logvar_range
    assert c.logvar.min() >= lo and c.logvar.max() <= hi


def test_logvar_is_clamped():
    net = KDCAE(image_size=16, variational=True).eval()
    with torch.no_grad():
        net.encoder[-1].bias[net.latent_channels :] = 1e4
        _, logvar = net.encode(sample(net))
    assert torch.all(logvar == net.logvar_range[1])


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_bad_image_size_names_the_argument(cls):
    with pytest.raises(ConfigError, match=rf"image_size={BAD_SIZE[cls]}\b"):
        cls(image_size=BAD_SIZE[cls])
    with pytest.raises(ConfigError, match="image_size"):
        cls(image_size=0)


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_bad_widths_and_latent_raise(cls):
    with pytest.raises(ConfigError, match="widths"):
        cls(image_size=MULTIPLE[cls], widths=(8, 8))
    latent_arg = "latent_channels" if cls is KDCAE else "latent_dim"
    with pytest.raises(ConfigError, match=latent_arg):
        cls(image_size=MULTIPLE[cls], **{latent_arg: 0})
    with pytest.raises(ConfigError, match="in_channels"):
        cls(image_size=MULTIPLE[cls], in_channels=0)


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_wrong_input_shape_raises(cls):
    size = MULTIPLE[cls]
    net = cls(in_channels=3, image_size=size)
    good = f"\\(N, 3, {size}, {size}\\)"
    with pytest.raises(ConfigError, match=rf"{good}.*in_channels=1"):
        net(torch.rand(2, 1, size, size))
    with pytest.raises(ConfigError, match=rf"{good}.*image_size={2 * size}"):
        net(torch.rand(2, 3, 2 * size, 2 * size))
    with pytest.raises(ConfigError, match="square"):
        net(torch.rand(2, 3, size, 2 * size))
    with pytest.raises(ConfigError, match="N x C x H x W"):
        net(torch.rand(3, size, size))
    net.check_input(torch.rand(1, 3, size, size))  # the public check passes on a good batch


@pytest.mark.parametrize("cls", NETS, ids=ids)
def test_a_few_steps_reduce_reconstruction_loss(cls):
    net = cls(image_size=32).train()
    # dark and bright images with a little texture: far from the untrained output (~mid-grey)
    lo, hi = net.input_range
    level = torch.tensor([0.1, 0.9, 0.15, 0.85]).view(4, 1, 1, 1)
    unit = (level + 0.1 * torch.rand(4, net.in_channels, 32, 32)).clamp(0, 1)
    x = lo + (hi - lo) * unit
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    losses = []
    for _ in range(10):
        loss = nn.functional.mse_loss(net(x).reconstruction, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first = next(m for m in net.encoder.modules() if isinstance(m, nn.Conv2d))
    assert first.weight.grad is not None and first.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for p in net.parameters())
    assert losses[-1] < 0.9 * losses[0], losses
