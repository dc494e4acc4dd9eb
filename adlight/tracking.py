"""Weights & Biases for ``adlight`` runs: the ``--wandb.*`` options and what they switch on.

W&B is added *beside* the run's own loggers (TensorBoard by default), never instead of them:
the first logger decides the run directory (``metrics.json``, ``split.csv``, checkpoints),
so the run directory stays where it is with or without W&B, and the W&B run's own files go
inside it (``<run dir>/wandb/...``). With ``WANDB_MODE=offline`` nothing leaves the machine
and no account is needed; ``wandb sync <run dir>/wandb/offline-run-*`` uploads it later.

What reaches W&B: the whole LightningCLI config (:class:`ConfigToLoggers`), every metric the
model logs (``train/*``, ``val/*``, ``test/*``), the report figures and example image panels
(:func:`adlight.callbacks.report.log_figure`), and with ``log_model`` the checkpoints as a
``model`` artifact (Lightning's ``WandbLogger`` does the upload).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger, WandbLogger


@dataclass
class WandbOptions:
    """``--wandb.*``: log the run to Weights & Biases as well (``configs/logger/wandb.yaml``).

    Args:
        enabled: turn W&B logging on.
        project: W&B project.
        entity: W&B team or user (your default entity when ``None``).
        name: run name (W&B picks one when ``None``).
        group: run group, e.g. one per sweep.
        tags: run tags.
        log_model: ``True`` uploads the last (and best) checkpoint as a ``model`` artifact when
            fitting ends; ``"all"`` uploads every checkpoint as it is written; ``False`` none.
        offline: write the run locally only (the same as ``WANDB_MODE=offline``).
    """

    enabled: bool = False
    project: str = "adlight"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_model: bool | Literal["all"] = False
    offline: bool = False


#: W&B loggers this process created and has not finished yet (see :func:`finish_wandb_runs`)
_open_loggers: list[WandbLogger] = []


def _run_directory_of(loggers: list[Logger], default_root_dir: str) -> Path:
    """Where the run writes its files: the first logger's versioned directory."""
    if loggers and isinstance(loggers[0], (TensorBoardLogger, CSVLogger)):
        return Path(loggers[0].log_dir)
    return Path(default_root_dir)


def make_wandb_logger(options: WandbOptions, loggers: list[Logger], default_root_dir: str) -> WandbLogger:
    """A ``WandbLogger`` whose files go into the run directory of ``loggers``."""
    logger = WandbLogger(
        save_dir=str(_run_directory_of(loggers, default_root_dir)),
        project=options.project,
        entity=options.entity,
        name=options.name,
        group=options.group,
        tags=list(options.tags) or None,
        log_model=options.log_model,
        offline=options.offline,
    )
    _open_loggers.append(logger)
    return logger


def finish_wandb_runs(exit_code: int = 0) -> None:
    """Finish the W&B runs this process started, so that the next run in the same process
    (a sweep run in-process, a test) starts its own run instead of appending to this one."""
    while _open_loggers:
        logger = _open_loggers.pop()
        run = getattr(logger, "_experiment", None)  # None: never started (or not rank 0)
        if run is not None and "wandb" in sys.modules:
            run.finish(exit_code=exit_code)


#: key of the run's config (a YAML string) in :class:`ConfigToLoggers`' checkpoint state
CONFIG_STATE_KEY = "adlight_run_config"


class ConfigToLoggers(SaveConfigCallback):
    """Writes ``config.yaml`` into the run directory (as LightningCLI does), stores it in every
    checkpoint (``adlight test --ckpt_path X`` rebuilds the run from it, :mod:`adlight.cli.checkpoints`)
    and sends it to every W&B logger, so a W&B run shows the whole experiment."""

    def state_dict(self) -> dict[str, str]:
        # Lightning saves a callback's state into each checkpoint it writes
        return {CONFIG_STATE_KEY: self.parser.dump(self.config, skip_none=False)}

    def save_config(self, trainer, pl_module, stage: str) -> None:
        wandb_loggers = [lg for lg in trainer.loggers if isinstance(lg, WandbLogger)]
        if not wandb_loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in wandb_loggers:
            logger.experiment.config.update(config, allow_val_change=True)
