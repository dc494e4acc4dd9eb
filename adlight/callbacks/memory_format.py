"""Channels-last weights for training convolutional networks faster on a CPU.

oneDNN's convolutions run on NHWC ("channels last") blocks; with the default NCHW layout every
convolution first reorders its input and weight and reorders its output back. A network whose
4-D weights are channels-last makes each convolution's output channels-last too (PyTorch picks
the layout of input or weight), so the whole conv stack stays in one layout. Measured in
``benchmarks/train_throughput.py`` (``docs/performance.md``).
"""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


class ChannelsLast(Callback):
    """Converts the module's 4-D parameters and buffers to ``torch.channels_last`` for a fit.

    Values are unchanged (only strides), so checkpoints load into a model of either layout.
    Done in ``setup``, before the strategy moves the module to its device (``.to(device)``
    keeps the layout), wraps it for DDP and the optimisers are built, so their state and DDP's
    gradient buckets are made for the new layout. Turn it on with
    ``--trainer.callbacks+=adlight.callbacks.ChannelsLast``.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":
            pl_module.to(memory_format=torch.channels_last)
