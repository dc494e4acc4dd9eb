"""Datamodules of adlight.data: batch contract, splits, split.csv, predict_dir, bad inputs."""

from __future__ import annotations

import csv
import re
import shutil
import tarfile
import warnings
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import make_class_folder_tree, make_folder_tree, make_mvtec_tree

from adlight.data import (
    MVTEC_CATEGORIES,
    AnomalyDataModule,
    DigitsDataModule,
    FolderDataModule,
    LoaderOptions,
    MVTecDataModule,
)
from adlight.errors import DataError

LOADER_FIELDS = {f.name for f in fields(LoaderOptions)}

KEYS_WITH_MASK = {"image", "label", "mask", "path", "index", "class_id"}


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    """Read-only tree: 8 train, 8 good test, 8 'scratch' + 4 'crack' anomalies, 32 px."""
    root = tmp_path_factory.mktemp("mvtec")
    return make_mvtec_tree(root, n_good_test=8, defects={"scratch": 8, "crack": 4}, size=32)


def _copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _paths(ds) -> list[str]:
    return [r[0] for r in ds.rows()] if ds is not None else []


def _check_batch(batch, n, channels, size, has_mask=True):
    assert set(batch) == (KEYS_WITH_MASK if has_mask else KEYS_WITH_MASK - {"mask"})
    img = batch["image"]
    assert img.dtype == torch.float32 and img.shape == (n, channels, size, size)
    assert img.min() >= 0.0 and img.max() <= 1.0
    for key in ("label", "index", "class_id"):
        assert batch[key].dtype == torch.long and batch[key].shape == (n,)
    assert isinstance(batch["path"], list) and len(batch["path"]) == n
    assert all(isinstance(p, str) for p in batch["path"])
    if has_mask:
        m = batch["mask"]
        assert m.dtype == torch.float32 and m.shape == (n, 1, size, size)
        assert set(m.unique().tolist()) <= {0.0, 1.0}
        normal = batch["label"] == 0
        assert m[normal].sum() == 0  # zeros for normals
        assert (m[~normal].flatten(1).sum(1) > 0).all()  # every anomaly marked


# ----------------------------------------------------------------------------- MVTec


def test_mvtec_batches_follow_the_contract(mvtec_root):
    dm = MVTecDataModule(mvtec_root, image_size=16, val_fraction=0.25, loader=LoaderOptions(batch_size=64))
    dm.setup("fit")
    assert dm.class_names == ["good", "crack", "scratch"]
    assert (dm.image_size, dm.channels) == (16, 3)
    train = next(iter(dm.train_dataloader()))
    _check_batch(train, 8, 3, 16)
    assert (train["label"] == 0).all() and (train["class_id"] == 0).all()
    assert all("/train/good/" in p for p in train["path"])
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        b = next(iter(loader))
        _check_batch(b, len(loader.dataset), 3, 16)
        assert sorted(b["index"].tolist()) == list(range(len(loader.dataset)))
        assert set(b["class_id"].tolist()) == {0, 1, 2}  # every defect type in val and test
        for cid, p in zip(b["class_id"].tolist(), b["path"], strict=True):
            assert Path(p).parent.name == dm.class_names[cid]
    # at the files' own size, the anomaly (a bright or dark square) is exactly where the mask is
    native = MVTecDataModule(mvtec_root, image_size=32, loader=LoaderOptions(batch_size=64))
    b = next(iter(native.test_dataloader()))
    img, m = b["image"], b["mask"]
    for i in torch.nonzero(b["label"] == 1).flatten():
        inside = img[i][:, m[i, 0] > 0]
        assert ((inside == 1.0) | (inside == 0.0)).all()
        assert ((img[i] > 0.05) & (img[i] < 0.95)).all(0)[m[i, 0] == 0].all()


def test_mvtec_val_and_test_are_disjoint_seeded_and_cover_the_test_folder(mvtec_root):
    def split(seed, frac=0.25):
        dm = MVTecDataModule(mvtec_root, image_size=16, seed=seed, val_fraction=frac)
        dm.setup("fit")
        return _paths(dm.train_dataset), _paths(dm.val_dataset), _paths(dm.test_dataset)

    train, val, test = split(0)
    assert not set(val) & set(test) and not set(train) & (set(val) | set(test))
    all_test = {str(p) for p in (mvtec_root / "bottle" / "test").rglob("*.png")}
    assert set(val) | set(test) == all_test
    assert len(val) == 2 + 1 + 2  # a quarter of 8 good, 4 crack, 8 scratch
    assert split(0) == (train, val, test)
    assert split(1)[1] != val
    _, val0, test0 = split(0, frac=0.0)
    assert val0 == [] and set(test0) == all_test
    dm = MVTecDataModule(mvtec_root, image_size=16, val_fraction=0.0)
    assert dm.val_dataloader() == []


