"""The papers' tables as sweeps: which configs, which grid, how a run's metrics.json fills cells.

A table is a sweep spec (configs x grid + overrides) plus a rule that turns one run's report
into cells ``(section, row, column) -> value``. The repeat key (``data.trial`` or
``seed_everything``) is the one the table's mean +- std runs over; every other grid key
(a class, a category) picks a row or a column.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adlight.checks import is_number
from adlight.errors import ConfigError, DataError

#: the repository's configs folder (the tables name configs by their path in it)
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

Cell = tuple[str, str, str]  # (section, row, column)
# (config stem, grid point, report or None when the run failed) -> {cell: value or None}
CellRule = Callable[[str, dict[str, Any], dict[str, Any] | None], dict[Cell, float | None]]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# Zhao & Karray's Table 3 columns, in their order, and the dx codes of HAM10000 they stand for
ZHAO_DISEASES = {"MEL": "mel", "BCC": "bcc", "AKIEC": "akiec", "BKL": "bkl", "DF": "df",
                 "VASC": "vasc", "ALL": "ALL"}
ANDREWS_REPRESENTATIONS = {"gs": "GS (raw pixels)", "vgg16_p5": "VGG-16 P5 (timm weights)",
                           "efficientnet_lite0": "EfficientNet-Lite0 blocks.3 7x7"}
# budgets that make a table run on a CPU in minutes; none of them is the paper's protocol
QUICK_EPOCHS = {"trainer.max_epochs": 2, "trainer.check_val_every_n_epoch": 1}


@dataclass(frozen=True)
class Table:
    """One paper's table: its configs, its grid over the data root, and its cells."""

    name: str
    title: str
    configs: Callable[[Path], list[Path]]  # configs folder -> the table's configs, in row order
    data_overrides: Callable[[Path], dict[str, Any]]  # data root -> overrides pointing at it
    grid: Callable[[Path], dict[str, list[Any]]]  # data root -> the grid of rows/columns
    cells: CellRule
    repeat_key: str = "seed_everything"
    default_repeats: tuple[Any, ...] = ()
    quick: dict[str, Any] = field(default_factory=dict)
    mean_over: dict[str, str] = field(default_factory=dict)  # section -> "rows" | "columns"
    baseline_row: str | None = None  # rows tested against it (Wilcoxon on image_AUROC_by_nu)
    notes: str = ""
    # (configs folder, data root, output folder, --only) -> config files written for the runs,
    # where a table's runs are not its configs x a grid (the development table)
    derive: Callable[[Path, Path, Path, list[str]], list[Path]] | None = None
    extra_set: dict[str, Any] = field(default_factory=dict)  # overrides of every run
    paper_column: bool = True  # a "(paper)" column beside each of ours


def _get(report: dict[str, Any] | None, *keys: str) -> float | None:
    node: Any = report
    for key in keys:
        node = node.get(key) if isinstance(node, dict) else None
    return float(node) if is_number(node) else None


def _count(report: dict[str, Any] | None, key: str) -> int | None:
    """A count of the report (``image_TP``, ...), kept an int so the table prints 419, not 419.000."""
    value = _get(report, key)
    return None if value is None else int(value)


def _accuracy(report: dict[str, Any] | None) -> float | None:
    counts = [_get(report, f"image_{k}") for k in ("TP", "FP", "TN", "FN")]
    if any(c is None for c in counts) or not sum(counts):
        return None
    return (counts[0] + counts[2]) / sum(counts)


def _existing(folder: Path, names: list[str]) -> list[Path]:
    return [folder / name for name in names if (folder / name).is_file()]


def mvtec_categories(root: Path) -> list[str]:
    """The MVTec AD categories under ``root``: folders with ``train/`` and ``test/``."""
    found = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())
    if not found:
        raise DataError(f"--root {root} holds no MVTec AD category (a folder with train/ and test/)")
    return found


def _class_folders(root: Path, default: tuple[str, ...]) -> list[str]:
    found = sorted(p.name for p in (root / "train").iterdir() if p.is_dir()) \
        if (root / "train").is_dir() else []
    return found or list(default)


