"""Hostile but realistic use of models (issue 13, models part): a correct result or one clear line.

Rows of the ``CASES`` table run ``adlight.cli.main`` on the quick start (digits, seconds) or on
PatchCore over a synthetic MVTec tree, and assert the exit code, a one-line message naming the
thing (or a warning), and that no file the user wrote was changed. Below the table, the
correct-result cases: a short fit has thresholds chosen on its saved weights, and a best and a
last checkpoint each carry the thresholds of their own weights.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from PIL import Image
from synthetic import make_folder_tree, make_mvtec_tree

from adlight.callbacks import LastCheckpoint, TestReport
from adlight.cli import main
from adlight.data import DigitsDataModule, FolderDataModule, LoaderOptions
from adlight.errors import ConfigError
from adlight.models import AutoencoderModel, OneClassSVMModel
from adlight.nets import FadaeinejadAE, RawPixels

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
QUICKSTART = CONFIGS / "quickstart.yaml"
PATCHCORE = CONFIGS / "patch_features" / "mvtec_patchcore.yaml"
SIZE = 32


def quick(run_dir: Path, *extra: str) -> list[str]:
    """The quick start, one epoch, into ``run_dir``."""
    return [f"--config={QUICKSTART}", f"--trainer.default_root_dir={run_dir}", "--trainer.max_epochs=1",
            "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false", *extra]


def patchcore(root: Path, run_dir: Path, size: int = SIZE) -> list[str]:
    return [f"--config={PATCHCORE}", f"--data.root={root}", f"--data.image_size={size}",
            f"--model.features.init_args.backbone.init_args.input_size={SIZE}",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={run_dir}",
            "--trainer.enable_progress_bar=false"]


def reports(run_root: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(run_root.rglob("metrics.json"))]


def fingerprint(*roots: Path) -> dict[str, str]:
    """Every file under ``roots`` -> its sha1: nothing the user wrote may change."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob("*"))) if p.is_file()]
    return {str(p): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


@pytest.fixture(scope="module")
def short_fit(tmp_path_factory) -> Path:
    """The quick start fitted for one epoch with validation every fifth: no validation ran."""
    run_root = tmp_path_factory.mktemp("short_fit")
    main(["fit", *quick(run_root, "--trainer.check_val_every_n_epoch=5")])
    return run_root


def last_checkpoint(run_root: Path) -> Path:
    (found,) = run_root.rglob("last.ckpt")
    return found


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory) -> Path:
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=8, n_good_test=6,
                           defects={"scratch": 4, "hole": 4}, size=SIZE)


@pytest.fixture(scope="module")
def patchcore_fit(mvtec_root, tmp_path_factory) -> Path:
    run_root = tmp_path_factory.mktemp("patchcore")
    main(["fit", *patchcore(mvtec_root, run_root), "--test_after_fit=false"])
    return last_checkpoint(run_root)


