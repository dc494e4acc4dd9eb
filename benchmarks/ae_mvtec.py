"""Benchmark: every shipped autoencoder config on one MVTec AD category, fixed CPU budget.

    python benchmarks/ae_mvtec.py --root ../shared/data/mvtec_ad --category bottle \
        --image-size 128 --minutes 5 [--only fadaeinejad/mvtec_ae_l2 ...]

Each config is trained for at most ``--minutes`` of wall time (Lightning's ``max_time``),
validated every ``--val-every`` epochs to choose thresholds, then tested. Prints a
Markdown table (image AUROC, pixel AUROC, best pixel F1 over tau, pixel F1 at the chosen
tau, fit time, training images/s) and the command that produced it.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import date
from pathlib import Path

import torch

from adlight.cli import AdlightCLI

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [
    ("fadaeinejad/mvtec_ae_l2", []),
    ("fadaeinejad/mvtec_ae_l2", ["--model.smoothing_sigma=4", "--model.pixel_threshold=val_f1"]),
    ("fadaeinejad/mvtec_ae_ssim", ["--model.smoothing_sigma=4"]),
    ("zhao_karray/mvtec_cae_l1_sparse", []),
    ("zhao_karray/mvtec_cae_l2", []),
    ("zhao_karray/mvtec_ae_bce", []),
    ("zhao_karray/mvtec_vae", []),
    ("wilmet/mvtec_kd_cae", []),
    ("wilmet/mvtec_ni_cae", []),
]


def run(config: str, extra: list[str], args, run_dir: Path) -> dict:
    size = args.image_size
    cli = AdlightCLI(run=False, args=[
        f"--config={ROOT / 'configs' / (config + '.yaml')}", *extra,
        f"--data.root={args.root}", f"--data.category={args.category}",
        f"--data.image_size={size}", f"--model.network.init_args.image_size={size}",
        f"--trainer.max_time=00:00:{args.minutes:02d}:00", "--trainer.max_epochs=-1",
        f"--trainer.check_val_every_n_epoch={args.val_every}", "--trainer.accelerator=cpu",
        f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ])
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_seconds = time.perf_counter() - start
    # validate once more on the final weights so thresholds match the tested model
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, verbose=False)
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    report = cli.model.test_report
    images = cli.datamodule.num_train_normals * cli.trainer.current_epoch
    return {
        "config": config + (" " + " ".join(extra) if extra else ""),
        "epochs": cli.trainer.current_epoch,
        "fit_s": fit_seconds,
        "images_per_s": images / fit_seconds,
        **{k: report.get(k) for k in ("image_AUROC", "pixel_AUROC", "pixel_F1_best", "pixel_F1",
                                       "image_F1", "pixel_threshold")},
    }


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mvtec_ad"))
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--minutes", type=int, default=5)
    parser.add_argument("--val-every", type=int, default=10)
    parser.add_argument("--only", nargs="*", default=None, help="rows to run, by config name and its extra overrides as in the table")
    parser.add_argument("--set", action="extend", nargs="*", default=[], dest="overrides",
                        help="extra CLI overrides for every run, e.g. --set --model.smoothing_sigma=4")
    parser.add_argument("--out", default="runs/benchmark_ae", help="run directories")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for i, (config, extra) in enumerate(CONFIGS):
        label = " ".join([config, *extra])
        if args.only and label not in args.only:
            continue
        rows.append(run(config, [*extra, *args.overrides], args, Path(args.out) / f"{i:02d}_{config.replace('/', '_')}"))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"\n{args.category} at {args.image_size} px, at most {args.minutes} min of training each; "
          f"{date.today()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads\n`python {' '.join(sys.argv)}`\n")
    print("| config | epochs | fit s | img/s | image AUROC | pixel AUROC | best pixel F1 | pixel F1 at tau (tau) | image F1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['config']} | {r['epochs']} | {r['fit_s']:.0f} | {r['images_per_s']:.1f} | "
              f"{fmt(r['image_AUROC'])} | {fmt(r['pixel_AUROC'])} | {fmt(r['pixel_F1_best'])} | "
              f"{fmt(r['pixel_F1'])} ({fmt(r['pixel_threshold'])}) | {fmt(r['image_F1'])} |")


if __name__ == "__main__":
    main()