# ----- Andrews et al. Table 3 -------------------------------------------------------------
def _andrews_configs(configs: Path) -> list[Path]:
    return _existing(configs / "andrews", [f"mnist_task{t}_{r}.yaml" for r in ANDREWS_REPRESENTATIONS
                                          for t in (1, 2, 3, 4)])


def _andrews_cells(stem, point, report):
    task, representation = re.fullmatch(r"mnist_task(\d)_(.+)", stem).groups()
    row = ANDREWS_REPRESENTATIONS.get(representation, representation)
    return {("nu-averaged AUROC", row, f"task {task}"): _get(report, "image_AUROC_nu_mean")}


# ----- Minhas & Zelek Table I, Tables IV-VI ----------------------------------------------
def _minhas_cells(stem, point, report):
    anomaly = str(point.get("data.anomaly_classes"))  # one class a run
    cells: dict[Cell, float | None] = {("Table I: AUROC", anomaly, stem): _get(report, "image_AUROC")}
    for count in ("TP", "FP", "TN", "FN"):
        cells[("Tables IV-VI: confusion counts at the 0.5 threshold", f"{stem} / {anomaly}", count)] = \
            _count(report, f"image_{count}")
    return cells


# ----- Zhao & Karray Table 3 ------------------------------------------------------------
def _zhao_configs(configs: Path) -> list[Path]:
    # the paper's row order: BCE, VAE, CAE, CAE + sparse; then the patch-feature models
    return _existing(configs, ["zhao_karray/ham10000_ae_bce.yaml", "zhao_karray/ham10000_vae.yaml",
                               "zhao_karray/ham10000_cae_l2.yaml",
                               "zhao_karray/ham10000_cae_l1_sparse.yaml",
                               "patch_features/ham10000_patchcore.yaml",
                               "patch_features/ham10000_padim.yaml"])


def _zhao_cells(stem, point, report):
    return {("AUROC per disease", stem, column): _get(report, "per_class", dx, "image_AUROC")
            for column, dx in ZHAO_DISEASES.items()}


# ----- MVTec AD tables ------------------------------------------------------------------
def _mvtec_rule(metrics: dict[str, Callable[[dict | None], float | None]]) -> CellRule:
    """Cells ``(metric, config, category)`` for the MVTec tables (a row per config)."""
    def cells(stem, point, report):
        category = str(point.get("data.category", "bottle"))
        return {(name, stem, category): value(report) for name, value in metrics.items()}
    return cells


def _mvtec_configs(configs: Path) -> list[Path]:
    # the DCGAN-augmented AE needs a generator file from an earlier DCGAN run (not one command)
    return sorted(p for p in configs.glob("*/mvtec_*.yaml") if p.stem != "mvtec_ae_l2_generated")


def _mvtec_grid(root: Path) -> dict[str, list[Any]]:
    return {"data.category": mvtec_categories(root)}


def _at_root(root: Path) -> dict[str, Any]:
    return {"data.root": str(root)}


IMAGE_F1 = {"image F1": lambda r: _get(r, "image_F1")}

