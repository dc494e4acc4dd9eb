"""Run directories: writable before a run starts, one of its own even without a logger, and
not left behind empty by a run that fails."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from adlight.errors import OutputError

VERSION = re.compile(r"version_(\d+)")
# what a run writes before its first epoch ends: a folder holding only these is the trace of a
# failed start, nothing a user (or a checkpoint, a report) put there
BOOKKEEPING = re.compile(r"(config\.yaml|hparams\.yaml|split\.csv|metrics\.csv|progress\.json|events\.out\.tfevents\..*)")


def check_writable(path: str | Path, name: str) -> None:
    """``path`` is a directory that can be written, or can be created (``name`` for messages)."""
    path = Path(path).absolute()
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        raise OutputError(f"{name} {path}: no part of it exists")
    if not existing.is_dir():
        raise OutputError(f"{name} {path} cannot be created: {existing} is a file, not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{name} {path} cannot be written: no write permission on {existing}")


def versions(root: str | Path) -> set[Path]:
    root = Path(root)
    return {p for p in root.glob("version_*") if VERSION.fullmatch(p.name)} if root.is_dir() else set()


def next_version(root: str | Path) -> Path:
    """``root/version_N``, N one more than the highest there (as Lightning's loggers number)."""
    numbers = [int(VERSION.fullmatch(p.name).group(1)) for p in versions(root)]
    return Path(root) / f"version_{max(numbers, default=-1) + 1}"


def claim_version(root: str | Path, start: int | None = None) -> Path:
    """Create and return ``root/version_N`` with the lowest free N from ``start`` (default: one
    more than the highest there). ``mkdir`` fails when the folder exists, so two processes
    starting in one root at once never share a version (Lightning's loggers list, then create)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    number = start if start is not None else int(next_version(root).name.split("_")[1])
    while True:
        folder = root / f"version_{number}"
        try:
            folder.mkdir()
            return folder
        except FileExistsError:
            number += 1


def _only_bookkeeping(folder: Path) -> bool:
    for path in folder.rglob("*"):
        if path.is_file() and not BOOKKEEPING.fullmatch(path.name):
            return False
    return True


def remove_failed_versions(own: list[Path]) -> list[Path]:
    """Remove the run's ``own`` version folders (those it created) that hold only bookkeeping
    files (a checkpoint or a report keeps its folder); never a folder another process created
    meanwhile in the same root. Returns what was removed."""
    removed = []
    for folder in own:
        if folder.is_dir() and _only_bookkeeping(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
