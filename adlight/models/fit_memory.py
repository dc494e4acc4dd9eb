"""The memory one training step of a gradient-trained family needs, measured before the first batch.

A fit's peak is the activations autograd saves for the backward pass (they grow with the batch
size and the pixels) plus the parameters, their gradients and the two Adam moments (4 x the
weights). The activations are measured, not modelled: one ``training_step`` on two copies of a
real training image at the configured size runs under ``saved_tensors_hooks`` that add up the
bytes of every tensor autograd keeps (each storage counted once, the weights it keeps not at
all) and then drop the graph
without a backward. Two images, not one, because a ``BatchNorm1d`` refuses a batch of one; the
sum is halved. The module's buffers (BatchNorm running statistics) and the random generator are
restored afterwards, so the fit that follows is the one it would have been.

Only on the CPU: on an accelerator the measuring step would itself allocate device memory, and
a CUDA out-of-memory error is already a clear one line. A family that optimises by hand (the GAN
steps its own optimisers inside ``training_step``, so running it would change the weights) gives
a ``memory_probe_step(batch)`` instead: the forward passes of one step, no optimiser. The feature
discriminator (``measures_training_step = False``) trains on features gathered at train start
and checks their size itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

# Adam: the weights, their gradients and two moments
_PARAMETER_COPIES = 4


def parameter_bytes(module: nn.Module) -> int:
    """Bytes of the trainable parameters, their gradients and the optimiser's two moments."""
    return _PARAMETER_COPIES * sum(p.numel() * p.element_size() for p in module.parameters() if p.requires_grad)


@contextlib.contextmanager
def saved_tensor_bytes(exclude: nn.Module | None = None) -> Iterator[list[int]]:
    """Count the bytes autograd saves for backward inside the block (``total[0]``), but not the
    storages of ``exclude``'s parameters and buffers (they exist once, whatever the batch)."""
    total, seen = [0], set()
    if exclude is not None:
        for tensor in [*exclude.parameters(), *exclude.buffers()]:
            storage = tensor.untyped_storage()
            seen.add((storage.data_ptr(), storage.nbytes()))

    def pack(tensor: torch.Tensor):
        storage = tensor.untyped_storage()
        key = (storage.data_ptr(), storage.nbytes())
        if key not in seen and storage.nbytes() > 0:
            seen.add(key)
            total[0] += storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield total


@contextlib.contextmanager
def _state_kept(module: nn.Module) -> Iterator[None]:
    buffers = {name: buffer.detach().clone() for name, buffer in module.named_buffers()}
    training = module.training
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            with torch.no_grad():
                for name, buffer in module.named_buffers():
                    if name in buffers:
                        buffer.copy_(buffers[name])
            module.train(training)


def activation_bytes_per_image(model, batch: dict) -> int:
    """Bytes autograd saves for one image in ``model.training_step`` (``batch`` holds two)."""
    log = model.__dict__.get("log")
    model.log = lambda *args, **kwargs: None  # Lightning refuses self.log outside its loops
    try:
        with _state_kept(model), torch.enable_grad(), saved_tensor_bytes(exclude=model) as total:
            model.train()
            probe = getattr(model, "memory_probe_step", None)
            probe(batch) if probe is not None else model.training_step(batch, 0)
    finally:
        if log is None:
            del model.log
        else:
            model.log = log
    return total[0] // 2


def two_image_batch(dataset) -> dict:
    """A batch of two copies of the dataset's first item, as the default collate builds it."""
    item = dataset[0]
    return torch.utils.data.default_collate([item, item])


def training_step_bytes(model, dataset, batch_size: int) -> tuple[int, int] | None:
    """(bytes a ``batch_size`` training step needs, activation bytes per image); ``None`` where
    it is not measured (an accelerator, hand-written optimisation, an empty dataset)."""
    by_hand = not model.automatic_optimization and getattr(model, "memory_probe_step", None) is None
    if model.device.type != "cpu" or by_hand or len(dataset) == 0:
        return None
    per_image = activation_bytes_per_image(model, two_image_batch(dataset))
    return batch_size * per_image + parameter_bytes(model), per_image


def readable_bytes(n_bytes: int) -> str:
    """``1.5 GB`` or ``300 MB`` (one decimal would say 0.0 GB for a small step)."""
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.1f} MB"


def batch_size_that_fits(per_image: int, fixed: int, available: int) -> int:
    """The largest batch whose step fits in ``available`` bytes (0: not even one image)."""
    return max(0, (available - fixed) // max(per_image, 1))
