"""Golden splits: the split (``split.csv``) of every shipped config's datamodule, on fixed data.

Each fixture under ``tests/fixtures/splits/`` is ``<name>.json`` (the datamodule's class_path
and init_args, ``{root}`` standing for the data root, the data it was built on and the configs
that share it) and ``<name>.csv`` (the split, paths relative to ``{root}``). They were recorded
with the split code before the split-policy redesign (``python tests/golden_splits.py``);
``test_data_golden_splits.py`` rebuilds each from its init_args and compares.

Data: synthetic trees from ``synthetic.py`` sized like the real sets where the config's counts
need it, and ``../shared/data`` where the config's dataset is there (skipped when absent).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torchvision.datasets.cifar

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures" / "splits"
CONFIGS = HERE.parent / "configs"
SHARED = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(HERE))

# the synthetic sets: MNIST with real MNIST's 5,923 train zeros and 892 test fives (so the
# Minhas & Zelek 6000-per-class config and Andrews' 512 test fives meet the same shortfalls)
MNIST_TRAIN = [5923, 700, 700, 700, 700, 2200, 700, 700, 700, 700]
MNIST_TEST = [980, 150, 530, 150, 150, 892, 150, 150, 150, 150]
DATA = {
    "digits": None,
    "synthetic_mvtec": ("make_mvtec_tree", {"n_train": 30, "n_good_test": 9, "size": 8,
                        "defects": {"broken_large": 7, "broken_small": 5, "contamination": 3}}),
    "synthetic_mnist": ("make_mnist_raw", {"n_train_per_class": MNIST_TRAIN,
                                           "n_test_per_class": MNIST_TEST, "size": 4}),
    "synthetic_cifar10": ("make_cifar10_batches", {"n_train_per_class": [5000] + [600] * 9,
                                                   "n_test_per_class": [1000] + [150] * 9}),
    "synthetic_concrete": ("make_class_folder_tree", {"classes": ["Negative", "Positive"],
                                                      "n_per_class": 70, "size": 4}),
    "synthetic_ham10000": ("make_ham10000_tree", {"counts": {
        "akiec": 118, "bcc": 140, "bkl": 120, "df": 115, "mel": 130, "nv": 400, "vasc": 117},
        "size": 4}),
    "synthetic_driving": ("make_driving_tree", {"drivers": 25, "per_behaviour": 2, "size": 4}),
    "synthetic_folder": ("make_folder_tree", {"n_normal": 25, "abnormal": {"crack": 7, "hole": 4},
                                              "size": 8, "masks": True}),
    "shared_mvtec": "mvtec_ad",
    "shared_ham10000": "ham10000",
}
# which data each dataset of the configs is recorded on
DATA_OF = {
    "adlight.data.DigitsDataModule": ["digits"],
    "adlight.data.MVTecDataModule": ["synthetic_mvtec", "shared_mvtec"],
    "adlight.data.HAM10000DataModule": ["synthetic_ham10000", "shared_ham10000"],
    "adlight.data.DrivingDistractionDataModule": ["synthetic_driving"],
    "mnist": ["synthetic_mnist"],
    "cifar10": ["synthetic_cifar10"],
    "folder": ["synthetic_concrete"],
}
# the synthetic concrete set is small: its counts are the config's divided by 100
SCALED = {"train_per_class": 100, "test_per_class": 100}


# beyond the configs: the arguments no config sets (supervised shares, trials, folders, groups)
EXTRA = [
    ("folder_supervised", "adlight.data.FolderDataModule", "synthetic_folder",
     {"normal_dir": "{root}/normal", "abnormal_dir": "{root}/abnormal", "mask_dir": "{root}/masks",
      "mask_suffix": "_mask", "abnormal_train_fraction": 0.5, "seed": 3}),
    ("digits_supervised", "adlight.data.DigitsDataModule", "digits",
     {"normal_digits": [1, 3], "abnormal_train_fraction": 0.3, "val_fraction": 0.1, "seed": 5}),
    ("mnist_one_class_trial2", "adlight.data.ClassSplitDataModule", "synthetic_mnist",
     {"source": "mnist", "root": "{root}", "protocol": "one_class", "normal_classes": [5],
      "n_train_normals": 300, "n_test_normals": 40, "n_test_anomalies": 40, "trial": 2,
      "seed": 7}),
    ("digits_one_vs_rest", "adlight.data.ClassSplitDataModule", "digits",
     {"source": "digits", "protocol": "one_vs_rest", "anomaly_classes": [3, 8],
      "train_per_class": 60, "test_per_class": 30, "val_fraction": 0.2, "trial": 1}),
    ("driving_supervised", "adlight.data.DrivingDistractionDataModule", "synthetic_driving",
     {"root": "{root}", "test_drivers": ["p003", "p010", "p020"], "abnormal_train_fraction": 0.5,
      "val_size": 2, "seed": 11}),
    ("mvtec_supervised_seed", "adlight.data.MVTecDataModule", "synthetic_mvtec",
     {"root": "{root}", "abnormal_train_fraction": 0.4, "val_fraction": 0.3, "seed": 2}),
]


def trust_cifar_batches(monkeypatch) -> None:
    """torchvision checks CIFAR-10's md5 sums; the synthetic batches differ from the real ones."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity",
                        lambda path, md5=None: os.path.isfile(path))