def edited_checkpoint(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """A copy of ``source`` with its state_dict edited (the user's file stays as it was)."""
    checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    edit(checkpoint["state_dict"])
    torch.save(checkpoint, target)
    return target


def drop(*keys: str) -> Callable[[dict], None]:
    return lambda state: [state.pop(k) for k in keys]


def predict_folder(root: Path) -> Path:
    folder = root / "images"
    folder.mkdir(exist_ok=True)
    for i in range(3):
        Image.new("L", (8, 8), color=40 * i).save(folder / f"{i}.png")
    return folder


# ----------------------------------------------------------------------------------- the table
@dataclass
class Case:
    name: str
    #: (tmp_path, fixtures) -> the adlight arguments
    args: Callable[[Path, dict], list[str]]
    exit_code: int
    #: words the one-line error (exit 2) or one warning (exit 0) must hold
    says: tuple[str, ...]
    #: what a successful run's metrics.json must hold (key -> predicate)
    report: dict[str, Callable[[object], bool]] | None = None


def _stale(tmp: Path, fx: dict) -> list[str]:
    def older(state):
        state["image_threshold_step"] = state["trained_steps"] - 1
    ckpt = edited_checkpoint(last_checkpoint(fx["short_fit"]), tmp / "stale.ckpt", older)
    return ["test", *quick(tmp / "run"), f"--ckpt_path={ckpt}"]


def _old_ae(tmp: Path, fx: dict) -> list[str]:
    ckpt = edited_checkpoint(last_checkpoint(fx["short_fit"]), tmp / "old.ckpt",
                             drop("trained_steps", "image_threshold_step", "pixel_threshold_step"))
    return ["test", *quick(tmp / "run"), f"--ckpt_path={ckpt}"]


def _old_patchcore(tmp: Path, fx: dict) -> list[str]:
    ckpt = edited_checkpoint(fx["patchcore_fit"], tmp / "old.ckpt", drop(
        "head_representation", "trained_steps", "image_threshold_step", "pixel_threshold_step"))
    return ["test", *patchcore(fx["mvtec_root"], tmp / "run", size=48), f"--ckpt_path={ckpt}"]


CASES = [
    Case("test_without_checkpoint", lambda tmp, fx: ["test", *quick(tmp / "run")], 2,
         ("AutoencoderModel was never trained", "--model.allow_untrained true")),
    Case("validate_without_checkpoint", lambda tmp, fx: ["validate", *quick(tmp / "run")], 2,
         ("never trained",)),
    Case("predict_without_checkpoint",
         lambda tmp, fx: ["predict", *quick(tmp / "run", f"--data.predict_dir={predict_folder(tmp)}")], 2,
         ("never trained",)),
    Case("test_untrained_on_purpose",
         lambda tmp, fx: ["test", *quick(tmp / "run", "--model.init_args.allow_untrained=true")], 0, (),
         {"image_AUROC": lambda v: v is not None}),
    Case("patchcore_bank_fitted_at_32_tested_at_48",
         lambda tmp, fx: ["test", *patchcore(fx["mvtec_root"], tmp / "run", size=48),
                          f"--ckpt_path={fx['patchcore_fit']}"], 2,
         ("PatchCoreModel's head was fitted on another representation", "data image_size: 32 at fit vs 48 now")),
    Case("patchcore_predict_at_another_size",
         lambda tmp, fx: ["predict", *patchcore(fx["mvtec_root"], tmp / "run", size=48),
                          f"--data.predict_dir={fx['mvtec_root'] / 'bottle' / 'test' / 'good'}",
                          f"--ckpt_path={fx['patchcore_fit']}"], 2,
         ("data image_size: 32 at fit vs 48 now",)),
    Case("threshold_chosen_on_other_weights", _stale, 0,
         ("chosen on the weights of training step",),
         {"image_threshold": lambda v: v is None,
          "image_threshold_source": lambda v: v.startswith("none: the threshold was chosen on other weights")}),
    Case("fixed_threshold_above_every_score",
         lambda tmp, fx: ["fit", *quick(tmp / "run", "--model.init_args.image_threshold=1000")], 0,
         ("fixed image_threshold 1000 is outside the observed scores [",),
         {"image_threshold": lambda v: v == 1000, "image_recall": lambda v: v == 0}),
    # a checkpoint from before the step counters and the head record came from a fit
    Case("checkpoint_without_step_counters", _old_ae, 0, (),
         {"image_threshold_source": lambda v: v == "validation split, F1-optimal"}),
    Case("patchcore_checkpoint_without_representation_record", _old_patchcore, 0, (),
         {"image_AUROC": lambda v: v is not None}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_bad_input(case, tmp_path, capsys, request):
    fx = {name: request.getfixturevalue(name) for name in ("short_fit",)}
    if "patchcore" in case.name:
        fx.update(mvtec_root=request.getfixturevalue("mvtec_root"),
                  patchcore_fit=request.getfixturevalue("patchcore_fit"))
    args = case.args(tmp_path, fx)
    user_files = fingerprint(*[Path(v) for v in fx.values()], QUICKSTART, PATCHCORE)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if case.exit_code:
            with pytest.raises(SystemExit) as exit_info:
                main(args)
            assert exit_info.value.code == case.exit_code
        else:
            main(args)
    assert fingerprint(*[Path(v) for v in fx.values()], QUICKSTART, PATCHCORE) == user_files
    if case.exit_code:
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("adlight: error:")]
        assert len(lines) == 1, lines
        assert all(word in lines[0] for word in case.says), lines[0]
        assert not list((tmp_path / "run").rglob("metrics.json"))
        return
    messages = [str(w.message) for w in caught]
    for word in case.says:
        hits = [m for m in messages if word in m]
        assert hits and all("\n" not in m for m in hits), (word, messages)
    (report,) = reports(tmp_path / "run")
    for key, holds in (case.report or {}).items():
        assert holds(report.get(key)), (key, report.get(key))


# ------------------------------------------------------------------------ correct results
def test_a_short_fit_has_thresholds_chosen_on_its_saved_weights(short_fit):
    (report,) = reports(short_fit)
    assert report["image_threshold_source"] == "validation split, F1-optimal"
    assert report["image_threshold"] is not None and "image_F1" in report
    state = torch.load(last_checkpoint(short_fit), map_location="cpu", weights_only=False)["state_dict"]
    assert int(state["trained_steps"]) > 0
    assert int(state["image_threshold_step"]) == int(state["trained_steps"])
    assert float(state["image_threshold"]) == pytest.approx(report["image_threshold"])
    # every kept checkpoint (Lightning's own epoch=0-step=N.ckpt too) got its thresholds
    for path in short_fit.rglob("*.ckpt"):
        saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        assert int(saved["image_threshold_step"]) == int(saved["trained_steps"]), path
        assert math.isfinite(float(saved["image_threshold"])), path


def test_a_fit_without_validation_batches_still_chooses_its_thresholds(tmp_path):
    main(["fit", *quick(tmp_path, "--trainer.limit_val_batches=0")])
    (report,) = reports(tmp_path)
    assert report["image_threshold_source"] == "validation split, F1-optimal" and "image_F1" in report


def tiny_autoencoder() -> AutoencoderModel:
    return AutoencoderModel(FadaeinejadAE(in_channels=1, latent_dim=8, image_size=32), pixel_threshold=None)


def test_best_and_last_checkpoints_carry_the_thresholds_of_their_own_weights(tmp_path):
    data = DigitsDataModule(normal_digits=[0], loader=LoaderOptions(batch_size=32))
    # "best" is the first epoch (lowest epoch number): a checkpoint whose weights are not the last
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="epoch", mode="min", save_top_k=1,
                           save_on_train_epoch_end=True)
    last = LastCheckpoint(dirpath=str(tmp_path / "ckpt"))  # what adlight fit adds
    trainer = L.Trainer(max_epochs=3, check_val_every_n_epoch=5, accelerator="cpu", callbacks=[best, last],
                        logger=False, default_root_dir=tmp_path, enable_progress_bar=False, enable_model_summary=False)
    L.seed_everything(0)
    trainer.fit(tiny_autoencoder(), datamodule=data)
    best_path, last_path = Path(best.best_model_path), Path(last.last_model_path)
    assert best_path != last_path
    saved = {p: torch.load(p, map_location="cpu", weights_only=False)["state_dict"] for p in (best_path, last_path)}
    assert int(saved[best_path]["trained_steps"]) < int(saved[last_path]["trained_steps"])
    for path, state in saved.items():
        assert int(state["image_threshold_step"]) == int(state["trained_steps"]), path
        # the threshold is the one validating these very weights chooses
        model = tiny_autoencoder()
        checker = L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path, enable_progress_bar=False,
                            enable_model_summary=False)
        checker.validate(model, datamodule=data, ckpt_path=path, verbose=False)
        assert float(model.image_threshold) == pytest.approx(float(state["image_threshold"])), path
    assert float(saved[best_path]["image_threshold"]) != float(saved[last_path]["image_threshold"])


