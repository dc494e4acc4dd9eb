"""Hostile but realistic command lines (issue 13, the CLI part): checkpoints, arguments, output.

Each row of ``BAD_INPUT`` must end with exit code 2 and one ``adlight: error:`` line naming the
thing, no traceback, and no byte changed in the data or in the run that wrote the checkpoint.
"""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
AE = CONFIGS / "fadaeinejad" / "mvtec_ae_l2.yaml"
PATCHCORE = CONFIGS / "patch_features" / "mvtec_patchcore.yaml"
FITTED_LATENT = 16  # the shipped config says 500


def tiny(root, run_dir, size=32):
    return [f"--data.root={root}", f"--data.image_size={size}", "--data.loader.batch_size=4",
            "--trainer.max_epochs=1", "--trainer.check_val_every_n_epoch=1", "--trainer.accelerator=cpu",
            f"--trainer.default_root_dir={run_dir}", "--trainer.enable_progress_bar=false"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """One short fit shared by every row: data root, run folder, its last.ckpt, checkpoint files."""
    base = tmp_path_factory.mktemp("bad_input")
    root = make_mvtec_tree(base / "mvtec", n_train=8, n_good_test=4, defects={"scratch": 4}, size=32)
    main(["fit", f"--config={AE}", *tiny(root, base / "fit"), f"--model.network.init_args.latent_dim={FITTED_LATENT}"])
    run = next((base / "fit").rglob("metrics.json")).parent
    last = run / "checkpoints" / "last.ckpt"
    files = base / "files"
    files.mkdir()
    (files / "truncated.ckpt").write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (files / "corrupt.ckpt").write_bytes(bytes(range(256)) * 40)
    (files / "empty.ckpt").write_bytes(b"")
    torch.save(torch.load(last, weights_only=True)["state_dict"], files / "weights_only.pt")
    (files / "a_file").write_text("a user's file\n")
    bare = torch.load(last, weights_only=True)
    bare["callbacks"] = {}  # as written before checkpoints carried their run config
    torch.save(bare, files / "no_config.ckpt")
    return {"root": root, "run": run, "ckpt": last, "files": files, "base": base}


def _hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


# (id, subcommand, config, extra arguments, words the one line must hold); {ckpt}, {files}, {root}
# and {run} are filled in from the fixture
BAD_INPUT = [
    # checkpoints
    ("ckpt-missing", "test", AE, ["--ckpt_path={files}/nope.ckpt"], ["nope.ckpt", "does not exist"]),
    ("ckpt-directory", "test", AE, ["--ckpt_path={files}"], ["files", "directory"]),
    ("ckpt-truncated", "test", AE, ["--ckpt_path={files}/truncated.ckpt"], ["truncated.ckpt", "cannot be read"]),
    ("ckpt-corrupt", "predict", None, ["--ckpt_path={files}/corrupt.ckpt"], ["corrupt.ckpt", "cannot be read"]),
    ("ckpt-empty", "test", None, ["--ckpt_path={files}/empty.ckpt"], ["empty.ckpt", "empty"]),
    ("ckpt-state-dict", "test", AE, ["--ckpt_path={files}/weights_only.pt"],
     ["weights_only.pt", "not a Lightning checkpoint"]),
    ("ckpt-other-class", "test", PATCHCORE, ["--ckpt_path={ckpt}"],
     ["last.ckpt", "adlight.models.AutoencoderModel", "adlight.models.PatchCoreModel"]),
    ("ckpt-other-network", "test", AE, ["--ckpt_path={ckpt}"],
     ["last.ckpt", "latent_dim", f"={FITTED_LATENT}", "500", "config.yaml"]),
    ("ckpt-other-size", "test", AE, ["--ckpt_path={ckpt}", "--data.image_size=64",
                                     f"--model.network.init_args.latent_dim={FITTED_LATENT}"],
     ["last.ckpt", "does not fit the model", "network.", "shape", "config.yaml"]),
    ("ckpt-resume-other-network", "fit", AE, ["--ckpt_path={ckpt}"], ["last.ckpt", "latent_dim"]),
    ("ckpt-without-run-config", "test", None, ["--ckpt_path={files}/no_config.ckpt"],
     ["no_config.ckpt", "no run config", "--config"]),
    # arguments torch or Lightning reject deep inside
    ("lr-negative", "fit", AE, ["--model.optimizer.init_args.lr=-1"], ["model.optimizer", "learning rate", "-1"]),
    ("weight-decay-negative", "fit", AE, ["--model.optimizer.init_args.weight_decay=-0.5"],
     ["model.optimizer", "weight_decay", "-0.5"]),
    ("betas-above-one", "fit", AE, ["--model.optimizer.init_args.betas=[1.5, 0.9]"],
     ["model.optimizer", "beta", "1.5"]),
    ("max-epochs-negative", "fit", AE, ["--trainer.max_epochs=-3"], ["trainer.max_epochs", "-3"]),
    ("max-epochs-zero", "fit", AE, ["--trainer.max_epochs=0"], ["trainer.max_epochs", "0"]),
    ("max-steps-negative", "fit", AE, ["--trainer.max_steps=-5"], ["trainer.max_steps", "-5"]),
    ("min-epochs-negative", "fit", AE, ["--trainer.min_epochs=-2"], ["trainer.min_epochs", "-2"]),
    ("val-every-zero", "fit", AE, ["--trainer.check_val_every_n_epoch=0"], ["check_val_every_n_epoch", "0"]),
    ("accumulate-zero", "fit", AE, ["--trainer.accumulate_grad_batches=0"], ["accumulate_grad_batches", "0"]),
    ("log-every-negative", "fit", AE, ["--trainer.log_every_n_steps=-1"], ["log_every_n_steps", "-1"]),
    ("clip-negative", "fit", AE, ["--trainer.gradient_clip_val=-1"], ["gradient_clip_val", "-1"]),
    ("limit-batches-negative", "fit", AE, ["--trainer.limit_train_batches=-1"], ["limit_train_batches", "-1"]),
    ("val-interval-negative", "fit", AE, ["--trainer.val_check_interval=-1"], ["val_check_interval", "-1"]),
    ("max-time-garbage", "fit", AE, ["--trainer.max_time=abc"], ["trainer", "abc"]),
    ("sanity-steps-negative", "fit", AE, ["--trainer.num_sanity_val_steps=-5"], ["num_sanity_val_steps", "-5"]),
    ("eps-negative", "fit", AE, ["--model.optimizer.init_args.eps=-1"], ["model.optimizer", "epsilon", "-1"]),
    ("sgd-momentum-negative", "fit", AE, ["--model.optimizer.class_path=torch.optim.SGD",
                                          "--model.optimizer.init_args.lr=0.1",
                                          "--model.optimizer.init_args.momentum=-1"],
     ["model.optimizer", "momentum", "-1"]),
    ("devices-zero", "fit", AE, ["--trainer.devices=0"], ["devices", "0"]),
    ("seed-negative", "fit", AE, ["--seed_everything=-1"], ["seed_everything", "-1"]),
    ("batch-size-negative", "fit", AE, ["--data.loader.batch_size=-4"], ["batch_size", "-4"]),
    ("workers-negative", "fit", AE, ["--data.loader.num_workers=-1"], ["num_workers", "-1"]),
    # values the parser refuses: the argument and value, not the usage of every option
    ("precision-unknown", "fit", AE, ["--trainer.precision=bf17"], ["trainer.precision=bf17", "must be one of", "bf16-mixed"]),
    ("latent-dim-float", "fit", AE, ["--model.network.init_args.latent_dim=1.5"],
     ["model.network.latent_dim=1.5", "int"]),
    ("optimizer-unknown", "fit", AE, ["--model.optimizer.class_path=torch.optim.Nope"],
     ["model.optimizer.class_path=torch.optim.Nope", "Nope"]),
    ("argument-unknown", "fit", AE, ["--trainer.epochs_max=3"], ["unrecognized", "--trainer.epochs_max=3"]),
    # output
    ("root-dir-is-a-file", "fit", AE, ["--trainer.default_root_dir={files}/a_file"],
     ["default_root_dir", "a_file", "is a file"]),
    ("root-dir-under-a-file", "fit", AE, ["--trainer.default_root_dir={files}/a_file/runs"],
     ["default_root_dir", "a_file", "is a file"]),
    ("logger-dir-under-a-file", "fit", AE, ["--trainer.logger=lightning.pytorch.loggers.CSVLogger",
                                            "--trainer.logger.init_args.save_dir={files}/a_file/logs"],
     ["save_dir", "a_file", "is a file"]),
]


def _one_line(err: str) -> str:
    # Lightning logs "Seed set to 0" before the trainer is built; that is not an error line
    lines = [line for line in err.strip().splitlines() if line.strip() and not line.startswith("Seed set to")]
    assert len(lines) == 1, err
    assert lines[0].startswith("adlight: error:")
    return lines[0]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[row[0] for row in BAD_INPUT])
