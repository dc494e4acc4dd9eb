"""Issue 23: the second round of trust, one table per class of hostile use, run as a user would.

Each row asserts the exit code, the one ``adlight: error: ...`` line (or the correct result) and
that nothing was written or lost: no input file changed, no ``version_N`` left by a failed run,
no half-written checkpoint or export. Write failures are simulated by patching the writer so that
it writes half the bytes and then raises ``ENOSPC``, as a full disk does (CI runs as root, where
a read-only folder would not refuse a write). The concurrency case runs two real processes.
The table of what each case gives is ``docs/bad_input.md`` ("Second round").
"""

from __future__ import annotations

import csv
import errno
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from synthetic import make_mvtec_tree, normal_image

from adlight.cli import main
from adlight.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]
AE = REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml"
PATCHCORE = REPO / "configs" / "patch_features" / "mvtec_patchcore.yaml"
PADIM = REPO / "configs" / "patch_features" / "mvtec_padim.yaml"
SIZE = 32
ADLIGHT = str(Path(sys.executable).parent / "adlight")


def tiny(root: Path, out: Path, epochs: int = 1) -> list[str]:
    return [f"--data.root={root}", f"--data.image_size={SIZE}", "--data.loader.batch_size=4",
            f"--trainer.max_epochs={epochs}", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={out}", "--trainer.enable_progress_bar=false"]


def patch_tiny(root: Path, out: Path) -> list[str]:
    return [*tiny(root, out), f"--model.features.init_args.backbone.init_args.input_size={SIZE}"]


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> dict[str, Path]:
    """A tiny MVTec tree, one short fit of the shipped AE (its last.ckpt) and its ONNX export."""
    base = tmp_path_factory.mktemp("round2")
    root = make_mvtec_tree(base / "mvtec", n_train=8, n_good_test=4, defects={"scratch": 4}, size=SIZE)
    main(["fit", f"--config={AE}", *tiny(root, base / "fit"), "--test_after_fit=false"])
    ckpt = next((base / "fit").rglob("last.ckpt"))
    pytest.importorskip("onnxruntime")
    main(["export", f"--config={AE}", f"--data.root={root}", f"--data.image_size={SIZE}",
          f"--ckpt_path={ckpt}", "--format=onnx", f"--out={base / 'exported'}"])
    return {"root": root, "ckpt": ckpt, "run": base / "fit", "exported": base / "exported", "base": base}


def digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def run_cli(args: list[str], capfd, cwd: Path | None = None) -> tuple[int, str]:
    """Exit code and stderr (with warnings) of ``adlight ARGS`` in this process."""
    old = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    capfd.readouterr()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main(args)
        code = 0
    except SystemExit as exit_info:
        code = exit_info.code
    finally:
        os.chdir(old)
    return code, "".join(f"UserWarning: {w.message}\n" for w in caught) + capfd.readouterr().err


def one_error_line(err: str, *words: str) -> str:
    assert "Traceback" not in err, err[-3000:]
    errors = [line for line in err.splitlines() if re.match(r"adlight( [\w-]+)?: error", line)]
    assert len(errors) == 1 and errors[0] == err.strip().splitlines()[-1], err[-3000:]
    for word in words:
        assert word in errors[0], (word, errors[0])
    return errors[0]


def half_written_then_full(real, after: int = 0):
    """A ``torch.save`` that, from its ``after``-th call on, writes half the bytes and then
    raises ENOSPC as a full disk does."""
    calls = {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= after or not isinstance(f, (str, os.PathLike)):
            return real(obj, f, *args, **kwargs)
        buffer = io.BytesIO()
        real(obj, buffer)
        Path(f).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    return save


# ============================================================ runs never touch each other's files


def test_two_processes_fit_into_one_root_and_a_failing_one_removes_only_its_own_version(shared, tmp_path):
    """A fails while B's run folder holds only bookkeeping; A's clean-up must leave B's alone."""
    out, signal, a_done = tmp_path / "runs", tmp_path / "b_started", tmp_path / "a_done"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    base = ["fit", f"--config={AE}", *tiny(shared["root"], out, epochs=1), "--test_after_fit=false"]
    fail = json.dumps({"class_path": "killswitch.FailOnceFileAppears", "init_args": {"path": str(signal)}})
    wait = json.dumps({"class_path": "killswitch.SignalThenWait",
                       "init_args": {"signal": str(signal), "wait_for": str(a_done)}})
    a = subprocess.Popen([ADLIGHT, *base, f"--trainer.callbacks+={fail}"], env=env, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not list((out / "lightning_logs").glob("version_*")) and time.monotonic() < deadline:
        time.sleep(0.2)  # A has claimed its version before B starts
    b = subprocess.Popen([ADLIGHT, *base, f"--trainer.callbacks+={wait}"], env=env, cwd=tmp_path,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, a_err = a.communicate(timeout=300)
        assert a.returncode != 0 and "failing on purpose" in a_err, a_err[-2000:]
        # A is gone, B waits at its first batch: B's folder is still there, A's is not
        versions = sorted(p.name for p in (out / "lightning_logs").glob("version_*"))
        assert versions == ["version_1"], versions
    finally:
        a_done.touch()
        _, b_err = b.communicate(timeout=300)
    assert b.returncode == 0, b_err[-3000:]
    assert (out / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt").is_file()
    assert not (out / "lightning_logs" / "version_0").exists()


def test_export_over_an_existing_export_refuses_and_changes_nothing(shared, tmp_path, capfd):
    out = tmp_path / "exported"
    out.mkdir()
    (out / "metadata.json").write_text(json.dumps({"format": "onnx", "model_file": "model.onnx"}))
    (out / "model.onnx").write_bytes(b"another model")
    before = digests(out)
    code, err = run_cli(["export", f"--config={AE}", f"--data.root={shared['root']}",
                         f"--data.image_size={SIZE}", f"--ckpt_path={shared['ckpt']}",
                         "--format=torchscript", f"--out={out}"], capfd)
    assert code == 2
    one_error_line(err, f"--out {out}", "already holds files", "metadata.json")
    assert digests(out) == before and sorted(p.name for p in tmp_path.iterdir()) == ["exported"]


# ============================================================ write failures: one line, nothing truncated


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_previous_one(shared, tmp_path,
                                                                                      capfd, monkeypatch):
    monkeypatch.setattr(torch, "save", half_written_then_full(torch.save, after=1))
    code, err = run_cli(["fit", f"--config={AE}", *tiny(shared["root"], tmp_path / "runs", epochs=3),
                         "--test_after_fit=false"], capfd)
    monkeypatch.undo()
    assert code == 2
    last = next((tmp_path / "runs").rglob("last.ckpt"))
    one_error_line(err, f"cannot write checkpoint {last}", "the disk is full", "previous one is kept")
    assert not list((tmp_path / "runs").rglob("*.partial")), "a partial checkpoint was left"
    saved = torch.load(last, map_location="cpu", weights_only=False)
    assert saved["epoch"] == 0  # the first epoch's checkpoint, whole


def test_ckpt_path_last_skips_a_truncated_last_ckpt(shared, tmp_path, capfd):
    """A truncated newest last.ckpt (left by another writer) is not what a resume picks."""
    from adlight.callbacks.resume import find_last_checkpoint

    runs = tmp_path / "runs" / "lightning_logs"
    good = runs / "version_0" / "checkpoints" / "last.ckpt"
    good.parent.mkdir(parents=True)
    good.write_bytes(shared["ckpt"].read_bytes())
    bad = runs / "version_1" / "checkpoints" / "last.ckpt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(shared["ckpt"].read_bytes()[:5000])
    os.utime(good, (1, 1))  # the truncated one is the newest
    with pytest.warns(UserWarning, match="truncated or corrupt"):
        assert find_last_checkpoint(runs) == good


def test_a_full_disk_while_exporting_is_one_line_and_leaves_no_folder(shared, tmp_path, capfd, monkeypatch):
    from adlight.export import writers

    def full(graph, example, path):
        Path(path).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setitem(writers.WRITERS, "torchscript", full)
    code, err = run_cli(["export", f"--config={AE}", f"--data.root={shared['root']}",
                         f"--data.image_size={SIZE}", f"--ckpt_path={shared['ckpt']}",
                         "--format=torchscript", f"--out={tmp_path / 'exported'}"], capfd)
    assert code == 2
    one_error_line(err, f"export to {tmp_path / 'exported'} failed", "model.pt", "the disk is full")
    assert list(tmp_path.iterdir()) == [], "a partial export was left"


def test_a_full_disk_while_writing_the_test_report_is_one_line(shared, tmp_path, capfd, monkeypatch):
    from adlight.callbacks import report

    def full(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(report, "write_whole", full)
    code, err = run_cli(["test", f"--ckpt_path={shared['ckpt']}",
                         f"--trainer.default_root_dir={tmp_path / 'runs'}"], capfd)
    assert code == 2
    one_error_line(err, "test report: cannot write", "metrics.json", "the disk is full")
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").rglob("metrics.json"))


# ============================================================ exported models refuse what they cannot score

U8 = np.random.default_rng(0).integers(0, 256, (2, SIZE, SIZE, 3), dtype=np.uint8)

ARRAYS = [  # (name, array, None: scores as U8 / message words)
    ("uint8", U8, None),
    ("float_0_1", U8.astype(np.float32) / 255, None),
    ("uint16_rescaled", U8.astype(np.uint16) * 257, None),
    ("int64_8_bit_values", U8.astype(np.int64), None),
    ("float_0_255", U8.astype(np.float32), ("float32", "[0, 255]", "divide by 255")),
    ("float64_negative", U8.astype(np.float64) / 255 - 0.5, ("float64", "must be in [0, 1]")),
    ("int64_above_255", U8.astype(np.int64) * 4, ("int64", "[0, 1020]")),
    ("int16_negative", U8.astype(np.int16) - 300, ("int16", "[-300")),
    ("nan", np.where(U8 > 128, np.nan, 0.5).astype(np.float32), ("float32", "NaN or Inf")),
    ("inf", np.full((1, SIZE, SIZE, 3), np.inf, np.float32), ("NaN or Inf",)),
    ("bool", U8 > 100, ("dtype bool",)),
    ("empty_batch", np.zeros((0, SIZE, SIZE, 3), np.uint8), ("empty",)),
    ("empty_list", [], ("empty list",)),
]


@pytest.mark.parametrize(("name", "images", "words"), ARRAYS, ids=[a[0] for a in ARRAYS])
def test_the_inferencer_scores_a_documented_conversion_or_refuses_in_one_line(shared, name, images, words):
    from adlight.inference import Inferencer

    inferencer = Inferencer(shared["exported"])
    expected = inferencer.predict(U8)["score"]
    if words is None:
        np.testing.assert_allclose(inferencer.predict(images)["score"], expected, rtol=1e-5, atol=1e-6)
        return
    with pytest.raises(DataError) as error:
        inferencer.predict(images)
    assert "\n" not in str(error.value)
    for word in words:
        assert word in str(error.value), (word, str(error.value))


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, True, "4"])
def test_the_inferencer_refuses_a_bad_batch_size(shared, batch_size):
    from adlight.inference import Inferencer

    with pytest.raises(DataError, match=f"batch_size must be an int >= 1, got {re.escape(repr(batch_size))}"):
        Inferencer(shared["exported"]).predict(U8, batch_size=batch_size)


METADATA = [  # (field path, wrong value, words)
    (("input", "channels"), "3", "input.channels"),
    (("input", "height"), 32.0, "input.height"),
    (("input", "width"), -1, "input.width"),
    (("input",), [3, 32, 32], "field input must be an object"),
    (("outputs",), "score", "field outputs"),
    (("image_threshold", "value"), "0.5", "image_threshold.value"),
    (("pixel_threshold",), 0.5, "field pixel_threshold"),
    (("model_file",), "../model.onnx", "model_file"),
    (("model_file",), 7, "model_file"),
]


@pytest.mark.parametrize(("keys", "value", "words"), METADATA, ids=[f"{'.'.join(m[0])}={m[1]!r}" for m in METADATA])
def test_metadata_fields_of_the_wrong_type_are_one_line_naming_the_field(shared, tmp_path, keys, value, words):
    from adlight.inference import Inferencer

    folder = tmp_path / "exported"
    folder.mkdir()
    for path in shared["exported"].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    metadata = json.loads((folder / "metadata.json").read_text())
    node = metadata
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value
    (folder / "metadata.json").write_text(json.dumps(metadata))
    with pytest.raises((ConfigError, DataError)) as error:
        Inferencer(folder)
    assert isinstance(error.value, DataError) and isinstance(error.value, ConfigError)
    assert words in str(error.value) and "\n" not in str(error.value)


def test_exported_predict_refuses_a_bad_batch_size_and_checkpoint_arguments(shared, tmp_path, capfd):
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(U8[0]).save(images / "a.png")
    common = ["predict", f"--exported={shared['exported']}", f"--data.predict_dir={images}", f"--out={tmp_path}"]
    code, err = run_cli([*common, "--batch_size=0"], capfd)
    assert code == 2
    one_error_line(err, "--batch_size must be an int >= 1, got 0")
    code, err = run_cli([*common, f"--ckpt_path={shared['ckpt']}"], capfd)
    assert code == 2
    one_error_line(err, "--exported", "--ckpt_path", "drop --exported")
    assert not (tmp_path / "predictions").exists()


# ============================================================ every file of a predict folder is accounted for


def _predict_folder(folder: Path) -> dict[str, np.ndarray]:
    """PNG, WebP (lossless), GIF, an EXIF-rotated JPEG beside the same JPEG upright, a dangling
    and a looping symlink, and a text file."""
    folder.mkdir(parents=True)
    rgb = normal_image(SIZE, np.random.default_rng(3))
    rgb[:4, :8] = 255  # not symmetric: a rotation that is not undone changes the score
    Image.fromarray(rgb).save(folder / "a.png")
    Image.fromarray(rgb).save(folder / "b.webp", lossless=True)
    Image.fromarray(rgb).save(folder / "c.gif")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the stored pixels are turned the other way
    Image.fromarray(rgb).save(folder / "d_upright.jpg", quality=95)
    Image.fromarray(rgb).transpose(Image.ROTATE_90).save(folder / "e_exif_rotated.jpg", quality=95, exif=exif)
    os.symlink(folder / "missing.png", folder / "f_dangling.png")
    os.symlink("g_loop.png", folder / "g_loop.png")
    (folder / "notes.txt").write_text("not an image\n")
    return {"rgb": rgb}


@pytest.mark.parametrize("exported", [False, True], ids=["checkpoint", "exported"])
def test_every_file_of_a_predict_folder_is_scored_or_listed_with_its_error(shared, tmp_path, capfd, exported):
    folder = tmp_path / "in" / "images"
    _predict_folder(folder)
    before = digests(tmp_path / "in")
    if exported:
        args = ["predict", f"--exported={shared['exported']}", f"--data.predict_dir={folder}",
                f"--out={tmp_path / 'out'}"]
    else:
        args = ["predict", f"--ckpt_path={shared['ckpt']}", f"--data.predict_dir={folder}",
                f"--trainer.default_root_dir={tmp_path / 'out'}"]
    code, err = run_cli(args, capfd)
    assert code == 0, err[-3000:]
    rows = {Path(r["path"]).name: r for r in
            csv.DictReader(next((tmp_path / "out").rglob("scores.csv")).open(encoding="utf-8"))}
    assert sorted(rows) == ["a.png", "b.webp", "c.gif", "d_upright.jpg", "e_exif_rotated.jpg",
                            "f_dangling.png", "g_loop.png"]
    assert "symlink to" in rows["f_dangling.png"]["error"] and not rows["f_dangling.png"]["score"]
    assert "symlink loop" in rows["g_loop.png"]["error"] and not rows["g_loop.png"]["score"]
    scores = {name: float(row["score"]) for name, row in rows.items() if row["score"]}
    assert scores["b.webp"] == pytest.approx(scores["a.png"], rel=1e-6)  # lossless: the same pixels
    # the EXIF orientation is applied: the turned JPEG scores as the upright one (JPEG noise only)
    assert scores["e_exif_rotated.jpg"] == pytest.approx(scores["d_upright.jpg"], rel=0.05)
    for words in ("f_dangling.png", "g_loop.png", "notes.txt"):
        assert any(words in line for line in err.splitlines()), (words, err[-3000:])
    assert digests(tmp_path / "in") == before


# ============================================================ commands that run many runs say when they failed


def test_a_sweep_with_a_failed_run_exits_1_and_prints_its_reason(shared, tmp_path, capfd):
    args = ["sweep", f"--config={AE}", "--grid", "data.category=screw,bottle", "--cluster=inprocess",
            f"--output={tmp_path / 'sweep'}", *[f"--set={a[2:]}" for a in tiny(shared["root"], tmp_path)
                                                 if not a.startswith("--trainer.default_root_dir")],
            "--set=test_after_fit=true"]
    code, err = run_cli(args, capfd)
    assert code == 1, err[-3000:]
    assert "adlight sweep: 1 of 2 runs failed:" in err
    failed = [line for line in err.splitlines() if line.startswith("  mvtec_ae_l2/data.category=screw: ")]
    assert failed and "screw" in failed[0] and "does not exist" in failed[0], err[-3000:]
    assert (tmp_path / "sweep" / "sweep.csv").is_file()


SWEEP_REFUSALS = [  # (name, extra arguments, words of the one line)
    ("override_key_typo", ["--set=model.los=l2"], ("model.los", "did you mean 'loss'")),
    ("grid_value_of_the_wrong_choice", ["--grid", "model.loss=l2,l3"], ("model.loss=l3", "must be one of")),
    ("grid_key_without_values", ["--grid", "seed_everything="], ("seed_everything", "empty value")),
    ("grid_key_with_an_empty_value", ["--grid", "seed_everything=0,,1"], ("seed_everything", "empty value")),
]


@pytest.mark.parametrize(("name", "extra", "words"), SWEEP_REFUSALS, ids=[s[0] for s in SWEEP_REFUSALS])
def test_a_sweep_checks_every_run_before_launching_any(shared, tmp_path, capfd, name, extra, words):
    args = ["sweep", f"--config={AE}", "--cluster=inprocess", f"--output={tmp_path / 'sweep'}",
            f"--set=data.root={shared['root']}", *extra]
    code, err = run_cli(args, capfd)
    assert code == 2
    one_error_line(err, *words)
    assert not (tmp_path / "sweep").exists() or not list((tmp_path / "sweep").rglob("*.*")), "a run was launched"


def test_a_benchmark_with_failed_runs_exits_1_and_names_each(tmp_path, capfd, monkeypatch):
    from adlight.benchmark import command

    def failing(args):
        if "--print_config" in args:
            return None
        raise ConfigError("could not get timm's pretrained weights for 'vgg16'")

    monkeypatch.setattr(command, "summarise", lambda table, results: [])
    monkeypatch.setattr(command, "write_table", lambda folder, *a: (_write(folder / "t.md"), None))
    monkeypatch.setattr(command, "wilcoxon_rows", lambda table, results: [])
    with pytest.raises(SystemExit) as exit_info:
        command.main(["andrews3", "--root", str(tmp_path), "--only", "mnist_task1_gs", "--trials", "0",
                      "--output", str(tmp_path / "table"), "--cluster", "inprocess"], runner=failing)
    assert exit_info.value.code == 1
    err = capfd.readouterr().err
    assert "adlight benchmark: 1 of 1 runs failed:" in err
    assert "could not get timm's pretrained weights for 'vgg16'" in err.splitlines()[-1]


def _write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("table\n")
    return path


def test_compare_warns_when_the_runs_share_no_test_image(tmp_path, capfd):
    from adlight.report_page.page import RESULTS_NAME

    runs = []
    for name, paths in (("a", ["x/1.png", "x/2.png"]), ("b", ["y/1.png", "y/2.png"])):
        folder = tmp_path / name
        folder.mkdir()
        images = [{"path": p, "label": i % 2, "class": "good", "score": float(i), "index": i}
                  for i, p in enumerate(paths)]
        (folder / RESULTS_NAME).write_text(json.dumps({"report": {}, "thresholds": {}, "images": images}))
        runs.append(str(folder))
    code, err = run_cli(["compare", *runs, f"--out={tmp_path / 'page'}"], capfd)
    assert code == 0, err[-2000:]
    assert "share no test image" in err


# ============================================================ limits before work starts


def test_a_padim_fit_larger_than_free_memory_is_refused_before_extracting(shared, tmp_path, capfd, monkeypatch):
    from adlight.models import fitted_head, patch

    estimate = patch.PadimModel.fit_memory_bytes
    needed = []
    monkeypatch.setattr(patch.PadimModel, "fit_memory_bytes", lambda self, n: needed.append(estimate(self, n)) or needed[-1])
    # a third of what the fit needs is free
    monkeypatch.setattr(fitted_head, "available_bytes", lambda device=None: needed[0] // 3)
    extracted = []
    monkeypatch.setattr(patch.PatchModel, "head_features",
                        lambda self, batch: extracted.append(1) or pytest.fail("features were extracted"))
    code, err = run_cli(["fit", f"--config={PADIM}", *patch_tiny(shared["root"], tmp_path / "runs")], capfd)
    assert code == 2
    one_error_line(err, "PadimModel's fit needs about", "MB for 8 training images", "free on cpu",
                   "--model.features.init_args.backbone.init_args.input_size 16")
    assert not extracted and not list(tmp_path.rglob("version_*"))


# ============================================================ errors that a person can read

CONFIG_ERRORS = [  # (name, YAML model init_args, words)
    ("bad_choice", "loss: l3", ("model.loss=l3", "must be one of 'l2', 'l1_sparse', 'ssim', 'bce'")),
    ("key_typo", "los: l2", ("model.los", "did you mean 'loss'?", "accepted: network, loss")),
    ("class_path_to_nothing", "network: {class_path: adlight.nets.FadaeinejadAEE}",
     ("model.network.class_path=adlight.nets.FadaeinejadAEE", "did you mean 'adlight.nets.FadaeinejadAE'?")),
    ("class_path_module_missing", "network: {class_path: nowhere.Net}",
     ("model.network.class_path=nowhere.Net", "No module named 'nowhere'")),
]


@pytest.mark.parametrize(("name", "init_args", "words"), CONFIG_ERRORS, ids=[c[0] for c in CONFIG_ERRORS])
def test_a_config_error_is_one_line_naming_the_key_not_the_model_dict(shared, tmp_path, capfd, name, init_args,
                                                                       words):
    config = tmp_path / "in" / "exp.yaml"
    config.parent.mkdir()
    config.write_text(f"base: {AE}\nmodel:\n  init_args:\n    {init_args}\n")
    code, err = run_cli(["fit", f"--config={config}", *tiny(shared["root"], tmp_path / "runs")], capfd)
    assert code == 2
    line = one_error_line(err, *words)
    assert "{" not in line and "latent_dim" not in line, line  # no dump of the model's dict
    assert not (tmp_path / "runs").exists()


def test_adlight_help_lists_every_command(capfd):
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capfd.readouterr().out
    for command in ("fit", "validate", "test", "predict", "export", "sweep", "benchmark", "compare"):
        assert re.search(rf"^\s+{command}\b", out, re.M), (command, out[-2000:])


# ============================================================ Python API: load_from_checkpoint alone


def test_every_family_loads_from_its_checkpoint_alone(shared, tmp_path):
    from adlight import tracking
    from adlight.models import AutoencoderModel, PatchCoreModel, from_checkpoint

    # the models layer repeats the key (it does not import tracking): the two must agree
    assert from_checkpoint.CONFIG_STATE_KEY == tracking.CONFIG_STATE_KEY
    main(["fit", f"--config={PATCHCORE}", *patch_tiny(shared["root"], tmp_path / "pc"), "--test_after_fit=false"])
    for cls, path in ((AutoencoderModel, shared["ckpt"]), (PatchCoreModel, next((tmp_path / "pc").rglob("last.ckpt")))):
        model = cls.load_from_checkpoint(path)
        saved = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
        state = model.state_dict()
        assert type(model) is cls and set(saved) <= set(state)
        assert all(torch.equal(state[k], v) for k, v in saved.items()), cls
    with pytest.raises(Exception, match="holds a adlight.models.AutoencoderModel, not a PatchCoreModel"):
        PatchCoreModel.load_from_checkpoint(shared["ckpt"])
