"""Benchmark: how big a run's results page and its folder get, and how long they take to write.

    python benchmarks/report_page_size.py [--images 1000] [--image-size 256] [--out DIR]

A synthetic run: RGB textures with noise (50 distinct ones, reused), 40% anomalous with a
60 x 70 px defect in mask and map, maps and masks at ``--image-size``; calls
:func:`adlight.report_page.build_run_page` as ``adlight test`` does. Prints a Markdown table
(docs/report_page.md) and the command that produced it.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

from adlight.report_page import build_run_page


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--out", type=Path, default=None, help="keep the page here (default: a temp dir)")
    args = parser.parse_args()
    n, size = args.images, args.image_size
    out = args.out or Path(tempfile.mkdtemp())
    g = torch.Generator().manual_seed(0)
    labels = (torch.rand(n, generator=g) < 0.4).long()
    scores = torch.rand(n, generator=g) + labels * 0.5
    y, x = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    pool = [(0.5 + 0.1 * torch.sin(2 * torch.pi * (2 * x + y) + i)[None].expand(3, -1, -1)
             + torch.rand(3, size, size, generator=g) * 0.05).clamp(0, 1) for i in range(50)]
    maps, masks = torch.rand(n, size, size, generator=g) * 0.1, torch.zeros(n, size, size)
    box = (slice(size * 100 // 256, size * 160 // 256), slice(size * 80 // 256, size * 150 // 256))
    for i in torch.nonzero(labels).flatten().tolist():
        masks[i][box] = 1
        maps[i][box] += 0.5
    report = {"model": "Synthetic", "image_threshold": 0.75, "pixel_threshold": 0.3,
              "image_threshold_source": "validation split, F1-optimal", "pixel_threshold_source": "fixed"}
    start = time.perf_counter()
    page = build_run_page(out, report, scores, labels, labels, [f"test/{i:05d}.png" for i in range(n)],
                          ["good", "defect"], lambda i: pool[i % len(pool)], maps, masks)
    seconds = time.perf_counter() - start
    files = out / "report_files"

    def total(pattern: str) -> int:
        return sum(p.stat().st_size for p in files.glob(pattern))

    print(f"| what ({n} images at {size} px) | bytes |\n|---|---|")
    for name, value in (("report.html", page.stat().st_size), ("results.json", (out / "results.json").stat().st_size),
                        ("report_files/*_image.jpg", total("*_image.jpg")),
                        ("report_files/*_overlay.jpg", total("*_overlay.jpg")),
                        ("report_files/*_predicted.png", total("*_predicted.png")),
                        ("page + folder", page.stat().st_size + total("*"))):
        print(f"| {name} | {value:,} |")
    print(f"\nbuilt in {seconds:.1f} s on {platform.machine()} ({torch.get_num_threads()} threads)")
    print("command: python " + " ".join(sys.argv))
    if args.out is None:
        shutil.rmtree(out)


if __name__ == "__main__":
    main()
