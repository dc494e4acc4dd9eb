"""Benchmark: why the fine-tuned EfficientNet-Lite0 classifier trains only ~1.5x faster on a CPU.

    python benchmarks/lite0_finetune_step.py [--threads 1] [--steps 5] [--repeats 2]

The network of ``configs/minhas_zelek/cifar10_efficientnet_lite0_finetune.yaml`` (``Backbone``
efficientnet_lite0, 112 px, stem and the first three stages frozen, a 2-way head; random
weights, which cost the same), batch 32 of 32 px images, SGD with Nesterov momentum; no
Lightning, no data. Two tables:

1. CPU ms per training step (``time.thread_time``, median over repeats, each variant in a fresh
   process, the variants alternating): float32 NCHW (as shipped), float32 channels-last with the
   fused SGD step (the ``cpu`` variant of ``train_throughput.py``), bf16 autocast channels-last,
   and the same with the depthwise convolutions kept in float32.
2. Where the float32 channels-last step goes (torch profiler, self CPU time per step): the
   weight gradients of the depthwise convolutions, the rest of the convolutions' backward, the
   convolutions' forward, BatchNorm and the activations.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import statistics
import time

import torch

VARIANTS = ("float32 NCHW (shipped)", "float32 channels-last + fused SGD",
            "bf16 channels-last + fused SGD", "bf16, depthwise in float32")


def _float32_conv(conv: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast("cpu", enabled=False):
        return conv._conv_forward(x.float(), conv.weight, conv.bias)


def _training_step(variant: str, threads: int):
    from adlight.nets import Backbone

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = Backbone(name="efficientnet_lite0", weights=None, num_classes=2, input_size=112, freeze=3)
    x = torch.rand(32, 3, 32, 32)
    y = torch.randint(0, 2, (32,))
    fast = variant != VARIANTS[0]
    bf16 = variant.startswith("bf16")
    if fast:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    if variant == VARIANTS[3]:
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d) and module.groups == module.in_channels > 1:
                module.forward = functools.partial(_float32_conv, module)
    net.train()
    optimizer = torch.optim.SGD([p for p in net.parameters() if p.requires_grad], lr=1e-3,
                                momentum=0.9, nesterov=True, weight_decay=1e-6, fused=fast)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = torch.nn.functional.cross_entropy(net(x).float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(3):
        step()
    return step


def measure(variant: str, threads: int, steps: int) -> float:
    step = _training_step(variant, threads)
    start = time.thread_time()
    for _ in range(steps):
        step()
    return 1000 * (time.thread_time() - start) / steps


def profile_groups(threads: int, steps: int) -> dict[str, float]:
    """Self CPU ms per step of the float32 channels-last step, by kind of operation."""
    from torch.profiler import ProfilerActivity, profile

    step = _training_step(VARIANTS[1], threads)
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(steps):
            step()
    groups = dict.fromkeys(("depthwise convolutions, weight gradient + input gradient",
                            "other convolutions, backward", "convolutions, forward",
                            "BatchNorm, forward + backward", "ReLU6 + copies", "the rest"), 0.0)
    total = 0.0
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.self_cpu_time_total / 1000 / steps
        total += ms
        shapes = event.input_shapes
        if event.key == "aten::convolution_backward":
            depthwise = len(shapes) > 2 and len(shapes[2]) == 4 and shapes[2][1] == 1
            groups["depthwise convolutions, weight gradient + input gradient" if depthwise
                   else "other convolutions, backward"] += ms
        elif event.key == "aten::mkldnn_convolution":
            groups["convolutions, forward"] += ms
        elif "batch_norm" in event.key:
            groups["BatchNorm, forward + backward"] += ms
        elif event.key in ("aten::clamp", "aten::hardtanh_backward", "aten::copy_"):
            groups["ReLU6 + copies"] += ms
        else:
            groups["the rest"] += ms
    return {"total": total, **groups}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    pool = multiprocessing.get_context("spawn")
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for variant in VARIANTS:  # a fresh process each: no warm caches, no allocator state
            with pool.Pool(1) as worker:
                times[variant].append(worker.apply(measure, (variant, args.threads, args.steps)))
    shipped = statistics.median(times[VARIANTS[0]])
    print(f"| variant ({args.threads} thread(s), batch 32) | CPU ms / step | against shipped |")
    print("|---|---|---|")
    for variant in VARIANTS:
        ms = statistics.median(times[variant])
        print(f"| {variant} | {ms:.0f} | {shipped / ms:.2f}x |")
    with pool.Pool(1) as worker:
        groups = worker.apply(profile_groups, (args.threads, args.steps))
    total = groups.pop("total")
    print("\n| float32 channels-last step, by operation | self CPU ms / step | share |")
    print("|---|---|---|")
    for name, ms in groups.items():
        print(f"| {name} | {ms:.0f} | {100 * ms / total:.0f}% |")
    print(f"| total (profiled) | {total:.0f} | 100% |")


if __name__ == "__main__":
    main()