TABLES: dict[str, Table] = {table.name: table for table in (
    Table(
        "andrews3", "Andrews et al. Table 3: MNIST one-class tasks, nu-averaged AUROC",
        _andrews_configs,
        lambda root: {"data.source": "folder", "data.root": str(root), "data.download": False},
        lambda root: {}, _andrews_cells, repeat_key="data.trial", default_repeats=(0, 1, 2),
        quick={"data.n_train_normals": 512}, baseline_row=ANDREWS_REPRESENTATIONS["gs"],
        notes="AUROC averaged over the 21 nu in [0.01, 0.99] (image_AUROC_nu_mean); trials share "
              "the test set and draw other training normals. --root: MNIST as class folders "
              "(<root>/<digit>/*.png)."),
    Table(
        "minhas1", "Minhas & Zelek Table I (AUROC per anomaly class) and Tables IV-VI (confusion)",
        lambda configs: sorted((configs / "minhas_zelek").glob("cifar10_*.yaml")),
        lambda root: {"data.source": "folder", "data.root": str(root / "train"),
                      "data.test_root": str(root / "test"), "data.download": False},
        lambda root: {"data.anomaly_classes": _class_folders(root, CIFAR10_CLASSES)},
        _minhas_cells, quick={"trainer.max_epochs": 1, "data.train_per_class": 200,
                              "data.test_per_class": 200},
        mean_over={"Table I: AUROC": "rows"},
        notes="One class anomalous, an equal-sized sample of the other nine normal; the "
              "classifier's own 0.5 threshold. --root: CIFAR-10 as <root>/{train,test}/<class>/."),
    Table(
        "zhao3", "Zhao & Karray Table 3: HAM10000, AUROC per disease against the nevi",
        _zhao_configs, _at_root, lambda root: {}, _zhao_cells,
        quick={**QUICK_EPOCHS, "trainer.max_epochs": 5},
        notes="Each disease's 100 test images against the 100 normal (nv) test images; ALL pools "
              "every disease. --root: the official HAM10000 release (metadata CSV + image folders)."),
    Table(
        "wilmet", "Wilmet et al. Tables 1-3: image F1 per MVTec AD category",
        lambda configs: _existing(configs / "wilmet", ["mvtec_kd_cae.yaml", "mvtec_ni_cae.yaml",
                                                       "mvtec_small_cnn.yaml", "mvtec_dcgan.yaml"]),
        _at_root, _mvtec_grid, _mvtec_rule(IMAGE_F1), quick=QUICK_EPOCHS,
        mean_over={"image F1": "columns"},
        notes="Image F1 at the threshold chosen on the validation split (never the test split); "
              "the supervised small CNN at its sigmoid's 0.5, as in the paper, from its best "
              "checkpoint by validation loss. The DCGAN-augmented AE (mvtec_ae_l2_generated) "
              "needs a DCGAN run's generator file first and is not part of the table."),
    Table(
        "fadaeinejad3", "Fadaeinejad Table 3: F1 and accuracy per MVTec AD category",
        lambda configs: sorted((configs / "fadaeinejad").glob("mvtec_*.yaml")),
        _at_root, _mvtec_grid,
        _mvtec_rule({**IMAGE_F1, "image accuracy": _accuracy,
                     "pixel F1": lambda r: _get(r, "pixel_F1")}),
        quick=QUICK_EPOCHS,
        mean_over={"image F1": "columns", "image accuracy": "columns", "pixel F1": "columns"},
        notes="Image F1 and accuracy at the validation split's threshold; pixel F1 of the defect "
              "mask at tau."),
    Table(
        "mvtec", "MVTec AD: image AUROC, pixel AUROC and AUPRO per category, every shipped config",
        _mvtec_configs, _at_root, _mvtec_grid,
        _mvtec_rule({"image AUROC": lambda r: _get(r, "image_AUROC"),
                     "pixel AUROC": lambda r: _get(r, "pixel_AUROC"),
                     "pixel AUPRO": lambda r: _get(r, "pixel_AUPRO")}),
        quick=QUICK_EPOCHS,
        mean_over={"image AUROC": "columns", "pixel AUROC": "columns", "pixel AUPRO": "columns"},
        notes="AUPRO: area under the per-region-overlap curve up to FPR 0.3, normalised. "
              "mvtec_ae_l2_generated is left out (it needs a DCGAN run's generator file)."),
)}


def get_table(name: str) -> Table:
    if name not in TABLES:
        raise ConfigError(f"TABLE must be one of {', '.join(TABLES)}, got {name!r}")
    return TABLES[name]


def table_configs(table: Table, configs: Path, only: list[str]) -> list[Path]:
    """The table's configs that exist under ``configs``, narrowed to the stems in ``only``."""
    found = table.configs(configs)
    if only:
        unknown = sorted(set(only) - {p.stem for p in found})
        if unknown:
            raise ConfigError(f"--only {','.join(unknown)}: not a config of table {table.name} "
                              f"(its configs: {', '.join(p.stem for p in found)})")
        found = [p for p in found if p.stem in only]
    if not found:
        raise ConfigError(f"table {table.name} has no config under {configs}")
    return found