def test_mvtec_train_augmentations_only_on_train(mvtec_root):
    dm = MVTecDataModule(mvtec_root, image_size=32, loader=LoaderOptions(noise_std=0.3, hflip=True, batch_size=64))
    dm.setup("fit")
    eval_dm = MVTecDataModule(mvtec_root, image_size=32, loader=LoaderOptions(batch_size=64))
    eval_dm.setup("fit")
    torch.manual_seed(0)
    a = next(iter(dm.train_dataloader()))
    b = next(iter(eval_dm.train_dataloader()))
    order = [b["path"].index(p) for p in a["path"]]
    # the loader yields the images as they are; the training loop's batch transfer augments them
    assert torch.equal(a["image"], b["image"][order])
    dm.trainer = SimpleNamespace(training=True)
    augmented = dm.on_after_batch_transfer(a, 0)
    assert (augmented["image"] - b["image"][order]).abs().mean() > 0.1  # noise on train
    assert augmented["path"] == a["path"] and augmented is not a
    t1 = next(iter(dm.test_dataloader()))
    t2 = next(iter(eval_dm.test_dataloader()))
    dm.trainer = SimpleNamespace(training=False)  # validating, testing, predicting
    assert dm.on_after_batch_transfer(t1, 0) is t1
    assert torch.equal(t1["image"], t2["image"]) and torch.equal(t1["mask"], t2["mask"])


def test_mvtec_abnormal_train_fraction_moves_anomalies_from_test_to_train(mvtec_root):
    dm = MVTecDataModule(mvtec_root, image_size=16, abnormal_train_fraction=0.5)
    dm.setup("fit")
    train = dm.train_dataset.rows()
    assert sum(r[1] for r in train) == 6  # half of 8 scratch + 4 crack
    moved = {r[0] for r in train if r[1] == 1}
    assert not moved & (set(_paths(dm.val_dataset)) | set(_paths(dm.test_dataset)))


def test_train_eval_dataset_is_the_training_normals_without_augmentation(mvtec_root):
    dm = MVTecDataModule(
        mvtec_root, image_size=16, abnormal_train_fraction=0.5, loader=LoaderOptions(noise_std=0.2, hflip=True))
    ds = dm.train_eval_dataset()
    assert _paths(ds) == [r[0] for r in dm.train_dataset.rows() if r[1] == 0]
    assert len(ds) == 8 and [ds[i]["index"] for i in range(len(ds))] == list(range(8))
    assert torch.equal(ds[3]["image"], ds[3]["image"])  # no random augmentation
    batch = {"image": ds[3]["image"][None], "mask": ds[3]["mask"][None]}
    assert not torch.equal(dm.augment_batch(batch)["image"], batch["image"])  # in training
    assert ds[0]["image"].shape == (3, 16, 16) and ds[0]["mask"].sum() == 0
    digits = DigitsDataModule(abnormal_train_fraction=0.2).train_eval_dataset()
    assert len(digits) == 107 and set(digits.labels) == {0}
    assert digits[5]["path"] == digits.rows()[5][0] and digits[5]["index"] == 5


def test_mvtec_missing_category_folder_suggests_the_folders_that_exist(mvtec_root):
    # any category folder works (a custom part, MVTec AD 2, ...): a typo is caught at setup
    with pytest.raises(DataError) as e:
        MVTecDataModule(mvtec_root, category="bottles").setup("fit")
    assert str(mvtec_root / "bottles") in str(e.value)
    assert "did you mean 'bottle'?" in str(e.value)
    assert len(MVTEC_CATEGORIES) == 15  # what download can fetch


def test_mvtec_missing_root_and_category_name_the_path(tmp_path, mvtec_root):
    missing = tmp_path / "nowhere"
    with pytest.raises(DataError, match=re.escape(str(missing)) + ".*download=True"):
        MVTecDataModule(missing).setup("fit")
    with pytest.raises(DataError, match=re.escape(str(mvtec_root / "cable")) + ".*download=True"):
        MVTecDataModule(mvtec_root, category="cable").setup("fit")


