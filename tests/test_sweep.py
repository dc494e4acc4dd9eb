"""``adlight sweep``: the grid, SLURM device arguments, and the local and in-process paths."""

import ast
import contextlib
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic import make_mvtec_tree

from adlight.cli import main as adlight_main
from adlight.cli import run as adlight_run
from adlight.errors import ConfigError
from adlight.sweep import Sweep, parse_args, run_sweep

REPO = Path(__file__).resolve().parents[1]
L2 = str(REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml")
KD = str(REPO / "configs" / "wilmet" / "mvtec_kd_cae.yaml")


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=4, n_good_test=3,
                           defects={"scratch": 3}, size=32)


def tiny_set(root) -> dict:
    """Overrides that make the L2 AE config a one-epoch run on 32 px images."""
    return {"data.root": str(root), "data.image_size": 32, "data.loader.batch_size": 4,
            "model.network.init_args.image_size": 32, "model.network.init_args.latent_dim": 8,
            "trainer.max_epochs": 1, "trainer.check_val_every_n_epoch": 1,
            "trainer.accelerator": "cpu", "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False}


def read_rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_the_grid_is_every_config_times_every_combination(tmp_path):
    sweep = Sweep(configs=[L2, KD], grid={"data.category": ["bottle", "screw"], "seed_everything": [0, 1]},
                  set={"data.root": "/data/mvtec"}, output=str(tmp_path))
    runs = sweep.runs(on_slurm=False)
    assert len(runs) == 8
    assert len({r.root for r in runs}) == 8  # every run has its own run directory
    first = runs[0]
    assert first.name == "mvtec_ae_l2/data.category=bottle,seed_everything=0"
    assert first.args[:2] == ["fit", f"--config={L2}"]
    assert first.args[-3:] == ["--data.root=/data/mvtec", "--data.category=bottle", "--seed_everything=0"]
    assert f"--trainer.default_root_dir={tmp_path / first.name}" in first.args
    assert not any(a.startswith("--trainer.devices") for a in first.args)


def test_on_slurm_each_run_gets_one_task_per_gpu_as_ddp_ranks(tmp_path):
    sweep = Sweep(configs=[L2], slurm={"nodes": 2, "gpus_per_node": 4, "partition": "gpu"},
                  output=str(tmp_path))
    (run,) = sweep.runs(on_slurm=True)
    for arg in ("--trainer.accelerator=gpu", "--trainer.devices=4", "--trainer.num_nodes=2",
                "--trainer.strategy=ddp"):
        assert arg in run.args
    single = Sweep(configs=[L2], slurm={"gpus_per_node": 1}, output=str(tmp_path)).runs(on_slurm=True)
    assert "--trainer.strategy=ddp" not in single[0].args


def test_a_sweep_file_and_the_command_line_combine(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text(yaml.safe_dump({"configs": [L2], "grid": {"seed_everything": [0, 1]},
                                    "set": {"data.root": "/d"}, "cluster": "local",
                                    "slurm": {"partition": "gpu", "timeout_min": 60}}))
    sweep, ns = parse_args([str(spec), "--config", KD, "--grid", "data.category=bottle,screw",
                            "--set", "trainer.max_epochs=3", "--output", str(tmp_path / "out"),
                            "--dry-run"])
    assert sweep.configs == [L2, KD] and sweep.cluster == "local" and ns.dry_run
    assert sweep.grid == {"seed_everything": [0, 1], "data.category": ["bottle", "screw"]}
    assert sweep.set == {"data.root": "/d", "trainer.max_epochs": 3}
    adlight_main(["sweep", str(spec), "--output", str(tmp_path / "out"), "--dry-run"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 2 and "--seed_everything=1" in printed[1]
    assert not (tmp_path / "out").exists()  # a dry run writes nothing


def test_an_append_override_given_twice_appends_both(tmp_path, capsys):
    """``--set trainer.callbacks+=A --set trainer.callbacks+=B`` kept only B before."""
    sweep, _ = parse_args(["--config", L2, "--set", "trainer.callbacks+=adlight.callbacks.ChannelsLast",
                           "--set", "trainer.callbacks+=adlight.callbacks.KeepFreedMemory",
                           "--set", "trainer.max_epochs=3", "--set", "trainer.max_epochs=4",
                           "--output", str(tmp_path)])
    (run,) = sweep.runs(on_slurm=False)
    assert [a for a in run.args if a.startswith("--trainer.callbacks")] == [
        "--trainer.callbacks+=adlight.callbacks.ChannelsLast",
        "--trainer.callbacks+=adlight.callbacks.KeepFreedMemory"]
    assert [a for a in run.args if a.startswith("--trainer.max_epochs")] == ["--trainer.max_epochs=4"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        adlight_run([*run.args, "--print_config"])  # the CLI takes both
    printed = yaml.safe_load(capsys.readouterr().out)
    paths = [c["class_path"] if isinstance(c, dict) else c for c in printed["trainer"]["callbacks"]]
    assert "adlight.callbacks.ChannelsLast" in paths and "adlight.callbacks.KeepFreedMemory" in paths


@pytest.mark.parametrize("spec, match", [
    ({"configs": []}, "at least one config"),
    ({"configs": ["nowhere.yaml"]}, "nowhere.yaml"),
    ({"configs": [L2], "grid": {"seed_everything": 3}}, "grid.seed_everything"),
    ({"configs": [L2], "cluster": "kubernetes"}, "cluster"),
    ({"configs": [L2], "slurm": {"gpu": 1}}, "gpu"),
])
def test_a_bad_sweep_names_what_is_wrong(spec, match):
    with pytest.raises(ConfigError, match=match):
        Sweep(**spec)


def test_a_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys):
    spec = tmp_path / "sweep.yaml"
    spec.write_text("configs: []\ngrids: {}\n")
    with pytest.raises(SystemExit) as exit_info:
        adlight_main(["sweep", str(spec)])
    assert exit_info.value.code == 2
    assert "unknown keys ['grids']" in capsys.readouterr().err


def test_local_sweep_runs_the_jobs_one_after_another_with_submitit(mvtec_root, tmp_path):
    sweep = Sweep(configs=[L2], grid={"seed_everything": [0, 1]}, set=tiny_set(mvtec_root),
                  output=str(tmp_path / "sweep"), cluster="local")
    rows = run_sweep(sweep, adlight_run)
    assert [r["status"] for r in rows] == ["done", "done"]
    summary = read_rows(tmp_path / "sweep" / "sweep.csv")
    assert [r["run"] for r in summary] == ["mvtec_ae_l2/seed_everything=0", "mvtec_ae_l2/seed_everything=1"]
    first, second = (Path(r["run_dir"]) for r in summary)
    for row in summary:
        assert 0.0 <= float(row["image_AUROC"]) <= 1.0 and row["job_id"]
    # one after another: the second run started (wrote its split) after the first finished
    assert (second / "split.csv").stat().st_mtime >= (first / "metrics.json").stat().st_mtime
    assert len(list((tmp_path / "sweep" / "submitit").glob("*/*_log.out"))) == 2


def test_a_failed_run_is_a_row_and_the_sweep_goes_on(mvtec_root, tmp_path):
    sweep = Sweep(configs=[L2], grid={"data.category": ["screw", "bottle"]}, set=tiny_set(mvtec_root),
                  output=str(tmp_path / "sweep"), cluster="inprocess")
    rows = run_sweep(sweep, adlight_run)
    assert [r["status"] for r in rows] == ["failed", "done"]
    # adlight's own message: the tree has no screw category
    assert "screw does not exist" in rows[0]["error"]
    assert float(rows[1]["image_AUROC"]) >= 0.0
    run_sweep(sweep, adlight_run)  # a second sweep into the same output keeps the first summary
    assert (tmp_path / "sweep" / "sweep.csv").exists() and (tmp_path / "sweep" / "sweep-1.csv").exists()


def test_the_sweep_does_not_import_the_cli():
    # one direction only: adlight.cli dispatches `adlight sweep` and hands the sweep its runner
    source = (Path(__file__).resolve().parents[1] / "adlight" / "sweep.py").read_text()
    imported = {node.module for node in ast.walk(ast.parse(source)) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Import)
                 for alias in node.names}
    assert "adlight.cli" not in imported
    check = "import sys, adlight.sweep; assert 'adlight.cli' not in sys.modules"
    subprocess.run([sys.executable, "-c", check], check=True)


def test_run_sweep_without_a_runner_only_plans(tmp_path):
    sweep = Sweep(configs=[L2], output=str(tmp_path / "out"), cluster="inprocess")
    assert run_sweep(sweep, dry_run=True)[0]["status"] == "planned"
    with pytest.raises(ConfigError, match="runner"):
        run_sweep(sweep)


def _processes_naming(text: str) -> list[int]:
    """Process ids whose command line mentions ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads processes from /proc")
def test_killing_a_local_sweep_stops_the_run_it_started(mvtec_root, tmp_path):
    """``kill`` of the sweep alone (not its process group) used to leave the fit training in
    submitit's process, writing into the run folder that a resumed sweep would use too."""
    import signal
    import time

    from adlight.progress import latest_progress

    output = tmp_path / "sweep"
    overrides = {**tiny_set(mvtec_root), "trainer.max_epochs": 10_000}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "adlight", "sweep", "--config", L2, "--cluster", "local",
         "--output", str(output), *[a for k, v in overrides.items() for a in ("--set", f"{k}={v}")]],
        cwd=tmp_path, stdout=(tmp_path / "sweep.log").open("w"), stderr=subprocess.STDOUT)
    run_root = output / "mvtec_ae_l2"
    try:
        deadline = time.monotonic() + 240
        while (latest_progress(run_root) or {}).get("epoch", 0) < 2:  # the fit is training
            assert sweep.poll() is None and time.monotonic() < deadline, \
                (tmp_path / "sweep.log").read_text()[-3000:]
            time.sleep(0.5)
        assert _processes_naming(str(output / "submitit"))  # submitit's controller and the fit
        sweep.send_signal(signal.SIGTERM)
        assert sweep.wait(timeout=90) != 0
        assert "stopping its run" in (tmp_path / "sweep.log").read_text()
        deadline = time.monotonic() + 30
        while _processes_naming(str(output / "submitit")) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert _processes_naming(str(output / "submitit")) == []
        stopped_at = latest_progress(run_root)["epoch"]
        time.sleep(3)  # nothing trains on in that folder
        assert latest_progress(run_root)["epoch"] == stopped_at < 10_000
    finally:
        for pid in [sweep.pid, *_processes_naming(str(output / "submitit"))]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