# ----- the development table: every localising or image-level config across categories ---
@dataclass(frozen=True)
class DevelopData:
    """One column of ``adlight benchmark develop``: a category under ``--root``.

    ``image_size`` (``None``: the config's own) is set as ``data.image_size`` and as every
    backbone's ``input_size``; a config without a backbone (a network built for square
    images) keeps its own square size where the column's is not square. ``data_config``:
    the column reads its whole ``data`` block from that config (another datamodule).
    """

    key: str  # config stem suffix and run folder
    name: str  # column header
    folder: str  # under --root
    category: str | None = None
    image_size: int | list[int] | None = None
    data_config: str | None = None
    has_masks: bool = True


#: the development table's columns (a new category is one line here)
DEVELOP_DATA: tuple[DevelopData, ...] = (
    DevelopData("bottle_256", "bottle 256", "mvtec_ad", "bottle"),
    DevelopData("bottle_512", "bottle 512", "mvtec_ad_512", "bottle", 512),
    DevelopData("screw", "screw", "mvtec_ad_image_level", "screw", has_masks=False),
    # its 256 x 640 surfaces at half size, aspect kept: PatchCore at [640, 256] has 4x the
    # candidates and 16x the coreset work of [320, 128] (one fit took ~8 min here under load at
    # [320, 128])
    DevelopData("kolektor", "KolektorSDD", "kolektor_sdd", "commutator", [320, 128]),
    # at the HAM10000 configs' 128 px (the copy's images are 200 x 150)
    DevelopData("ham10000", "HAM10000", "ham10000", image_size=128,
                data_config="patch_features/ham10000_patchcore.yaml", has_masks=False),
)

#: the development table's rows: every shipped MVTec-layout config (``configs/*/mvtec_*.yaml``),
#: so a new family's config is a row by being there; left out, with the reason:
DEVELOP_EXCLUDED = {
    "mvtec_ae_l2_generated": "needs a DCGAN run's generator file first",
    "mvtec_small_cnn": "supervised: trains on anomalous images",
}

#: a stem is ``<config stem><DEVELOP_SEPARATOR><data key>``
DEVELOP_SEPARATOR = "__"
BACKBONE_SIZE_KEY = ("backbone", "init_args", "input_size")


def develop_configs(configs: Path) -> list[Path]:
    """The development table's family configs (its rows), in path order."""
    return sorted(p for p in configs.glob("*/mvtec_*.yaml") if p.stem not in DEVELOP_EXCLUDED)


