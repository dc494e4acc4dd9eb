"""Long runs that are usable: an ETA per run and per table, a killed run that resumes from its
``last.ckpt`` under ``--reuse``, and a table rewritten (marked partial) as its runs finish."""

import json
from pathlib import Path

import pytest
import torch
from synthetic import make_mvtec_tree

from adlight.benchmark.command import main as benchmark
from adlight.callbacks import ChannelsLast
from adlight.cli import run as adlight_run
from adlight.progress import (
    TableProgress,
    epoch_eta,
    format_duration,
    latest_progress,
    run_line,
    write_progress,
)
from adlight.sweep import ARGS_FILE, Sweep, finished_report, resumed, run_sweep

REPO = Path(__file__).resolve().parents[1]
L2 = str(REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml")


@pytest.fixture(scope="module")
def mvtec_root(tmp_path_factory):
    return make_mvtec_tree(tmp_path_factory.mktemp("mvtec"), n_train=4, n_good_test=3,
                           defects={"scratch": 3}, size=32)


def tiny_set(root, epochs: int) -> dict:
    return {"data.root": str(root), "data.image_size": 32, "data.loader.batch_size": 4,
            "model.network.init_args.image_size": 32, "model.network.init_args.latent_dim": 8,
            "trainer.max_epochs": epochs, "trainer.check_val_every_n_epoch": 1,
            "trainer.accelerator": "cpu", "trainer.enable_progress_bar": False,
            "trainer.enable_model_summary": False}


@pytest.mark.parametrize("seconds, text", [(None, "?"), (-1, "?"), (44.6, "45 s"), (600, "10 min"),
                                           (3 * 3600 + 5 * 60, "3 h 05 min")])
def test_durations_read_as_a_person_says_them(seconds, text):
    assert format_duration(seconds) == text


def test_the_run_eta_is_the_epochs_left_at_the_mean_epoch_time():
    assert epoch_eta(epochs_done=12, max_epochs=70, seconds=120.0, epochs_timed=2) == 58 * 60.0
    assert epoch_eta(70, 70, 10.0, 1) == 0.0
    assert epoch_eta(3, None, 10.0, 3) is None  # max_epochs -1: no end to count to
    line = run_line({"epoch": 12, "max_epochs": 70, "seconds_per_epoch": 60.0, "eta_s": 3480.0})
    assert line == "epoch 12/70, 60 s per epoch, about 58 min left"


def test_the_table_eta_counts_waiting_runs_and_the_current_runs_own_eta():
    now = [0.0]
    table = TableProgress(total=4, clock=lambda: now[0])
    table.finish(timed=False)  # one run reused: it took no time here
    table.start()
    assert table.eta() is None  # nothing timed yet
    now[0] = 100.0
    table.finish()
    table.start()
    now[0] = 130.0
    # one run waiting (100 s each) + the current one: 70 s by the mean, 20 s by its progress
    assert table.eta() == pytest.approx(170.0)
    assert table.eta({"eta_s": 20.0}) == pytest.approx(120.0)
    assert table.line("cae/seed=0", {"epoch": 3, "max_epochs": 4, "eta_s": 20.0}).startswith(
        "[3/4] cae/seed=0: epoch 3/4, about 20 s left; table: about 2 min left")


def test_before_any_run_finished_the_table_eta_counts_waiting_runs_at_the_current_runs_length():
    """A table resumed in a new process (or its first run) has no finished run to average: the
    waiting runs are counted at the current run's max_epochs x seconds_per_epoch."""
    table = TableProgress(total=4)
    table.finish(timed=False)  # reused
    table.start()  # the resumed run: epoch 10 of 70 at 30 s, 1800 s left; two runs waiting
    record = {"epoch": 10, "max_epochs": 70, "seconds_per_epoch": 30.0, "eta_s": 1800.0}
    assert table.eta(record) == pytest.approx(1800.0 + 2 * 70 * 30.0)
    assert table.line("vae", record).endswith("table: about 1 h 40 min left")
    assert table.eta({"epoch": 1, "eta_s": 5.0}) is None  # no max_epochs: no length to count
    assert table.eta(None) is None


def test_a_paused_stretch_does_not_stretch_the_run_eta(tmp_path, monkeypatch, capsys):
    """Epochs of 10 s with one of 270 s (the run stopped while a test suite ran): the rate is
    the median epoch, 10 s, not the mean, 62 s."""
    from adlight.callbacks import RunProgress
    from adlight.callbacks import progress as progress_module

    now = [0.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])

    class Trainer:
        current_epoch = 0
        max_epochs = 10
        sanity_checking = False
        is_global_zero = True
        log_dir = str(tmp_path)

    callback = RunProgress()
    callback.on_train_start(Trainer, None)
    for epoch, end in enumerate([10.0, 20.0, 30.0, 300.0, 310.0]):
        Trainer.current_epoch = epoch
        now[0] = end
        callback.on_train_epoch_end(Trainer, None)
    record = latest_progress(tmp_path)
    assert record["epoch"] == 5 and record["elapsed_s"] == 310.0
    assert record["seconds_per_epoch"] == 10.0 and record["eta_s"] == 50.0
    assert capsys.readouterr().err.strip().splitlines()[-1] == "epoch 5/10, 10 s per epoch, about 50 s left"


def test_progress_files_are_read_newest_first(tmp_path):
    assert latest_progress(tmp_path / "missing") is None
    write_progress(tmp_path / "version_0", {"epoch": 1})
    write_progress(tmp_path / "version_1", {"epoch": 5})
    assert latest_progress(tmp_path) == {"epoch": 5}
    assert not list(tmp_path.rglob(".progress.json.*"))  # written whole, then renamed


