"""OneClassDataModule and OneVsRestDataModule: both protocols' counts, trials, shortfalls, every source, bad arguments."""

from __future__ import annotations

import csv
import os
import shutil
import warnings
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision.datasets.cifar
from jsonargparse import ArgumentParser
from synthetic import (
    CIFAR10_NAMES,
    class_level,
    make_cifar10_batches,
    make_class_folder_tree,
    make_mnist_raw,
)

from adlight.data import ClassSplitBase, LoaderOptions, OneClassDataModule, OneVsRestDataModule
from adlight.data.splits import even_quota
from adlight.errors import DataError, SmallValidationWarning

CLASSES = ("c0", "c1", "c2", "c3", "c4")
REAL = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """Five classes of 40 tiny PNGs each (read-only)."""
    return make_class_folder_tree(tmp_path_factory.mktemp("classes"), CLASSES, 40, size=8)


def folder_dm(root, protocol="one_class", **kwargs) -> ClassSplitBase:
    kwargs.setdefault("image_size", 8)
    cls = OneVsRestDataModule if protocol == "one_vs_rest" else OneClassDataModule
    return cls("folder", str(root), **kwargs)


def rows(ds) -> list[tuple[str, int, int]]:
    return ds.rows() if ds is not None else []


def per_class(ds, names) -> Counter:
    """{(class name, label): count} of a split."""
    return Counter((names[c], lab) for _, lab, c in rows(ds))


def paths(ds) -> set[str]:
    return {p for p, _, _ in rows(ds)}


