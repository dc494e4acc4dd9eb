"""SmallCNN pools before its ReLU (faster on a CPU): the values and gradients of the paper's
ReLU-then-pool order."""

from __future__ import annotations

import torch
from torch import nn

from adlight.nets import SmallCNN


def test_pool_then_relu_gives_the_papers_relu_then_pool_values_and_gradients():
    torch.manual_seed(0)
    net = SmallCNN(in_channels=3, image_size=32, filters=4, blocks=3, hidden=8)
    convs = [m for m in net.features if isinstance(m, nn.Conv2d)]
    paper = nn.Sequential(*[layer for conv in convs
                            for layer in (conv, nn.ReLU(), nn.MaxPool2d(2))])
    x = torch.randn(5, 3, 32, 32, requires_grad=True)
    ours, ref = net.features(x), paper(x)
    assert torch.equal(ours, ref)
    g = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, [x, *net.parameters()], g, allow_unused=True)
    ref_grads = torch.autograd.grad(ref, [x, *[p for c in convs for p in c.parameters()]], g)
    assert torch.allclose(grads[0], ref_grads[0], atol=1e-6)
    for a, b in zip(grads[1:], ref_grads[1:], strict=False):
        assert torch.allclose(a, b, atol=1e-5)
    # the convolutions keep their places: checkpoints from the old order load
    assert [k for k in net.state_dict() if k.startswith("features")] == [
        f"features.{3 * i}.{p}" for i in range(3) for p in ("weight", "bias")]
