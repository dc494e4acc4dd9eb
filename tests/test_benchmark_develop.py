"""``adlight benchmark develop``: every localising or image-level config across categories,
validation and test numbers side by side, with each run's seconds and peak memory."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
import yaml
from synthetic import make_mvtec_tree

from adlight.benchmark.command import main as benchmark
from adlight.benchmark.tables import DEVELOP_DATA, DEVELOP_EXCLUDED, develop_configs
from adlight.cli import run as adlight_run
from adlight.cli.config_files import load_config

REPO = Path(__file__).resolve().parents[1]


def no_runner(args):
    raise AssertionError(f"nothing should run, got adlight {args}")


def test_the_rows_are_the_shipped_configs_and_a_new_one_joins_by_being_there(tmp_path):
    stems = [p.stem for p in develop_configs(REPO / "configs")]
    assert {"mvtec_patchcore", "mvtec_padim", "mvtec_ae_l2"} <= set(stems)
    assert not set(DEVELOP_EXCLUDED) & set(stems)
    shutil.copytree(REPO / "configs", tmp_path / "configs")
    (tmp_path / "configs" / "new_family").mkdir()
    (tmp_path / "configs" / "new_family" / "mvtec_new.yaml").write_text("base: ../patch_features/mvtec_padim.yaml\n")
    assert "mvtec_new" in [p.stem for p in develop_configs(tmp_path / "configs")]


def test_dry_run_writes_one_config_per_family_and_category(tmp_path, capsys):
    out = tmp_path / "out"
    benchmark(["develop", "--root", str(tmp_path), "--output", str(out), "--dry-run",
               "--only", "mvtec_patchcore,mvtec_ae_l2"], runner=no_runner)
    runs = [line for line in capsys.readouterr().out.splitlines() if ": adlight fit" in line]
    assert len(runs) == 2 * len(DEVELOP_DATA)
    assert all("--trainer.callbacks+=adlight.callbacks.RunCost" in r for r in runs)

    def resolved(stem: str) -> dict:
        return load_config(out / "configs" / f"{stem}.yaml")

    # KolektorSDD keeps its aspect where the family takes it: the data and the backbone
    kolektor = resolved("mvtec_patchcore__kolektor")
    assert kolektor["data"]["init_args"]["image_size"] == [320, 128]
    assert kolektor["data"]["init_args"]["root"] == str(tmp_path / "kolektor_sdd")
    assert kolektor["model"]["init_args"]["features"]["init_args"]["backbone"]["init_args"]["input_size"] == [320, 128]
    # an autoencoder (square only) keeps its own square size there, and takes 512 on bottle 512
    ae_own = load_config(REPO / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml")["data"]["init_args"]["image_size"]
    assert resolved("mvtec_ae_l2__kolektor")["data"]["init_args"]["image_size"] == ae_own
    assert resolved("mvtec_ae_l2__bottle_512")["data"]["init_args"]["image_size"] == 512
    # HAM10000 through the HAM10000 PatchCore config's datamodule
    ham = resolved("mvtec_patchcore__ham10000")["data"]
    assert ham["class_path"] == "adlight.data.HAM10000DataModule"
    assert ham["init_args"]["root"] == str(tmp_path / "ham10000") and "category" not in ham["init_args"]
    screw = resolved("mvtec_patchcore__screw")["data"]["init_args"]
    assert (screw["root"], screw["category"]) == (str(tmp_path / "mvtec_ad_image_level"), "screw")
    assert "&id" not in (out / "configs" / "mvtec_patchcore__kolektor.yaml").read_text()


def test_only_names_a_config_a_category_or_one_run(tmp_path, capsys):
    benchmark(["develop", "--root", str(tmp_path), "--output", str(tmp_path / "o"), "--dry-run",
               "--only", "screw,mvtec_padim__kolektor"], runner=no_runner)
    runs = [line.split(":")[0] for line in capsys.readouterr().out.splitlines() if ": adlight fit" in line]
    assert "mvtec_padim__kolektor/default" in runs and "mvtec_patchcore__screw/default" in runs
    assert all(r.endswith("__screw/default") or r == "mvtec_padim__kolektor/default" for r in runs)
    with pytest.raises(SystemExit):
        benchmark(["develop", "--root", str(tmp_path), "--dry-run", "--only", "nothing"], runner=no_runner)
    assert "no config stem, column key" in capsys.readouterr().err


def _fake(folder: Path, name: str, report: dict | None, cost: dict | None) -> dict:
    run_dir = folder / name / "lightning_logs" / "version_0"
    run_dir.mkdir(parents=True)
    (run_dir / "metrics.json").write_text(json.dumps(report))
    if cost is not None:
        (run_dir / "run_cost.json").write_text(json.dumps(cost))
    return {"run": name, "config": f"{folder}/configs/{name.split('/')[0]}.yaml", "status": "done",
            "run_dir": str(run_dir)}


def test_the_table_reads_validation_and_test_numbers_seconds_and_memory(tmp_path):
    rows = [
        _fake(tmp_path, "mvtec_padim__bottle_256/default",
              {"image_AUROC": 1.0, "pixel_AUROC": 0.98, "pixel_AUPRO": 0.9,
               "validation": {"image_AUROC": 0.95, "pixel_AUROC": 0.97, "pixel_AUPRO": 0.8}},
              {"fit_seconds": 10.0, "test_seconds": 2.5, "peak_rss_bytes": 2_000_000_000}),
        _fake(tmp_path, "mvtec_padim__kolektor/default",
              {"image_AUROC": 0.8, "pixel_AUROC": 0.9, "pixel_AUPRO": 0.5,
               "validation": {"image_AUROC": 0.75, "pixel_AUROC": 0.93, "pixel_AUPRO": 0.6}},
              {"fit_seconds": 20.0, "test_seconds": 5.0, "peak_rss_bytes": 3_000_000_000}),
        _fake(tmp_path, "mvtec_padim__screw/default",
              {"image_AUROC": 0.6, "validation": {"image_AUROC": 0.65}}, None),
    ]
    with (tmp_path / "sweep.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(dict.fromkeys(k for r in rows for k in r)))
        writer.writeheader()
        writer.writerows(rows)
    text = benchmark(["develop", "--from-runs", str(tmp_path), "--only", "mvtec_padim"],
                     runner=no_runner).read_text()

    def row(section: str) -> list[str]:
        part = text.split(f"## {section}\n")[1].split("##")[0]
        line = next(line for line in part.splitlines() if line.startswith("| mvtec_padim"))
        return [c.strip() for c in line.strip("|").split("|")]

    header = next(line for line in text.split("## image AUROC, test split\n")[1].splitlines() if line.startswith("| row"))
    assert header == "| row | bottle 256 | KolektorSDD | screw | mean |"  # no paper column here
    assert row("image AUROC, test split")[1:] == ["1.000 (n=1)", "0.800 (n=1)", "0.600 (n=1)", "0.800 (n=1)"]
    assert row("image AUROC, validation split")[1:] == ["0.950 (n=1)", "0.750 (n=1)", "0.650 (n=1)",
                                                        "0.783 (n=1)"]
    # pixel figures only where the category has masks: screw has no cell, and the mean skips it
    assert row("pixel AUPRO, validation split")[1:] == ["0.800 (n=1)", "0.600 (n=1)", "0.700 (n=1)"]
    assert "screw" not in text.split("## pixel AUROC, test split\n")[1].split("##")[0]
    assert row("fit + test seconds")[1:4] == ["12.500 (n=1)", "25.000 (n=1)", "not in metrics.json"]
    assert row("peak RSS (GB)")[1:3] == ["2.000 (n=1)", "3.000 (n=1)"]
    assert "chosen on the validation split" in text


@pytest.fixture(scope="module")
def develop_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("develop")
    make_mvtec_tree(root / "mvtec_ad", "bottle", n_train=6, n_good_test=6, defects={"scratch": 6}, size=32)
    make_mvtec_tree(root / "mvtec_ad_image_level", "screw", n_train=6, n_good_test=6,
                    defects={"defective": 6}, size=32, seed=1)
    shutil.rmtree(root / "mvtec_ad_image_level" / "screw" / "ground_truth")
    return root


def test_a_tiny_development_table_runs_end_to_end(tmp_path, develop_root):
    out = tmp_path / "table"
    markdown = benchmark(["develop", "--root", str(develop_root), "--output", str(out), "--cluster", "inprocess",
                          "--only", "mvtec_padim__bottle_256,mvtec_padim__screw",
                          "--set", "data.image_size=32",
                          "--set", "model.features.init_args.backbone.init_args.input_size=32",
                          "--set", "trainer.enable_progress_bar=false"], runner=adlight_run)
    text = markdown.read_text()
    costs = sorted(out.rglob("run_cost.json"))
    assert len(costs) == 2
    cost = json.loads(costs[0].read_text())
    assert cost["fit_seconds"] > 0 and cost["test_seconds"] > 0 and cost["peak_rss_bytes"] > 1e7
    report = json.loads(next(costs[0].parent.glob("metrics.json")).read_text())
    assert set(report["validation"]) >= {"image_AUROC", "n_images", "n_anomalous"}
    for section in ("image AUROC, validation split", "image AUROC, test split", "fit + test seconds"):
        part = text.split(f"## {section}\n")[1].split("##")[0]
        line = next(line for line in part.splitlines() if line.startswith("| mvtec_padim"))
        assert "failed" not in line and "not in" not in line, line
    assert yaml.safe_load((out / "configs" / "mvtec_padim__screw.yaml").read_text())["data"]["init_args"]["category"] == "screw"
