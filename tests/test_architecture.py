"""The layers of docs/architecture.md, checked on every import in the package.

Each rule names a layer and the adlight packages it must not import (at module level or
inside a function: a deferred import is still a dependency). A new module that breaks a
rule fails here with the file, the line and the import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "adlight"
#: modules of adlight/cli/ that are layers of their own: "cli" is the CLI proper (cli/app.py)
CLI_HELPERS = ("arguments", "checkpoints", "config_files", "one_line", "run_dirs")

#: layer (a package or module under adlight/) -> adlight modules it must not import
FORBIDDEN: dict[str, tuple[str, ...]] = {
    # plain torch: built from its config alone, exportable, no loops and no data
    # (full_precision lives in nets/precision.py: a scorer needs no training loss)
    "nets": ("data", "models", "callbacks", "metrics", "cli", "sweep", "tracking", "strategies",
             "report_page", "losses"),
    # data knows no model: a datamodule turns files into batches
    "data": ("nets", "models", "callbacks", "metrics", "cli", "sweep", "tracking", "strategies",
             "report_page"),
    # metrics are functions of scores and labels; with them, gathering one epoch's outputs
    # across processes (metrics/epoch_outputs.py) and what a test hands to the callbacks as
    # plain data (metrics/results.py)
    "metrics": ("nets", "data", "models", "callbacks", "cli", "sweep", "tracking", "report_page"),
    # the CLI's helpers (adlight/cli/, beside the CLI proper in cli/app.py) check files, parsed
    # values and run folders, and compose config files, before any class is built; they are
    # leaves the CLI proper and other layers use (importing one does not import the CLI)
    **{f"cli.{helper}": ("nets", "data", "models", "callbacks", "metrics", "sweep", "report_page", "cli")
       for helper in CLI_HELPERS},
    # models turn batches into scores; callbacks are attached by the trainer, not imported
    "models": ("data", "callbacks", "cli", "sweep", "tracking", "report_page"),
    # callbacks read test results through adlight.metrics.results (the Frechet callback reads the
    # training normals through adlight.models.training_normals); never data or the CLI
    "callbacks": ("data", "cli", "sweep"),
    # the results page is built from files and plain data
    "report_page": ("nets", "data", "models", "callbacks", "cli", "sweep", "strategies"),
    # the sweep launches `adlight` runs; the CLI may offer the sweep, not the other way round
    "sweep": ("cli", "benchmark"),
    # a paper's table: a sweep plus the runs' metrics.json files; handed the runner, never the CLI
    "benchmark": ("nets", "data", "models", "callbacks", "metrics", "cli", "report_page", "export",
                  "inference"),
    # export: a fitted model as a plain-torch graph; handed the CLI class, never imports it
    "export": ("data", "callbacks", "cli", "sweep", "tracking", "report_page", "inference"),
    # running an exported folder: numpy, PIL and a runtime, no torch-side layer at all
    "inference": ("nets", "data", "models", "callbacks", "metrics", "cli", "sweep",
                  "tracking", "strategies", "report_page", "export", "losses", "checks"),
    # serving and the demo page run an exported folder through the Inferencer: no torch side
    **{layer: ("nets", "data", "models", "callbacks", "metrics", "cli", "sweep",
               "tracking", "strategies", "report_page", "export", "losses", "checks",
               "benchmark")
       for layer in ("serve", "demo")},
    # which files are images and how one decodes: numpy and PIL, for data and inference alike
    "image_files": ("nets", "data", "models", "callbacks", "metrics", "cli",
                    "sweep", "tracking", "strategies", "report_page", "export",
                    "inference", "losses", "checks"),
    # glibc's malloc_trim: ctypes only, called by the models before large computations
    "process_memory": ("nets", "data", "models", "callbacks", "metrics", "cli",
                       "sweep", "tracking", "strategies", "report_page", "export",
                       "inference", "losses", "checks", "image_files", "benchmark"),
    # the files predict writes, shared by the Lightning writer and the exported predict
    "progress": ("nets", "data", "models", "callbacks", "metrics", "epoch_outputs", "cli", "sweep",
                 "tracking", "strategies", "results", "report_page", "export", "inference", "losses",
                 "checks", "image_files", "benchmark"),
    # stopping submitit's local job when a sweep is killed: signals and the job's id only
    "local_job_stop": ("nets", "data", "models", "callbacks", "metrics", "epoch_outputs", "cli",
                       "sweep", "tracking", "strategies", "results", "report_page", "export",
                       "inference", "losses", "checks", "image_files", "benchmark", "progress"),
    "prediction_files": ("nets", "data", "models", "callbacks", "metrics", "cli", "sweep",
                         "tracking", "strategies", "report_page", "export", "inference",
                         "losses"),
    "errors": ("nets", "data", "models", "callbacks", "metrics", "cli", "sweep"),
    "checks": ("nets", "data", "models", "callbacks", "metrics", "cli", "sweep"),
}


def _layer_of(parts: list[str]) -> str:
    """The layer of the module ``adlight.<parts>``: its top-level package or module, or
    ``cli.<helper>`` for the CLI's helpers."""
    if parts[0] == "cli" and len(parts) > 1 and parts[1] in CLI_HELPERS:
        return f"cli.{parts[1]}"
    return parts[0]