def _backbone_size_paths(node: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Where a resolved config sets a backbone's ``input_size`` (any depth under ``model``):
    under a ``backbone`` key, or in any ``adlight.nets.Backbone`` (STPM's ``teacher`` and
    ``student``, which must have one size)."""
    found = []
    if isinstance(node, dict):
        init_args = node.get("init_args")
        if (str(node.get("class_path", "")).rsplit(".", 1)[-1] == "Backbone" and path[-1:] != ("backbone",)
                and isinstance(init_args, dict) and "input_size" in init_args):
            found.append((*path, "init_args", "input_size"))
        if path[-2:] == BACKBONE_SIZE_KEY[:2] and "input_size" in node:
            found.append((*path, "input_size"))
        for key, value in node.items():
            found += _backbone_size_paths(value, (*path, str(key)))
    return found


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    out: Any = value
    for key in reversed(path):
        out = {key: out}
    return out


def develop_config(family: Path, data: DevelopData, root: Path, configs: Path) -> dict[str, Any]:
    """The YAML of one run of the development table: the family's config on ``data``."""
    from adlight.cli.config_files import load_config, merge

    resolved = load_config(family)
    if data.data_config:
        block = dict(load_config(configs / data.data_config)["data"])
        block["init_args"] = {**block.get("init_args", {}), "root": str(root / data.folder)}
        data_block = block
    else:
        data_block = {"init_args": {"root": str(root / data.folder), "category": data.category}}
    out: dict[str, Any] = {"base": str(family.resolve()), "data": data_block}
    sizes = _backbone_size_paths(resolved.get("model"), ("model",))
    size = data.image_size
    square = not isinstance(size, list) or size[0] == size[1]
    if size is not None and (sizes or square):  # a square-only network keeps its own size
        copy = (lambda: list(size)) if isinstance(size, list) else (lambda: size)  # no YAML anchors
        out["data"] = merge(out["data"], {"init_args": {"image_size": copy()}})
        for path in sizes:
            out = merge(out, _nested(path, copy()))
    return out


def write_develop_configs(configs: Path, root: Path, output: Path, only: list[str]) -> list[Path]:
    """Every (family config, column) run as a config file under ``output/configs``.

    ``only``: config stems, column keys or ``<stem>__<key>`` names to keep (empty: all)."""
    import yaml

    folder = output / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for family in develop_configs(configs):
        for data in DEVELOP_DATA:
            stem = f"{family.stem}{DEVELOP_SEPARATOR}{data.key}"
            if only and not {family.stem, data.key, stem} & set(only):
                continue
            path = folder / f"{stem}.yaml"
            text = yaml.safe_dump(develop_config(family, data, root, configs), sort_keys=False)
            path.write_text(f"# adlight benchmark develop: {family.name} on {data.name}\n{text}")
            written.append(path)
    if not written:
        raise ConfigError(f"--only {','.join(only)}: no config stem, column key ("
                          f"{', '.join(d.key for d in DEVELOP_DATA)}) or run of the development table")
    return written


def _gigabytes(value: Any) -> float | None:
    return float(value) / 1e9 if is_number(value) else None


def _develop_cells(stem, point, report):
    family, _, key = stem.partition(DEVELOP_SEPARATOR)
    data = next((d for d in DEVELOP_DATA if d.key == key), None)
    column = data.name if data else key
    metrics = [("image AUROC", "image_AUROC")]
    if data is None or data.has_masks:
        metrics += [("pixel AUROC", "pixel_AUROC"), ("pixel AUPRO", "pixel_AUPRO")]
    cells: dict[Cell, float | None] = {}
    for name, metric in metrics:
        cells[(f"{name}, validation split", family, column)] = _get(report, "validation", metric)
        cells[(f"{name}, test split", family, column)] = _get(report, metric)
    fit, test = _get(report, "run_cost", "fit_seconds"), _get(report, "run_cost", "test_seconds")
    cells[("fit + test seconds", family, column)] = None if fit is None or test is None else fit + test
    cells[("peak RSS (GB)", family, column)] = _gigabytes((report or {}).get("run_cost", {}).get("peak_rss_bytes"))
    return cells


DEVELOP = Table(
    "develop", "Development table: every localising or image-level config across categories",
    develop_configs, lambda root: {}, lambda root: {}, _develop_cells,
    quick=QUICK_EPOCHS,
    mean_over={f"{name}, {split} split": "columns" for name in ("image AUROC", "pixel AUROC", "pixel AUPRO")
               for split in ("validation", "test")},
    notes="Recipes are chosen on the validation split's numbers, never on the test split's. "
          "Columns: " + "; ".join(
              f"{d.name} = {d.folder}/{d.category or ''}"
              + (f" at {d.image_size}" if d.image_size else "")
              + (f" (data block of {d.data_config})" if d.data_config else "")
              for d in DEVELOP_DATA)
          + ". A size is set as data.image_size and every backbone input_size; a config "
          "without a backbone keeps its own square size where the column's is not square. "
          "Pixel columns only where the category has masks; a mean over the categories that "
          "have the figure. Seconds are wall-clock (fit, then test, in the run's own process) "
          "and peak RSS that process's (getrusage); the run_cost.json of adlight.callbacks.RunCost. "
          "Left out: " + "; ".join(f"{k} ({v})" for k, v in DEVELOP_EXCLUDED.items()) + ".",
    derive=write_develop_configs, paper_column=False,
    extra_set={"trainer.callbacks+": "adlight.callbacks.RunCost"},
)
TABLES[DEVELOP.name] = DEVELOP
