"""Issue 13's acceptance battery: hostile input the issue does not spell out, run as a user would.

Every row is an ``adlight`` command line run from a fresh folder on input it wrote under
``in/``, through ``adlight.cli.main`` (the console script's entry point; the rows marked
``console`` run the installed ``adlight`` script in a subprocess, which costs seconds of imports
each). It must end in one ``adlight: error: ...`` line naming the thing (exit 2, no traceback)
or in a correct result that the row checks. No row may change, add or remove a file under
``in/`` or in the shared fitted run, and a failed run leaves no ``version_N`` folder. One row
fits a tiny model, the fixture another. The table of what each row gives is ``docs/bad_input.md``.
Over 300 lines on purpose: each row's builder sits in this file beside the table that lists it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from synthetic import make_mvtec_tree, normal_image

from adlight.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
AE = CONFIGS / "fadaeinejad" / "mvtec_ae_l2.yaml"
QUICKSTART = CONFIGS / "quickstart.yaml"
SIZE = 32
ADLIGHT = str(Path(sys.executable).parent / "adlight")


def tiny(root: Path | str, out: str = "out") -> list[str]:
    """The shipped AE config at 32 px for one epoch on CPU, writing under ``out``."""
    return [f"--data.root={root}", f"--data.image_size={SIZE}", "--data.loader.batch_size=4",
            "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1",
            "--trainer.accelerator=cpu", f"--trainer.default_root_dir={out}",
            "--trainer.enable_progress_bar=false"]


def adlight(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([ADLIGHT, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A tiny MVTec tree and one short fit of the shipped AE on it (its last.ckpt)."""
    base = tmp_path_factory.mktemp("battery")
    root = make_mvtec_tree(base / "mvtec", n_train=8, n_good_test=4, defects={"scratch": 4}, size=SIZE)
    main(["fit", f"--config={AE}", *tiny(root, str(base / "fit")), "--test_after_fit=false"])
    return {"root": root, "ckpt": next((base / "fit").rglob("last.ckpt")), "run": base / "fit"}


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def _copy_root(tmp: Path, shared: dict[str, Path]) -> Path:
    return Path(shutil.copytree(shared["root"], tmp / "in" / "mvtec"))


# ----------------------------------------------------------------------------- row builders
# each takes (tmp, shared) and returns the argument list after ``adlight``; inputs go to tmp/in


def config_file(text: str, name: str = "exp.yaml"):
    return lambda tmp, shared: ["fit", f"--config={_write(tmp / 'in' / name, text)}", *tiny(shared["root"])]


def base_loop(tmp, shared):
    _write(tmp / "in" / "a.yaml", "base: b.yaml\ntrainer: {max_epochs: 1}\n")
    _write(tmp / "in" / "b.yaml", f"base: a.yaml\nmodel: {{}}\n# {AE}\n")
    return ["fit", f"--config={tmp / 'in' / 'a.yaml'}", *tiny(shared["root"])]


def config_is_a_folder(tmp, shared):
    (tmp / "in" / "configs").mkdir(parents=True)
    return ["fit", f"--config={tmp / 'in' / 'configs'}", *tiny(shared["root"])]


def ae_with(*extra: str, subcommand: str = "fit"):
    return lambda tmp, shared: [subcommand, f"--config={AE}", *tiny(shared["root"]),
                                *(e.format(tmp=tmp, **shared) for e in extra)]


def root_is_a_file(tmp, shared):
    _write(tmp / "in" / "mvtec.zip", b"PK\x03\x04 not really")
    return ["fit", f"--config={AE}", *tiny(tmp / "in" / "mvtec.zip")]


def zero_byte_train_image(tmp, shared):
    root = _copy_root(tmp, shared)
    (root / "bottle" / "train" / "good" / "003.png").write_bytes(b"")
    return ["fit", f"--config={AE}", *tiny(root)]


