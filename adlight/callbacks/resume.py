"""What a fit needs to resume exactly where it stopped.

- :class:`LastCheckpoint` writes ``last.ckpt`` at the end of every training epoch, whatever
  other ``ModelCheckpoint`` (best-k on a monitored metric, every n epochs) a config adds.
- :class:`RandomStateCheckpoint` stores the random number generators in every checkpoint
  and puts them back when a fit resumes, so the resumed epochs draw the same shuffles,
  augmentations and injected noise as an uninterrupted run would have.
- :class:`ResumedTopK` carries a monitored ``ModelCheckpoint``'s ranking across a resume
  into the new version directory, so "the best checkpoint" is the uninterrupted fit's.
- :func:`find_last_checkpoint` finds the newest ``last.ckpt`` of the earlier versions of a
  run: run directories are versioned (a resumed fit writes into a new ``version_N``, so
  nothing a user has is overwritten), and Lightning's own ``ckpt_path="last"`` only looks
  in the new, still empty, version.
"""

from __future__ import annotations

import os
import random
import shutil
import warnings
import zipfile
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from adlight.errors import OutputError
from adlight.prediction_files import write_failure

RNG_STATE_KEY = "adlight_rng_states"
LAST_NAME = ModelCheckpoint.CHECKPOINT_NAME_LAST + ModelCheckpoint.FILE_EXTENSION


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` at the end of every ``every_n_epochs``-th training epoch, nothing else.

    A plain ``ModelCheckpoint(save_last=True)`` writes ``last.ckpt`` only when it writes a
    top-k checkpoint, which with the paper configs' ``check_val_every_n_epoch: 10`` and a
    monitored metric is every tenth epoch; this one always writes it at the end of the
    training epoch (after that epoch's validation), so a killed fit loses at most one epoch.

    Args:
        dirpath: where to write it; by default ``<run directory>/checkpoints``.
        every_n_epochs: write it every this many epochs.
    """

    def __init__(self, dirpath: str | None = None, every_n_epochs: int = 1) -> None:
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0,
                         every_n_epochs=every_n_epochs, save_on_train_epoch_end=True)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_skip_saving_checkpoint(trainer):
            return
        if (trainer.current_epoch + 1) % self._every_n_epochs == 0:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # a resumed fit writes its own last.ckpt into its own (new) version directory; the
        # old path is of no use and restoring it only makes Lightning warn "dirpath changed"
        return


def _collect_rng_states() -> dict[str, Any]:
    # Lightning's fabric helper keeps numpy's state as an ndarray, which torch.load's
    # default weights_only=True refuses to unpickle (checked with torch 2.14); tensors,
    # strings and ints load everywhere
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    python_state = random.getstate()
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": list(python_state[1]),
        "python_version": python_state[0],
        "python_gauss_next": python_state[2],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    random.setstate((states["python_version"], tuple(states["python"]), states["python_gauss_next"]))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomStateCheckpoint(Callback):
    """Saves torch, numpy and Python RNG states in checkpoints; restores them on resume.

    Lightning keeps loop, optimiser and scheduler state in a checkpoint but not the random
    generators, so a resumed fit would shuffle and augment differently from an uninterrupted
    one. States are those of rank 0; under DDP every rank is seeded alike and draws alike
    (the sampler shuffles by seed and epoch), so rank 0's state is every rank's state.
    DataLoader worker processes keep their own generators: with ``num_workers > 0`` and
    random augmentations a resumed run is statistically, not bitwise, the same.
    """

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_STATE_KEY] = _collect_rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        # only a resumed fit continues a random stream; testing from a checkpoint does not
        if trainer.state.fn == "fit" and RNG_STATE_KEY in checkpoint:
            _set_rng_states(checkpoint[RNG_STATE_KEY])


class ResumedTopK(Callback):
    """A resumed fit ranks its monitored checkpoints as the uninterrupted fit would have.

    A resumed fit writes into a new version directory, and when a ``ModelCheckpoint``'s folder
    changes Lightning restores only its ``best_model_path`` (a file of the earlier version) and
    forgets the scores: the first validation after the resume became "the best" even when an
    earlier epoch scored better, so the test after fit (which scores the best checkpoint) tested
    other weights than the same fit run in one go. On resume this copies the earlier version's
    kept top-k files into the new checkpoint folder and points the restored state at the copies;
    the earlier version's files are never changed or deleted (a worse one is dropped as its copy).
    """

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if trainer.state.fn != "fit":
            return
        states = checkpoint.get("callbacks") or {}
        for callback in trainer.checkpoint_callbacks:
            state = states.get(callback.state_key)
            if (isinstance(callback, LastCheckpoint) or callback.monitor is None or not state
                    or callback.dirpath is None or state.get("dirpath") in (None, callback.dirpath)):
                continue
            states[callback.state_key] = _top_k_moved(state, Path(callback.dirpath), trainer)


def _top_k_moved(state: dict[str, Any], folder: Path, trainer: L.Trainer) -> dict[str, Any]:
    """``state`` of a ``ModelCheckpoint`` with its kept files copied into ``folder``."""
    earlier = Path(state["dirpath"]).resolve()
    kept = {path for path in (*state.get("best_k_models", {}), state.get("best_model_path"))
            if path and Path(path).is_file() and Path(path).resolve().parent == earlier}
    copies = {path: folder / Path(path).name for path in kept}
    if trainer.is_global_zero:
        folder.mkdir(parents=True, exist_ok=True)
        for path, copy in copies.items():
            if not copy.exists():
                shutil.copy2(path, copy)
    trainer.strategy.barrier("adlight-resumed-top-k")  # every rank sees the copies
    moved = {**state, "dirpath": str(folder), "last_model_path": ""}
    moved["best_k_models"] = {str(copies[path]): score
                              for path, score in state.get("best_k_models", {}).items() if path in copies}
    moved["best_model_path"] = str(copies.get(state.get("best_model_path"), ""))
    moved["kth_best_model_path"] = str(copies.get(state.get("kth_best_model_path"), ""))
    if not moved["best_model_path"]:  # its file is gone: rank afresh, as Lightning would
        moved.update(best_model_score=None, best_k_models={}, kth_best_model_path="")
    return moved


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written to a hidden ``.NAME.partial`` beside their path and renamed into place
    once complete: a full disk or a killed process never leaves a truncated ``last.ckpt`` that
    ``--ckpt_path last`` would pick, and the previous one stays. A write failure is one
    :class:`OutputError` line naming the checkpoint."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        path = Path(path)
        partial = path.with_name(f".{path.name}.partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(checkpoint, partial)
            os.replace(partial, path)
        except OSError as error:
            partial.unlink(missing_ok=True)
            kept = "; the previous one is kept" if path.exists() else ""
            raise OutputError(f"{write_failure(path, error, 'checkpoint')}{kept}") from None


def is_complete_checkpoint(path: Path) -> bool:
    """A zip written to its end (torch.save's format): a truncated file has no central directory."""
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def find_last_checkpoint(run_root: str | Path) -> Path | None:
    """The most recently written complete ``last*.ckpt`` under ``run_root`` (``<root>/version_*/...``);
    a truncated one (a full disk under another writer) is skipped with a warning."""
    run_root = Path(run_root)
    if not run_root.is_dir():
        return None
    candidates = [p for p in run_root.rglob("last*.ckpt") if p.is_file()]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime_ns, reverse=True):
        if is_complete_checkpoint(path):
            return path
        warnings.warn(f"ckpt_path last: {path} is truncated or corrupt (not a complete checkpoint); "
                      "using an older one", UserWarning, stacklevel=2)
    return None
