"""Every model family under DDP (2 CPU processes, gloo) and in bf16-mixed precision.

One table, :data:`FAMILIES`, one row per model family: the shipped config, the overrides that
shrink it to a seconds-long run on tiny synthetic data, and what can be compared. A family
that lands adds its row; every test below then runs for it.

Per family:
- DDP fits and tests, and a number does not change with the device count: the metrics of a
  DDP test (the one that ends the DDP fit) equal those of a one-process test of the DDP
  checkpoint, to 1e-6. (Testing the one-process checkpoint on two processes as well checked
  the same property again at the cost of a third DDP launch, about 15 s a family.)
  Where one-process and DDP training are the same computation (no BatchNorm, no per-process
  randomness, the same global batch) the DDP *fit* equals the one-process fit as well.
  BatchNorm nets are not: each process normalises its own half batch (SyncBatchNorm, which
  would make them equal, needs a GPU).
- Every test image is counted once: ``n_images`` equals the test split (11 images, odd, and
  batch sizes that leave a short last batch in both runs), so the DistributedSampler's
  padding is neither counted nor are images dropped.
- One-class heads are fitted on the training normals of all processes (7 images, odd, so the
  sampler pads one rank).
- ``precision=bf16-mixed`` on CPU: finite losses, scores and maps; metrics in range.

DDP runs go through the CLI in a subprocess (``adlight fit --trainer.strategy=ddp
--trainer.devices=2``), which is how users launch it: Lightning re-runs the command for
rank 1. In-process ``ddp_spawn`` was not used: it would re-import the test module in every
spawned process and costs the same two interpreter starts. Measured on 2 cores: a DDP fit
and test of the tiny L2 AE takes about 20 s, a one-process one 3 s.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from synthetic import make_class_folder_tree, make_mvtec_tree

from adlight.cli import AdlightCLI, main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@dataclass(frozen=True)
class Family:
    """One model family as the DDP and precision tests see it.

    Args:
        name: test id.
        config: a shipped config, relative to ``configs/``.
        data: CLI overrides naming the data, given the synthetic trees (see ``trees``).
        overrides: CLI overrides that shrink the model to a tiny, fast run.
        batch_size: per process; ``ddp_batch_size`` for the DDP runs (default the same).
        deterministic_fit: a DDP fit is the same computation as the one-process fit, so
            their metrics (and head states) must be equal too.
        head_state: the training-set features the fitted one-class head holds, read from a
            checkpoint (``None``: the family has no head).
        loss: the training loss logged every step (``None``: nothing is learnt by gradient).
        ddp: run the DDP test too. Off for a variant whose DDP path is another row's (the same
            model class, data and collectives; only the loss differs): each DDP row costs
            about 40 s of the suite on 2 cores.
    """

    name: str
    config: str
    data: Callable[[dict[str, Path]], list[str]]
    overrides: list[str] = field(default_factory=list)
    batch_size: int = 4
    ddp_batch_size: int | None = None
    deterministic_fit: bool = False
    head_state: Callable[[dict], torch.Tensor] | None = None
    #: the test split is odd, so the DistributedSampler pads (one_vs_rest splits are even)
    odd_test: bool = True
    loss: str | None = "train/loss"
    ddp: bool = True


def mvtec(tree: str, **extra) -> Callable[[dict[str, Path]], list[str]]:
    def overrides(trees: dict[str, Path]) -> list[str]:
        # no augmentation: its random draws differ between one process and two
        return [f"--data.root={trees[tree]}", "--data.image_size=32", "--data.loader.rotation_degrees=0",
                "--data.loader.hflip=false", "--data.loader.vflip=false", "--data.loader.noise_std=0",
                *(f"--data.{k}={v}" for k, v in extra.items())]
    return overrides


def class_folders(**extra) -> Callable[[dict[str, Path]], list[str]]:
    def overrides(trees: dict[str, Path]) -> list[str]:
        # Andrews et al.'s one-class protocol at toy scale: 7 training normals (odd, so the
        # sampler pads one rank), 6 + 5 test images (odd), 2 + 2 for the threshold
        return [f"--data.root={trees['classes']}", "--data.source=folder", "--data.download=false",
                "--data.n_train_normals=7", "--data.n_test_normals=6", "--data.n_test_anomalies=5",
                "--data.n_val_normals=2", "--data.n_val_anomalies=2",
                *(f"--data.{k}={v}" for k, v in extra.items())]
    return overrides


def one_vs_rest_folders(trees: dict[str, Path]) -> list[str]:
    # Minhas & Zelek's protocol at toy scale: class 2 anomalous, 6 training images per class
    return [f"--data.root={trees['classes']}", "--data.source=folder", "--data.download=false",
            "--data.anomaly_classes=[2]", "--data.train_per_class=6", "--data.test_per_class=5",
            "--data.val_fraction=0.34", "--data.channels=3"]


def gan() -> list[str]:
    # a 32 px DCGAN of width 8; the config's callbacks without the Frechet distance (its
    # EfficientNet pass is the feature tests' business and would double the run)
    callbacks = [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"save_last": True}},
                 {"class_path": "adlight.callbacks.SampleGrid", "init_args": {"num_images": 4}},
                 {"class_path": "adlight.callbacks.ExportGenerator"}]
    return ["--model.generator.init_args.image_size=32", "--model.generator.init_args.width=8",
            "--model.generator.init_args.latent_dim=16",
            "--model.discriminator.init_args.image_size=32",
            "--model.discriminator.init_args.width=8", f"--trainer.callbacks={json.dumps(callbacks)}"]


def kde_codes(checkpoint: dict) -> torch.Tensor:
    return checkpoint["state_dict"]["kde_codes"]


FAMILIES = [
    Family("fadaeinejad_l2_ae", "fadaeinejad/mvtec_ae_l2.yaml", mvtec("odd"),
           ["--model.network.init_args.image_size=32", "--model.network.init_args.latent_dim=16"]),
    Family("wilmet_kd_cae", "wilmet/mvtec_kd_cae.yaml", mvtec("odd"),
           ["--model.network.init_args.image_size=32",
            "--model.network.init_args.latent_channels=8"],
           head_state=kde_codes),
    # the NI-CAE net has no BatchNorm; without its noise and with the whole training set in
    # one global batch (6 images: 6 in one process, 3 + 3 in two) one-process and DDP training
    # are the same sums, so the fit itself, KDE head included, must not depend on the devices
    Family("wilmet_ni_cae_kde_full_batch", "wilmet/mvtec_ni_cae.yaml", mvtec("even"),
           ["--model.network.init_args.image_size=32", "--model.network.init_args.latent_dim=16",
            "--model.noise_fraction=0", "--model.kde=true"],
           batch_size=6, ddp_batch_size=3, deterministic_fit=True, head_state=kde_codes),
    # Wilmet et al.'s supervised small CNN: half of the anomalies move into training
    Family("wilmet_small_cnn", "wilmet/mvtec_small_cnn.yaml",
           mvtec("odd", abnormal_train_fraction=0.5), ["--model.network.init_args.image_size=32"],
           odd_test=False),
    # Minhas & Zelek's 2-way head on a frozen pretrained backbone (offline weights)
    Family("minhas_zelek_fixed_extractor", "minhas_zelek/cifar10_efficientnet_lite0_fixed.yaml",
           one_vs_rest_folders,
           ["--model.network.init_args.input_size=32"], odd_test=False),
    # Andrews et al.'s OCSVM on frozen features: nothing is learnt by gradient, so the DDP fit
    # (features gathered from both ranks) must give the one-process head and numbers exactly
    Family("andrews_ocsvm", "andrews/mnist_task1_efficientnet_lite0.yaml", class_folders(),
           ["--model.representation.init_args.backbone.init_args.input_size=32",
            "--model.nu_sweep=3", "--model.feature_cache=null"],
           deterministic_fit=True, loss=None),
    # the patch-feature models: frozen features, a memory bank (coreset of 10%) or per-position
    # Gaussians fitted on the training patches of both ranks; nothing is learnt by gradient
    Family("patchcore", "patch_features/mvtec_patchcore.yaml", mvtec("odd"),
           ["--model.features.init_args.backbone.init_args.input_size=32"], deterministic_fit=True,
           loss=None),
    # intensity="image": the reference (the training normals' average mean and std) is taken
    # over both ranks' shares, each image once, before any feature: the one-process numbers
    Family("patchcore_image_intensity", "patch_features/mvtec_patchcore.yaml", mvtec("odd"),
           ["--model.features.init_args.backbone.init_args.input_size=32",
            "--model.features.init_args.backbone.init_args.intensity=image"],
           deterministic_fit=True, loss=None),
    Family("padim", "patch_features/mvtec_padim.yaml", mvtec("odd"),
           ["--model.features.init_args.backbone.init_args.input_size=32"], deterministic_fit=True,
           loss=None),
    # the VAE under DDP: its test scores must not depend on per-process sampling
    Family("zhao_karray_vae", "zhao_karray/mvtec_vae.yaml", mvtec("odd"),
           ["--model.network.init_args.image_size=32", "--model.network.init_args.latent_dim=16"]),
    # the other reconstruction losses in bf16: SSIM maps (float32 inside), the sparse latent;
    # under DDP they are the L2 AE's and the VAE's path with another loss
    Family("fadaeinejad_ssim_ae", "fadaeinejad/mvtec_ae_ssim.yaml", mvtec("odd"),
           ["--model.network.init_args.image_size=32", "--model.network.init_args.latent_dim=16"],
           ddp=False),
    Family("zhao_karray_l1_sparse", "zhao_karray/mvtec_cae_l1_sparse.yaml", mvtec("odd"),
           ["--model.network.init_args.image_size=32", "--model.network.init_args.latent_dim=16"],
           ddp=False),
    # Minhas & Zelek's fine-tuning: gradients through the unfrozen backbone stages
    Family("minhas_zelek_finetune", "minhas_zelek/cifar10_efficientnet_lite0_finetune.yaml",
           one_vs_rest_folders,
           ["--model.network.init_args.input_size=32"], odd_test=False),
    # the DCGAN (two optimisers, manual optimisation) scored by its discriminator, and AnoGAN's
    # latent search (gradient steps on z inside the test loop, under DDP too)
    Family("wilmet_dcgan", "wilmet/mvtec_dcgan.yaml", mvtec("odd"), gan(), loss="train/d_loss"),
    Family("fadaeinejad_anogan", "fadaeinejad/mvtec_anogan.yaml", mvtec("odd"),
           [*gan(), "--model.latent_search_steps=5"], loss="train/d_loss"),
]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    # 14 test images of which the seeded validation split takes 3: 11 test images
    test_images = dict(n_good_test=5, defects={"scratch": 5, "hole": 4}, size=32)
    return {"odd": make_mvtec_tree(root / "odd", n_train=7, **test_images),
            "even": make_mvtec_tree(root / "even", n_train=6, **test_images),
            "classes": make_class_folder_tree(root / "classes", classes=[str(d) for d in range(10)],
                                              n_per_class=16, size=28)}


def cli_args(family: Family, trees, run_dir: Path, ddp: bool) -> list[str]:
    batch = family.ddp_batch_size if ddp and family.ddp_batch_size else family.batch_size
    args = [f"--config={CONFIGS / family.config}", *family.data(trees), *family.overrides,
            f"--data.loader.batch_size={batch}", "--trainer.max_epochs=2",
            "--trainer.check_val_every_n_epoch=1", "--trainer.log_every_n_steps=1",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false"]
    if ddp:
        args += ["--trainer.strategy=ddp", "--trainer.devices=2"]
    return args


def run_ddp(subcommand: str, args: list[str]) -> None:
    # one intra-op thread per rank: two ranks on two cores
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "adlight", subcommand, *args], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]


def run_dir_of(root: Path) -> Path:
    runs = sorted(root.rglob("metrics.json"))
    assert len(runs) == 1, runs
    return runs[0].parent


def report_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def split_counts(run_dir: Path) -> dict[str, int]:
    rows = list(csv.DictReader((run_dir / "split.csv").open()))
    return {"test": sum(r["split"] == "test" for r in rows),
            "train_normals": sum(r["split"] == "train" and r["label"] == "0" for r in rows)}


def numbers(report: dict, prefix: str = "") -> dict[str, float]:
    """Every number in a report, nested ones under ``a/b`` keys."""
    out = {}
    for key, value in report.items():
        if isinstance(value, dict):
            out.update(numbers(value, f"{prefix}{key}/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            out[prefix + key] = float(value)
    return out


def assert_same_metrics(got: dict, want: dict, tol: float = 1e-6, threshold_rtol: float = 1e-6) -> None:
    """Every number equal to ``tol``; thresholds (raw score units) to ``threshold_rtol``."""
    got, want = numbers(got), numbers(want)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if math.isnan(value):
            assert math.isnan(got[key]), key
        elif key.endswith("_threshold"):
            assert got[key] == pytest.approx(value, rel=threshold_rtol), key
        elif key.endswith("_AUPRO"):
            # a swap of two pixels whose scores differ by float rounding moves AUPRO by up to
            # 1 / (smallest region x regions x normal pixels): measured 1.4e-6 for PatchCore's
            # DDP fit, whose distances are the same sums in another order
            assert got[key] == pytest.approx(value, abs=max(tol, 1e-5)), key
        else:
            assert got[key] == pytest.approx(value, abs=tol, rel=tol), key


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.ckpt"


@pytest.mark.parametrize("family", [f for f in FAMILIES if f.ddp], ids=lambda f: f.name)
def test_ddp_on_two_processes_gives_the_one_process_numbers(family, trees, tmp_path):
    main(["fit", *cli_args(family, trees, tmp_path / "one", ddp=False)])
    one_dir = run_dir_of(tmp_path / "one")
    run_ddp("fit", cli_args(family, trees, tmp_path / "ddp", ddp=True))
    ddp_dir = run_dir_of(tmp_path / "ddp")

    counts = split_counts(one_dir)
    assert counts == split_counts(ddp_dir)
    assert counts["test"] % 2 == int(family.odd_test)
    one, ddp = report_of(one_dir), report_of(ddp_dir)
    # every test image counted once: no padding duplicate, nothing dropped
    assert one["n_images"] == ddp["n_images"] == counts["test"]
    assert one["n_anomalous"] == ddp["n_anomalous"]
    for report in (one, ddp):
        assert 0.0 <= report["image_AUROC"] <= 1.0 and 0.0 <= report.get("pixel_AUROC", 0) <= 1.0
    # confusion.csv (written on rank 0 from the gathered scores) counts every test image once too
    for run_dir, report in ((one_dir, one), (ddp_dir, ddp)):
        if report.get("image_threshold") is not None:
            with open(run_dir / "confusion.csv", newline="") as file:
                totals = {row["class"]: row for row in csv.DictReader(file)}["ALL"]
            assert sum(int(totals[k]) for k in ("TP", "FP", "TN", "FN")) == report["n_images"]

    if family.head_state is not None:
        one_head = family.head_state(torch.load(last_checkpoint(one_dir), weights_only=True))
        ddp_head = family.head_state(torch.load(last_checkpoint(ddp_dir), weights_only=True))
        # the head holds every training normal of both processes, once
        assert one_head.shape[0] == ddp_head.shape[0] == counts["train_normals"]
        if family.deterministic_fit:
            torch.testing.assert_close(ddp_head, one_head, atol=1e-5, rtol=1e-4)

    if family.deterministic_fit:
        # the same sums in another order: AUROCs and counts to 1e-6; a KDE-combined threshold
        # is a z-score in the hundreds, where float rounding shows in the fifth digit
        assert_same_metrics(ddp, one, threshold_rtol=1e-4)
    # the DDP weights the fit tested (a config's monitored best checkpoint, else the last
    # epoch's), tested in one process
    main(["test", *cli_args(family, trees, tmp_path / "one_test", ddp=False),
          f"--ckpt_path={ddp['checkpoint'] or last_checkpoint(ddp_dir)}"])
    tested = report_of(run_dir_of(tmp_path / "one_test"))
    # the validation split's figures are reported by a run whose validation ran (the fit), not
    # by a test of a checkpoint
    assert "validation" not in tested and "validation" in ddp
    assert_same_metrics(tested, {k: v for k, v in ddp.items() if k != "validation"})


@pytest.mark.parametrize("family", FAMILIES, ids=lambda f: f.name)
def test_bf16_mixed_precision_on_cpu_fits_and_scores_finitely(family, trees, tmp_path):
    cli = AdlightCLI(args=["fit", *cli_args(family, trees, tmp_path, ddp=False),
                           "--trainer.precision=bf16-mixed", "--test_after_fit=false"])
    assert cli.trainer.precision == "bf16-mixed"
    if family.loss is not None:
        assert torch.isfinite(cli.trainer.callback_metrics[family.loss])
    cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
    outputs = cli.model.test_outputs
    assert torch.isfinite(outputs.score).all()
    if outputs.anomaly_map is not None:
        assert torch.isfinite(outputs.anomaly_map).all()
    report = report_of(run_dir_of(tmp_path))
    assert report["n_images"] == split_counts(run_dir_of(tmp_path))["test"]
    assert 0.0 <= report["image_AUROC"] <= 1.0 and 0.0 <= report.get("pixel_AUROC", 0) <= 1.0
    if family.head_state is not None:
        head = family.head_state(torch.load(last_checkpoint(run_dir_of(tmp_path)), weights_only=True))
        assert head.dtype == torch.float64 and torch.isfinite(head).all()


def test_no_model_or_network_pins_itself_to_a_device():
    """The Trainer owns devices: a model that moves itself to "cuda" breaks CPU and multi-GPU runs."""
    pinned = re.compile(r"""\.cuda\(|device\s*=\s*["']cuda|torch\.device\(\s*["']cuda""")
    offenders = [f"{path.relative_to(REPO)}:{n}"
                 for folder in ("models", "nets", "callbacks")
                 for path in sorted((REPO / "adlight" / folder).glob("*.py"))
                 for n, line in enumerate(path.read_text().splitlines(), 1)
                 if pinned.search(line) and not line.lstrip().startswith("#")]
    assert offenders == []


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_ssim_bce_and_smoothing_stay_float32_under_autocast(dtype):
    """``.float()`` alone is not enough: autocast runs SSIM's and the blur's convolutions in
    half precision (measured before the fix: SSIM off by 0.05 under CPU bf16 autocast)."""
    from adlight.losses import reconstruction_error, ssim_map
    from adlight.nets.maps import smooth

    generator = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 32, 32, generator=generator)
    recon = (target + 0.01 * torch.randn(2, 3, 32, 32, generator=generator)).clamp(0, 1)
    maps = torch.rand(2, 1, 32, 32, generator=generator)
    reference = (ssim_map(recon, target), reconstruction_error("bce", recon, target), smooth(maps, 2.0))
    with torch.autocast("cpu", dtype=dtype):
        mixed = (ssim_map(recon, target), reconstruction_error("bce", recon.to(dtype), target),
                 smooth(maps, 2.0))
    assert all(got.dtype == torch.float32 for got in mixed)
    torch.testing.assert_close(mixed[0], reference[0], atol=1e-6, rtol=0)
    torch.testing.assert_close(mixed[2], reference[2], atol=1e-6, rtol=0)
    # the recon is rounded to dtype before the loss; the loss itself is float32
    torch.testing.assert_close(mixed[1], reconstruction_error("bce", recon.to(dtype).float(), target))
