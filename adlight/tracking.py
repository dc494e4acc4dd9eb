"""Weights & Biases and MLflow for ``adlight`` runs: the ``--wandb.*`` / ``--mlflow.*`` options.

W&B is added *beside* the run's own loggers (TensorBoard by default), never instead of them:
the first logger decides the run directory (``metrics.json``, ``split.csv``, checkpoints),
so the run directory stays where it is with or without W&B, and the W&B run's own files go
inside it (``<run dir>/wandb/...``). With ``WANDB_MODE=offline`` nothing leaves the machine
and no account is needed; ``wandb sync <run dir>/wandb/offline-run-*`` uploads it later.

What reaches W&B: the whole LightningCLI config (:class:`ConfigToLoggers`), every metric the
model logs (``train/*``, ``val/*``, ``test/*``), the report figures and example image panels
(:func:`adlight.callbacks.report.log_figure`), and with ``log_model`` the checkpoints as a
``model`` artifact (Lightning's ``WandbLogger`` does the upload).

MLflow (``--mlflow.enabled true`` or ``configs/logger/mlflow.yaml``) is added the same way, as
Lightning's ``MLFlowLogger``: the config as params (``config/...``), every metric, and at test
(:class:`adlight.callbacks.RunArtifacts`) the report's numbers, its figures, ``metrics.json``
and ``report.html`` as artifacts. ``adlight export ... --mlflow.enabled true`` logs the exported
ONNX model with its ``metadata.json`` as a registered MLflow model
(:func:`log_export_to_mlflow`); ``--wandb.enabled true`` there logs the folder as a W&B artifact.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers import (
    CSVLogger,
    Logger,
    MLFlowLogger,
    TensorBoardLogger,
    WandbLogger,
)


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
        table_rows: at test, a ``wandb.Table`` of up to this many test images (image, map
            overlay, ground truth, score, label, outcome at the threshold, class); 0: none.
    """

    enabled: bool = False
    project: str = "adlight"
    entity: str | None = None
    name: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    log_model: bool | Literal["all"] = False
    offline: bool = False
    table_rows: int = 500


@dataclass
class MlflowOptions:
    """``--mlflow.*``: log the run to MLflow as well (``configs/logger/mlflow.yaml``).

    Args:
        enabled: turn MLflow logging on.
        tracking_uri: ``sqlite:///mlflow.db``, a file store (``file:/path/mlruns``) or a
            server (``http://host:5000``); ``None``: ``$MLFLOW_TRACKING_URI``, else MLflow's default.
        experiment: MLflow experiment name.
        run_name: run name (MLflow picks one when ``None``).
        tags: run tags.
        log_model: ``True`` logs the last and best checkpoints as artifacts when fitting ends;
            ``"all"`` every checkpoint as it is written; ``False`` none.
        registered_model: ``adlight export``: the registered model's name (``None``: the
            exported model is logged to the run but not registered).
        run_id: ``adlight export``: log the exported model into this run (``None``: a new run).
    """

    enabled: bool = False
    tracking_uri: str | None = None
    experiment: str = "adlight"
    run_name: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    log_model: bool | Literal["all"] = False
    registered_model: str | None = None
    run_id: str | None = None


def mlflow_tracking_uri(options: MlflowOptions) -> str:
    """The URI asked for, else ``$MLFLOW_TRACKING_URI``, else MLflow's own default (``sqlite:///
    mlflow.db`` in the working directory since MLflow 3, ``./mlruns`` before)."""
    import mlflow

    uri = options.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri()
    if uri.startswith("file:") or "://" not in uri:
        # a file store named on purpose: MLflow 3 refuses it unless this is set (its own opt-in)
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return uri


def make_mlflow_logger(options: MlflowOptions) -> MLFlowLogger:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        from adlight.errors import ConfigError

        raise ConfigError("--mlflow.enabled needs MLflow: pip install 'adlight[mlflow]'") from None
    return MLFlowLogger(experiment_name=options.experiment, run_name=options.run_name,
                        tracking_uri=mlflow_tracking_uri(options), tags=dict(options.tags) or None,
                        log_model=options.log_model)


