"""Benchmark: training images/s of each gradient-trained family's shipped config, before/after.

    python benchmarks/train_throughput.py [--data /work/shared/data] [--threads 1]
        [--warmup 2] [--steps 3] [--repeats 2] [--only zhao_karray/ham10000_cae_l2 ...]

Every config is built exactly as ``adlight fit --config ...`` builds it (``AdlightCLI``) and
trained by Lightning for ``warmup + steps`` batches, twice per repeat, the two variants
alternating so that both see the same load:

- ``main``: the config as shipped, as it trained before issue 22 (float32, NCHW, the
  optimiser's default for-loop kernels, and each image augmented on its own by torchvision in
  the loader, then the items collated);
- ``cpu``: the recommended CPU settings, all of them plain command-line overrides:
  ``--trainer.precision=bf16-mixed`` (not for the fine-tuned EfficientNet-Lite0, ``FLOAT32``),
  ``--trainer.callbacks+=adlight.callbacks.ChannelsLast``,
  ``--trainer.callbacks+=adlight.callbacks.KeepFreedMemory`` (glibc keeps freed activations
  instead of faulting them in again every step) and ``fused=true`` on each Adam/AdamW/SGD
  optimiser (PyTorch's one-kernel update); and the
  data path every run now takes: a batch gathered from the uint8 image cache in one read and
  augmented as a whole (``AnomalyDataModule.augment_batch``, in ``on_after_batch_transfer``).

Where a batch goes, per variant: ``decode`` (reading, decoding and resizing one batch of files,
paid in the first epoch only: the datamodules cache the resized 8-bit images), ``batch`` (what
every later epoch pays to assemble a batch from the cache: the augmentations, the float
conversion, the collate), and inside the training step ``forward`` (forward and loss, up to
``on_before_backward``), ``backward``, ``optimizer`` (from ``on_before_optimizer_step`` to the
end of the batch) and ``other`` (the rest: zero_grad, ``self.log``, the loop's hooks and
loggers). In the DCGAN's manual loop the discriminator's optimiser step counts as forward (it
sits between its backward and the generator's forward).

Times are CPU seconds of this process's one thread (``--threads 1``, ``time.thread_time``), not
wall time: on a machine that other jobs load the wall clock measures the queue for the cores,
the thread's CPU time measures the work. ``img/s`` is ``batch size / (batch + step)`` CPU
seconds, the rate of every epoch after the first on one core; wall img/s is printed beside it.
The ratio of the two variants in the same run is what the table is for.

Each measurement runs in a fresh process (``spawn``): ``KeepFreedMemory`` changes the
allocator of the whole process, which would otherwise carry over into the next ``main`` run.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch.utils.data import default_collate

from adlight.cli import AdlightCLI
from adlight.data.datasets import collate_batches

ROOT = Path(__file__).resolve().parents[1]
MVTEC = ["--data.root={data}/mvtec_ad", "--data.category=bottle"]
CIFAR10 = ["--data.source=folder", "--data.root={data}/cifar10/train",
           "--data.test_root={data}/cifar10/test", "--data.download=false"]
# config, the overrides that point it at the shared data, its optimiser arguments
FAMILIES = [
    ("zhao_karray/ham10000_cae_l2", ["--data.root={data}/ham10000"], ["optimizer"]),
    ("zhao_karray/ham10000_vae", ["--data.root={data}/ham10000"], ["optimizer"]),
    ("fadaeinejad/mvtec_ae_l2", MVTEC, ["optimizer"]),
    ("zhao_karray/mvtec_cae_l2", MVTEC, ["optimizer"]),
    ("wilmet/mvtec_kd_cae", MVTEC, ["optimizer"]),
    ("wilmet/mvtec_ni_cae", MVTEC, ["optimizer"]),
    ("wilmet/mvtec_dcgan", MVTEC, ["generator_optimizer", "discriminator_optimizer"]),
    ("wilmet/mvtec_small_cnn", MVTEC, []),  # RMSprop: no fused kernel in torch
    ("minhas_zelek/cifar10_efficientnet_lite0_finetune", CIFAR10, ["optimizer"]),
    ("minhas_zelek/cifar10_efficientnet_lite0_fixed", CIFAR10, ["optimizer"]),
]
#: configs whose ``cpu`` variant stays in float32: bf16 doubled the backward of EfficientNet's
#: depthwise convolutions here (687 against 372 CPU ms per batch, docs/performance.md)
FLOAT32 = {"minhas_zelek/cifar10_efficientnet_lite0_finetune"}
PHASES = ("decode", "batch", "forward", "backward", "optimizer", "other")


def cpu_overrides(optimizers: list[str], bf16: bool = True) -> list[str]:
    """The ``cpu`` variant: bf16 autocast (unless ``bf16=False``), channels-last weights, kept
    freed memory, fused optimiser steps."""
    return [*(["--trainer.precision=bf16-mixed"] if bf16 else []),
            "--trainer.callbacks+=adlight.callbacks.ChannelsLast",
            "--trainer.callbacks+=adlight.callbacks.KeepFreedMemory",
            *[f"--model.{name}.init_args.fused=true" for name in optimizers]]


class StepTimer(Callback):
    """CPU time of each phase of the training steps after ``warmup`` (see the module's doc)."""

    def __init__(self, warmup: int) -> None:
        self.warmup = warmup
        self.totals = dict.fromkeys(("forward", "backward", "optimizer", "other"), 0.0)
        self.steps = 0
        self.cpu = 0.0
        self.wall = 0.0
        self._counting = False

    def _lap(self, phase: str) -> None:
        now = time.thread_time()
        if self._counting:
            self.totals[phase] += now - self._mark
        self._mark = now

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._counting = batch_idx >= self.warmup
        self._start, self._wall_start = time.thread_time(), time.perf_counter()
        self._mark = self._start

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self._lap("forward")

    def on_after_backward(self, trainer, pl_module) -> None:
        self._lap("backward")

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self._lap("other")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._lap("optimizer")
        if self._counting:
            self.steps += 1
            self.cpu += time.thread_time() - self._start
            self.wall += time.perf_counter() - self._wall_start


def data_costs(datamodule, batch_size: int, per_image: bool) -> tuple[float, float]:
    """CPU seconds of one batch read cold (decode, resize, augment) and warm (from the cache).

    ``per_image``: the path before issue 22, each item augmented by torchvision v2 and the
    items collated; else the datamodule's: one batched read, then the batch augmented.
    """
    dataset = datamodule.train_dataset
    indices = list(range(min(batch_size, len(dataset))))
    per_image_augmentation = datamodule.loader.augmentation()
    costs = []
    for _ in range(2):
        start = time.thread_time()
        if per_image:
            dataset.transform = per_image_augmentation
            default_collate([dataset[i] for i in indices])
            dataset.transform = None
        else:
            read = getattr(dataset, "__getitems__", None)
            items = read(indices) if read is not None else [dataset[i] for i in indices]
            datamodule.augment_batch(collate_batches(items))
        costs.append((time.thread_time() - start) * batch_size / len(indices))
    return costs[0], costs[1]


def build(config: str, extra: list[str], args, run_dir: Path, steps: int) -> AdlightCLI:
    return AdlightCLI(run=False, args=[
        f"--config={ROOT / 'configs' / (config + '.yaml')}", *extra,
        "--trainer.max_epochs=1", f"--trainer.limit_train_batches={steps}",
        "--trainer.limit_val_batches=1", "--trainer.num_sanity_val_steps=0",
        "--trainer.accelerator=cpu", "--trainer.devices=1", f"--trainer.default_root_dir={run_dir}",
        "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
        "--test_after_fit=false",
    ])


def measure(config: str, extra: list[str], args, work: Path, per_image: bool) -> dict:
    cli = build(config, extra, args, work, args.warmup + args.steps)
    batch_size = cli.datamodule.batch_size
    timer = StepTimer(args.warmup)
    cli.trainer.callbacks.append(timer)
    cli.datamodule.setup("fit")
    decode, batch = data_costs(cli.datamodule, batch_size, per_image)
    # the first epoch decodes its batches outside the timed steps (between batch end and start)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    n = max(timer.steps, 1)
    step = timer.cpu / n
    phases = {k: v / n for k, v in timer.totals.items()}
    return {"batch_size": batch_size, "decode": decode, "batch": batch, **phases,
            "step": step, "img_s": batch_size / (batch + step),
            "wall_img_s": batch_size * timer.steps / max(timer.wall, 1e-9)}


def measure_in_new_process(config: str, extra: list[str], args, per_image: bool) -> dict:
    """:func:`measure` in a process of its own, with this one's thread count and seed."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_measure_here, (config, extra, args, per_image))


def _measure_here(config: str, extra: list[str], args, per_image: bool) -> dict:
    torch.set_num_threads(args.threads)
    L.seed_everything(0, verbose=False)
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        return measure(config, extra, args, Path(tmp), per_image)


def median_row(rows: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"),
                        help="folder with ham10000/, mvtec_ad/, cifar10/ (default: ../shared/data beside the repository)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (CPU time is this process's)")
    parser.add_argument("--warmup", type=int, default=2, help="training steps not timed")
    parser.add_argument("--steps", type=int, default=3, help="training steps timed")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each variant (median)")
    parser.add_argument("--only", nargs="*", default=None, help="configs to run (as in the table)")
    args = parser.parse_args()  # threads and seed are set in each measurement's own process
    # the header first and each config's rows as they come: a long run stopped early keeps them
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, "
          f"torch {torch.__version__}, {args.threads} thread(s), {args.warmup} warm-up + "
          f"{args.steps} timed steps, median of {args.repeats}; CPU ms per batch\n"
          f"`python {' '.join(sys.argv)}`\n")
    print("| config | batch | variant | decode (1st epoch) | batch | forward | backward | "
          "optimizer | other | img/s (CPU) | wall img/s | cpu / main |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|", flush=True)
    for config, data_args, optimizers in FAMILIES:
        if args.only and config not in args.only:
            continue
        base = [a.format(data=args.data) for a in data_args]
        variants = {"main": base, "cpu": [*base, *cpu_overrides(optimizers, bf16=config not in FLOAT32)]}
        rows: dict[str, list[dict]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, extra in variants.items():
                rows[name].append(measure_in_new_process(config, extra, args, name == "main"))
        row = {name: median_row(r) for name, r in rows.items()}
        for name, r in row.items():
            ratio = r["img_s"] / row["main"]["img_s"]
            print(f"| {config} | {int(r['batch_size'])} | {name} | "
                  + " | ".join(f"{1000 * r[k]:.0f}" for k in PHASES)
                  + f" | {r['img_s']:.1f} | {r['wall_img_s']:.1f} | {ratio:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