def make_data(data: str, tmp: Path) -> Path | None:
    """The data root for ``data`` (None for bundled digits); None also when shared is absent."""
    import synthetic

    spec = DATA[data]
    if spec is None:
        return None
    if isinstance(spec, str):
        root = SHARED / spec
        return root if root.is_dir() else None
    maker, kwargs = spec
    root = tmp / data
    if not root.is_dir():
        getattr(synthetic, maker)(root, **kwargs)
    return root


def config_data_sections() -> dict[str, dict]:
    """``{config path: data section}``, a wrapper datamodule replaced by the one it wraps."""
    import yaml

    out = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        data = (yaml.safe_load(path.read_text()) or {}).get("data")
        if not data:
            continue
        if data["class_path"].endswith("WithGeneratedNormals"):  # adds images, splits nothing
            data = data["init_args"]["datamodule"]
        out[str(path.relative_to(CONFIGS))] = data
    return out


def cases() -> list[dict]:
    """One case per distinct data section and data set: name, class_path, init_args, data."""
    groups: list[tuple[dict, list[str]]] = []
    for config, section in config_data_sections().items():
        for seen, names in groups:
            if seen == section:
                names.append(config)
                break
        else:
            groups.append((section, [config]))
    out = []
    for section, names in groups:
        class_path, init_args = section["class_path"], dict(section.get("init_args", {}))
        key = init_args.get("source", class_path)
        for data in DATA_OF[key]:
            args = dict(init_args)
            if "root" in args:
                args["root"] = "{root}"
            args.pop("download", None)
            if data == "synthetic_concrete":
                args.update({k: args[k] // d for k, d in SCALED.items()})
            stem = Path(names[0]).with_suffix("").as_posix().replace("/", "__")
            out.append({"name": f"{stem}__{data}", "class_path": class_path,
                        "init_args": args, "data": data, "configs": names})
    for name, class_path, data, args in EXTRA:
        out.append({"name": f"extra__{name}__{data}", "class_path": class_path,
                    "init_args": args, "data": data, "configs": []})
    return out


def fill_root(init_args: dict, root: Path | None) -> dict:
    if root is None:
        return dict(init_args)
    return {k: v.replace("{root}", str(root)) if isinstance(v, str) else v
            for k, v in init_args.items()}


def split_rows(csv_path: Path, root: Path | None) -> list[str]:
    """The lines of a split.csv, the data root replaced by ``{root}``."""
    text = csv_path.read_text()
    if root is not None:
        text = text.replace(str(root), "{root}")
    return text.splitlines()


def record(tmp: Path) -> None:
    """Write every fixture (run with the split code the goldens are to hold)."""
    import importlib
    import warnings

    import pytest

    trust_cifar_batches(pytest.MonkeyPatch())  # a script's process: nothing to restore
    FIXTURES.mkdir(parents=True, exist_ok=True)
    for case in cases():
        root = make_data(case["data"], tmp)
        if root is None and case["data"] != "digits":
            print(f"skip {case['name']}: {DATA[case['data']]} absent")
            continue
        module, _, name = case["class_path"].rpartition(".")
        cls = getattr(importlib.import_module(module), name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dm = cls(**fill_root(case["init_args"], root))
            csv_path = dm.write_split_csv(tmp / f"{case['name']}.csv")
        (FIXTURES / f"{case['name']}.csv").write_text("\n".join(split_rows(csv_path, root)) + "\n")
        (FIXTURES / f"{case['name']}.json").write_text(json.dumps(case, indent=1) + "\n")
        print(f"{case['name']}: {len(split_rows(csv_path, root)) - 1} rows")


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        record(Path(tmp))