def log_export_to_mlflow(folder: Path, options: MlflowOptions) -> str:
    """The exported ONNX model as an MLflow model (its ``metadata.json`` beside it, and as the
    model's metadata), registered as ``options.registered_model`` when given; returns its URI."""
    import json

    import mlflow
    import onnx

    from adlight.errors import ConfigError

    metadata = json.loads((folder / "metadata.json").read_text())
    if metadata.get("format") != "onnx":
        raise ConfigError(f"--mlflow.enabled logs ONNX exports as MLflow models; {folder} is "
                          f"{metadata.get('format')}: export with --format onnx")
    mlflow.set_tracking_uri(mlflow_tracking_uri(options))
    if options.run_id is None:
        mlflow.set_experiment(options.experiment)
    with mlflow.start_run(run_id=options.run_id, run_name=options.run_name if options.run_id is None else None,
                          tags=dict(options.tags) or None) as run:
        info = mlflow.onnx.log_model(onnx.load(str(folder / metadata["model_file"])), name="exported_model",
                                     registered_model_name=options.registered_model,
                                     metadata={"adlight": metadata})
        mlflow.log_artifact(str(folder / "metadata.json"), artifact_path="exported_model")
        mlflow.log_params({"export/format": metadata["format"], "export/model_class": metadata.get("model_class"),
                           "export/input": "x".join(str(metadata["input"][k]) for k in ("channels", "height", "width"))})
        print(f"adlight export: logged to MLflow run {run.info.run_id} ({mlflow.get_tracking_uri()})"
              + (f", registered as {options.registered_model}" if options.registered_model else ""))
        return info.model_uri


def log_export_to_wandb(folder: Path, options: WandbOptions) -> None:
    """The exported folder (model file and ``metadata.json``) as a W&B ``model`` artifact."""
    import json

    import wandb

    metadata = json.loads((folder / "metadata.json").read_text())
    files = sorted(p for p in folder.iterdir() if p.is_file())  # the export's own: no predictions/
    # W&B's run files go where W&B puts them (./wandb), never into the exported folder
    run = wandb.init(project=options.project, entity=options.entity, name=options.name, group=options.group,
                     tags=list(options.tags) or None, job_type="export",
                     mode="offline" if options.offline else None)
    try:
        artifact = wandb.Artifact(f"exported-{metadata.get('model_class', 'model')}", type="model",
                                  metadata=metadata)
        for path in files:
            artifact.add_file(str(path), name=path.name)
        run.log_artifact(artifact)
    finally:
        run.finish()


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
        mlflow_loggers = [lg for lg in trainer.loggers if isinstance(lg, MLFlowLogger)]
        if not wandb_loggers and not mlflow_loggers:
            return
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in wandb_loggers:
            logger.experiment.config.update(config, allow_val_change=True)
        for logger in mlflow_loggers:
            # under config/: the module's own hyper-parameters, which Lightning logs, keep their names
            logger.log_hyperparams({"config": config})


TRACKER_GROUPS = ("--mlflow.", "--wandb.")


def split_tracker_args(args: list[str]) -> tuple[list[str], list[str]]:
    """``adlight export``'s arguments -> (the export's, the ``--mlflow.*`` / ``--wandb.*`` ones)."""
    rest, trackers = [], []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith(TRACKER_GROUPS):
            if "=" in arg or index + 1 == len(args):
                trackers.append(arg)
            else:
                trackers += [arg, args[index + 1]]
                index += 1
        else:
            rest.append(arg)
        index += 1
    return rest, trackers


def publish_export(folder: Path, tracker_args: list[str]) -> None:
    """Log an exported folder to MLflow and / or W&B as ``tracker_args`` ask."""
    if not tracker_args:
        return
    from jsonargparse import ArgumentParser

    from adlight.errors import ConfigError

    parser = ArgumentParser(exit_on_error=False)
    parser.add_class_arguments(WandbOptions, "wandb")
    parser.add_class_arguments(MlflowOptions, "mlflow")
    try:
        options = parser.instantiate_classes(parser.parse_args(tracker_args))
    except Exception as error:  # noqa: BLE001  jsonargparse's ArgumentError and type errors
        raise ConfigError(f"adlight export: {str(error).splitlines()[0]}") from None
    if options.mlflow.enabled:
        try:
            import mlflow  # noqa: F401
        except ImportError:
            raise ConfigError("--mlflow.enabled needs MLflow: pip install 'adlight[mlflow]'") from None
        log_export_to_mlflow(Path(folder), options.mlflow)
    if options.wandb.enabled:
        log_export_to_wandb(Path(folder), options.wandb)