def table(rows: list[list[str]], header: list[str], encoding: str = "utf-8", delimiter: str = ",",
          **init_args):
    """A TableDataModule over the shared tree's images, written as ``in/table.csv``."""
    def build(tmp, shared):
        images = sorted((shared["root"] / "bottle").rglob("*.png"))
        images = [p for p in images if "ground_truth" not in p.parts]
        body = [header] + [[str(p), "normal" if "good" in p.parts else "defect"] for p in images]
        path = tmp / "in" / "table.csv"
        path.parent.mkdir(parents=True)
        with path.open("w", encoding=encoding, newline="") as f:
            csv.writer(f, delimiter=delimiter).writerows(rows or body)
        config = {"class_path": "adlight.data.TableDataModule",
                  "init_args": {"table": str(path), "image_size": SIZE, **init_args}}
        # tested with the shared checkpoint: reading the table is what the row is about
        return ["test", f"--config={AE}", *tiny(shared["root"])[1:], f"--data={json.dumps(config)}",
                "--model.pixel_threshold=null", f"--ckpt_path={shared['ckpt']}"]
    return build


def predict_over(make: Callable[[Path], Path], *extra: str):
    def build(tmp, shared):
        return ["predict", f"--config={AE}", *tiny(shared["root"]), f"--ckpt_path={shared['ckpt']}",
                f"--data.predict_dir={make(tmp / 'in')}", *extra]
    return build


def _images(folder: Path, n: int = 2) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(normal_image(SIZE, rng)).save(folder / f"{i:03d}.png")
    return folder


def _symlink_loop(folder: Path) -> Path:
    _images(folder)
    os.symlink(folder, folder / "loop", target_is_directory=True)
    return folder


