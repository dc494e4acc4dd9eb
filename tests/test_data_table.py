"""Table-indexed data: TableDataModule, the HAM10000 and driving presets, their configs.

Every tree and table here is written by the tests: HAM10000's official layout (metadata CSV
plus two image folders), the driving set's folder and table layouts, and plain CSVs.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import (
    defect_image,
    image_of_label,
    make_driving_tree,
    make_ham10000_tree,
    normal_image,
)

from adlight.cli import main
from adlight.cli.config_files import load_config
from adlight.data import (
    HAM10000_DIAGNOSES,
    DrivingDistractionDataModule,
    HAM10000DataModule,
    LoaderOptions,
    TableDataModule,
)
from adlight.errors import AdlightError, ConfigError, DataError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
NEW_CONFIGS = sorted(CONFIGS.glob("zhao_karray/ham10000_*.yaml")) + sorted(
    CONFIGS.glob("zhao_karray/driving_*.yaml")
)

# ----------------------------------------------------------------------------- trees
def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def make_table(root: Path, labels: dict[str, int], groups: int = 0, masks: bool = False,
               size: int = 24) -> Path:
    """``root/images/<label>_<i>.png`` and ``root/table.csv`` (path, label[, group][, mask])."""
    rng = np.random.default_rng(0)
    header = ["path", "label", *(["group"] if groups else []), *(["mask"] if masks else [])]
    rows = []
    for label, count in labels.items():
        for i in range(count):
            name = f"images/{label}_{i}.png"
            anomalous = label != "ok"
            if anomalous:
                image, mask = defect_image(size, rng)
            else:
                image, mask = normal_image(size, rng), None
            _save(root / name, image)
            row = [name, label]
            if groups:
                row.append(f"g{i % groups}")
            if masks:
                row.append(f"masks/{label}_{i}.png" if mask is not None else "")
                if mask is not None:
                    _save(root / "masks" / f"{label}_{i}.png", mask)
            rows.append(row)
    return write_csv(root / "table.csv", header, rows)


def split_rows(dm) -> list[dict]:
    return [{"path": s.path, "label": s.label, "class_id": s.class_id, "split": name}
            for name, ds in (("train", dm.train_dataset), ("val", dm.val_dataset),
                             ("test", dm.test_dataset)) if ds is not None for s in ds.samples]


def counts(dm, split: str) -> Counter:
    names = dm.class_names
    return Counter(names[r["class_id"]] for r in split_rows(dm) if r["split"] == split)


@pytest.fixture(scope="module")
def ham_root(tmp_path_factory):
    return make_ham10000_tree(tmp_path_factory.mktemp("ham"))


@pytest.fixture(scope="module")
def driving_root(tmp_path_factory):
    return make_driving_tree(tmp_path_factory.mktemp("driving"))


# ----------------------------------------------------------------------------- TableDataModule
def test_table_split_counts_classes_and_batch(tmp_path):
    table = make_table(tmp_path, {"ok": 20, "crack": 10, "dent": 6})
    dm = TableDataModule(table, normal_values=["ok"], val_size=0.1, image_size=16, loader=LoaderOptions(batch_size=64))
    assert dm.class_names == ["ok", "crack", "dent"]  # normal first, anomalies sorted
    # val 10% of each class (at least one), test 20% of the normals, all other anomalies
    assert counts(dm, "val") == {"ok": 2, "crack": 1, "dent": 1}
    assert counts(dm, "test") == {"ok": 4, "crack": 9, "dent": 5}
    assert counts(dm, "train") == {"ok": 14}
    paths = [r["path"] for r in split_rows(dm)]
    assert len(paths) == len(set(paths)) == 36
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (18, 3, 16, 16) and "mask" not in batch
    assert set(batch["label"].tolist()) == {0, 1}
    assert all(p.startswith(str(tmp_path / "images")) for p in batch["path"])


def test_table_split_is_seeded_and_written_with_unused_rows(tmp_path):
    table = make_table(tmp_path, {"ok": 20, "crack": 10})
    kwargs = dict(normal_values=["ok"], val_size=2, test_size=5, anomaly_test_size=4)
    a, b = TableDataModule(table, **kwargs), TableDataModule(table, **kwargs)
    assert split_rows(a) == split_rows(b)
    other = TableDataModule(table, **kwargs, seed=1)
    assert split_rows(other) != split_rows(a)
    assert counts(a, "test") == {"ok": 5, "crack": 4} and counts(a, "val") == {"ok": 2, "crack": 2}
    rows = list(csv.DictReader(a.write_split_csv(tmp_path / "run" / "split.csv").open()))
    assert len(rows) == 30  # every row of the table, including the 4 anomalies no split uses
    assert Counter(r["split"] for r in rows) == {"train": 13, "val": 4, "test": 9, "unused": 4}
    assert {r["class"] for r in rows if r["split"] == "unused"} == {"crack"}


def test_label_values_need_not_be_strings_and_rows_can_be_excluded(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(12):
        label = [0, 0, 1, 2][i % 4]
        _save(tmp_path / f"{i}.png", normal_image(16, rng))
        rows.append([f"{i}.png", label])
    table = write_csv(tmp_path / "t.csv", ["file", "y"], rows)
    dm = TableDataModule(table, label_column="y", image_column="file", normal_values=[0],
                         exclude_values=[2], val_size=0)
    assert dm.class_names == ["0", "1"]
    assert sum(counts(dm, s).total() for s in ("train", "test")) == 9  # the 3 rows of 2 left out
    assert dm.val_dataset is None


def test_image_template_and_several_image_dirs(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(8):
        folder = tmp_path / ("a" if i < 4 else "b")
        _save(folder / f"img{i}.png", normal_image(16, rng))
        rows.append([f"img{i}", "n" if i % 2 else "x"])
    table = write_csv(tmp_path / "meta" / "t.csv", ["id", "kind"], rows)
    dm = TableDataModule(table, label_column="kind", normal_values=["n"],
                         image_template="{id}.png", image_dirs=[str(tmp_path / "a"),
                                                                str(tmp_path / "b")], val_size=0)
    found = {Path(r["path"]).parent.name for r in split_rows(dm)}
    assert found == {"a", "b"}


def test_mask_column_gives_masks_with_zeros_for_normals(tmp_path):
    table = make_table(tmp_path, {"ok": 10, "crack": 6}, masks=True)
    dm = TableDataModule(table, normal_values=["ok"], mask_column="mask", image_size=24, loader=LoaderOptions(batch_size=64))
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == (batch["image"].shape[0], 1, 24, 24)
    sums = batch["mask"].flatten(1).sum(1)
    assert torch.all(sums[batch["label"] == 0] == 0) and torch.all(sums[batch["label"] == 1] > 0)


def test_tsv_tables_are_read_with_tabs(tmp_path):
    make_table(tmp_path, {"ok": 6, "bad": 3})
    text = (tmp_path / "table.csv").read_text().replace(",", "\t")
    (tmp_path / "table.tsv").write_text(text)
    dm = TableDataModule(tmp_path / "table.tsv", normal_values=["ok"], val_size=0)
    assert dm.class_names == ["ok", "bad"]


# ----------------------------------------------------------------------------- groups
def test_group_split_keeps_test_groups_out_of_train_and_val(tmp_path):
    table = make_table(tmp_path, {"ok": 20, "crack": 10}, groups=5)
    dm = TableDataModule(table, normal_values=["ok"], group_column="group", num_test_groups=2,
                         val_size=0.25)
    group_of = {str(tmp_path / f"images/{lab}_{i}.png"): f"g{i % 5}"
                for lab, n in (("ok", 20), ("crack", 10)) for i in range(n)}
    by_split = {s: {group_of[r["path"]] for r in split_rows(dm) if r["split"] == s}
                for s in ("train", "val", "test")}
    assert len(by_split["test"]) == 2
    assert not by_split["test"] & (by_split["train"] | by_split["val"])
    # every image of a test group is in test: 4 normals and 2 anomalies per group
    assert counts(dm, "test") == {"ok": 8, "crack": 4}
    assert all(r["label"] == 0 for r in split_rows(dm) if r["split"] == "train")
    rows = list(csv.DictReader(dm.write_split_csv(tmp_path / "split.csv").open()))
    assert {r["group"] for r in rows if r["split"] == "test"} == by_split["test"]


def test_explicit_test_groups(tmp_path):
    table = make_table(tmp_path, {"ok": 12, "crack": 6}, groups=3)
    dm = TableDataModule(table, normal_values=["ok"], group_column="group",
                         test_groups=["g1"], val_size=0)
    assert all(Path(r["path"]).stem.split("_")[1] in {"1", "4", "7", "10"}
               for r in split_rows(dm) if r["split"] == "test")
    assert counts(dm, "test") == {"ok": 4, "crack": 2}


# ----------------------------------------------------------------------------- bad input
def _expect(error, match, make):
    with pytest.raises(error, match=match):
        make().setup("fit")


def test_a_row_whose_file_is_missing_names_the_row_and_the_file(tmp_path):
    table = make_table(tmp_path, {"ok": 6, "bad": 3})
    (tmp_path / "images" / "ok_4.png").unlink()
    # header is line 1, ok_0 line 2: ok_4 is on line 6
    _expect(DataError, r"line 6 of .*table\.csv: image file 'images/ok_4\.png' does not exist",
            lambda: TableDataModule(table, normal_values=["ok"]))


def test_an_unknown_label_value_names_the_row_and_the_value(tmp_path):
    table = make_table(tmp_path, {"ok": 4, "bad": 2, "weird": 1})
    _expect(DataError, r"line 8 of .*: unknown 'label' value 'weird'",
            lambda: TableDataModule(table, normal_values=["ok"], anomalous_values=["bad"]))


def test_a_normal_value_absent_from_the_table_is_named(tmp_path):
    table = make_table(tmp_path, {"ok": 4, "bad": 2})
    _expect(DataError, r"normal_values value 'OK' does not occur in column 'label'.*values: bad, ok",
            lambda: TableDataModule(table, normal_values=["OK"]))


def test_a_missing_column_lists_the_columns(tmp_path):
    table = make_table(tmp_path, {"ok": 4, "bad": 2})
    _expect(DataError, r"group_column 'driver' is not a column .*columns: path, label",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="driver",
                                    num_test_groups=1))


def test_a_group_split_without_anomalies_in_test_is_an_error_naming_the_groups(tmp_path):
    table = make_table(tmp_path, {"ok": 8, "bad": 2}, groups=4)  # bad_0 in g0, bad_1 in g1
    _expect(DataError, r"test split has no anomalous rows \(test groups: g2, g3\)",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="group",
                                    test_groups=["g2", "g3"]))


def test_group_choices_that_leave_no_training_group_are_errors(tmp_path):
    table = make_table(tmp_path, {"ok": 6, "bad": 3}, groups=3)
    _expect(DataError, r"num_test_groups=3 leaves no group for training.*3 groups",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="group",
                                    num_test_groups=3))
    _expect(DataError, r"take every group",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="group",
                                    test_groups=["g0", "g1", "g2"]))
    _expect(DataError, r"test_groups value 'g9' does not occur in column 'group'",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="group",
                                    test_groups=["g9"]))


def test_a_group_whose_normals_all_go_elsewhere_leaves_train_empty(tmp_path):
    table = make_table(tmp_path, {"ok": 4, "bad": 4}, groups=2)
    _expect(DataError, r"train split has no normal rows",
            lambda: TableDataModule(table, normal_values=["ok"], group_column="group",
                                    test_groups=["g0"], val_size=1.0))


def test_empty_cells_duplicates_counts_and_masks_are_named(tmp_path):
    table = make_table(tmp_path, {"ok": 6, "bad": 3}, groups=2, masks=True)
    text = table.read_text().splitlines()
    blank_group = text[:3] + [text[3].replace(",g0,", ",,")] + text[4:]
    (tmp_path / "blank.csv").write_text("\n".join(blank_group) + "\n")
    _expect(DataError, r"line 4 of .*blank\.csv: the group column 'group' is empty",
            lambda: TableDataModule(tmp_path / "blank.csv", normal_values=["ok"],
                                    group_column="group", num_test_groups=1))
    (tmp_path / "dup.csv").write_text("\n".join(text + [text[2]]) + "\n")
    _expect(DataError, r"line 11 of .*is listed twice \(also at line 3",
            lambda: TableDataModule(tmp_path / "dup.csv", normal_values=["ok"]))
    _expect(DataError, r"class 'bad' has 3 rows left for anomaly_test_size, but "
                       r"anomaly_test_size=5 asks for 5",
            lambda: TableDataModule(table, normal_values=["ok"], val_size=0,
                                    anomaly_test_size=5))
    no_mask = text[:-1] + [text[-1].rsplit(",", 1)[0] + ","]
    (tmp_path / "nomask.csv").write_text("\n".join(no_mask) + "\n")
    _expect(DataError, r"line 10 of .*anomalous image .* has an empty mask column 'mask'",
            lambda: TableDataModule(tmp_path / "nomask.csv", normal_values=["ok"],
                                    mask_column="mask"))


def test_bad_arguments_fail_at_construction(tmp_path):
    with pytest.raises(ConfigError, match="'a' is in both normal_values and anomalous_values"):
        TableDataModule("t.csv", normal_values=["a"], anomalous_values=["a", "b"])
    with pytest.raises(ConfigError, match="needs test_groups .* or num_test_groups"):
        TableDataModule("t.csv", group_column="driver")
    with pytest.raises(ConfigError, match="val_size must be a fraction"):
        TableDataModule("t.csv", val_size="ten")
    with pytest.raises(ConfigError, match="test_size must be a count >= 0"):
        TableDataModule("t.csv", test_size=-3)
    with pytest.raises(DataError, match=r"table .*nowhere\.csv does not exist"):
        TableDataModule(tmp_path / "nowhere.csv").setup("fit")


# ----------------------------------------------------------------------------- HAM10000
def test_ham10000_follows_the_papers_split(ham_root):
    dm = HAM10000DataModule(ham_root, val_size=1, test_size=3, anomaly_test_size=2,
                            image_size=32)
    assert dm.class_names == ["nv", "akiec", "bcc", "bkl", "df", "mel", "vasc"]
    assert counts(dm, "test") == {"nv": 3, **{d: 2 for d in HAM10000_DIAGNOSES if d != "nv"}}
    assert counts(dm, "val") == {d: 1 for d in HAM10000_DIAGNOSES}
    assert counts(dm, "train") == {"nv": 6}  # 10 nv - 1 val - 3 test
    parts = {Path(r["path"]).parent.name for r in split_rows(dm)}
    assert parts == {"HAM10000_images_part_1", "HAM10000_images_part_2"}
    assert next(iter(dm.train_dataloader()))["image"].shape[1:] == (3, 32, 32)


def test_ham10000_defaults_are_the_papers_counts():
    dm = HAM10000DataModule("unused")
    assert (dm.test_size, dm.anomaly_test_size, dm.val_size) == (100, 100, 15)
    assert dm.normal_values == ["nv"]
    assert dm.anomalous_values == ["akiec", "bcc", "bkl", "df", "mel", "vasc"]


def test_ham10000_reads_dataverse_tab_metadata(tmp_path):
    root = make_ham10000_tree(tmp_path, {d: 3 for d in HAM10000_DIAGNOSES}, size=16)
    csv_text = (root / "HAM10000_metadata.csv").read_text()
    (root / "HAM10000_metadata.csv").unlink()
    tab = "\n".join("\t".join(f'"{c}"' for c in line.split(","))
                    for line in csv_text.splitlines())
    (root / "HAM10000_metadata.tab").write_text(tab + "\n")
    dm = HAM10000DataModule(root, val_size=0, test_size=1, anomaly_test_size=3)
    assert counts(dm, "test").total() == 1 + 6 * 3


def test_ham10000_layout_errors_name_what_is_missing(tmp_path):
    with pytest.raises(DataError, match="HAM10000 root .* does not exist"):
        HAM10000DataModule(tmp_path / "nowhere").setup("fit")
    root = make_ham10000_tree(tmp_path / "h", {d: 2 for d in HAM10000_DIAGNOSES}, size=16)
    for image in (root / "HAM10000_images_part_2").iterdir():
        image.unlink()
    (root / "HAM10000_images_part_2").rmdir()
    with pytest.raises(DataError, match="HAM10000_images_part_2 does not exist; unzip"):
        HAM10000DataModule(root).setup("fit")
    with pytest.raises(DataError, match="'melanoma' is not a HAM10000 diagnosis"):
        HAM10000DataModule(root, exclude_classes=["melanoma"])


def test_ham10000_unknown_diagnosis_names_the_row(tmp_path):
    root = make_ham10000_tree(tmp_path, {d: 2 for d in HAM10000_DIAGNOSES}, size=16)
    lines = (root / "HAM10000_metadata.csv").read_text().splitlines()
    lines[3] = lines[3].replace(",bcc,", ",BCC,")  # line 4: header, akiec, akiec, bcc
    (root / "HAM10000_metadata.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"line 4 of .*unknown 'dx' value 'BCC'"):
        HAM10000DataModule(root, val_size=0, test_size=1, anomaly_test_size=1).setup("fit")


# ----------------------------------------------------------------------------- driving
def test_driving_folders_train_on_normal_images_of_the_other_drivers(driving_root):
    dm = DrivingDistractionDataModule(driving_root, num_test_drivers=2, val_size=0.25)
    assert dm.class_names == ["normal", "talking", "texting", "GPS"]
    rows = split_rows(dm)
    driver = {r["path"]: Path(r["path"]).parent.name for r in rows}
    test_drivers = {driver[r["path"]] for r in rows if r["split"] == "test"}
    assert len(test_drivers) == 2
    assert not any(driver[r["path"]] in test_drivers for r in rows if r["split"] != "test")
    # all images of the 2 test drivers: 4 normal and 2 per behaviour each
    assert counts(dm, "test") == {"normal": 8, "talking": 4, "texting": 4, "GPS": 4}
    assert set(counts(dm, "train")) == {"normal"}
    assert counts(dm, "train")["normal"] + counts(dm, "val")["normal"] == 12


def test_driving_table_layout_matches_the_folder_layout(driving_root, tmp_path):
    rows = [[str(p.relative_to(driving_root)), p.parts[-3], p.parts[-2]]
            for p in sorted(driving_root.rglob("*.jpg"))]
    table = write_csv(tmp_path / "labels.csv", ["file", "activity", "subject"], rows)
    from_table = DrivingDistractionDataModule(
        driving_root, table=str(table), image_column="file", behaviour_column="activity",
        driver_column="subject", test_drivers=["p001", "p003"])
    from_folders = DrivingDistractionDataModule(driving_root, test_drivers=["p001", "p003"])
    assert sorted(map(str, split_rows(from_table))) == sorted(map(str, split_rows(from_folders)))


def test_driving_layout_errors(tmp_path):
    root = make_driving_tree(tmp_path / "d", drivers=3, per_behaviour=1, size=16)
    _save(root / "talking" / "stray.jpg", normal_image(16, np.random.default_rng(0)))
    with pytest.raises(DataError, match=r"stray\.jpg lies directly in the behaviour folder"):
        DrivingDistractionDataModule(root, num_test_drivers=1).setup("fit")
    (root / "talking" / "stray.jpg").unlink()
    (root / "talking").rename(root / "phone")
    with pytest.raises(DataError, match=r"unknown 'behaviour' value 'phone'"):
        DrivingDistractionDataModule(root, num_test_drivers=1).setup("fit")
    dm = DrivingDistractionDataModule(root, num_test_drivers=1,
                                      anomalous_behaviours=["phone", "texting", "GPS"])
    assert dm.class_names == ["normal", "phone", "texting", "GPS"]
    with pytest.raises(DataError, match="driving root .* does not exist"):
        DrivingDistractionDataModule(tmp_path / "nowhere").setup("fit")


# ----------------------------------------------------------------------------- configs + CLI
def test_the_new_configs_say_what_the_paper_says():
    assert len(NEW_CONFIGS) == 8
    for path in NEW_CONFIGS:
        config = load_config(path)
        model, data = config["model"]["init_args"], config["data"]["init_args"]
        assert model["network"]["class_path"] == "adlight.nets.ZhaoKarrayAE"
        assert model["network"]["init_args"]["latent_dim"] == 300
        # the network is built for data.image_size (linked in adlight.cli), not given twice
        assert "image_size" not in model["network"]["init_args"] and data["image_size"] == 128
        assert model["optimizer"]["init_args"] == {"lr": 0.0001, "weight_decay": 0.00001}
        assert data["loader"]["batch_size"] == 64 and config["trainer"]["max_epochs"] == 70
        if model["loss"] == "l1_sparse":
            expected = 0.002 if path.name.startswith("ham10000") else 0.0004
            assert model["sparsity_weight"] == expected, path.name


@pytest.mark.parametrize("config", NEW_CONFIGS, ids=lambda p: p.stem)
def test_every_new_config_fits_and_reports_per_class(config, ham_root, driving_root, tmp_path,
                                                     capsys):
    if config.name.startswith("ham10000"):
        data = [f"--data.root={ham_root}", "--data.val_size=1", "--data.test_size=3",
                "--data.anomaly_test_size=2"]
        classes = {"akiec", "bcc", "bkl", "df", "mel", "vasc"}
    else:
        data = [f"--data.root={driving_root}", "--data.num_test_drivers=2", "--data.val_size=0.25"]
        classes = {"talking", "texting", "GPS"}
    main(["fit", f"--config={config}", *data, "--data.image_size=32", "--data.loader.batch_size=8",
          "--model.network.init_args.image_size=32", "--trainer.max_epochs=1",
          "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu",
          f"--trainer.default_root_dir={tmp_path}", "--trainer.enable_progress_bar=false",
          "--report.figures=false"])
    run_dir = next(tmp_path.rglob("metrics.json")).parent
    report = json.loads((run_dir / "metrics.json").read_text())
    assert set(report["per_class"]) == classes | {"ALL"}
    everything = report["per_class"]["ALL"]
    assert everything["image_AUROC"] == pytest.approx(report["image_AUROC"])
    assert everything["n_anomalous"] == report["n_anomalous"]
    for name in classes:
        row = report["per_class"][name]
        assert 0.0 <= row["image_AUROC"] <= 1.0
        assert row["n_normal"] == report["n_images"] - report["n_anomalous"]
        assert "pixel_AUROC" not in row  # no masks in these sets
        if report["image_threshold"] is not None:
            assert 0.0 <= row["image_recall"] <= 1.0
    split = list(csv.DictReader((run_dir / "split.csv").open()))
    assert {r["split"] for r in split} >= {"train", "val", "test"}
    printed = capsys.readouterr().out
    assert "per class" in printed and "ALL" in printed


def test_a_bad_table_is_one_line_on_the_command_line(ham_root, tmp_path, capsys):
    broken = make_ham10000_tree(tmp_path / "h", {d: 2 for d in HAM10000_DIAGNOSES}, size=16)
    missing = next((broken / "HAM10000_images_part_1").iterdir())
    missing.unlink()
    with pytest.raises(SystemExit):
        main(["fit", f"--config={NEW_CONFIGS[0]}", f"--data.root={broken}",
              f"--trainer.default_root_dir={tmp_path}", "--trainer.accelerator=cpu"])
    err = capsys.readouterr().err
    assert f"image file '{missing.name}' does not exist" in err and "Traceback" not in err
    assert issubclass(DataError, AdlightError)


def test_the_state_farm_example_in_the_docs_reads_kaggles_layout(tmp_path):
    """docs/datasets.md shows State Farm's driver_imgs_list.csv read by the generic module."""
    rng = np.random.default_rng(0)
    rows = []
    for c in range(10):
        for d in range(4):
            name = f"img_{c}{d}.jpg"
            _save(tmp_path / "imgs" / "train" / f"c{c}" / name, image_of_label(c != 0, rng, 16))
            rows.append([f"p{d:03d}", f"c{c}", name])
    table = write_csv(tmp_path / "driver_imgs_list.csv", ["subject", "classname", "img"], rows)
    dm = TableDataModule(table, image_template="imgs/train/{classname}/{img}",
                         label_column="classname", normal_values=["c0"],
                         anomalous_values=["c1", "c2", "c3", "c4"],
                         exclude_values=["c5", "c6", "c7", "c8", "c9"],
                         group_column="subject", num_test_groups=2, val_size=0)
    assert dm.class_names == ["c0", "c1", "c2", "c3", "c4"]
    assert counts(dm, "test") == {f"c{c}": 2 for c in range(5)}
    assert counts(dm, "train") == {"c0": 2}