def test_mvtec_anomaly_without_mask_names_image_and_expected_mask(tmp_path, mvtec_root):
    root = _copy_tree(mvtec_root, tmp_path / "m")
    mask = root / "bottle" / "ground_truth" / "crack" / "002_mask.png"
    mask.unlink()
    with pytest.raises(DataError) as e:
        MVTecDataModule(root).setup("fit")
    assert str(root / "bottle" / "test" / "crack" / "002.png") in str(e.value)
    assert str(mask) in str(e.value)


def test_mvtec_mask_of_wrong_size_fails_at_setup_naming_both(tmp_path, mvtec_root):
    root = _copy_tree(mvtec_root, tmp_path / "m")
    mask = root / "bottle" / "ground_truth" / "scratch" / "001_mask.png"
    Image.fromarray(np.zeros((20, 24), dtype=np.uint8)).save(mask)
    with pytest.raises(DataError) as e:
        MVTecDataModule(root).setup("fit")
    msg = str(e.value)
    assert str(mask) in msg and str(root / "bottle" / "test" / "scratch" / "001.png") in msg
    assert "24x20" in msg and "32x32" in msg


def test_mvtec_undecodable_image_raises_data_error_through_workers(tmp_path, mvtec_root):
    root = _copy_tree(mvtec_root, tmp_path / "m")
    bad = root / "bottle" / "train" / "good" / "003.png"
    bad.write_bytes(b"not a png")
    dm = MVTecDataModule(root, image_size=16, loader=LoaderOptions(batch_size=4, num_workers=1))
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert loader.persistent_workers and loader.num_workers == 1 and not loader.drop_last
    try:  # the error crosses the worker boundary as a DataError
        with pytest.raises(DataError, match=f"cannot decode image {re.escape(str(bad))}"):
            for _ in loader:
                pass
    finally:  # stop the worker now: left to the garbage collector it takes 5 s
        if loader._iterator is not None:
            loader._iterator._shutdown_workers()


def test_grayscale_file_in_rgb_set_is_converted(tmp_path, mvtec_root):
    root = _copy_tree(mvtec_root, tmp_path / "m")
    f = root / "bottle" / "train" / "good" / "000.png"
    Image.open(f).convert("L").save(f)
    dm = MVTecDataModule(root, image_size=16, loader=LoaderOptions(batch_size=64))
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    i = b["path"].index(str(f))
    assert b["image"].shape[1] == 3
    assert torch.equal(b["image"][i, 0], b["image"][i, 1])
    gray = MVTecDataModule(root, image_size=16, channels=1, loader=LoaderOptions(batch_size=64))
    gray.setup("fit")
    assert next(iter(gray.test_dataloader()))["image"].shape[1] == 1


@pytest.fixture
def mvtec_archive(tmp_path):
    src = make_mvtec_tree(tmp_path / "src", n_train=3, n_good_test=2, defects={"crack": 2}, size=16)
    archive = tmp_path / "serve" / "mvtec_anomaly_detection.tar.xz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:xz") as tar:
        tar.add(src / "bottle", arcname="bottle")
    return archive


def test_mvtec_download_from_a_file_url(tmp_path, mvtec_archive):
    dest = tmp_path / "data"
    dm = MVTecDataModule(dest, image_size=16, download=True, url=mvtec_archive.as_uri())
    dm.prepare_data()
    dm.setup("fit")
    assert (dest / "bottle" / "train" / "good" / "002.png").is_file()
    assert dm.split_counts()["train"] == {"normal": 3, "anomalous": 0}
    assert mvtec_archive.is_file()  # a local archive is the user's: kept
    # setup alone (no Trainer, no prepare_data) downloads too
    dm2 = MVTecDataModule(tmp_path / "data2", download=True, url=str(mvtec_archive))
    dm2.setup("fit")
    assert len(dm2.test_dataset) + len(dm2.val_dataset) == 4
    bad_url = (tmp_path / "missing.tar.xz").as_uri()
    with pytest.raises(DataError, match=re.escape(bad_url)):
        MVTecDataModule(tmp_path / "data3", download=True, url=bad_url).prepare_data()