def _layer(path: Path) -> str:
    return _layer_of(list(path.relative_to(PACKAGE).with_suffix("").parts))


def _adlight_imports(path: Path) -> list[tuple[int, str]]:
    """(line, top-level adlight module) for every import of adlight in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
            if node.module == "adlight":
                names = [f"adlight.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] == "adlight" and len(parts) > 1:
                found.append((node.lineno, _layer_of(parts[1:])))
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_what_its_layer_may(path: Path) -> None:
    forbidden = FORBIDDEN.get(_layer(path), ())
    wrong = [f"{path.relative_to(PACKAGE.parent)}:{line} imports adlight.{module}"
             for line, module in _adlight_imports(path) if module in forbidden]
    assert not wrong, "\n".join(wrong)


def test_the_rules_see_real_imports(tmp_path: Path) -> None:
    """The parser finds module-level, deferred and `from adlight import x` imports."""
    source = tmp_path / "probe.py"
    source.write_text(
        "import adlight.models.base\n"
        "from adlight.callbacks import report\n"
        "from adlight import data\n"
        "def f():\n    from adlight.cli import main\n"
        "from .local import thing\n"
    )
    assert _adlight_imports(source) == [(1, "models"), (2, "callbacks"), (3, "data"), (5, "cli")]


def test_every_layer_on_disk_has_a_rule() -> None:
    layers = {_layer(path) for path in MODULES} - {"__init__", "__main__"}
    # the wiring layer (cli) and small leaves that import only torch/Lightning need no rule
    unruled = layers - set(FORBIDDEN) - {"cli", "losses", "strategies", "tracking"}
    assert not unruled, f"add a rule to FORBIDDEN (and docs/architecture.md) for: {sorted(unruled)}"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.AST) -> set[ast.AST]:
    """Import nodes inside ``if TYPE_CHECKING:`` blocks: annotations, never run."""
    guarded = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                guarded.update(ast.walk(child))
    return guarded


def import_graph() -> dict[str, set[str]]:
    """adlight module -> the adlight modules it imports (at module level or deferred)."""
    modules = {_module_name(path): path for path in MODULES}
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        skip, targets = _type_checking_only(tree), set()
        for node in ast.walk(tree):
            if node in skip:
                continue
            if isinstance(node, ast.Import):
                wanted = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                wanted = [f"{node.module}.{alias.name}" for alias in node.names]
            else:
                continue
            for target in wanted:
                while target and target not in modules:  # a name from a module, or a package
                    target = target.rpartition(".")[0]
                if target.startswith("adlight") and target != name:
                    targets.add(target)
        graph[name] = targets
    return graph


def test_the_import_graph_has_no_cycle():
    graph, state, path = import_graph(), {}, []

    def visit(module: str) -> None:
        state[module] = "open"
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        path.pop()
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module)
