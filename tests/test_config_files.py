"""Composed config files: each experiment resolves to the config it had before composing,
a missing base is one line naming the file, and data.image_size drives the network's."""

import sys
from pathlib import Path

import pytest
import yaml
from config_goldens import GOLDENS, experiments, golden_path, resolve

from adlight.cli import LINKED_SIZES, AdlightCLI, main
from adlight.config_files import load_config, merge

# intentional: the network's image_size is linked to data.image_size, so it is no longer printed
LINKED = {target for _, target in LINKED_SIZES}


def leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, node


def test_every_golden_is_a_shipped_experiment():
    shipped = {str(golden_path(p).relative_to(GOLDENS)) for p in experiments()}
    recorded = {str(p.relative_to(GOLDENS)) for p in GOLDENS.rglob("*.yaml")}
    assert shipped == recorded and len(shipped) == 50


@pytest.mark.parametrize("config", experiments(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_experiment_resolves_to_its_golden(config):
    resolved = dict(leaves(resolve(config)))
    golden = dict(leaves(yaml.safe_load(golden_path(config).read_text())))
    # the goldens were recorded before composing (and re-recorded once, when issue 12's
    # datamodule and GAN arguments were renamed, after checking that only the renames differed)
    changed = {key: (golden.get(key), resolved.get(key)) for key in golden.keys() | resolved.keys()
               if golden.get(key) != resolved.get(key)}
    assert not changed, changed
    # the linked network size is not printed: it is data.image_size's, not a setting of its own
    assert not LINKED & resolved.keys()


def test_a_base_is_merged_key_by_key_and_a_new_class_path_replaces(tmp_path):
    (tmp_path / "_base.yaml").write_text(yaml.safe_dump({
        "trainer": {"max_epochs": 3, "num_sanity_val_steps": 0},
        "model": {"class_path": "A", "init_args": {"x": 1, "y": 2}},
        "data": {"class_path": "D", "init_args": {"root": "r", "image_size": 32}}}))
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump({
        "base": "_base.yaml", "trainer": {"max_epochs": 5},
        "model": {"class_path": "B", "init_args": {"z": 3}}, "data": {"init_args": {"root": "s"}}}))
    assert load_config(tmp_path / "exp.yaml") == {
        "trainer": {"max_epochs": 5, "num_sanity_val_steps": 0},
        "model": {"class_path": "B", "init_args": {"z": 3}},
        "data": {"class_path": "D", "init_args": {"root": "s", "image_size": 32}}}
    assert merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}


def test_shipped_experiments_name_a_base_that_exists():
    composed = [p for p in experiments() if "base" in yaml.safe_load(p.read_text())]
    assert len(composed) >= 30
    for config in composed:
        assert next(iter(yaml.safe_load(config.read_text()))) == "base", config
        assert "base" not in load_config(config)


def test_a_missing_base_is_one_line_naming_the_file(tmp_path, capsys):
    exp = tmp_path / "exp.yaml"
    exp.write_text("base: _nowhere.yaml\ntrainer: {max_epochs: 1}\n")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", str(exp)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(tmp_path / "_nowhere.yaml") in err and str(exp) in err


def test_a_base_that_includes_itself_is_an_error(tmp_path):
    (tmp_path / "a.yaml").write_text("base: b.yaml\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    with pytest.raises(Exception, match="its own base"):
        load_config(tmp_path / "a.yaml")


AE = str(Path(__file__).resolve().parents[1] / "configs" / "fadaeinejad" / "mvtec_ae_l2.yaml")


def test_data_image_size_drives_the_network(monkeypatch):
    monkeypatch.setattr(sys, "argv", ["adlight"])
    cli = AdlightCLI(args=["--config", AE, "--data.image_size", "64",
                           "--trainer.logger", "false"], run=False)
    assert cli.datamodule.image_size == 64 and cli.model.network.image_size == 64


@pytest.mark.parametrize("where", ["file", "command line"])
def test_a_network_size_that_differs_from_the_data_is_one_line_naming_both(tmp_path, capsys, where):
    args = ["fit", "--config", AE, "--data.image_size", "64"]
    if where == "file":
        exp = tmp_path / "exp.yaml"
        exp.write_text(f"base: {AE}\nmodel: {{init_args: {{network: {{init_args: {{image_size: 128}}}}}}}}\n")
        args = ["fit", "--config", str(exp), "--data.init_args.image_size", "64"]
    else:
        args.append("--model.network.image_size=128")
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and len(err.splitlines()) == 1, err
    assert "model.init_args.network.init_args.image_size 128" in err
    assert "data.init_args.image_size 64" in err


def test_the_last_network_size_given_is_the_one_checked(tmp_path, monkeypatch):
    # the file's 128 is overridden on the command line: only the effective value must agree
    monkeypatch.setattr(sys, "argv", ["adlight"])
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"base: {AE}\nmodel: {{init_args: {{network: {{init_args: {{image_size: 128}}}}}}}}\n")
    cli = AdlightCLI(args=["--config", str(exp), "--data.image_size", "64",
                           "--model.network.image_size", "64", "--trainer.logger", "false"], run=False)
    assert cli.model.network.image_size == 64