def test_a_killed_fit_resumes_from_its_last_checkpoint_under_reuse(mvtec_root, tmp_path, capsys):
    """The first attempt stops after epoch 1 of 2 without a report (as a killed run does); the
    sweep with --reuse continues it from last.ckpt, and then counts it as finished."""
    sweep = Sweep(configs=[L2], set=tiny_set(mvtec_root, epochs=2), output=str(tmp_path / "sweep"),
                  cluster="inprocess")
    (run,) = sweep.runs(on_slurm=False)
    adlight_run([*run.args, "--trainer.max_epochs=1", "--test_after_fit=false"])  # the "killed" one
    assert latest_progress(run.root)["epoch"] == 1
    assert not list(run.root.rglob("metrics.json"))

    calls = []

    def recording(args):
        if "--print_config" in args:  # the sweep parses every run before launching any
            return adlight_run(args)
        calls.append(args)
        adlight_run(args)

    rows = run_sweep(sweep, recording, reuse=True)
    assert calls == [[*run.args, "--ckpt_path=last"]]
    assert rows[0]["status"] == "done" and 0.0 <= rows[0]["image_AUROC"] <= 1.0
    progress = latest_progress(run.root)
    assert progress["epoch"] == 2 and progress["eta_s"] == 0.0
    err = capsys.readouterr().err
    assert "resuming from" in err and "epoch 2/2" in err and "epoch 1/2" not in err
    # resumed or not, it is the same run: the next sweep reuses it
    assert finished_report(run) is not None
    assert json.loads((run.root / ARGS_FILE).read_text()) == [*run.args, "--ckpt_path=last"]
    calls.clear()
    assert run_sweep(sweep, recording, reuse=True)[0]["status"] == "reused" and calls == []


def test_without_reuse_or_a_checkpoint_a_run_starts_afresh(tmp_path):
    (run,) = Sweep(configs=[L2], output=str(tmp_path)).runs(on_slurm=False)
    assert resumed(run) is run  # no last.ckpt
    checkpoint = run.root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    checkpoint.parent.mkdir(parents=True)
    torch.save({"state_dict": {}}, checkpoint)  # complete: a truncated one is never resumed from
    assert resumed(run).args == [*run.args, "--ckpt_path=last"]
    named = type(run)(run.name, run.config, {}, [*run.args, "--ckpt_path=/a/b.ckpt"], run.root)
    assert resumed(named) is named  # the user's own checkpoint wins
    seen = []
    run_sweep(Sweep(configs=[L2], output=str(tmp_path), cluster="inprocess"), seen.append)
    launched = [args for args in seen if "--print_config" not in args]  # not the sweep's parse
    assert launched == [run.args]  # no --reuse: no resuming either


def test_the_table_is_rewritten_as_runs_finish_and_marked_partial(tmp_path):
    output = tmp_path / "table"
    seen_tables = []

    def fake(args):
        """What a fit leaves: metrics.json in its run folder; first looks at the table so far."""
        if "--print_config" in args:  # the sweep parses every run before launching any
            return
        markdown = output / "andrews3.md"
        seen_tables.append(markdown.read_text() if markdown.exists() else None)
        root = Path(next(a for a in args if a.startswith("--trainer.default_root_dir=")).split("=", 1)[1])
        run_dir = root / "lightning_logs" / "version_0"
        run_dir.mkdir(parents=True)
        (run_dir / "metrics.json").write_text(json.dumps({"image_AUROC_nu_mean": 0.5}))

    argv = ["andrews3", "--root", str(tmp_path), "--only", "mnist_task1_gs,mnist_task2_gs",
            "--trials", "0", "--output", str(output), "--cluster", "inprocess"]
    final = benchmark(argv, runner=fake).read_text()
    assert seen_tables[0] is None
    assert seen_tables[1].startswith("# ") and "status: PARTIAL, 1 of 2 runs finished" in seen_tables[1]
    assert "PARTIAL" not in final and "command: adlight benchmark" in final
    assert "PARTIAL" not in (output / "andrews3.csv").read_text()


def test_channels_last_changes_the_layout_not_the_values():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    x = torch.rand(2, 3, 8, 8)
    before = net(x)

    class Holder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

    holder = Holder()
    ChannelsLast().setup(None, holder, "test")
    assert not net[0].weight.is_contiguous(memory_format=torch.channels_last)  # fits only
    ChannelsLast().setup(None, holder, "fit")
    assert net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(net(x), before, atol=1e-6)
    loaded = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    loaded.load_state_dict(net.state_dict())  # a checkpoint of either layout loads
    assert torch.allclose(loaded(x), before, atol=1e-6)


def test_a_run_in_another_process_is_followed_through_its_progress_file(tmp_path, capsys):
    from adlight.sweep import _wait_with_progress

    (run,) = Sweep(configs=[L2], output=str(tmp_path)).runs(on_slurm=False)
    epochs = iter([None, {"epoch": 1, "max_epochs": 2, "eta_s": 30.0},
                   {"epoch": 1, "max_epochs": 2, "eta_s": 30.0}])

    class FakeJob:
        """A submitit job that trains one epoch per look and is done after three."""

        looks = 0

        def done(self):
            self.looks += 1
            record = next(epochs, "end")
            if record == "end":
                return True
            if record is not None:
                write_progress(run.root / "lightning_logs" / "version_0", record)
            return False

        def result(self):
            return {"run_dir": "x", "report": {}}

    table = TableProgress(total=2)
    table.start()
    assert _wait_with_progress(FakeJob(), run, table, poll_s=0.0) == {"run_dir": "x", "report": {}}
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"[1/2] {run.name}: starting; table: about ? left",
                     f"[1/2] {run.name}: epoch 1/2, about 30 s left; table: about ? left"]
