"""Benchmark: training images/s of the L2 AE, Lightning loop against a plain PyTorch loop.

    python benchmarks/lightning_overhead.py [--image-size 128] [--images 256] [--batch-size 16]
        [--epochs 4] [--repeats 3]

The same network (``adlight.nets.FadaeinejadAE``, the paper's layer table, seeded alike),
the same in-memory images, the same DataLoader (batch size, seeded shuffle), the same Adam
and the same L2 loss, trained three ways:

- ``plain``: a hand-written PyTorch loop (forward, loss, zero_grad, backward, step);
- ``lightning, bare``: ``adlight.models.AutoencoderModel`` under a ``Trainer`` with no logger
  and no checkpoints: the cost of Lightning's loop and of the module's ``self.log`` calls;
- ``lightning, adlight defaults``: what ``adlight fit`` adds: TensorBoard logging every 10
  steps, Lightning's default checkpoint and ``last.ckpt`` (with RNG states) every epoch.

Images/s counts the epochs after the first (the first pays for allocator and oneDNN warm-up
in every variant); repeats alternate the variants and the table shows the median. Prints a
Markdown table and the command that produced it. Target: Lightning overhead <= 10%.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from datetime import date

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, Dataset

from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint
from adlight.losses import reconstruction_error
from adlight.models import AutoencoderModel
from adlight.nets import FadaeinejadAE

LR, WEIGHT_DECAY = 2e-4, 1e-5  # configs/fadaeinejad/mvtec_ae_l2.yaml


class InMemoryImages(Dataset):
    """Smooth random RGB textures in [0, 1], as dict samples of the batch contract."""

    def __init__(self, n: int, size: int) -> None:
        generator = torch.Generator().manual_seed(0)
        low = torch.rand(n, 3, size // 8, size // 8, generator=generator)
        self.images = torch.nn.functional.interpolate(low, size=size, mode="bilinear",
                                                      align_corners=False).clamp(0, 1)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": 0, "index": i}


def loader(dataset: Dataset, batch_size: int) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=True,
                      generator=torch.Generator().manual_seed(0))


def network(size: int) -> FadaeinejadAE:
    torch.manual_seed(0)
    return FadaeinejadAE(in_channels=3, image_size=size, latent_dim=500)


def plain(args, dataset) -> float:
    """Images/s of the epochs after the first, hand-written loop."""
    net = network(args.image_size)
    optimizer = torch.optim.Adam(net.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
    data = loader(dataset, args.batch_size)
    net.train()
    start = None
    for epoch in range(args.epochs):
        if epoch == 1:
            start = time.perf_counter()
        for batch in data:
            images = batch["image"]
            loss = reconstruction_error("l2", net(images).reconstruction, images).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return len(dataset) * (args.epochs - 1) / (time.perf_counter() - start)


class EpochClock(Callback):
    """Wall time from the start of the second training epoch to the end of training
    (so the last epoch's checkpoint writes are inside the measurement)."""

    def __init__(self) -> None:
        self.start = self.end = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == 1:
            self.start = time.perf_counter()

    def on_train_end(self, trainer, pl_module) -> None:
        self.end = time.perf_counter()


def lightning(args, dataset, adlight_defaults: bool) -> float:
    model = AutoencoderModel(
        network(args.image_size), loss="l2", image_threshold=None, pixel_threshold=None,
        optimizer=lambda params: torch.optim.Adam(params, lr=LR, weight_decay=WEIGHT_DECAY))
    clock = EpochClock()
    with tempfile.TemporaryDirectory() as run_dir:
        extra = {}
        if adlight_defaults:  # what adlight.cli adds to a Trainer
            callbacks = [clock, RandomStateCheckpoint(), LastCheckpoint()]
            extra = dict(log_every_n_steps=10)
        else:
            callbacks = [clock]
            extra = dict(logger=False, enable_checkpointing=False)
        trainer = L.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1,
                            default_root_dir=run_dir, callbacks=callbacks,
                            enable_progress_bar=False, enable_model_summary=False,
                            num_sanity_val_steps=0, **extra)
        trainer.fit(model, train_dataloaders=loader(dataset, args.batch_size))
    return len(dataset) * (args.epochs - 1) / (clock.end - clock.start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=4, help="timed: all but the first")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first one is not timed)")

    dataset = InMemoryImages(args.images, args.image_size)
    variants = {
        "plain PyTorch loop": lambda: plain(args, dataset),
        "Lightning, bare (no logger, no checkpoints)": lambda: lightning(args, dataset, False),
        "Lightning, adlight defaults (TensorBoard, last.ckpt + default checkpoint every epoch)":
            lambda: lightning(args, dataset, True),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, run in variants.items():
            results[name].append(run())
            print(f"repeat {repeat + 1}/{args.repeats}: {name}: {results[name][-1]:.1f} images/s",
                  file=sys.stderr)

    reference = statistics.median(results["plain PyTorch loop"])
    print(f"\n{date.today()}, {platform.machine()}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}, lightning {L.__version__}; FadaeinejadAE "
          f"{args.image_size} px, latent 500, batch {args.batch_size}, {args.images} images, "
          f"{args.epochs - 1} timed epochs, median of {args.repeats}\n")
    print("| loop | images/s (median) | all repeats | overhead vs plain |")
    print("|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        overhead = 1 - median / reference
        print(f"| {name} | {median:.1f} | {', '.join(f'{v:.1f}' for v in values)} | "
              f"{'-' if name.startswith('plain') else f'{overhead:+.1%}'} |")
    print("\ncommand: python benchmarks/lightning_overhead.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
