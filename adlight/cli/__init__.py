"""The command line: ``adlight fit | validate | test | predict | export | sweep | benchmark | compare``.

The CLI proper (:class:`AdlightCLI`, :func:`main`, :func:`run`) is :mod:`adlight.cli.app`,
imported on first use. Beside it, the checks that run before any class is built, each a leaf
other layers may use without importing the CLI: :mod:`~adlight.cli.config_files` (composing
YAML files), :mod:`~adlight.cli.arguments` (parsed values), :mod:`~adlight.cli.checkpoints`
(``--ckpt_path`` files), :mod:`~adlight.cli.run_dirs` (run folders) and
:mod:`~adlight.cli.one_line` (every error as one line).
"""

from __future__ import annotations

import importlib

#: the package's modules; any other name is the CLI's (adlight.cli.app)
_MODULES = ("app", "arguments", "checkpoints", "config_files", "one_line", "run_dirs")


def main(args: list[str] | None = None) -> None:
    """The ``adlight`` console script (:func:`adlight.cli.app.main`)."""
    from adlight.cli.app import main as app_main

    app_main(args)


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    if name in _MODULES:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(f"{__name__}.app"), name)