def test_mvtec_download_over_http(tmp_path, mvtec_archive):
    """torchvision's real download path, against a server on localhost."""
    import functools
    import http.server
    import threading

    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(mvtec_archive.parent)
    )
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        dest = tmp_path / "data"
        dm = MVTecDataModule(dest, image_size=16, download=True, url=base + mvtec_archive.name)
        dm.prepare_data()
        assert (dest / "bottle" / "test" / "crack" / "001.png").is_file()
        assert not (dest / mvtec_archive.name).exists()  # downloaded archive removed
        with pytest.raises(DataError, match=re.escape(base + "nope.tar.xz")):
            MVTecDataModule(tmp_path / "d2", download=True, url=base + "nope.tar.xz").prepare_data()
    finally:
        server.shutdown()
        server.server_close()


# ----------------------------------------------------------------------------- base


class _TinyModel(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (batch["image"].mean() - self.w).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        loss = (batch["image"].mean() - self.w).pow(2).sum()
        self.log("val_loss", loss, batch_size=len(batch["path"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_split_csv_is_written_into_the_trainer_log_dir(tmp_path, mvtec_root):
    from lightning.pytorch.loggers import CSVLogger

    dm = MVTecDataModule(mvtec_root, image_size=16, loader=LoaderOptions(batch_size=8))
    trainer = L.Trainer(
        logger=CSVLogger(tmp_path, name="run"),
        max_steps=1,
        limit_val_batches=1,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(_TinyModel(), datamodule=dm)
    assert not [w for w in caught if "not empty" in str(w.message)]
    path = Path(trainer.log_dir) / "split.csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "split", "label", "class"]
    by_split = {s: [r for r in rows if r["split"] == s] for s in ("train", "val", "test")}
    assert [len(by_split[s]) for s in ("train", "val", "test")] == [8, 5, 15]
    assert {r["label"] for r in by_split["train"]} == {"0"}
    assert {r["class"] for r in by_split["val"]} == {"good", "crack", "scratch"}
    assert all(
        (r["label"] == "0") == (r["class"] == "good") and Path(r["path"]).parent.name == r["class"]
        for r in rows
        if r["split"] != "train"
    )


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
def test_fit_without_validation_split_skips_validation(tmp_path, mvtec_root):
    dm = MVTecDataModule(mvtec_root, image_size=16, val_fraction=0.0, loader=LoaderOptions(batch_size=8))
    trainer = L.Trainer(
        logger=False,
        default_root_dir=tmp_path,
        max_epochs=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(_TinyModel(), datamodule=dm)
    assert trainer.global_step == 1 and sum(trainer.num_val_batches) == 0
    rows = (tmp_path / "split.csv").read_text().splitlines()  # log_dir = default_root_dir
    assert len(rows) == 1 + 8 + 20 and not any(",val," in r for r in rows)


def test_setup_without_trainer_writes_nothing(tmp_path, mvtec_root, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dm = MVTecDataModule(mvtec_root, image_size=16)
    dm.setup("fit")
    dm.setup("test")  # idempotent
    assert not list(tmp_path.rglob("split.csv"))
    dm.write_split_csv(tmp_path / "out" / "split.csv")
    assert len((tmp_path / "out" / "split.csv").read_text().splitlines()) == 1 + 28


def test_predict_dir_yields_every_image_sorted_and_unlabelled(tmp_path, mvtec_root):
    folder = make_class_folder_tree(tmp_path / "pred", classes=("b", "a"), n_per_class=2, size=20)
    (folder / "readme.txt").write_text("not an image")
    dm = MVTecDataModule(mvtec_root, image_size=16, predict_dir=str(folder))
    dm.setup("predict")
    b = next(iter(dm.predict_dataloader()))
    assert set(b) == KEYS_WITH_MASK - {"mask"}
    assert [Path(p).relative_to(folder).as_posix() for p in b["path"]] == [
        "a/000.png",
        "a/001.png",
        "b/000.png",
        "b/001.png",
    ]
    assert (b["label"] == -1).all() and (b["class_id"] == -1).all()
    assert b["image"].shape == (4, 3, 16, 16)
    # without predict_dir, predict = the test split
    dm2 = MVTecDataModule(mvtec_root, image_size=16)
    dm2.setup("predict")
    assert _paths(dm2.predict_dataloader().dataset) == _paths(dm2.test_dataset)


def test_empty_or_missing_predict_dir_raises(tmp_path, mvtec_root):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=re.escape(str(empty)) + ".*no image files"):
        MVTecDataModule(mvtec_root, predict_dir=str(empty)).setup("predict")
    with pytest.raises(DataError, match="predict_dir .* does not exist"):
        MVTecDataModule(mvtec_root, predict_dir=str(tmp_path / "nope")).setup("predict")


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"batch_size": 0}, "loader.batch_size"),
        ({"num_workers": -1}, "loader.num_workers"),
        ({"channels": 2}, "channels"),
        ({"image_size": 0}, "image_size"),
        ({"val_fraction": 1.0}, "val_fraction"),
        ({"abnormal_train_fraction": 1.5}, r"abnormal_train_fraction must be a number in \[0, 1\]"),
        ({"rotation_degrees": -1}, "rotation_degrees"),
        ({"seed": 1.5}, "seed"),
    ],
)
def test_bad_datamodule_arguments_raise_data_error(tmp_path, kwargs, word):
    loader = {k: kwargs.pop(k) for k in list(kwargs) if k in LOADER_FIELDS}
    with pytest.raises(DataError, match=word):
        MVTecDataModule(tmp_path, **kwargs, loader=LoaderOptions(**loader))


def test_abnormal_train_fraction_has_one_range_in_every_datamodule(tmp_path):
    for make in (lambda f: MVTecDataModule(tmp_path, abnormal_train_fraction=f),
                 lambda f: DigitsDataModule(abnormal_train_fraction=f),
                 lambda f: FolderDataModule(str(tmp_path), abnormal_train_fraction=f)):
        assert make(1.0).abnormal_train_fraction == 1.0
        with pytest.raises(DataError, match=r"abnormal_train_fraction must be a number in \[0, 1\]"):
            make(-0.1)


def test_base_class_needs_build_splits():
    with pytest.raises(NotImplementedError):
        AnomalyDataModule().setup("fit")


# ----------------------------------------------------------------------------- Folder


def test_folder_with_class_subfolders_and_masks(tmp_path):
    dirs = make_folder_tree(
        tmp_path, n_normal=10, abnormal={"dent": 4, "burn": 3}, size=24, masks=True
    )
    dm = FolderDataModule(
        str(dirs["normal_dir"]),
        str(dirs["abnormal_dir"]),
        str(dirs["mask_dir"]),
        mask_suffix="_mask",
        image_size=16,
        normal_test_fraction=0.4,
        val_fraction=0.5, loader=LoaderOptions(batch_size=64))
    dm.setup("fit")
    assert dm.class_names == ["normal", "burn", "dent"]
    train, val, test = (set(_paths(d)) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset))
    assert len(train) == 6 and all("/normal/" in p for p in train)
    assert not (train & val or train & test or val & test)
    assert len(val) + len(test) == 4 + 7
    for loader in (dm.val_dataloader(), dm.test_dataloader()):
        b = next(iter(loader))
        _check_batch(b, len(loader.dataset), 3, 16)
        assert set(b["class_id"].tolist()) == {0, 1, 2}
    _check_batch(next(iter(dm.train_dataloader())), 6, 3, 16)


def test_folder_flat_abnormal_dir_without_masks(tmp_path):
    dirs = make_folder_tree(tmp_path, n_normal=6, abnormal=3, size=16)
    dm = FolderDataModule(str(dirs["normal_dir"]), str(dirs["abnormal_dir"]), image_size=16)
    dm.setup("fit")
    assert dm.class_names == ["normal", "abnormal"]
    b = next(iter(dm.test_dataloader()))
    _check_batch(b, len(dm.test_dataset), 3, 16, has_mask=False)
    same = FolderDataModule(str(dirs["normal_dir"]), str(dirs["abnormal_dir"]), image_size=16)
    assert _paths(same.test_dataset) == _paths(dm.test_dataset)  # seeded


def test_folder_only_normals_and_upper_case_extensions(tmp_path):
    d = tmp_path / "good"
    d.mkdir()
    for i in range(5):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(d / f"x{i}.JPG")
    dm = FolderDataModule(str(d), image_size=8, normal_test_fraction=0.4, val_fraction=0.0)
    dm.setup("fit")
    assert dm.class_names == ["normal"]
    assert dm.split_counts() == {
        "train": {"normal": 3, "anomalous": 0},
        "val": {"normal": 0, "anomalous": 0},
        "test": {"normal": 2, "anomalous": 0},
    }


def test_folder_missing_mask_names_the_image(tmp_path):
    dirs = make_folder_tree(tmp_path, n_normal=4, abnormal=3, size=16, masks=True)
    (dirs["mask_dir"] / "a001_mask.png").unlink()
    dm = FolderDataModule(
        str(dirs["normal_dir"]), str(dirs["abnormal_dir"]), str(dirs["mask_dir"]), "_mask"
    )
    with pytest.raises(DataError, match=re.escape(str(dirs["abnormal_dir"] / "a001.png"))):
        dm.setup("fit")
    wrong_suffix = FolderDataModule(
        str(dirs["normal_dir"]), str(dirs["abnormal_dir"]), str(dirs["mask_dir"]), "_gt"
    )
    with pytest.raises(DataError, match="a000_gt"):
        wrong_suffix.setup("fit")


@pytest.mark.parametrize("case", ["missing_normal", "empty_normal", "overlap"])
def test_folder_bad_layouts_raise_data_error(tmp_path, case):
    dirs = make_folder_tree(tmp_path, n_normal=4, abnormal=2, size=16)
    normal, abnormal = dirs["normal_dir"], dirs["abnormal_dir"]
    if case == "missing_normal":
        normal, match = tmp_path / "nope", "normal_dir .*nope"
    elif case == "empty_normal":
        normal = tmp_path / "empty"
        normal.mkdir()
        match = "normal_dir .*empty contains no image files"
    else:
        normal, match = tmp_path, "under both normal_dir"
    with pytest.raises(DataError, match=match):
        FolderDataModule(str(normal), str(abnormal)).setup("fit")


# ----------------------------------------------------------------------------- Digits


def test_digits_split_counts_and_contract():
    from sklearn.datasets import load_digits

    dm = DigitsDataModule(normal_digits=[0], loader=LoaderOptions(batch_size=1000))
    dm.setup("fit")
    assert dm.class_names == [str(d) for d in range(10)]
    assert (dm.image_size, dm.channels) == (32, 1)
    counts = dm.split_counts()
    assert counts["train"] == {"normal": 107, "anomalous": 0}  # 60% of 178 zeros
    assert sum(counts["val"].values()) + sum(counts["test"].values()) in range(716, 722)
    target = load_digits().target
    tr = next(iter(dm.train_dataloader()))
    _check_batch(tr, 107, 1, 32, has_mask=False)
    assert (tr["class_id"] == 0).all()
    te = next(iter(dm.test_dataloader()))
    assert set(te["class_id"].tolist()) == set(range(10))
    ids = [int(p.split(":")[1]) for p in te["path"]]
    assert te["class_id"].tolist() == target[ids].tolist()
    assert te["label"].tolist() == [int(t != 0) for t in target[ids]]
    all_ids = [_paths(d) for d in (dm.train_dataset, dm.val_dataset, dm.test_dataset)]
    assert not (set(all_ids[0]) & set(all_ids[1]) or set(all_ids[1]) & set(all_ids[2]))


def test_digits_seed_channels_and_supervised_option():
    a = DigitsDataModule(normal_digits=[1, 7], seed=5, channels=3, image_size=16)
    b = DigitsDataModule(normal_digits=[7, 1], seed=5, channels=3, image_size=16)
    c = DigitsDataModule(normal_digits=[1, 7], seed=6, channels=3, image_size=16)
    assert _paths(a.test_dataset) == _paths(b.test_dataset) != _paths(c.test_dataset)
    x = a.test_dataset[0]["image"]
    assert x.shape == (3, 16, 16) and torch.equal(x[0], x[2])
    assert set(a.train_dataset.class_ids) == {1, 7}
    sup = DigitsDataModule(normal_digits=[0], abnormal_train_fraction=0.5)
    labels = [r[1] for r in sup.train_dataset.rows()]
    assert labels.count(0) == 107 and 480 < labels.count(1) < 495  # half of 60% of 1619


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"normal_digits": [10]}, "normal_digits"),
        ({"normal_digits": []}, "normal_digits"),
        ({"normal_digits": list(range(10))}, "nothing would be anomalous"),
        ({"train_fraction": 0.8, "val_fraction": 0.3}, "must be <= 1"),
    ],
)
def test_digits_bad_arguments(kwargs, word):
    with pytest.raises(DataError, match=word):
        DigitsDataModule(**kwargs)


