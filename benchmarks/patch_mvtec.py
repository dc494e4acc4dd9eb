"""Benchmark: PatchCore (coreset fractions) and PaDiM on one MVTec AD category.

    python benchmarks/patch_mvtec.py --root ../shared/data/mvtec_ad --category bottle \
        --image-size 256 [--fractions 1.0 0.1 0.01] [--no-padim]

Each row runs in its own process (so peak memory is that row's): ``adlight fit`` with the
shipped config (one epoch: features of the training normals, the head, then validation on
the validation split, which chooses the image and pixel thresholds), then ``test``. Prints a
Markdown table (image AUROC, pixel AUROC, pixel F1 at the validation threshold, fit and test
seconds, peak resident memory) and where the time went: backbone features, coreset
selection, nearest-neighbour search or Mahalanobis distances, the shared evaluation
(validation thresholds, test metrics over every pixel, the report's figures), and the rest
(reading images, Lightning's loops).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TIMERS: dict[str, float] = defaultdict(float)


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TIMERS[name] += time.perf_counter() - start

    return wrapper


def instrument() -> None:
    """Wrap the steps whose time we report (the wrappers cost microseconds per call)."""
    import adlight.models.base as base
    import adlight.models.patch as patch
    import adlight.nets.memory_bank as memory_bank
    from adlight.callbacks.report import TestReport
    from adlight.nets.patch_features import PatchFeatures
    from adlight.nets.scorers.patch import PadimScorer

    PatchFeatures.forward = timed("features", PatchFeatures.forward)
    patch.greedy_coreset = timed("coreset", patch.greedy_coreset)
    memory_bank.BankSearch.forward = timed("search", memory_bank.BankSearch.forward)
    patch.PadimModel.fit_patches = timed("gaussians", patch.PadimModel.fit_patches)
    PadimScorer.patch_scores = timed("mahalanobis", PadimScorer.patch_scores)
    # the shared evaluation: thresholds on validation, metrics and figures on test
    base.AnomalyModule.threshold_from_validation = timed("thresholds", base.AnomalyModule.threshold_from_validation)
    base.evaluate = timed("metrics", base.evaluate)
    base.per_class_metrics = timed("metrics", base.per_class_metrics)
    TestReport._figures = timed("figures", TestReport._figures)
    memory_bank.ivf_index = timed("search index", memory_bank.ivf_index)
    import adlight.callbacks.report as report

    report.write_results_page = timed("results page", report.write_results_page)


def run_row(args) -> dict:
    """One row, in this process."""
    import torch

    from adlight.cli import AdlightCLI

    instrument()
    size_args = []
    if args.row == "config":  # a whole config as it is
        config, model, extra = Path(args.config), Path(args.config).stem, []
    else:
        model = "mvtec_padim" if args.row == "padim" else "mvtec_patchcore"
        config = ROOT / "configs" / "patch_features" / (model + ".yaml")
        extra = [] if args.row == "padim" else [f"--model.coreset_fraction={args.row}"]
    if args.image_size is not None:
        size = args.image_size
        size_args = [f"--data.image_size={size}", f"--model.features.init_args.backbone.init_args.input_size={size}"]
    cli = AdlightCLI(run=False, args=[
        f"--config={config}", *extra,
        f"--data.root={args.root}", f"--data.category={args.category}", *size_args,
        "--trainer.accelerator=cpu", f"--trainer.default_root_dir={args.out}/{model}_{args.row}",
        "--trainer.enable_progress_bar=false", *args.overrides,
    ])
    TIMERS.clear()  # building the model probed the backbone once
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - start
    fit_timers = dict(TIMERS)
    TIMERS.clear()
    start = time.perf_counter()
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    test_s = time.perf_counter() - start
    test_timers = dict(TIMERS)  # before the recall check, which extracts features again
    peak_rss_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: kilobytes
    report = cli.model.test_report
    bank = getattr(cli.model, "memory_bank", None)
    recall = search_recall_on_test(cli) if getattr(cli.model, "search", None) == "faiss_ivf" else None
    return {
        "row": model if args.row in ("padim", "config") else f"{model} coreset_fraction={args.row}",
        "bank_patches": int(bank.shape[0]) if bank is not None else None,
        "fit_s": fit_s, "test_s": test_s,
        "fit_timers": fit_timers, "test_timers": test_timers,
        "peak_rss_gb": peak_rss_gb,
        "threads": torch.get_num_threads(),
        "search_recall": recall,
        **{k: report.get(k) for k in ("image_AUROC", "pixel_AUROC", "pixel_F1", "pixel_F1_best",
                                       "image_F1", "pixel_threshold", "n_images")},
    }


def search_recall_on_test(cli) -> float:
    """Recall@1 of the approximate search against exact search, on the test images' patches."""
    import torch

    from adlight.nets.memory_bank import nearest_distances, search_recall

    model, queries = cli.model, []
    with torch.no_grad():
        for batch in cli.datamodule.test_dataloader():
            features = model.patch_features(batch["image"]).float()
            queries.append(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))
    queries = torch.cat(queries)
    exact = nearest_distances(queries, model.memory_bank, model.num_neighbours, "faiss")
    approximate = nearest_distances(queries, model.memory_bank, model.num_neighbours, "faiss_ivf",
                                    index=model._ivf_index, probes=model.ivf_probes)
    return search_recall(approximate, exact)


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def breakdown(total: float, timers: dict[str, float]) -> str:
    parts = [f"{name} {seconds:.1f}" for name, seconds in timers.items() if seconds >= 0.05]
    other = total - sum(timers.values())
    return ", ".join([*parts, f"other {other:.1f}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mvtec_ad"))
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--image-size", type=int, default=None,
                        help="image and backbone size (default: 256, or the --config's own)")
    parser.add_argument("--fractions", type=float, nargs="*", default=[1.0, 0.1, 0.01])
    parser.add_argument("--config", default=None,
                        help="a PatchCore config to run instead of the shipped mvtec_patchcore.yaml "
                             "(e.g. configs/patch_features/mvtec_patchcore_512.yaml), as it is: one row")
    parser.add_argument("--no-padim", action="store_true", help="skip the PaDiM row")
    parser.add_argument("--set", action="extend", nargs="*", default=[], dest="overrides",
                        help="extra CLI overrides for every run, e.g. --set=--model.projection_dim=128")
    parser.add_argument("--out", default="runs/benchmark_patch", help="run directories")
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument("--row", default=None, help=argparse.SUPPRESS)  # internal: one row
    args = parser.parse_args()
    if args.row is not None:
        print("ROW " + json.dumps(run_row(args)), flush=True)
        return
    rows = []
    if args.config is None and args.image_size is None:
        args.image_size = 256
    rows_to_run = ["config"] if args.config else [*(f"{f:g}" for f in args.fractions),
                                                   *([] if args.no_padim else ["padim"])]
    for row in rows_to_run:
        command = [sys.executable, __file__, "--row", row, "--root", args.root,
                   "--category", args.category, "--out", args.out,
                   *(["--image-size", str(args.image_size)] if args.image_size else []),
                   *(["--config", args.config] if args.config else []),
                   *(f"--set={o}" for o in args.overrides)]
        result = subprocess.run(command, capture_output=True, text=True)
        lines = [line for line in result.stdout.splitlines() if line.startswith("ROW ")]
        if result.returncode != 0 or not lines:
            sys.stderr.write(result.stdout[-3000:] + result.stderr[-3000:])
            raise SystemExit(f"row {row} failed (exit {result.returncode})")
        rows.append(json.loads(lines[-1][4:]))
        print(json.dumps(rows[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    print(f"\n{args.category} at {args.image_size or 'the config'} px; {date.today()}, "
          f"{platform.processor() or platform.machine()}, {rows[0]['threads']} threads\n"
          f"`python {' '.join(sys.argv)}`\n")
    print("| model | bank patches | search recall@1 | image AUROC | pixel AUROC | pixel F1 at val tau | "
          "best pixel F1 | fit s | test s | fit + test s | peak RSS GB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {fmt(r['bank_patches'])} | {fmt(r['search_recall'])} | "
              f"{fmt(r['image_AUROC'])} | {fmt(r['pixel_AUROC'])} | "
              f"{fmt(r['pixel_F1'])} | {fmt(r['pixel_F1_best'])} | {r['fit_s']:.1f} | {r['test_s']:.1f} | "
              f"{r['fit_s'] + r['test_s']:.1f} | {r['peak_rss_gb']:.2f} |")
    print("\nwhere the time goes (seconds):\n")
    print("| model | fit | test |")
    print("|---|---|---|")
    for r in rows:
        print(f"| {r['row']} | {breakdown(r['fit_s'], r['fit_timers'])} | "
              f"{breakdown(r['test_s'], r['test_timers'])} |")


if __name__ == "__main__":
    main()
