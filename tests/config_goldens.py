"""The fully resolved config of every shipped experiment, as ``adlight fit --print_config`` gives it.

``python tests/config_goldens.py`` rewrites ``tests/fixtures/configs`` (run it from the
repository root); ``tests/test_config_files.py`` checks the configs still resolve to them.
"""

from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
GOLDENS = Path(__file__).resolve().parent / "fixtures" / "configs"


def experiments() -> list[Path]:
    """Every config a user runs (bases and the logger add-on are not experiments)."""
    return sorted(p for p in CONFIGS.rglob("*.yaml")
                  if p.parent.name not in ("logger", "base") and not p.name.startswith("_"))


def resolve(config: Path, *overrides: str) -> dict:
    """The config ``adlight fit --config CONFIG`` runs with, every default filled in."""
    from adlight.cli import AdlightCLI

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        AdlightCLI(args=["fit", "--config", str(config), *overrides, "--print_config"])
    return yaml.safe_load(out.getvalue())


def golden_path(config: Path) -> Path:
    return GOLDENS / config.relative_to(CONFIGS)


if __name__ == "__main__":
    for config in experiments() if len(sys.argv) < 2 else map(Path, sys.argv[1:]):
        config = config.resolve()
        target = golden_path(config)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(resolve(config), sort_keys=False))
        print(target.relative_to(REPO))