def _odd_images(folder: Path) -> Path:
    """The same texture stored as 16-bit gray, CMYK JPEG, palette, RGBA and large."""
    rgb = normal_image(SIZE, np.random.default_rng(1))
    folder.mkdir(parents=True)
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    gray = np.asarray(Image.fromarray(rgb).convert("L"))
    Image.fromarray(gray).save(folder / "b_gray8.png")
    Image.fromarray(gray.astype(np.uint16) * 257).save(folder / "c_gray16.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "d_cmyk.jpg", quality=100)
    Image.fromarray(rgb).convert("P").save(folder / "e_palette.png")
    Image.fromarray(rgb).convert("RGBA").save(folder / "f_rgba.png")
    Image.fromarray(rgb).resize((2400, 2400), Image.NEAREST).save(folder / "g_large.png")
    (folder / "notes.txt").write_text("not an image\n")
    (folder / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    return folder


def _non_utf8_name(folder: Path) -> Path:
    _images(folder)
    Image.fromarray(normal_image(SIZE, np.random.default_rng(2))).save(
        os.fsencode(folder) + b"/caf\xe9_latin1.png")
    return folder


def _one_file(folder: Path) -> Path:
    return _images(folder) / "000.png"


def compare(*names: str, out: str = "out"):
    def build(tmp, shared):
        (tmp / "in" / "notes").mkdir(parents=True)
        (tmp / "in" / "notes" / "readme.txt").write_text("not a run\n")
        dirs = [str(tmp / "in" / n) if n != "{run}" else str(shared["run"]) for n in names]
        return ["compare", *dirs, f"--out={out.format(**{'in': tmp / 'in'})}"]
    return build


def sweep(*args: str, spec: str | None = None):
    def build(tmp, shared):
        file = [str(_write(tmp / "in" / "sweep.yaml", spec))] if spec is not None else []
        return ["sweep", *file, *args, "--dry-run"]
    return build


# ----------------------------------------------------------------------------- result checks


def predict_scores(expected: int, same_score: tuple[str, ...] = ()):
    """scores.csv has ``expected`` rows, all scored; the files named in ``same_score`` score alike."""
    def check(tmp: Path, out: str) -> None:
        rows = list(csv.DictReader(next((tmp / "out").rglob("scores.csv")).open(encoding="utf-8")))
        assert len(rows) == expected, rows
        assert all(r["score"] and not r.get("error") for r in rows), rows
        scores = {Path(r["path"]).name: float(r["score"]) for r in rows}
        group = [scores[name] for name in same_score] or [0.0]
        assert group == pytest.approx([group[0]] * len(group), rel=1e-3, abs=1e-5), scores
    return check


def _warned(err: str, words: str) -> None:
    assert any(words in line for line in err.splitlines()), err


def split_of(n_images: int):
    """The table was read as two columns: every image is in the run's split.csv."""
    def check(tmp: Path, out: str) -> None:
        rows = list(csv.DictReader(next((tmp / "out").rglob("split.csv")).open()))
        assert len(rows) == n_images, rows
    return check


@dataclass(frozen=True)
class Hostile:
    """One hostile command line: ``build(tmp, shared)`` writes its input under ``tmp/in`` and
    returns the arguments; ``code`` 2 needs one error line holding every one of ``words``
    (``{in}`` is the input folder); ``code`` 0 needs ``check(tmp, stdout)`` to pass."""

    name: str
    build: Callable
    code: int
    words: tuple[str, ...] = ()
    check: Callable[[Path, str], None] | None = None
    console: bool = False


BATTERY = [
    # config files
    Hostile("yaml_tab_indent", config_file("trainer:\n\tmax_epochs: 1\n"), 2,
            ("exp.yaml", "YAML", "line 2"), console=True),
    Hostile("yaml_unclosed_bracket", config_file("trainer: {max_epochs: 1\n"), 2, ("exp.yaml", "YAML", "line 2")),
    Hostile("yaml_top_level_list", config_file("- trainer\n- model\n"), 2, ("exp.yaml", "mapping")),
    Hostile("config_base_loop_through_two_files", base_loop, 2, ("a.yaml", "base")),
    Hostile("config_is_a_folder", config_is_a_folder, 2, ("{in}/configs", "not a file")),
    Hostile("config_missing_file", lambda tmp, s: ["fit", f"--config={tmp}/in/exp.yml", *tiny(s["root"])], 2,
            ("{in}/exp.yml", "does not exist")),
    Hostile("config_base_names_a_folder", config_file("base: .\n"), 2, ("exp.yaml", "base")),
    # class paths and subcommands
    Hostile("model_class_path_typo", ae_with("--model.class_path=adlight.models.AutoencoderModle"), 2,
            ("adlight.models.AutoencoderModle", "did you mean 'adlight.models.AutoencoderModel'?"),
            console=True),
    Hostile("data_class_path_typo", ae_with("--data.class_path=adlight.data.MVTecDatamodule"), 2,
            ("adlight.data.MVTecDatamodule", "did you mean 'adlight.data.MVTecDataModule'?")),
    Hostile("unknown_subcommand", lambda tmp, s: ["train", f"--config={AE}"], 2, ("train", "fit")),
    # values
    Hostile("seed_not_a_number", ae_with("--seed_everything=abc"), 2, ("seed_everything", "abc")),
    Hostile("image_size_zero", ae_with("--data.image_size=0"), 2, ("image_size", "0")),
    Hostile("image_size_one", ae_with("--data.image_size=1"), 2, ("image_size", "1")),
    Hostile("image_size_not_a_multiple_of_the_strides", ae_with("--data.image_size=33"), 2,
            ("image_size", "33")),
    Hostile("batch_size_zero", ae_with("--data.loader.batch_size=0"), 2, ("batch_size", "0")),
    Hostile("val_fraction_above_one", ae_with("--data.val_fraction=1.5"), 2, ("val_fraction", "1.5")),
    Hostile("category_with_a_slash", ae_with("--data.category=bottle/train"), 2, ("category", "not a path", "'bottle/train'")),
    Hostile("channels_two", ae_with("--data.channels=2"), 2, ("channels", "2")),
    # devices
    Hostile("accelerator_gpu_without_gpu", ae_with("--trainer.accelerator=gpu"), 2, ("gpu",)),
    Hostile("devices_not_a_number", ae_with("--trainer.devices=abc"), 2, ("trainer", "devices")),
    # Lightning warns and trains in bf16-mixed, which CPUs have
    Hostile("precision_16_mixed_on_cpu", ae_with("--trainer.precision=16-mixed", "--test_after_fit=false"), 0,
            check=lambda tmp, out: next((tmp / "out").rglob("last.ckpt"))),
    # data
    Hostile("root_is_a_file", root_is_a_file, 2, ("{in}/mvtec.zip", "is a file")),
    Hostile("root_missing", lambda tmp, s: ["fit", f"--config={AE}", *tiny(tmp / "in" / "mvtec")], 2,
            ("{in}/mvtec",)),
    Hostile("zero_byte_train_image", zero_byte_train_image, 2, ("{in}/mvtec/bottle/train/good/003.png",)),
    Hostile("table_missing_label_column", table([], ["path", "class"]), 2, ("table.csv", "label")),
    Hostile("table_with_semicolons", table([], ["path", "label"], delimiter=";"), 0, check=split_of(16)),
    Hostile("table_with_bom_and_tabs", table([], ["path", "label"], encoding="utf-8-sig", delimiter="\t"), 0,
            check=split_of(16)),
    # checkpoints and predict
    Hostile("ckpt_path_is_a_config", ae_with(f"--ckpt_path={AE}", subcommand="test"), 2,
            ("mvtec_ae_l2.yaml", "not a file torch.save writes")),
    Hostile("ckpt_last_without_runs", ae_with("--ckpt_path=last", subcommand="test"), 2,
            ("ckpt_path last", "no last.ckpt", "out"), console=True),
    Hostile("predict_dir_is_one_image", predict_over(_one_file), 2, ("{in}/000.png", "not a directory")),
    Hostile("predict_dir_with_a_symlink_loop", predict_over(_symlink_loop), 0, check=predict_scores(2)),
    Hostile("predict_file_name_not_utf8", predict_over(_non_utf8_name), 0, check=predict_scores(3)),
    Hostile("predict_16bit_cmyk_palette_rgba_large", predict_over(_odd_images), 0,
            check=predict_scores(7, ("b_gray8.png", "c_gray16.png"))),
    # a typo's 100000 worker processes would freeze the machine: capped at its CPUs, with a warning
    Hostile("num_workers_far_above_the_cpus", predict_over(_images, "--data.loader.num_workers=100000"), 0,
            check=lambda tmp, err: predict_scores(2)(tmp, err) or _warned(err, "loader.num_workers 100000")),
    # other commands
    Hostile("compare_a_folder_that_is_no_run", compare("notes", "{run}"), 2, ("{in}/notes",)),
    Hostile("compare_one_run", compare("{run}"), 2, ("two run directories", "got 1")),
    Hostile("compare_out_is_a_file", compare("{run}", "{run}", out="{in}/notes/readme.txt"), 2,
            ("--out", "{in}/notes/readme.txt", "is a file")),
    Hostile("sweep_grid_without_values", sweep(f"--config={AE}", "--grid", "seed_everything"), 2,
            ("seed_everything",)),
    Hostile("sweep_file_is_a_list", sweep(spec="- configs/quickstart.yaml\n"), 2, ("sweep.yaml",)),
]


def _ids(rows) -> list[str]:
    return [(row.values[0] if hasattr(row, "values") else row).name for row in rows]


def _run(args: list[str], cwd: Path, console: bool, capfd) -> tuple[int, str]:
    """Exit code and stderr of ``adlight ARGS`` run in ``cwd``; an exception that is not an
    exit escapes, as the console script would print its traceback."""
    if console:
        done = adlight(args, cwd)
        return done.returncode, done.stderr
    old = Path.cwd()
    os.chdir(cwd)
    capfd.readouterr()
    try:
        with warnings.catch_warnings(record=True) as caught:  # printed to stderr by the script
            warnings.simplefilter("always")
            main(args)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    finally:
        os.chdir(old)
    return code, "".join(f"UserWarning: {w.message}\n" for w in caught) + capfd.readouterr().err


@pytest.mark.parametrize("case", BATTERY, ids=_ids(BATTERY))
def test_hostile_input_as_a_user_gives_it(case: Hostile, shared, tmp_path, capfd):
    args = case.build(tmp_path, shared)
    (tmp_path / "in").mkdir(exist_ok=True)
    before, shared_before = _digests(tmp_path / "in"), _digests(shared["run"])
    code, err = _run(args, tmp_path, case.console, capfd)
    assert "Traceback" not in err, err[-3000:]
    assert code == case.code, err[-3000:]
    if case.code == 2:
        # the sweep's own parser says "adlight sweep: error:"
        errors = [line for line in err.splitlines() if re.match(r"adlight( \w+)?: error", line)]
        assert len(errors) == 1 and errors[-1] == err.strip().splitlines()[-1], err[-3000:]
        for word in case.words:
            assert word.format(**{"in": tmp_path / "in"}) in errors[-1], (word, errors[-1])
        assert not list(tmp_path.rglob("version_*")), "a failed run left a version folder"
    else:
        case.check(tmp_path, err)
    assert _digests(tmp_path / "in") == before, "an input file was changed, added or removed"
    assert _digests(shared["run"]) == shared_before, "the fitted run was changed"