# ----------------------------------------------------------------------------- real data

SHARED_MVTEC = Path(__file__).resolve().parents[2] / "shared" / "data" / "mvtec_ad"


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED_MVTEC / "bottle").is_dir(), reason="../shared/data absent")
def test_real_mvtec_bottle_split_and_masks():
    dm = MVTecDataModule(SHARED_MVTEC, "bottle", image_size=64, loader=LoaderOptions(batch_size=16))
    dm.setup("fit")
    assert dm.class_names == ["good", "broken_large", "broken_small", "contamination"]
    counts = dm.split_counts()
    assert counts["train"] == {"normal": 209, "anomalous": 0}
    val, test = counts["val"], counts["test"]
    assert val["normal"] + test["normal"] == 20 and val["anomalous"] + test["anomalous"] == 63
    assert val == {"normal": 5, "anomalous": 16}
    b = next(iter(dm.val_dataloader()))
    _check_batch(b, 16, 3, 64)


def test_cached_images_are_read_once_and_equal_uncached_reads(tmp_path):
    from synthetic import make_mvtec_tree

    from adlight.data import MVTecDataModule

    root = make_mvtec_tree(tmp_path, n_train=4, n_good_test=2, defects={"scratch": 2}, size=48)
    cached = MVTecDataModule(root=str(root), image_size=32, val_fraction=0.0, loader=LoaderOptions(cache_images=True))
    first = [cached.test_dataset[i] for i in range(len(cached.test_dataset))]
    for path in (root / "bottle" / "test").rglob("*.png"):
        path.unlink()  # a second read that touched the files would now fail
    again = [cached.test_dataset[i] for i in range(len(cached.test_dataset))]
    for a, b in zip(first, again, strict=True):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    root2 = make_mvtec_tree(tmp_path / "copy", n_train=4, n_good_test=2, defects={"scratch": 2}, size=48)
    plain = MVTecDataModule(root=str(root2), image_size=32, val_fraction=0.0, loader=LoaderOptions(cache_images=False))
    for a, b in zip(first, [plain.test_dataset[i] for i in range(len(plain.test_dataset))], strict=True):
        assert torch.equal(a["image"], b["image"])
        assert a["image"].dtype == torch.float32 and 0 <= a["image"].min() and a["image"].max() <= 1