def test_no_threshold_says_why_in_the_report(tmp_path):
    make_folder_tree(tmp_path / "data", n_normal=40, abnormal=0, size=SIZE)
    data = FolderDataModule(normal_dir=str(tmp_path / "data" / "normal"), image_size=SIZE, channels=1,
                            loader=LoaderOptions(batch_size=8))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path / "run",
                        callbacks=[TestReport(figures=False, page=False)], enable_progress_bar=False,
                        enable_model_summary=False)
    model = tiny_autoencoder()
    trainer.fit(model, datamodule=data)
    trainer.test(model, datamodule=data, verbose=False)
    (report,) = reports(tmp_path / "run")
    assert report["image_threshold"] is None
    assert report["image_threshold_source"] == "none: the validation split has no anomalous images"


def test_a_head_names_each_field_of_another_representation(tmp_path):
    data = DigitsDataModule(normal_digits=[1], loader=LoaderOptions(batch_size=64))
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", default_root_dir=tmp_path, logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(OneClassSVMModel(RawPixels(size=8), nu_sweep=0), datamodule=data)
    checkpoint = trainer.checkpoint_callback.best_model_path
    other = OneClassSVMModel(RawPixels(size=8, unit_length=False), nu_sweep=0)
    with pytest.raises(ConfigError, match=r"unit_length: True at fit vs False now"):
        L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path).test(other, datamodule=data, ckpt_path=checkpoint)
    same = OneClassSVMModel(RawPixels(size=8), nu_sweep=0)
    L.Trainer(accelerator="cpu", logger=False, default_root_dir=tmp_path).test(same, datamodule=data, ckpt_path=checkpoint, verbose=False)
    assert same.fitted_representation["size"] == "8" and same.fitted_representation["data image_size"] == "32"


def test_untrained_weights_are_refused_by_the_library_too():
    model = tiny_autoencoder()
    with pytest.raises(ConfigError, match="never trained"):
        model.require_trained()
    model.trained_steps.fill_(3)
    model.require_trained()
    assert not OneClassSVMModel(RawPixels(size=8)).learns_by_gradient  # its head's is_fitted says it