def test_bad_input_is_one_line_and_changes_nothing(case, fitted, tmp_path, capsys):
    _, subcommand, config, extra, words = case
    fill = {key: fitted[key] for key in ("ckpt", "files", "root", "run")}
    args = [subcommand, *([f"--config={config}"] if config else []), *tiny(fitted["root"], tmp_path / "out")]
    args += [arg.format(**fill) for arg in extra]
    before = _hashes(fitted["root"], fitted["base"] / "fit", fitted["files"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    line = _one_line(capsys.readouterr().err)
    for word in words:
        assert word.format(**fill) in line, (word, line)
    assert _hashes(fitted["root"], fitted["base"] / "fit", fitted["files"]) == before
    assert not list((tmp_path / "out").rglob("version_*")), "a failed run left a version folder"


def test_test_without_config_rebuilds_the_run_from_the_checkpoint(fitted, tmp_path):
    fit_report = json.loads((fitted["run"] / "metrics.json").read_text())
    # no --config: model (latent_dim 16) and data come from the checkpoint; overrides still apply
    main(["test", f"--ckpt_path={fitted['ckpt']}", f"--trainer.default_root_dir={tmp_path}",
          "--trainer.enable_progress_bar=false", f"--data.root={fitted['root']}"])
    run = next(tmp_path.rglob("metrics.json")).parent
    report = json.loads((run / "metrics.json").read_text())
    for key in ("image_AUROC", "pixel_AUROC", "image_threshold", "pixel_threshold"):
        assert report[key] == pytest.approx(fit_report[key], abs=1e-6), key
    config = (run / "config.yaml").read_text()
    assert f"latent_dim: {FITTED_LATENT}" in config and str(tmp_path) in config

    images = fitted["root"] / "bottle" / "test" / "scratch"
    main(["predict", f"--ckpt_path={fitted['ckpt']}", f"--trainer.default_root_dir={tmp_path / 'predict'}",
          "--trainer.enable_progress_bar=false", f"--data.predict_dir={images}"])
    scores = next((tmp_path / "predict").rglob("scores.csv")).read_text().splitlines()
    assert len(scores) == 1 + len(list(images.glob("*.png")))


def test_a_rerun_without_logger_gets_its_own_folder(fitted, tmp_path):
    args = ["fit", f"--config={AE}", *tiny(fitted["root"], tmp_path), "--trainer.logger=false",
            f"--model.network.init_args.latent_dim={FITTED_LATENT}", "--test_after_fit=false"]
    main(args)
    first = _hashes(tmp_path)
    main(args)  # LightningCLI would refuse: config.yaml is already there
    assert {p.name for p in (tmp_path / "lightning_logs").iterdir()} == {"version_0", "version_1"}
    assert all(_hashes(tmp_path)[path] == digest for path, digest in first.items())
    assert (tmp_path / "lightning_logs" / "version_1" / "config.yaml").exists()


def test_a_run_failing_in_its_loop_leaves_no_empty_version(fitted, tmp_path, capsys):
    broken = make_mvtec_tree(tmp_path / "broken", n_train=4, n_good_test=2, defects={"scratch": 2}, size=32)
    bad = broken / "bottle" / "train" / "good" / "001.png"
    bad.write_bytes(b"not a png")
    (tmp_path / "out" / "lightning_logs" / "version_0").mkdir(parents=True)  # a user's earlier run
    (tmp_path / "out" / "lightning_logs" / "version_0" / "notes.txt").write_text("keep me")
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", f"--config={AE}", *tiny(broken, tmp_path / "out")])
    assert exit_info.value.code == 2 and str(bad) in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out" / "lightning_logs").iterdir()] == ["version_0"]
    assert (tmp_path / "out" / "lightning_logs" / "version_0" / "notes.txt").read_text() == "keep me"
