"""Every shipped config's split is the one recorded before the split-policy redesign.

The fixtures (``tests/fixtures/splits``, written by ``golden_splits.py`` with the old code) hold
each datamodule's init_args and its ``split.csv``; this rebuilds each with today's code.
"""

from __future__ import annotations

import importlib
import json
import warnings
from dataclasses import fields

import pytest
from golden_splits import FIXTURES, fill_root, make_data, split_rows, trust_cifar_batches

from adlight.data import LoaderOptions

CASES = sorted(FIXTURES.glob("*.json"))


# the class_paths the fixtures were recorded with, renamed since
PROTOCOLS = {"one_vs_rest": "adlight.data.OneVsRestDataModule",
             "one_class": "adlight.data.OneClassDataModule"}
LOADER_ARGS = {f.name for f in fields(LoaderOptions)}


def current_datamodule(class_path: str, init_args: dict):
    """The datamodule the recorded ``class_path`` and ``init_args`` mean in today's API."""
    args = dict(init_args)
    if class_path == "adlight.data.ClassSplitDataModule":
        class_path = PROTOCOLS[args.pop("protocol", "one_class")]
    loader = {k: args.pop(k) for k in list(args) if k in LOADER_ARGS}
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)(**args, loader=LoaderOptions(**loader))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden_data")


@pytest.mark.parametrize("fixture", CASES, ids=[c.stem for c in CASES])
def test_split_is_the_recorded_one(fixture, data_dir, tmp_path, monkeypatch):
    case = json.loads(fixture.read_text())
    if case["data"] == "synthetic_cifar10":
        trust_cifar_batches(monkeypatch)
    root = make_data(case["data"], data_dir)
    if root is None and case["data"] != "digits":
        pytest.skip(f"{case['data']} is not on this machine")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the shortfall warnings are part of what is recorded
        dm = current_datamodule(case["class_path"], fill_root(case["init_args"], root))
        written = dm.write_split_csv(tmp_path / "split.csv")
    expected = fixture.with_suffix(".csv").read_text().splitlines()
    assert split_rows(written, root) == expected

