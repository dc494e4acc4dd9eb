"""Benchmark: page faults and time per training step of the HAM10000 CAE's network, with and
without ``KeepFreedMemory`` (glibc's mmap and trim thresholds raised).

    python benchmarks/step_page_faults.py [--threads 2] [--steps 10] [--repeats 2]

The network alone (``ZhaoKarrayAE``, batch 64, 128 px, Adam, MSE), no Lightning, no data: in
``bf16`` with channels-last weights and the fused Adam step (the recommended CPU setting), and
in ``float32`` as shipped. Every measurement runs in a fresh process, because the allocator
setting holds for the whole process; the two allocator settings alternate. Prints one Markdown
row per precision and setting: the median over repeats of wall ms, CPU ms (all threads) and
minor page faults per step.
"""

from __future__ import annotations

import argparse
import multiprocessing
import platform
import resource
import statistics
import sys
import time
from datetime import datetime, timezone

import torch


def measure(precision: str, keep: bool, threads: int, steps: int) -> dict:
    from adlight.callbacks.freed_memory import keep_freed_memory
    from adlight.nets import ZhaoKarrayAE

    torch.set_num_threads(threads)
    applied = keep_freed_memory() if keep else False
    torch.manual_seed(0)
    bf16 = precision == "bf16"
    net = ZhaoKarrayAE(in_channels=3, latent_dim=300, variational=False)
    x = torch.rand(64, 3, 128, 128) * 2 - 1
    if bf16:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-5, fused=bf16)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = ((net(x).reconstruction.float() - x) ** 2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    wall = time.perf_counter()
    for _ in range(steps):
        step()
    wall = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime + after.ru_stime) - (usage.ru_utime + usage.ru_stime)
    return {"applied": applied, "wall_ms": 1000 * wall / steps, "cpu_ms": 1000 * cpu / steps,
            "faults": (after.ru_minflt - usage.ru_minflt) / steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--repeats", type=int, default=2, help="fresh processes per row (median)")
    args = parser.parse_args()
    print(f"\n{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {platform.machine()}, torch "
          f"{torch.__version__}, {args.threads} thread(s), {args.steps} steps after 3 warm-up, "
          f"median of {args.repeats}\n`python {' '.join(sys.argv)}`\n")
    print("| precision | freed memory | wall ms / step | CPU ms / step | minor faults / step |")
    print("|---|---|---|---|---|", flush=True)
    context = multiprocessing.get_context("spawn")
    for precision in ("bf16", "float32"):
        rows: dict[bool, list[dict]] = {False: [], True: []}
        for _ in range(args.repeats):
            for keep in (False, True):
                with context.Pool(1) as pool:
                    rows[keep].append(pool.apply(measure, (precision, keep, args.threads, args.steps)))
        for keep, runs in rows.items():
            label = "kept (KeepFreedMemory)" if keep else "glibc default"
            if keep and not all(r["applied"] for r in runs):
                label += ", NOT applied here"
            median = {k: statistics.median(r[k] for r in runs) for k in ("wall_ms", "cpu_ms", "faults")}
            print(f"| {precision} | {label} | {median['wall_ms']:.0f} | {median['cpu_ms']:.0f} | "
                  f"{median['faults']:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
