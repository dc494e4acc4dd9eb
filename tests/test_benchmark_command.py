"""``adlight benchmark TABLE``: the runs of each table, a tiny table end to end, the aggregation
(mean +- std, paper column, recorded command), reuse of finished runs and the Wilcoxon tests."""

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import wilcoxon
from synthetic import CIFAR10_NAMES, make_class_folder_tree, make_mvtec_tree

from adlight.benchmark.command import main as benchmark
from adlight.benchmark.report import RunResult, wilcoxon_rows
from adlight.benchmark.tables import ANDREWS_REPRESENTATIONS, TABLES
from adlight.cli import main as adlight_main
from adlight.cli import run as adlight_run

REPO = Path(__file__).resolve().parents[1]


def no_runner(args):
    raise AssertionError(f"nothing should run, got adlight {args}")


def planned(capsys, argv) -> list[str]:
    benchmark(argv + ["--dry-run"], runner=no_runner)
    return [line.split(":")[0] for line in capsys.readouterr().out.splitlines()
            if ": adlight fit" in line]


@pytest.fixture(scope="module")
def mvtec_two(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    for category in ("bottle", "screw"):
        make_mvtec_tree(root, category, n_train=2, n_good_test=1, defects={"scratch": 1}, size=16)
    return root


def test_dry_run_lists_every_run_of_each_table(tmp_path, capsys, mvtec_two):
    andrews = planned(capsys, ["andrews3", "--root", str(tmp_path)])
    assert len(andrews) == 4 * 3 * 3  # tasks x representations x the paper's 3 trials
    assert "mnist_task4_vgg16_p5/data.trial=2" in andrews

    cifar = tmp_path / "cifar"
    make_class_folder_tree(cifar / "train", classes=CIFAR10_NAMES[:3], n_per_class=1, size=8)
    minhas = planned(capsys, ["minhas1", "--root", str(cifar), "--seeds", "0,1"])
    configs = sorted((REPO / "configs" / "minhas_zelek").glob("cifar10_*.yaml"))
    assert len(minhas) == len(configs) * 3 * 2  # configs x the classes under --root x seeds
    assert "cifar10_efficientnet_lite0_fixed/data.anomaly_classes=bird,seed_everything=1" in minhas

    zhao = planned(capsys, ["zhao3", "--root", str(tmp_path)])
    assert [name.split("/")[0] for name in zhao][:4] == [
        "ham10000_ae_bce", "ham10000_vae", "ham10000_cae_l2", "ham10000_cae_l1_sparse"]

    mvtec = planned(capsys, ["mvtec", "--root", str(mvtec_two), "--only", "mvtec_patchcore,mvtec_padim"])
    assert sorted(mvtec) == sorted(f"{c}/data.category={k}" for c in ("mvtec_padim", "mvtec_patchcore")
                                   for k in ("bottle", "screw"))
    wilmet = planned(capsys, ["wilmet", "--root", str(mvtec_two)])
    assert {n.split("/")[0] for n in wilmet} == {"mvtec_kd_cae", "mvtec_ni_cae", "mvtec_small_cnn",
                                                 "mvtec_dcgan"}
    fadaeinejad = planned(capsys, ["fadaeinejad3", "--root", str(mvtec_two), "--budget", "quick"])
    assert len(fadaeinejad) == 3 * 2


def test_quick_budget_and_set_reach_every_run(tmp_path, capsys):
    benchmark(["andrews3", "--root", str(tmp_path), "--budget", "quick", "--set", "trainer.max_time=00:00:01:00",
               "--only", "mnist_task1_gs", "--dry-run"], runner=no_runner)
    runs = [line for line in capsys.readouterr().out.splitlines() if ": adlight fit" in line]
    assert len(runs) == 3
    assert all("--data.n_train_normals=512" in r and "--trainer.max_time=00:00:01:00" in r for r in runs)


@pytest.mark.parametrize("argv, message", [
    (["andrews9", "--root", "."], "TABLE must be one of andrews3, minhas1"),
    (["andrews3"], "--root is required"),
    (["andrews3", "--root", "/no/such/folder"], "--root /no/such/folder is not a folder"),
    (["andrews3", "--root", ".", "--only", "mnist_task9_gs"], "--only mnist_task9_gs"),
    (["zhao3", "--root", ".", "--trials", "0,1"], "--trials: table zhao3 has no trials"),
])
def test_bad_input_is_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        adlight_main(["benchmark", *argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("adlight benchmark: error:")
    assert message in err


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """Ten class folders of MNIST-like digits, 14 each (the GS runs need few)."""
    return make_class_folder_tree(tmp_path_factory.mktemp("digits"), classes=[str(d) for d in range(10)],
                                  n_per_class=14, size=16)


TINY_ANDREWS = ["--set", "data.n_train_normals=8", "--set", "data.n_test_normals=4",
                "--set", "data.n_test_anomalies=4", "--set", "data.n_val_normals=2",
                "--set", "data.n_val_anomalies=2", "--set", "data.image_size=16",
                "--set", "model.representation.init_args.size=16",
                "--set", "model.feature_cache=null", "--set", "trainer.enable_progress_bar=false",
                "--set", "trainer.enable_model_summary=false", "--set", "report.figures=false"]


@pytest.mark.slow
def test_a_tiny_table_runs_end_to_end_and_is_reused(tmp_path, digits, capsys):
    calls = []

    def counting(args):
        if "--print_config" not in args:  # the sweep parses every run before launching any
            calls.append(args)
        adlight_run(args)

    argv = ["andrews3", "--root", str(digits), "--only", "mnist_task1_gs,mnist_task3_gs", "--trials", "0,1",
            "--output", str(tmp_path / "table"), "--cluster", "inprocess", *TINY_ANDREWS]
    markdown = benchmark(argv, runner=counting)
    assert len(calls) == 4
    text = markdown.read_text()
    assert text.splitlines()[2] == "command: adlight benchmark " + " ".join(argv)
    assert "machine: " in text and "wall time of the runs: " in text
    assert "| row | task 1 | task 1 (paper) | task 3 | task 3 (paper) |" in text
    gs = next(line for line in text.splitlines() if line.startswith("| GS (raw pixels)"))
    assert gs.count("(n=2)") == 2 and gs.count("not recorded") == 2
    assert "| paper: best VGG-F layer | - | 0.938 | - | 0.850 |" in text

    table = tmp_path / "table" / "andrews3.csv"
    lines = table.read_text().splitlines()
    assert lines[0] == "# command: adlight benchmark " + " ".join(argv)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    row = next(r for r in rows if r["row"] == "GS (raw pixels)")
    reports = [json.loads(p.read_text()) for p in
               sorted((tmp_path / "table" / "mnist_task1_gs").rglob("metrics.json"))]
    values = [r["image_AUROC_nu_mean"] for r in reports]
    assert float(row["task 1 mean"]) == pytest.approx(np.mean(values), abs=1e-6)
    assert row["task 1 n"] == "2"

    calls.clear()  # the same table again: every run finished with the same arguments
    benchmark(argv, runner=counting)
    assert calls == []
    assert "0 runs (4 reused from earlier)" in (tmp_path / "table" / "andrews3.md").read_text()


def fake_run(folder: Path, name: str, report: dict) -> Path:
    run_dir = folder / name / "lightning_logs" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(report))
    return run_dir


def write_sweep_csv(folder: Path, rows: list[dict]) -> None:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    with (folder / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def test_mean_and_sample_std_over_seeds_with_the_paper_beside(tmp_path):
    alls = {0: 0.50, 1: 0.60, 2: 0.70}  # mean 0.6, sample std 0.1
    rows = []
    for seed, value in alls.items():
        name = f"ham10000_ae_bce/seed_everything={seed}"
        run_dir = fake_run(tmp_path, name, {"per_class": {"mel": {"image_AUROC": value + 0.1},
                                                          "ALL": {"image_AUROC": value}}})
        rows.append({"run": name, "config": "configs/zhao_karray/ham10000_ae_bce.yaml",
                     "grid.seed_everything": seed, "status": "done", "run_dir": str(run_dir)})
    rows.append({"run": "ham10000_vae/default", "config": "configs/zhao_karray/ham10000_vae.yaml",
                 "status": "failed", "error": "out of memory"})
    write_sweep_csv(tmp_path, rows)

    markdown = benchmark(["zhao3", "--from-runs", str(tmp_path)], runner=no_runner)
    text = markdown.read_text()
    bce = next(line for line in text.splitlines() if line.startswith("| ham10000_ae_bce |"))
    cells = [c.strip() for c in bce.strip("|").split("|")]
    # row, then (ours, paper) for MEL BCC AKIEC BKL DF VASC ALL
    assert cells[1:3] == ["0.700 +- 0.100 (n=3)", "not recorded"]
    assert cells[-2:] == ["0.600 +- 0.100 (n=3)", "0.590"]
    assert cells[3] == "not in metrics.json"
    assert "| ham10000_vae | failed: out of memory |" in text
    table = [r for r in csv.DictReader(line for line in (tmp_path / "zhao3.csv").read_text().splitlines()
                                        if not line.startswith("#"))]
    bce_row = next(r for r in table if r["row"] == "ham10000_ae_bce")
    assert float(bce_row["ALL mean"]) == pytest.approx(0.6)
    assert float(bce_row["ALL std"]) == pytest.approx(np.std(list(alls.values()), ddof=1))
    assert bce_row["ALL paper"] == "0.590" and bce_row["MEL paper"] == "not recorded"


def test_confusion_counts_print_as_whole_numbers_and_a_perfect_auroc_as_one(tmp_path):
    """minhas1's TP/FP/TN/FN printed 419.000 (n=1); an AUROC of exactly 1.0 stays 1.000."""
    rows = []
    for cls, (auroc, tp) in {"airplane": (1.0, 419), "bird": (0.875, 381)}.items():
        name = f"cifar10_efficientnet_lite0_fixed/data.anomaly_classes={cls}"
        report = {"image_AUROC": auroc, "image_TP": tp, "image_FP": 62, "image_TN": 438,
                  "image_FN": 500 - tp}
        rows.append({"run": name, "config": "configs/minhas_zelek/cifar10_efficientnet_lite0_fixed.yaml",
                     "grid.data.anomaly_classes": cls, "status": "done",
                     "run_dir": str(fake_run(tmp_path, name, report))})
    write_sweep_csv(tmp_path, rows)
    text = benchmark(["minhas1", "--from-runs", str(tmp_path)], runner=no_runner).read_text()
    lines = text.splitlines()
    counts = next(line for line in lines if line.startswith("| cifar10_efficientnet_lite0_fixed / airplane |"))
    assert [c.strip() for c in counts.strip("|").split("|")][1::2] == [
        "419 (n=1)", "62 (n=1)", "438 (n=1)", "81 (n=1)"]
    assert next(line for line in lines if line.startswith("| airplane |")).count("1.000 (n=1)") == 1


def test_the_mean_over_categories_is_taken_per_seed(tmp_path):
    values = {("bottle", 0): 0.9, ("screw", 0): 0.7, ("bottle", 1): 1.0, ("screw", 1): 0.6}
    rows = []
    for (category, seed), value in values.items():
        name = f"mvtec_padim/data.category={category},seed_everything={seed}"
        run_dir = fake_run(tmp_path, name, {"image_AUROC": value, "pixel_AUROC": 0.5})
        rows.append({"run": name, "config": "configs/patch_features/mvtec_padim.yaml",
                     "grid.data.category": category, "grid.seed_everything": seed,
                     "status": "done", "run_dir": str(run_dir)})
    write_sweep_csv(tmp_path, rows)
    text = benchmark(["mvtec", "--from-runs", str(tmp_path)], runner=no_runner).read_text()
    section = text.split("## image AUROC")[1].split("##")[0]
    assert "| row | bottle | bottle (paper) | screw | screw (paper) | mean | mean (paper) |" in section
    padim = next(line for line in section.splitlines() if line.startswith("| mvtec_padim"))
    # per seed: (0.9 + 0.7) / 2 = 0.8 and (1.0 + 0.6) / 2 = 0.8: std 0
    assert "| 0.800 +- 0.000 (n=2) | not recorded |" in padim
    assert "0.950 +- 0.071 (n=2)" in padim
    assert "pixel AUPRO" in text and "not in metrics.json" in text.split("## pixel AUPRO")[1]


def test_wilcoxon_pairs_task_trial_and_nu_as_scipy_does():
    table = TABLES["andrews3"]
    nus = [f"{v:g}" for v in np.linspace(0.01, 0.99, 21).round(4)]
    rng = np.random.default_rng(0)
    results, pairs = [], ([], [])
    for task in (1, 2):
        for trial in (0, 1):
            gs = rng.uniform(0.5, 0.8, 21)
            other = gs + rng.normal(0.05, 0.05, 21)
            for name, auroc in (("gs", gs), ("efficientnet_lite0", other)):
                results.append(RunResult(f"mnist_task{task}_{name}", {}, trial,
                                         {"image_AUROC_by_nu": dict(zip(nus, auroc.tolist(), strict=True))}))
            pairs[0].extend(other)
            pairs[1].extend(gs)
    results.append(RunResult("mnist_task1_vgg16_p5", {}, 0, None, "pretrained weights"))
    (row,) = wilcoxon_rows(table, results)
    expected = wilcoxon(pairs[0], pairs[1])
    assert row["representation"] == ANDREWS_REPRESENTATIONS["efficientnet_lite0"]
    assert row["pairs"] == 84
    assert row["statistic"] == pytest.approx(expected.statistic)
    assert row["p_value"] == pytest.approx(expected.pvalue)


def test_wilcoxon_on_a_known_case():
    """21 pairs, every difference positive and distinct: W- = 0, exact two-sided p = 2 / 2**21."""
    nus = [str(k) for k in range(21)]
    gs = {nu: 0.5 for nu in nus}
    better = {nu: 0.5 + 0.01 * (k + 1) for k, nu in enumerate(nus)}
    results = [RunResult("mnist_task1_gs", {}, 0, {"image_AUROC_by_nu": gs}),
               RunResult("mnist_task1_efficientnet_lite0", {}, 0, {"image_AUROC_by_nu": better})]
    (row,) = wilcoxon_rows(TABLES["andrews3"], results)
    assert row["statistic"] == 0 and row["better"] == 21
    assert math.isclose(row["p_value"], 2 / 2 ** 21, rel_tol=1e-9)


def test_submitted_slurm_runs_are_found_later_by_from_runs(tmp_path, mvtec_two):
    """Without --wait a SLURM table only submits; its sweep.csv lets --from-runs find the runs."""
    from argparse import Namespace

    from adlight.benchmark.command import _write_submitted, build_sweep

    ns = Namespace(root=str(mvtec_two), only="mvtec_padim", seeds=None, trials=None, set=[],
                   budget="paper", configs=str(REPO / "configs"), output=str(tmp_path),
                   cluster="slurm", slurm=[])
    sweep, _ = build_sweep(TABLES["mvtec"], ns)
    runs = sweep.runs(on_slurm=True)
    _write_submitted(sweep, [{"run": r.name, "status": "submitted", "job_id": str(i)}
                             for i, r in enumerate(runs)])
    fake_run(tmp_path, runs[0].name, {"image_AUROC": 0.75})  # bottle finished, screw not yet
    text = benchmark(["mvtec", "--from-runs", str(tmp_path)], runner=no_runner).read_text()
    padim = next(line for line in text.split("## image AUROC")[1].splitlines()
                 if line.startswith("| mvtec_padim"))
    assert "| 0.750 (n=1) | not recorded | no metrics.json yet (status submitted) |" in padim


def test_a_failed_run_keeps_its_one_line_error_in_process_and_through_submitit(tmp_path):
    """The argument parser wraps bad input; submitit sends back a traceback ending in log paths."""
    from adlight.errors import ConfigError
    from adlight.sweep import RunFailed, Sweep, SweepJob, _row

    def wrapped(args):
        try:
            raise ConfigError("could not get timm's pretrained weights for 'vgg16'")
        except ConfigError as error:
            raise ValueError("Does not validate against any of the Union subtypes\nGiven value: ...") from error

    with pytest.raises(RunFailed, match="^could not get timm's pretrained weights for 'vgg16'$"):
        SweepJob(wrapped)(["fit"], str(tmp_path))
    (run,) = Sweep(configs=[str(REPO / "configs" / "andrews" / "mnist_task1_gs.yaml")],
                   output=str(tmp_path)).runs(on_slurm=False)
    traceback = ("Traceback (most recent call last):\n  ...\nadlight.sweep.RunFailed: could not get "
                 "timm's pretrained weights for 'vgg16'\n\n-----\nor at paths:\n  - /x/1_0_log.err")

    def submitit_result():
        raise RuntimeError(traceback)

    row = _row(run, submitit_result)
    assert row["status"] == "failed" and row["error"] == "could not get timm's pretrained weights for 'vgg16'"


def test_reused_runs_keep_their_place_in_the_sweep(tmp_path):
    """A finished run (same arguments, a metrics.json) is reused; rows stay in the table's order."""
    from adlight.sweep import ARGS_FILE, Sweep, run_sweep

    configs = [str(REPO / "configs" / "andrews" / f"mnist_task{t}_gs.yaml") for t in (1, 2)]
    sweep = Sweep(configs=configs, output=str(tmp_path), cluster="inprocess")
    first, second = sweep.runs(on_slurm=False)
    fake_run(tmp_path, second.name, {"image_AUROC": 0.5})
    (second.root / ARGS_FILE).write_text(json.dumps(second.args))
    rows = run_sweep(sweep, dry_run=True, reuse=True)
    assert [(r["run"], r["status"]) for r in rows] == [(first.name, "planned"), (second.name, "reused")]
    (second.root / ARGS_FILE).write_text(json.dumps(second.args + ["--seed_everything=1"]))
    assert [r["status"] for r in run_sweep(sweep, dry_run=True, reuse=True)] == ["planned", "planned"]
