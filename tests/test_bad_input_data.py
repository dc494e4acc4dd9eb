"""Hostile but realistic data input (issue 13, data part): a correct result or one clear line.

Two tables. The first stores one 0/255 mask set in every encoding people use and checks that
each gives the same masks and the same pixel AUROC on the same maps. The second holds the bad
input cases: each row builds its data under ``in/``, runs a datamodule or ``adlight.cli.main``,
and asserts the exit code (2 for a one-line error), that the message or warning is one line
naming the file or argument, and that no input file was changed, added or removed.
Over 300 lines on purpose: a row's builder sits in this file beside the table that lists it.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import defect_image, make_folder_tree, make_mvtec_tree, normal_image

from adlight.cli import main
from adlight.data import FolderDataModule, LoaderOptions, MVTecDataModule, load_mask
from adlight.errors import AdlightError
from adlight.metrics import auroc

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"
SIZE = 32


# ----------------------------------------------------------------------------- mask encodings


def _palette(defect: np.ndarray, transparent_background: bool) -> Image.Image:
    img = Image.fromarray(defect.astype(np.uint8), mode="L").convert("P")
    img.putpalette([0, 0, 0, 200, 30, 30] + [0, 0, 0] * 254)  # index 1: a red, not white
    if transparent_background:
        img.info["transparency"] = 0
    return img


def _rgba(defect: np.ndarray, colour: tuple[int, int, int]) -> Image.Image:
    arr = np.zeros((*defect.shape, 4), dtype=np.uint8)
    arr[defect] = (*colour, 255)  # painted pixels opaque, the rest transparent black
    return Image.fromarray(arr, mode="RGBA")


# each: the 0/255 mask's defect pixels (bool H x W) -> the same mask stored another way
ENCODINGS: dict[str, Callable[[np.ndarray], Image.Image]] = {
    "0_255": lambda d: Image.fromarray(d.astype(np.uint8) * 255),
    "0_1": lambda d: Image.fromarray(d.astype(np.uint8)),
    "0_7": lambda d: Image.fromarray(d.astype(np.uint8) * 7),
    "bilevel_1bit": lambda d: Image.fromarray(d),
    "16bit_0_65535": lambda d: Image.fromarray(d.astype(np.uint16) * 65535),
    "16bit_0_1000": lambda d: Image.fromarray(d.astype(np.uint16) * 1000),
    "palette": lambda d: _palette(d, transparent_background=False),
    "palette_transparent": lambda d: _palette(d, transparent_background=True),
    "rgb_red_on_black": lambda d: Image.fromarray(
        np.stack([d * 255, d * 0, d * 0], -1).astype(np.uint8)),
    "rgba_green_on_transparent": lambda d: _rgba(d, (0, 180, 0)),
    "rgba_black_on_transparent": lambda d: _rgba(d, (0, 0, 0)),  # the mask is in the alpha
    "gray_alpha": lambda d: Image.fromarray(
        np.stack([d * 255, np.full(d.shape, 255)], -1).astype(np.uint8), mode="LA"),
}


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=4, n_good_test=4,
                           defects={"scratch": 4, "hole": 4}, size=SIZE)


def _pixel_auroc(root: Path) -> tuple[float, torch.Tensor]:
    """Pixel AUROC of a fixed map (distance from each image's median) on the test masks."""
    dm = MVTecDataModule(root, image_size=SIZE, val_fraction=0.0, loader=LoaderOptions(
        batch_size=16, cache_images=False))
    dm.setup("test")
    maps, masks = [], []
    for batch in dm.test_dataloader():
        gray = batch["image"].mean(1, keepdim=True)
        maps.append((gray - gray.flatten(1).median(1).values[:, None, None, None]).abs())
        masks.append(batch["mask"])
    masks = torch.cat(masks)
    return auroc(torch.cat(maps).flatten(), masks.flatten().long()), masks


@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
def test_every_mask_encoding_gives_the_0_255_masks_and_pixel_auroc(encoding, mvtec_root, tmp_path):
    expected_auroc, expected_masks = _pixel_auroc(mvtec_root)
    root = Path(shutil.copytree(mvtec_root, tmp_path / "m"))
    for f in sorted((root / "bottle" / "ground_truth").rglob("*_mask.png")):
        defect = np.asarray(Image.open(f)) != 0
        ENCODINGS[encoding](defect).save(f)
        assert torch.equal(load_mask(f)[0], torch.from_numpy(defect).float()), f
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # two values, none empty: nothing to warn about
        got_auroc, got_masks = _pixel_auroc(root)
    assert torch.equal(got_masks, expected_masks)
    assert got_auroc == expected_auroc and 0.5 < got_auroc <= 1.0


# ----------------------------------------------------------------------------- bad input table


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _setup(make_dm: Callable[[], object]) -> Callable[[], None]:
    return lambda: make_dm().setup("fit")


def _mvtec(tmp: Path, **kwargs) -> Path:
    return make_mvtec_tree(tmp / "in", n_train=4, n_good_test=2, defects={"scratch": 2},
                           size=SIZE, **kwargs)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _mvtec_3d_ad(tmp: Path) -> Path:
    """MVTec 3D-AD: rgb/, gt/ (masks named like the image) and xyz/ beside them."""
    rng = np.random.default_rng(0)
    cat = tmp / "in" / "bagel"
    for i in range(4):
        _save(cat / "train" / "good" / "rgb" / f"{i:03d}.png", normal_image(SIZE, rng))
        _save(cat / "train" / "good" / "xyz" / f"{i:03d}.tiff",
              np.zeros((SIZE, SIZE), dtype=np.float32))
        _save(cat / "validation" / "good" / "rgb" / f"{i:03d}.png", normal_image(SIZE, rng))
    for i in range(2):
        _save(cat / "test" / "good" / "rgb" / f"{i:03d}.png", normal_image(SIZE, rng))
        _save(cat / "test" / "good" / "gt" / f"{i:03d}.png", np.zeros((SIZE, SIZE), np.uint8))
        img, mask = defect_image(SIZE, rng)
        _save(cat / "test" / "crack" / "rgb" / f"{i:03d}.png", img)
        _save(cat / "test" / "crack" / "gt" / f"{i:03d}.png", mask)
        _save(cat / "test" / "crack" / "xyz" / f"{i:03d}.tiff", np.zeros((SIZE, SIZE), np.float32))
    return tmp / "in"


def _mvtec_ad_2(tmp: Path) -> Path:
    """MVTec AD 2: test_public/{good,bad}, masks in test_public/ground_truth/bad/*_mask.png."""
    rng = np.random.default_rng(1)
    cat = tmp / "in" / "fruit_jelly"
    for i in range(4):
        _save(cat / "train" / "good" / f"{i:03d}_regular.png", normal_image(SIZE, rng))
        _save(cat / "validation" / "good" / f"{i:03d}_regular.png", normal_image(SIZE, rng))
        _save(cat / "test_private" / f"{i:03d}_regular.png", normal_image(SIZE, rng))
    for i in range(2):
        _save(cat / "test_public" / "good" / f"{i:03d}_regular.png", normal_image(SIZE, rng))
        img, mask = defect_image(SIZE, rng)
        _save(cat / "test_public" / "bad" / f"{i:03d}_regular.png", img)
        _save(cat / "test_public" / "ground_truth" / "bad" / f"{i:03d}_regular_mask.png", mask)
    return tmp / "in"


def _visa_converted(tmp: Path) -> Path:
    """A VisA category converted to the MVTec layout: JPG images, masks named like the image."""
    rng = np.random.default_rng(2)
    cat = tmp / "in" / "candle"
    for i in range(4):
        _save(cat / "train" / "good" / f"{i:04d}.JPG", normal_image(SIZE, rng))
    for i in range(2):
        _save(cat / "test" / "good" / f"{i:04d}.JPG", normal_image(SIZE, rng))
        img, mask = defect_image(SIZE, rng)
        _save(cat / "test" / "bad" / f"{i:04d}.JPG", img)
        _save(cat / "ground_truth" / "bad" / f"{i:04d}.png", mask)
    return tmp / "in"


def _with_mask(tmp: Path, values: np.ndarray) -> tuple[Path, Path]:
    root = _mvtec(tmp)
    mask = root / "bottle" / "ground_truth" / "scratch" / "001_mask.png"
    Image.fromarray(values).save(mask)
    return root, mask


def _three_value_mask(tmp: Path):
    values = np.zeros((SIZE, SIZE), np.uint8)
    values[2:8, 2:8], values[8:12, 8:12] = 255, 128  # anti-aliased edge
    root, mask = _with_mask(tmp, values)
    return _setup(lambda: MVTecDataModule(root, image_size=SIZE)), [str(mask), "(3 values)"]


def _empty_mask(tmp: Path):
    root, mask = _with_mask(tmp, np.zeros((SIZE, SIZE), np.uint8))
    image = root / "bottle" / "test" / "scratch" / "001.png"
    return _setup(lambda: MVTecDataModule(root, image_size=SIZE)), [str(mask), str(image), "empty"]


def _folder_with(tmp: Path, extra: str, mask_suffix: str | None = None):
    masks = {} if mask_suffix is None else {"masks": True, "mask_suffix": mask_suffix}
    dirs = make_folder_tree(tmp / "in", n_normal=6, abnormal=3, size=SIZE, **masks)
    stray = _save(dirs["normal_dir"] / extra, np.zeros((SIZE, SIZE), np.uint8))
    args = {k: str(v) for k, v in dirs.items() if v}
    if mask_suffix is not None:
        args["mask_suffix"] = mask_suffix
    dm = lambda: FolderDataModule(image_size=SIZE, **args)  # noqa: E731
    return _setup(dm), [str(stray), "named like a mask"]


def _typo_category(tmp: Path):
    root = _mvtec(tmp)
    return _setup(lambda: MVTecDataModule(root, category="botle", image_size=SIZE)), [
        str(root / "botle"), "did you mean 'bottle'?"]


def _download_custom(tmp: Path):
    root = _mvtec(tmp)
    dm = lambda: MVTecDataModule(root, category="my_part", download=True, image_size=SIZE)  # noqa: E731
    return _setup(dm), ["'my_part'", "download"]


def _custom_category(tmp: Path):
    root = _mvtec(tmp, category="my_part")
    return _check_setup(lambda: MVTecDataModule(root, category="my_part", image_size=SIZE),
                        ["good", "scratch"], 2), []


def _check_setup(make_dm, class_names: list[str], masked_anomalies: int) -> Callable[[], None]:
    """Set up, then check the class names and that each anomaly's mask was found and read."""

    def run() -> None:
        dm = make_dm()
        dm.setup("fit")
        assert dm.class_names == class_names
        found = [b for ds in (dm.val_dataset, dm.test_dataset) if ds is not None for b in ds
                 if b["label"] == 1]
        assert len(found) == masked_anomalies and all(b["mask"].sum() > 0 for b in found)
        assert all("xyz" not in p for p, _, _ in dm.train_dataset.rows())

    return run


def _layout(builder, category: str, defect: str):
    def build(tmp: Path):
        root = builder(tmp)
        return _check_setup(lambda: MVTecDataModule(root, category=category, image_size=SIZE),
                            ["good", defect], 2), []
    return build


def _missing_3d_mask(tmp: Path):
    root = _mvtec_3d_ad(tmp)
    mask = root / "bagel" / "test" / "crack" / "gt" / "001.png"
    mask.unlink()
    dm = lambda: MVTecDataModule(root, category="bagel", image_size=SIZE)  # noqa: E731
    return _setup(dm), [str(root / "bagel" / "test" / "crack" / "rgb" / "001.png"), str(mask)]


def _val_without(missing: str):
    def build(tmp: Path):
        dirs = make_folder_tree(tmp / "in", n_normal=8, abnormal=4, size=SIZE)
        if missing == "anomalous":
            dm = lambda: FolderDataModule(str(dirs["normal_dir"]), image_size=SIZE)  # noqa: E731
        else:  # no normal held out of training: val and test hold anomalies only
            dm = lambda: FolderDataModule(str(dirs["normal_dir"]), str(dirs["abnormal_dir"]),  # noqa: E731
                                          normal_test_fraction=0.0, image_size=SIZE)
        return _setup(dm), [f"validation split has no {missing} images"]
    return build


def _root_is_a_category(tmp: Path):
    root = _mvtec(tmp) / "bottle"
    return _setup(lambda: MVTecDataModule(root, category="bottle")), [
        str(root.parent), "looks like a category folder"]


def _upper_case_mask_extension(tmp: Path):
    root = _mvtec(tmp)
    for mask in (root / "bottle" / "ground_truth" / "scratch").iterdir():
        mask.rename(mask.with_suffix(".PNG"))
    return _check_setup(lambda: MVTecDataModule(root, image_size=SIZE), ["good", "scratch"], 2), []


def _corrupt_mask(tmp: Path):
    root = _mvtec(tmp)
    mask = root / "bottle" / "ground_truth" / "scratch" / "000_mask.png"
    mask.write_bytes(mask.read_bytes()[:40])
    return _setup(lambda: MVTecDataModule(root, image_size=SIZE)), [str(mask), "cannot decode mask"]


def _jpeg_masks(tmp: Path):
    dirs = make_folder_tree(tmp / "in", n_normal=6, abnormal=3, size=SIZE, masks=True)
    first = None
    for mask in sorted(dirs["mask_dir"].glob("*.png")):
        Image.open(mask).save(mask.with_suffix(".jpg"), quality=75)
        mask.unlink()
        first = first or mask.with_suffix(".jpg")
    dm = lambda: FolderDataModule(*(str(dirs[k]) for k in ("normal_dir", "abnormal_dir", "mask_dir")),  # noqa: E731
                                  mask_suffix="_mask", image_size=SIZE)
    return _setup(dm), [str(first)]


def _strict_not_bool(tmp: Path):
    root = _mvtec(tmp)
    return _setup(lambda: MVTecDataModule(root, strict_predict="yes")), ["strict_predict", "'yes'"]


# ----- through the command line: predict over a folder with undecodable images


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("fit")
    root = make_mvtec_tree(tmp / "data", n_train=4, n_good_test=2, defects={"scratch": 2},
                           size=SIZE)
    main(["fit", f"--config={CONFIG}", *_tiny(root, tmp / "run")])
    return next((tmp / "run").rglob("*.ckpt"))


def _tiny(root: Path, run_dir: Path) -> list[str]:
    return [f"--data.root={root}", f"--data.image_size={SIZE}", "--data.loader.batch_size=2",
            "--trainer.max_epochs=1", "--trainer.accelerator=cpu", "--trainer.logger=false",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]


def _predict(bad: list[str], strict: bool = False, workers: int = 0, good: int = 5):
    def build(tmp: Path, checkpoint: Path):
        folder = tmp / "in"
        folder.mkdir()
        rng = np.random.default_rng(3)
        for i in range(good):
            _save(folder / f"{i:03d}.png", normal_image(SIZE, rng))
        for name in bad:
            (folder / name).write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        root = make_mvtec_tree(tmp / "data", n_train=2, n_good_test=1, defects={"scratch": 1},
                               size=SIZE)
        argv = ["predict", f"--config={CONFIG}", *_tiny(root, tmp / "run"),
                f"--data.predict_dir={folder}", f"--ckpt_path={checkpoint}",
                f"--data.strict_predict={str(strict).lower()}",
                f"--data.loader.num_workers={workers}"]

        def run() -> None:
            try:
                main(argv)
            finally:  # strict: stopped at setup, before the writer made predictions/
                assert not strict or not list((tmp / "run").rglob("scores.csv"))
            if not good:
                return
            rows = list(csv.DictReader(next((tmp / "run").rglob("scores.csv")).open()))
            assert len(rows) == good + len(bad)
            errors = {Path(r["path"]).name: r["error"] for r in rows if r["error"]}
            assert sorted(errors) == sorted(bad)
            assert all(name in errors[name] and not r for name in bad
                       for r in [next(r["score"] for r in rows if Path(r["path"]).name == name)])
            assert all(float(r["score"]) >= 0 for r in rows if not r["error"])

        return run, [str(folder / name) for name in bad[:1]]
    return build


@dataclass(frozen=True)
class Case:
    """One hostile input: how to build and run it, and what must come out.

    ``build(tmp)`` (or ``build(tmp, checkpoint)`` with ``cli``) writes its input under
    ``tmp/in`` and returns ``(run, names)``; ``code`` 2 means a one-line error naming every
    one of ``names``, 0 a correct run; ``warns`` a warning that must name them instead.
    """

    name: str
    build: Callable
    code: int
    warns: str | None = None
    cli: bool = False


CASES = [
    Case("mask_with_three_values_warns", _three_value_mask, 0, "more than two distinct values"),
    Case("anomaly_with_empty_mask_warns", _empty_mask, 0, "is empty"),
    Case("mask_file_among_normals_warns", lambda t: _folder_with(t, "n999_mask.png"), 0,
         "named like a mask"),
    Case("masks_folder_among_normals_warns", lambda t: _folder_with(t, "masks/n999.png"), 0,
         "named like a mask"),
    Case("mask_suffix_file_among_normals_warns",
         lambda t: _folder_with(t, "n999-gtruth.png", mask_suffix="-gtruth"), 0,
         "named like a mask"),
    Case("val_without_anomalies_says_anomalous", _val_without("anomalous"), 0,
         "no anomalous images"),
    Case("val_without_normals_says_normal", _val_without("normal"), 0, "no normal images"),
    Case("mvtec_category_typo_did_you_mean", _typo_category, 2),
    Case("mvtec_download_of_a_custom_category", _download_custom, 2),
    Case("mvtec_custom_category_works", _custom_category, 0),
    Case("mvtec_3d_ad_rgb_layout_works", _layout(_mvtec_3d_ad, "bagel", "crack"), 0),
    Case("mvtec_ad_2_layout_works", _layout(_mvtec_ad_2, "fruit_jelly", "bad"), 0),
    Case("visa_converted_category_works", _layout(_visa_converted, "candle", "bad"), 0),
    Case("mvtec_3d_ad_missing_gt_names_image_and_mask", _missing_3d_mask, 2),
    Case("strict_predict_not_a_bool", _strict_not_bool, 2),
    Case("mvtec_root_is_a_category_folder", _root_is_a_category, 2),
    Case("mvtec_mask_with_upper_case_extension_works", _upper_case_mask_extension, 0),
    Case("truncated_mask_names_the_mask", _corrupt_mask, 2),
    Case("jpeg_masks_warn_about_their_values", _jpeg_masks, 0, "more than two distinct values"),
    Case("predict_skips_one_undecodable_image", _predict(["002_bad.png"]), 0,
         "cannot decode image", cli=True),
    Case("predict_skips_a_whole_batch_of_undecodable_images",
         _predict(["003_bad.png", "003_bad2.png", "004_bad.png"]), 0, "cannot decode image",
         cli=True),
    Case("predict_skips_an_undecodable_image_read_by_a_worker",
         _predict(["001_bad.png"], workers=1), 0, "cannot decode image", cli=True),
    Case("predict_with_no_decodable_image_is_one_line",
         _predict(["a.png", "b.png", "c.png"], good=0), 2, cli=True),
    Case("strict_predict_stops_at_an_undecodable_image", _predict(["002_bad.png"], strict=True),
         2, cli=True),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_data_input(case, tmp_path, capsys, request):
    built = case.build(tmp_path, request.getfixturevalue("checkpoint")) if case.cli \
        else case.build(tmp_path)
    run, names = built
    before = _digests(tmp_path / "in")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            run()
            code, message = 0, ""
        except SystemExit as e:
            code, err = e.code, capsys.readouterr().err
            assert "Traceback" not in err
            message = err.strip().splitlines()[-1]
            assert message.startswith("adlight: error: ")
        except AdlightError as e:  # what the command line prints as one line, exit 2
            code, message = 2, str(e)
    assert code == case.code, message
    if case.code == 2:
        assert "\n" not in message and all(n in message for n in names), message
    if case.warns:
        texts = [str(w.message) for w in caught if case.warns in str(w.message)]
        assert texts, [str(w.message) for w in caught]
        assert all("\n" not in t for t in texts)
        assert any(all(n in t for n in names) for t in texts), texts
    assert _digests(tmp_path / "in") == before  # nothing the user wrote changed or went missing