def test_split_csv_never_overwrites_a_file_it_did_not_write(tmp_path, monkeypatch):
    """A logger-less run writes split.csv into default_root_dir (the working directory)."""
    import lightning as L

    from adlight.data import DigitsDataModule

    monkeypatch.chdir(tmp_path)
    (tmp_path / "split.csv").write_text("the user's own file\n")
    for seed in (0, 0, 1):
        trainer = L.Trainer(logger=False, enable_checkpointing=False, enable_progress_bar=False)
        dm = DigitsDataModule(image_size=8, seed=seed)
        dm.trainer = trainer
        dm.setup("fit")
        dm.setup("test")  # the same split again: recognised, not written twice
    assert (tmp_path / "split.csv").read_text() == "the user's own file\n"
    assert sorted(p.name for p in tmp_path.glob("split*.csv")) == [
        "split-1.csv", "split-2.csv", "split.csv"]
    assert (tmp_path / "split-1.csv").read_text() != (tmp_path / "split-2.csv").read_text()


@pytest.mark.parametrize("datamodule", [
    "MVTecDataModule", "FolderDataModule", "DigitsDataModule", "TableDataModule",
    "HAM10000DataModule", "DrivingDistractionDataModule", "OneVsRestDataModule",
    "OneClassDataModule",
])
def test_every_datamodule_takes_the_loader_group_and_a_top_level_image_size(datamodule):
    from jsonargparse import ArgumentParser

    import adlight.data

    parser = ArgumentParser()
    parser.add_class_arguments(getattr(adlight.data, datamodule), "data")
    keys = {a.dest for a in parser._actions}
    assert {f"data.loader.{f}" for f in LOADER_FIELDS} <= keys
    assert {"data.image_size", "data.channels", "data.seed", "data.predict_dir"} <= keys
    assert not keys & {f"data.{f}" for f in LOADER_FIELDS}  # not declared twice