def quiet(dm):
    """Build the split, failing on any warning (no shortfall expected) but the small
    validation split's (these trees are small on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", SmallValidationWarning)
        dm.setup("fit")
    return dm


# ----------------------------------------------------------------------------- one_class


def test_one_class_counts_per_split_and_class(tree):
    dm = quiet(folder_dm(tree, normal_classes=["c1", "c3"], anomaly_classes=["c2"],
                         n_train_normals=20, n_test_normals=11, n_test_anomalies=8,
                         n_val_normals=4, n_val_anomalies=2))
    names = dm.class_names
    assert names == list(CLASSES)
    assert (dm.normal_class_ids, dm.anomaly_class_ids) == ([1, 3], [2])
    # spread evenly over the normal classes, the odd one to the first
    assert per_class(dm.test_dataset, names) == {("c1", 0): 6, ("c3", 0): 5, ("c2", 1): 8}
    assert per_class(dm.val_dataset, names) == {("c1", 0): 2, ("c3", 0): 2, ("c2", 1): 2}
    assert per_class(dm.train_dataset, names) == {("c1", 0): 10, ("c3", 0): 10}
    splits = [paths(dm.train_dataset), paths(dm.val_dataset), paths(dm.test_dataset)]
    assert sum(map(len, splits)) == len(set().union(*splits)) == 20 + 6 + 19
    for p, _, c in rows(dm.train_dataset) + rows(dm.test_dataset):
        assert Path(p).parent.name == names[c]  # class_id is the folder's class
    assert dm.shortfalls == {}
    counts = dm.split_counts()
    assert counts["test"] == {"normal": 11, "anomalous": 8, "normal_shortfall": 0,
                              "anomalous_shortfall": 0}


def test_one_class_defaults_anomalies_to_every_other_class_and_needs_no_val(tree):
    dm = quiet(folder_dm(tree, normal_classes="c0", n_train_normals=10, n_test_normals=8,
                         n_test_anomalies=8, n_val_normals=0, n_val_anomalies=0))
    assert dm.anomaly_class_ids == [1, 2, 3, 4]
    assert dm.val_dataset is None and dm.val_dataloader() == []
    assert per_class(dm.test_dataset, dm.class_names) == {
        ("c0", 0): 8, ("c1", 1): 2, ("c2", 1): 2, ("c3", 1): 2, ("c4", 1): 2}
    # and the reverse: only anomaly_classes given, every other class is normal
    dm = quiet(folder_dm(tree, anomaly_classes=["c4"], n_train_normals=8, n_test_normals=4,
                         n_test_anomalies=4, n_val_normals=4, n_val_anomalies=4))
    assert dm.normal_class_ids == [0, 1, 2, 3]
    assert Counter(c for _, _, c in rows(dm.train_dataset)) == {0: 2, 1: 2, 2: 2, 3: 2}


def test_trials_share_test_and_val_but_draw_new_training_normals(tree):
    kwargs = dict(normal_classes=["c0", "c1"], anomaly_classes=["c2"], n_train_normals=16,
                  n_test_normals=20, n_test_anomalies=10, n_val_normals=6, n_val_anomalies=6)
    trials = [quiet(folder_dm(tree, trial=t, **kwargs)) for t in (0, 1, 2)]
    again = quiet(folder_dm(tree, trial=1, **kwargs))
    tests = [paths(dm.test_dataset) for dm in trials]
    vals = [paths(dm.val_dataset) for dm in trials]
    trains = [paths(dm.train_dataset) for dm in trials]
    assert tests[0] == tests[1] == tests[2] and vals[0] == vals[1] == vals[2]
    assert len({frozenset(t) for t in trains}) == 3  # each trial its own training normals
    for train in trains:
        assert len(train) == 16 and not train & (tests[0] | vals[0])
    # deterministic: the same arguments give the same split, in the same order
    assert rows(again.train_dataset) == rows(trials[1].train_dataset)
    assert rows(again.test_dataset) == rows(trials[1].test_dataset)
    other_seed = quiet(folder_dm(tree, seed=1, **kwargs))
    assert paths(other_seed.test_dataset) != tests[0]


def test_test_set_does_not_depend_on_the_training_count(tree):
    kwargs = dict(normal_classes=["c0"], n_test_normals=10, n_test_anomalies=10,
                  n_val_normals=2, n_val_anomalies=2)
    a = quiet(folder_dm(tree, n_train_normals=5, **kwargs))
    b = quiet(folder_dm(tree, n_train_normals=20, **kwargs))
    assert rows(a.test_dataset) == rows(b.test_dataset)
    assert rows(a.val_dataset) == rows(b.val_dataset)


def test_shortfall_uses_what_is_there_warns_and_reports(tree):
    dm = folder_dm(tree, normal_classes=["c1"], anomaly_classes=["c2"], n_train_normals=20,
                   n_test_normals=30, n_test_anomalies=5, n_val_normals=4, n_val_anomalies=2)
    with pytest.warns(UserWarning, match=r"n_train_normals asks for 20 train normal .*only 6 "
                                         r"are available.*holds 40 of them, 34 of which"):
        dm.setup("fit")
    assert dm.shortfalls == {"train_normal": {"argument": "n_train_normals", "asked": 20,
                                              "available": 6, "used": 6}}
    counts = dm.split_counts()
    assert counts["train"]["normal"] == 6 and counts["train"]["normal_shortfall"] == 14
    assert counts["test"] == {"normal": 30, "anomalous": 5, "normal_shortfall": 0,
                              "anomalous_shortfall": 0}
    assert dm.num_train_normals == 6


def test_uneven_classes_fill_up_from_the_others(tmp_path, tree):
    root = tmp_path / "uneven"
    shutil.copytree(tree, root)
    for f in sorted((root / "c1").iterdir())[3:]:
        f.unlink()  # c1 keeps 3 images
    dm = quiet(folder_dm(root, normal_classes=["c0", "c1", "c3"], anomaly_classes=["c2"],
                         n_train_normals=30, n_test_normals=12, n_test_anomalies=4,
                         n_val_normals=0, n_val_anomalies=0))
    assert per_class(dm.test_dataset, dm.class_names) == {
        ("c0", 0): 5, ("c1", 0): 3, ("c3", 0): 4, ("c2", 1): 4}
    assert per_class(dm.train_dataset, dm.class_names) == {("c0", 0): 15, ("c3", 0): 15}


def test_an_empty_part_is_an_error_naming_the_argument(tree):
    dm = folder_dm(tree, normal_classes=["c1"], anomaly_classes=["c2"], n_test_normals=40,
                   n_val_normals=1, n_test_anomalies=5, n_val_anomalies=1, n_train_normals=5)
    with pytest.raises(DataError, match=r"n_val_normals asks for 1 val normal .*none are left"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("asked", "available", "quota"),
    [(10, [2, 10, 10], [2, 4, 4]), (5, [5, 5, 5], [2, 2, 1]), (7, [3, 3], [3, 3]),
     (4, [0, 9], [0, 4]), (0, [3], [0])],
)
def test_even_quota(asked, available, quota):
    assert even_quota(asked, available) == quota


# ----------------------------------------------------------------------------- one_vs_rest


def test_one_vs_rest_counts_both_labels_in_train_and_balanced_val(tree):
    dm = quiet(folder_dm(tree, protocol="one_vs_rest", anomaly_classes="c2",
                         train_per_class=20, test_per_class=10, val_fraction=0.25))
    names = dm.class_names
    assert dm.normal_class_ids == [0, 1, 3, 4]
    assert per_class(dm.test_dataset, names) == {
        ("c2", 1): 10, ("c0", 0): 3, ("c1", 0): 3, ("c3", 0): 2, ("c4", 0): 2}
    train, val = per_class(dm.train_dataset, names), per_class(dm.val_dataset, names)
    assert train[("c2", 1)] == 15 and val[("c2", 1)] == 5
    assert sum(n for (c, lab), n in train.items() if lab == 0) == 15
    assert sum(n for (c, lab), n in val.items() if lab == 0) == 5
    # the 20 normals of train + val: 5 from each normal class
    assert Counter({k: train[k] + val[k] for k in train | val if k[1] == 0}) == {
        ("c0", 0): 5, ("c1", 0): 5, ("c3", 0): 5, ("c4", 0): 5}
    splits = [paths(dm.train_dataset), paths(dm.val_dataset), paths(dm.test_dataset)]
    assert sum(map(len, splits)) == len(set().union(*splits)) == 60
    batch = next(iter(dm.train_dataloader()))
    assert set(batch["label"].tolist()) == {0, 1}  # supervised: both labels in train


def test_one_vs_rest_several_anomaly_classes_and_trials(tree):
    kwargs = dict(protocol="one_vs_rest", anomaly_classes=["c1", 2], train_per_class=10,
                  test_per_class=5, val_fraction=0.1)
    a, b = (quiet(folder_dm(tree, trial=t, **kwargs)) for t in (0, 1))
    assert a.anomaly_class_ids == [1, 2]
    counts = a.split_counts()
    assert counts["train"]["anomalous"] + counts["val"]["anomalous"] == 20
    assert counts["train"]["normal"] + counts["val"]["normal"] == 20
    assert counts["val"] == {"normal": 2, "anomalous": 2, "normal_shortfall": 0,
                             "anomalous_shortfall": 0}
    assert per_class(a.test_dataset, a.class_names) == {
        ("c1", 1): 5, ("c2", 1): 5, ("c0", 0): 4, ("c3", 0): 3, ("c4", 0): 3}
    assert rows(a.test_dataset) == rows(b.test_dataset)
    assert paths(a.train_dataset) != paths(b.train_dataset)


def test_one_vs_rest_shortfall_per_class(tree):
    dm = folder_dm(tree, protocol="one_vs_rest", anomaly_classes="c2", train_per_class=50,
                   test_per_class=10, val_fraction=0.0)
    with pytest.warns(UserWarning, match=r"train_per_class asks for 50 per class train "
                                         r"anomalous .*only 30 are available"):
        dm.setup("fit")
    assert dm.shortfalls["train_anomalous"]["used"] == 30
    assert dm.split_counts()["train"] == {"normal": 30, "anomalous": 30, "normal_shortfall": 0,
                                          "anomalous_shortfall": 20}
    assert dm.val_dataset is None


# ----------------------------------------------------------------------------- sources


def test_class_names_or_indices_and_digit_names(tmp_path, tree):
    a = quiet(folder_dm(tree, normal_classes=[1, "c3"], anomaly_classes="c0",
                        n_train_normals=4, n_test_normals=4, n_test_anomalies=4,
                        n_val_normals=2, n_val_anomalies=2))
    assert (a.normal_class_ids, a.anomaly_class_ids) == ([1, 3], [0])
    with pytest.raises(DataError, match=r"unknown class 'zebra'; available classes: "
                                        r"\['c0', 'c1', 'c2', 'c3', 'c4'\]"):
        folder_dm(tree, normal_classes=["zebra"]).setup("fit")
    with pytest.raises(DataError, match="class index 7 is out of range"):
        folder_dm(tree, anomaly_classes=7).setup("fit")
    with pytest.raises(DataError, match="both name"):
        folder_dm(tree, normal_classes=[0], anomaly_classes=["c0"]).setup("fit")
    digits = make_class_folder_tree(tmp_path / "digits", ("1", "2", "3"), 6, size=8)
    small = dict(n_train_normals=2, n_test_normals=2, n_test_anomalies=2, n_val_normals=0,
                 n_val_anomalies=0)
    # an int that is a class's name means that class (YAML turns a quoted "1" into 1)
    assert quiet(folder_dm(digits, normal_classes=1, **small)).normal_class_ids == [0]
    assert quiet(folder_dm(digits, normal_classes="1", **small)).normal_class_ids == [0]
    assert quiet(folder_dm(digits, normal_classes=0, **small)).normal_class_ids == [0]
    assert quiet(folder_dm(digits, normal_classes=2, **small)).normal_class_ids == [1]


def test_test_root_holds_the_test_images(tmp_path):
    train_root = make_class_folder_tree(tmp_path / "train", ("Negative", "Positive"), 12, 8)
    test_root = make_class_folder_tree(tmp_path / "test", ("Negative", "Positive"), 5, 8, seed=1)
    dm = quiet(folder_dm(train_root, test_root=str(test_root), protocol="one_vs_rest",
                         anomaly_classes="Positive", val_fraction=0.25))
    assert dm.class_names == ["Negative", "Positive"]
    assert all(p.startswith(str(test_root)) for p in paths(dm.test_dataset))
    train_and_val = paths(dm.train_dataset) | paths(dm.val_dataset)
    assert all(p.startswith(str(train_root)) for p in train_and_val)
    # test_per_class and train_per_class default to all: 5 + 5 test, 12 + 12 train and val
    assert dm.split_counts()["test"]["anomalous"] == dm.split_counts()["test"]["normal"] == 5
    assert len(dm.train_dataset) + len(dm.val_dataset) == 24 and len(dm.val_dataset) == 6
    # one_class: the test normals are drawn from test_root too
    oc = quiet(folder_dm(train_root, test_root=str(test_root), normal_classes="Negative",
                         n_train_normals=10, n_test_normals=5, n_test_anomalies=5,
                         n_val_normals=2, n_val_anomalies=2))
    assert paths(oc.test_dataset) == {str(p) for p in test_root.rglob("*.png")}
    shutil.rmtree(test_root / "Positive")
    (test_root / "Other").mkdir()
    with pytest.raises(DataError, match=r"same class folders .*only in root: \['Positive'\], "
                                        r"only in test_root: \['Other'\]"):
        folder_dm(train_root, test_root=str(test_root), normal_classes="Negative").setup("fit")


def test_one_vs_rest_without_test_root_needs_test_per_class(tree):
    with pytest.raises(DataError, match="test_per_class must be set for source folder without "
                                        "test_root"):
        folder_dm(tree, protocol="one_vs_rest", anomaly_classes="c2").setup("fit")


def test_batches_channels_and_split_csv_class_column(tmp_path, tree):
    dm = quiet(folder_dm(tree, normal_classes=["c1"], anomaly_classes=["c2", "c4"],
                         n_train_normals=8, n_test_normals=6, n_test_anomalies=6,
                         n_val_normals=3, n_val_anomalies=3, channels=1, image_size=12, loader=LoaderOptions(batch_size=64)))
    batch = next(iter(dm.test_dataloader()))
    assert set(batch) == {"image", "label", "path", "index", "class_id"}
    assert batch["image"].shape == (12, 1, 12, 12) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 1.0
    assert ((batch["label"] == 1) == (batch["class_id"] != 1)).all()
    path = dm.write_split_csv(tmp_path / "split.csv")
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert Counter(r["split"] for r in table) == {"train": 8, "val": 6, "test": 12}
    for r in table:
        assert r["class"] == Path(r["path"]).parent.name
        assert r["label"] == ("0" if r["class"] == "c1" else "1")


def test_digits_source_counts_resize_and_augmentation():
    dm = quiet(OneClassDataModule(
        "digits", normal_classes=[1, 3, 5, 7, 9], anomaly_classes=[0, 2, 4, 6, 8],
        n_train_normals=100, n_test_normals=50, n_test_anomalies=50, n_val_normals=10,
        n_val_anomalies=10, image_size=16, channels=3, loader=LoaderOptions(noise_std=0.2)))
    assert dm.class_names == [str(d) for d in range(10)]
    test = per_class(dm.test_dataset, dm.class_names)
    assert test == {(str(d), int(d % 2 == 0)): 10 for d in range(10)}
    assert Counter(c for _, _, c in rows(dm.train_dataset)) == {d: 20 for d in (1, 3, 5, 7, 9)}
    assert all(p.startswith("digits:") for p in paths(dm.train_dataset) | paths(dm.test_dataset))
    assert not paths(dm.train_dataset) & paths(dm.test_dataset)
    item = dm.train_dataset[0]
    clean = dm.train_eval_dataset()[0]  # no augmentation, still resized
    assert item["image"].shape == clean["image"].shape == (3, 16, 16)
    assert torch.equal(item["image"], clean["image"])  # augmented by batch, in training
    assert not torch.equal(dm.augment_batch({"image": item["image"][None]})["image"][0], clean["image"])
    assert 0.0 <= clean["image"].min() and clean["image"].max() <= 1.0
    assert dm.test_dataset[0]["image"].shape == (3, 16, 16)


@pytest.mark.parametrize("source", ["mnist", "fashion_mnist"])
def test_torchvision_mnist_family_from_raw_idx_files(tmp_path, source):
    folder = "MNIST" if source == "mnist" else "FashionMNIST"
    make_mnist_raw(tmp_path, folder, n_train_per_class=12, n_test_per_class=6)
    normal = "1" if source == "mnist" else "Trouser"  # class 1 either way
    kwargs = dict(normal_classes=[normal], anomaly_classes=[7], n_train_normals=8,
                  n_test_normals=6, n_test_anomalies=4, n_val_normals=2, n_val_anomalies=2,
                  image_size=28, channels=1, loader=LoaderOptions(batch_size=64))
    dm = quiet(OneClassDataModule(source, str(tmp_path), **kwargs))
    # download: true finds the files present and fetches nothing (this machine is offline)
    fetched = OneClassDataModule(source, str(tmp_path), download=True, **kwargs)
    fetched.prepare_data()
    assert rows(quiet(fetched).test_dataset) == rows(dm.test_dataset)
    assert dm.class_names[1] == normal and len(dm.class_names) == 10
    assert all(p.startswith(f"{source}:test:") for p in paths(dm.test_dataset))
    assert all(p.startswith(f"{source}:train:")
               for p in paths(dm.train_dataset) | paths(dm.val_dataset))
    assert dm.split_counts()["train"]["normal"] == 8
    for loader in (dm.train_dataloader(), dm.test_dataloader()):
        batch = next(iter(loader))
        assert batch["image"].shape[1:] == (1, 28, 28)
        levels = (batch["image"][:, 0, 5, 5] * 255).round().long()
        expected = torch.tensor([class_level(int(c)) for c in batch["class_id"]])
        assert torch.equal(levels, expected)  # each image is its class's, read as written


def test_torchvision_missing_without_download_names_root(tmp_path):
    dm = OneClassDataModule("mnist", str(tmp_path / "nothing"), normal_classes=[1])
    with pytest.raises(DataError, match=r"mnist \(train set\) could not be read from root "
                                        r".*nothing.*set download: true"):
        dm.setup("fit")


def test_torchvision_cifar10_from_pickled_batches(tmp_path, monkeypatch):
    make_cifar10_batches(tmp_path, n_train_per_class=8, n_test_per_class=4)
    dm = OneVsRestDataModule("cifar10", str(tmp_path),
                              anomaly_classes="cat", val_fraction=0.25, image_size=32,
                              channels=3, loader=LoaderOptions(batch_size=64))
    # torchvision compares the files' md5 sums with the official ones; our tiny batches differ
    with pytest.raises(DataError, match="cifar10 .* could not be read .*corrupted"):
        dm.setup("fit")
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda path, md5=None: os.path.isfile(path))
    quiet(dm)
    assert dm.class_names == list(CIFAR10_NAMES) and dm.anomaly_class_ids == [3]
    counts = dm.split_counts()
    assert counts["test"]["anomalous"] == counts["test"]["normal"] == 4  # all of the test cats
    assert counts["train"]["anomalous"] == 6 and counts["val"]["anomalous"] == 2
    batch = next(iter(dm.test_dataloader()))
    level = torch.tensor([class_level(int(c)) for c in batch["class_id"]]).float()
    rgb = (batch["image"][:, :, 5, 5] * 255).round()
    assert torch.equal(rgb, torch.stack([level, 255 - level, torch.full_like(level, 128)], 1))
    gray = OneVsRestDataModule("cifar10", str(tmp_path),
                                anomaly_classes=3, image_size=16, channels=1)
    image = quiet(gray).test_dataset[0]["image"]
    assert image.shape == (1, 16, 16)


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        (dict(source="imagenet"), "source must be one of"),
        (dict(normal_classes=None), "give normal_classes or anomaly_classes"),
        (dict(anomaly_classes=["c1"]), r"both list \['c1'\]"),
        (dict(normal_classes=["c1", "c1"]), "normal_classes lists a class twice"),
        (dict(normal_classes=[True]), "normal_classes must be class names"),
        (dict(anomaly_classes=[-1]), "anomaly_classes must be class names"),
        (dict(n_train_normals=-5), "n_train_normals must be an int >= 1, got -5"),
        (dict(n_test_anomalies=0), "n_test_anomalies must be an int >= 1"),
        (dict(n_val_normals=-1), "n_val_normals must be an int >= 0"),
        (dict(trial=-1), "trial must be an int >= 0"),
        (dict(trial=1.5), "trial must be an int"),
        (dict(protocol="one_vs_rest", train_per_class=0), "train_per_class must be an int >= 1"),
        (dict(protocol="one_vs_rest", val_fraction=1.0), r"val_fraction must be a number in"),
        (dict(root=None), "source folder needs root"),
        (dict(test_root="x", source="mnist"), "test_root applies to source folder only"),
        (dict(download=True), "download applies to sources mnist"),
        (dict(source="digits"), "root is not used by source digits"),
        (dict(channels=2), "channels must be 1 or 3"),
    ],
)
def test_bad_arguments_raise_data_error_naming_them(kwargs, words):
    args = dict(source="folder", root="data", normal_classes=["c1"])
    args.update(kwargs)
    cls = OneVsRestDataModule if args.pop("protocol", None) == "one_vs_rest" else OneClassDataModule
    with pytest.raises(DataError, match=words):
        cls(**args)


def test_build_time_errors(tmp_path, tree):
    with pytest.raises(DataError, match="root .*missing does not exist"):
        folder_dm(tmp_path / "missing", normal_classes="a").setup("fit")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="has no class sub-folders"):
        folder_dm(tmp_path / "flat", normal_classes="a").setup("fit")
    with pytest.raises(DataError, match="no class is left for anomaly_classes"):
        folder_dm(tree, normal_classes=list(CLASSES)).setup("fit")


def test_config_parses_names_and_indices_like_lightning_cli():
    parser = ArgumentParser()
    parser.add_class_arguments(OneClassDataModule, "data")
    cfg = parser.parse_string(
        "data:\n  source: digits\n  normal_classes: [1, '3']\n"
        "  anomaly_classes: 0\n  n_train_normals: 10\n  n_test_normals: 20\n"
        "  n_test_anomalies: 20\n  n_val_normals: 4\n  n_val_anomalies: 4\n  trial: 2\n"
    )
    dm = parser.instantiate(cfg).data
    assert dm.anomaly_classes == [0] and dm.trial == 2
    assert dm.normal_class_ids == [1, 3]


# ----------------------------------------------------------------------------- real data


@pytest.mark.skipif(not (REAL / "mnist_test" / "5").is_dir(), reason="no ../shared/data/mnist_test")
@pytest.mark.parametrize(("n_val", "n_train"), [(0, 380), (64, 316)])
def test_real_mnist_test_andrews_task_1_uses_the_892_fives_it_has(n_val, n_train):
    dm = OneClassDataModule("folder", str(REAL / "mnist_test"), normal_classes=[5],
                              anomaly_classes=[2], n_val_normals=n_val, n_val_anomalies=n_val,
                              image_size=28, channels=1)
    with pytest.warns(UserWarning, match=rf"asks for 2048 train normal .*only {n_train} are"):
        counts = dm.split_counts()
    assert counts["test"]["normal"] == counts["test"]["anomalous"] == 512
    assert counts["train"] == {"normal": n_train, "anomalous": 0,
                               "normal_shortfall": 2048 - n_train, "anomalous_shortfall": 0}
    assert dm.shortfalls["train_normal"]["available"] == n_train
    assert {Path(p).parent.name for p in paths(dm.train_dataset)} == {"5"}
    assert not paths(dm.train_dataset) & paths(dm.test_dataset)


@pytest.mark.skipif(not (REAL / "mnist_test").is_dir(), reason="no ../shared/data/mnist_test")
def test_real_mnist_test_andrews_task_4_has_enough():
    dm = quiet(OneClassDataModule("folder", str(REAL / "mnist_test"),
                                    normal_classes=[1, 3, 5, 7, 9],
                                    anomaly_classes=[0, 2, 4, 6, 8], image_size=28, channels=1))
    counts = dm.split_counts()
    assert counts["train"]["normal"] == 2048 and counts["test"]["anomalous"] == 512
    spread = Counter(c for _, _, c in rows(dm.train_dataset))
    assert sorted(spread.values()) == [409, 409, 410, 410, 410]


@pytest.mark.skipif(not (REAL / "cifar10" / "test").is_dir(), reason="no ../shared/data/cifar10")
def test_real_cifar10_folders_one_vs_rest_like_minhas_zelek():
    dm = quiet(OneVsRestDataModule("folder", str(REAL / "cifar10" / "train"),
                                    test_root=str(REAL / "cifar10" / "test"), anomaly_classes="airplane",
                                    image_size=32))
    counts = dm.split_counts()
    assert counts["test"]["anomalous"] == counts["test"]["normal"] == 1000
    assert counts["train"]["anomalous"] == counts["train"]["normal"] == 4500
    assert counts["val"]["anomalous"] == counts["val"]["normal"] == 500
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (32, 3, 32, 32)
