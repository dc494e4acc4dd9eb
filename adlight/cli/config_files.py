"""Composed config files: an experiment names its ``base`` and writes only what differs.

A config file may start with ``base: _base.yaml`` (a path relative to that file, or a list of
them, applied in order); the file's own keys then override the base's. Mappings merge key by
key, anything else (numbers, strings, lists) replaces; a ``class_path`` that differs from the
base's replaces that whole mapping, since the other class's ``init_args`` would not fit.
``adlight fit --config EXPERIMENT.yaml`` resolves the chain before LightningCLI parses it (the
run's ``config.yaml`` is the resolved whole). jsonargparse's own nested ``config:`` key is not
used: keys of the including file then replace whole groups of the base (trainer, init_args).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from adlight.errors import ConfigError

BASE_KEY = "base"


def _yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's message (several lines, a caret under the text) as "line L, column C: problem"."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).strip().splitlines()[0]
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def _read(path: Path) -> dict[str, Any]:
    try:
        content = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"config {path} cannot be read: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"config {path} is not valid YAML: {_yaml_problem(error)}") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"config {path} must be a mapping, got {type(content).__name__}")
    return content


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``override`` on top of ``base``: mappings merge, other values replace."""
    if "class_path" in override and override["class_path"] != base.get("class_path", override["class_path"]):
        return dict(override)
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The config ``path`` stands for, its ``base`` chain resolved (no ``base`` key left)."""
    path = Path(path).resolve()
    if path in _chain:
        raise ConfigError(f"config {path} is its own base (through {' -> '.join(map(str, _chain))})")
    content = _read(path)
    bases = content.pop(BASE_KEY, None)
    if bases is None:
        return content
    resolved: dict[str, Any] = {}
    for base in [bases] if isinstance(bases, str) else list(bases):
        if not isinstance(base, str):
            raise ConfigError(f"config {path}: base must be a file name or a list of them, got {base!r}")
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"config {path}: its base {base_path} does not exist")
        resolved = merge(resolved, load_config(base_path, (*_chain, path)))
    return merge(resolved, content)


def has_base(path: str | Path) -> bool:
    path = Path(path)
    return path.suffix in (".yaml", ".yml") and path.is_file() and BASE_KEY in _read(path)


def expand_config_args(args: list[str]) -> list[str]:
    """``args`` with every ``--config FILE`` that has a base replaced by the resolved YAML.

    jsonargparse takes a ``--config`` value that is not a file as the config's content.
    """
    expanded: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--config" and index + 1 < len(args) and has_base(args[index + 1]):
            expanded += ["--config", yaml.safe_dump(load_config(args[index + 1]), sort_keys=False)]
            index += 2
            continue
        if arg.startswith("--config=") and has_base(arg.split("=", 1)[1]):
            expanded.append("--config=" + yaml.safe_dump(load_config(arg.split("=", 1)[1]), sort_keys=False))
        else:
            expanded.append(arg)
        index += 1
    return expanded
