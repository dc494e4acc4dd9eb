"""``adlight fit | validate | test | predict --config FILE.yaml``: a LightningCLI.

Model and datamodule are chosen by ``class_path`` in the YAML (any
:class:`~adlight.models.AnomalyModule` and :class:`~adlight.data.AnomalyDataModule`);
every option can be overridden on the command line (``--data.image_size 64``). On top
of LightningCLI this adds the test report (``metrics.json``, figures), the prediction
writer (``adlight predict``), ``--test_after_fit`` and one-line errors for bad input, and
for long and distributed runs:

- ``last.ckpt`` at the end of every epoch (``--save_last``) with the random generators'
  states, and ``--ckpt_path last`` resumes from the newest ``last.ckpt`` of the earlier
  versions of the run (the resumed run writes into a new version directory);
- Weights & Biases beside TensorBoard: ``--config configs/logger/wandb.yaml`` or
  ``--wandb.enabled true`` (see :mod:`adlight.tracking`);
- ``adlight sweep ...`` runs a grid of configs on SLURM or locally (:mod:`adlight.sweep`);
- ``adlight compare RUN_DIR RUN_DIR ...`` writes one page of test runs side by side;
- ``adlight benchmark TABLE --root DATA`` regenerates a paper's table (:mod:`adlight.benchmark`).

A config file may extend another (``base: _base.yaml``, :mod:`adlight.cli.config_files`), and the
datamodule's ``image_size`` drives the network's (see :data:`LINKED_SIZES`). ``adlight export``
and ``adlight predict --exported`` dispatch to :mod:`adlight.export` / :mod:`adlight.inference`.

Just over 300 lines because it is the one place that wires everything; the checks it runs
live beside it (``arguments``, ``checkpoints``, ``run_dirs``, ``one_line``).
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path

import yaml
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import Trainer
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from adlight.callbacks import PredictionWriter, RunProgress, TestReport
from adlight.callbacks.resume import (
    AtomicCheckpointIO,
    LastCheckpoint,
    RandomStateCheckpoint,
    ResumedTopK,
    find_last_checkpoint,
)
from adlight.callbacks.tracking import RunArtifacts, WandbTestTable
from adlight.cli import arguments, run_dirs
from adlight.cli.checkpoints import (
    SPECIAL_PATHS,
    Checkpoint,
    check_parameter_shapes,
    check_same_linked,
    check_same_model,
    read_checkpoint,
    with_run_config,
)
from adlight.cli.config_files import expand_config_args, load_config
from adlight.cli.one_line import AdlightParser, adlight_cause, one_line
from adlight.data import AnomalyDataModule
from adlight.errors import ConfigError
from adlight.models import AnomalyModule
from adlight.prediction_files import WRITE_ERRNOS, write_failure
from adlight.tracking import (
    ConfigToLoggers,
    MlflowOptions,
    WandbOptions,
    finish_wandb_runs,
    make_mlflow_logger,
    make_wandb_logger,
    publish_export,
    split_tracker_args,
)

# the datamodule's stored image size is the size the network is built for: one value
# drives both. Backbones are not linked: they resize any image to their own input_size
# (the pretrained weights' resolution), so the two sizes may differ on purpose.
# (source, target) pairs: one source may drive several targets (a GAN's two networks)
LINKED_SIZES = (("data.init_args.image_size", "model.init_args.network.init_args.image_size"),)


def square_network_size(size: object) -> object:
    """The data's image size as a linked network's ``image_size``: ``[s, s]`` is ``s``."""
    if isinstance(size, (list, tuple)) and len(size) == 2 and size[0] == size[1]:
        return size[0]
    return size


def _check_square_network(args: list[str]) -> None:
    """A non-square ``data.image_size`` with a linked network (autoencoders, DCGAN: fixed
    dense layers, one int ``image_size``) is one line here, not a type error after parsing.
    Families on a backbone take it (``Backbone.input_size``, not linked)."""
    sizes = _explicit_values(args, "data.init_args.image_size") or _explicit_values(args, "data.image_size")
    size = sizes[-1] if sizes else None
    if isinstance(size, str):
        size = yaml.safe_load(size)
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and size[0] != size[1]):
        return
    networks = _explicit_values(args, "model.init_args.network") or _explicit_values(args, "model.network")
    if networks and _network_has_image_size(networks[-1]):
        raise ConfigError(
            f"data.image_size={list(size)} is not square, but this model's network takes square "
            "images only (its image_size is one int, fixed by its layers): set data.image_size "
            "to one int")


def _network_has_image_size(network: object) -> bool:
    """Whether a config's ``model.network`` is a network built for one square ``image_size``
    (autoencoders, DCGAN: an ``image_size`` argument); networks on a :class:`Backbone`
    (SimpleNet's, STPM's) take any ``input_size``. A class that cannot be resolved here counts
    as square-only: jsonargparse names it after parsing."""
    import importlib
    import inspect

    class_path = network.get("class_path") if isinstance(network, dict) else network
    if not isinstance(class_path, str):
        return True
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name or "adlight.nets"), class_name)
        return "image_size" in inspect.signature(cls).parameters
    except (ImportError, AttributeError, TypeError, ValueError):
        return True


def _explicit_values(args: list[str], target: str) -> list[object]:
    """Values ``args`` give ``target`` in their config files and on the command line, in order
    (the last one is the one that counts)."""
    short = target.replace(".init_args", "")
    values: list[object] = []
    for index, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name == "--config" and index + 1 < len(args) and not value:
            value = args[index + 1]
        if name == "--config" and value.endswith((".yaml", ".yml")):
            node: object = load_config(value) if Path(value).is_file() else None
            for key in target.split("."):
                node = node.get(key) if isinstance(node, dict) else None
            if node is not None:
                values.append(node)
        elif name.replace(".init_args", "") == f"--{short}":  # any spelling of the key
            values.append(value if value else args[index + 1])
    return values


SUBCOMMANDS = ("fit", "validate", "test", "predict")


def _option(args: list[str], name: str) -> str | None:
    """The last value ``args`` give ``--name`` (``--name X`` or ``--name=X``)."""
    found = None
    for index, arg in enumerate(args):
        if arg == f"--{name}" and index + 1 < len(args):
            found = args[index + 1]
        elif arg.startswith(f"--{name}="):
            found = arg.split("=", 1)[1]
    return found


def _check_linked(source: str, value: object, target: str, given: list[object]) -> None:
    for other in given:
        if value is not None and str(other) != str(value):
            raise ConfigError(f"{target} {other} and {source} {value} differ: set only {source}, "
                              "the network is built for the size the data is stored at")


class AdlightCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("model_class", AnomalyModule)
        kwargs.setdefault("datamodule_class", AnomalyDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # the module takes its optimiser as an argument (OptimizerCallable), so the YAML
        # shows the whole experiment; LightningCLI's own --optimizer would be a second way
        kwargs.setdefault("auto_configure_optimizers", False)
        # config.yaml in the run directory, and the same config sent to W&B when it is on
        kwargs.setdefault("save_config_callback", ConfigToLoggers)
        # a parser error is one line naming the argument, not the usage of every option
        kwargs.setdefault("parser_class", AdlightParser)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="fit only: test the fitted model on the test split and write the report",
        )
        parser.add_argument(
            "--save_last", type=bool, default=True,
            help="fit: write last.ckpt at the end of every epoch (besides any ModelCheckpoint "
                 "the config has), so that --ckpt_path last resumes a killed run",
        )
        # a group of its own rather than an entry in --trainer.logger: W&B is added beside
        # the run's TensorBoard/CSV logger, so the run directory does not move (see tracking.py)
        parser.add_class_arguments(WandbOptions, "wandb")
        parser.add_class_arguments(MlflowOptions, "mlflow")  # the same, beside W&B (tracking.py)
        for source, target in LINKED_SIZES:
            # on parse: a model without the target (no network, a backbone) ignores the link
            parser.link_arguments(source, target, compute_fn=square_network_size, apply_on="parse")

    def parse_arguments(self, parser, args) -> None:
        self._checkpoint: Checkpoint | None = None
        if isinstance(args, dict):  # LightningCLI(args={...}): already a config, no files
            super().parse_arguments(parser, args)
            return
        args = list(sys.argv[1:] if args is None else args)
        # the checkpoint is read before parsing: a bad one is one line, and a test or predict
        # without --config rebuilds the run from the config the checkpoint holds
        ckpt_path = _option(args, "ckpt_path")
        given_config = any(arg == "--config" or arg.startswith("--config=") for arg in args)
        if ckpt_path and ckpt_path not in SPECIAL_PATHS and any(arg in SUBCOMMANDS for arg in args):
            self._checkpoint = read_checkpoint(ckpt_path)
        # the link overwrites a size the config also gives: a different one is an error,
        # checked before parsing too, as --print_config exits inside the parser
        _check_square_network(args)
        for source, target in LINKED_SIZES:
            given = _explicit_values(args, source)
            if given:
                _check_linked(source, given[-1], target, _explicit_values(args, target)[-1:])
        expanded = expand_config_args(args)
        if self._checkpoint is not None and not given_config:
            expanded = with_run_config(expanded, self._checkpoint, SUBCOMMANDS)
        with warnings.catch_warnings():
            # the rewritten arguments (resolved bases, the checkpoint's config) differ from
            # sys.argv on purpose; Lightning's warning about that would print them all
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().parse_arguments(parser, expanded)
        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else self.config
        for source, target in LINKED_SIZES:
            _check_linked(source, section.get(source), target, _explicit_values(args, target)[-1:])
        self._check_values(subcommand)

    def _check_values(self, subcommand: str | None) -> None:
        """What torch or Lightning would reject deep inside the run, named now (one line)."""
        dumped = yaml.safe_load(self.parser.dump(self.config, skip_link_targets=False))
        section = dumped.get(subcommand, {}) if subcommand else dumped
        arguments.check_seed_everything(section.get("seed_everything"))
        arguments.check_trainer(section.get("trainer") or {})
        arguments.check_model_optimizers(section.get("model") or {})
        if self._checkpoint is not None:
            # before Lightning's own reading of the checkpoint's hyper-parameters, which with
            # another model class replaces the config's and then asks for its arguments
            check_same_model(self._checkpoint, section.get("model") or {})
            check_same_linked(self._checkpoint, section, LINKED_SIZES)

    def _section(self, config) -> dict:
        return config[self.subcommand] if self.subcommand else config

    def instantiate_trainer(self, **kwargs):
        if self._section(self.config_init).get("trainer", {}).get("strategy") == "ddp":
            # Lightning's DDP, except that models with nothing to train (the feature-head
            # models) are not wrapped, which torch's DDP refuses (see adlight/strategies.py)
            from adlight.strategies import DDPStrategy

            kwargs.setdefault("strategy", DDPStrategy())
        section = self._section(self.config_init)
        trainer_config = section.get("trainer", {})
        self._unversioned_root = None
        if trainer_config.get("logger") is False:
            # without a logger Lightning writes into default_root_dir itself, where a second run
            # would meet (and overwrite) the first one's files: give the run a version of its own
            root = Path(trainer_config.get("default_root_dir") or Path.cwd())
            kwargs["default_root_dir"] = str(run_dirs.next_version(root / "lightning_logs"))
            self._unversioned_root = root
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, TypeError, ValueError) as error:
            # Lightning checks some values by type only here (devices=abc: TypeError)
            raise ConfigError(f"trainer: {one_line(error)}") from None
        run_dirs.check_writable(trainer.default_root_dir, "trainer.default_root_dir")
        for logger in trainer.loggers:
            if logger.save_dir is not None:
                run_dirs.check_writable(logger.save_dir, f"{type(logger).__name__} save_dir")
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            # written to a partial file and renamed: no truncated last.ckpt after a full disk
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()
        # appended after construction so that Lightning still adds its default
        # ModelCheckpoint when the config has none (ckpt_path="best" keeps working)
        trainer.callbacks.append(RandomStateCheckpoint())
        trainer.callbacks.append(ResumedTopK())  # the best checkpoint survives a resume
        if section.get("save_last", True) and trainer_config.get("enable_checkpointing") is not False:
            trainer.callbacks.append(LastCheckpoint())
        # an ETA line per epoch, and progress.json for a sweep that runs this fit elsewhere
        trainer.callbacks.append(RunProgress())
        options = section.get("wandb")
        if options is not None and options.enabled:
            default_root = trainer_config.get("default_root_dir") or trainer.default_root_dir
            wandb_logger = make_wandb_logger(options, trainer.loggers, default_root)
            trainer.loggers = [*trainer.loggers, wandb_logger]
            trainer.callbacks.append(WandbTestTable(options.table_rows))
        options = section.get("mlflow")
        if options is not None and options.enabled:
            trainer.loggers = [*trainer.loggers, make_mlflow_logger(options)]
            trainer.callbacks.append(RunArtifacts())
        return trainer

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest last.ckpt of this run's earlier versions.

        Lightning looks for "last" in the checkpoint directory of the *current* version,
        which for a restarted run is a new, empty version_N; the run it should continue
        wrote into an earlier one.
        """
        section = self._section(self.config_init)
        if section.get("ckpt_path") != "last":
            return
        logger = self.trainer.loggers[0] if self.trainer.loggers else None
        # TensorBoard and CSV loggers version their runs under root_dir
        root = getattr(logger, "root_dir", None) or self.trainer.default_root_dir
        found = find_last_checkpoint(root)
        if found is not None:
            section["ckpt_path"] = str(found)
        elif self.subcommand != "fit":
            # Lightning would warn and go on with the weights the model was built with
            raise ConfigError(f"ckpt_path last: no last.ckpt in the earlier runs under {root}")
        # fit with none found: Lightning's own "last" warns and starts from scratch

    def _claim_versions(self) -> None:
        """Create this run's ``version_N`` folders now (see :func:`run_dirs.claim_version`), so
        that a concurrent run in the same root gets another N and a failed run's clean-up
        removes only its own. Under several processes (DDP) Lightning's numbering is kept."""
        self._own_versions: list[Path] = []
        if self.trainer.world_size != 1:
            return
        for logger in self.trainer.loggers:
            if isinstance(logger, (TensorBoardLogger, CSVLogger)) and logger._version is None:
                folder = run_dirs.claim_version(logger.root_dir)
                logger._version = int(folder.name.split("_")[1])
                self._own_versions.append(folder)
        if not self.trainer.loggers and self._unversioned_root is not None:
            folder = Path(self.trainer.default_root_dir)
            claimed = run_dirs.claim_version(folder.parent, int(folder.name.split("_")[1]))
            self.trainer._default_root_dir = str(claimed)
            self._own_versions.append(claimed)

    def _versioned_loggers(self) -> list:
        return [lg for lg in self.trainer.loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))]

    def _run_subcommand(self, subcommand: str) -> None:
        self._claim_versions()
        # DDP: the version Lightning numbered, when it is new (never another process's older one)
        before = {Path(lg.root_dir): run_dirs.versions(lg.root_dir) for lg in self._versioned_loggers()}
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            # a failed run leaves no version_N of its own behind that holds only bookkeeping
            if self.trainer.is_global_zero:
                own = list(self._own_versions)
                if not own:
                    own = [Path(lg.log_dir) for lg in self._versioned_loggers() if lg._version is not None
                           and Path(lg.log_dir) not in before.get(Path(lg.root_dir), set())]
                run_dirs.remove_failed_versions(own)
            raise

    def _before_run(self) -> None:
        self._resolve_last_checkpoint()
        if self._checkpoint is not None:
            check_parameter_shapes(self._checkpoint, self.model)

    def before_fit(self) -> None:
        self._before_run()

    def before_validate(self) -> None:
        self._before_run()

    def before_test(self) -> None:
        self._before_run()

    def before_predict(self) -> None:
        self._before_run()

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", False) and not self.trainer.interrupted:
            # verbose=False: the TestReport callback prints the table (with the thresholds used)
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False,
                              ckpt_path=monitored_best(self.trainer))


def monitored_best(trainer: Trainer) -> str | None:
    """``"best"`` when the fit kept a best checkpoint by a monitored value (a config's
    ``ModelCheckpoint(monitor=val/loss)``: "the best checkpoint is kept and tested"), so the
    test after fit scores those weights and their thresholds; ``None`` (the weights in memory,
    the last epoch's) otherwise (docs/operations.md, "Resume")."""
    callback = trainer.checkpoint_callback
    if callback is None or getattr(callback, "monitor", None) is None:
        return None
    best = getattr(callback, "best_model_path", "")
    return "best" if best and Path(best).is_file() else None


def run(args: list[str] | None = None) -> None:
    """One ``adlight`` command in this process; bad input raises :class:`AdlightError`."""
    exit_code = 1
    try:
        AdlightCLI(args=args)
        exit_code = 0
    finally:
        finish_wandb_runs(exit_code)


def main(args: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if args is None else args)
    if argv[:1] == ["sweep"]:
        # the sweep is handed the runner: it knows nothing of the CLI (one import direction)
        from adlight.sweep import main as sweep_main

        sweep_main(argv[1:], runner=run)
        return
    if argv[:1] == ["benchmark"]:  # a paper's table as a sweep (adlight/benchmark/)
        from adlight.benchmark.command import main as benchmark_main

        benchmark_main(argv[1:], runner=run)
        return
    if argv[:1] == ["compare"]:  # a page of test runs side by side (adlight/report_page/compare.py)
        from adlight.report_page.compare import main as compare_main

        compare_main(argv[1:])
        return
    exported = argv[:1] == ["predict"] and any(a.split("=", 1)[0] == "--exported" for a in argv)
    try:
        if argv[:1] == ["export"] or exported:  # exported models: adlight/export, adlight/inference
            from adlight.export.command import main as export_main
            from adlight.inference.command import main as exported_predict_main

            if argv[0] == "predict":
                exported_predict_main(argv[1:])
                return
            # the export is handed the CLI that builds the model: it never imports the CLI;
            # --mlflow.* / --wandb.* publish what it wrote (adlight/tracking.py)
            export_args, trackers = split_tracker_args(argv[1:])
            path = export_main(export_args, AdlightCLI)
            publish_export(path.parent, trackers)
            return
        if argv[:1] == ["serve"]:  # an exported model over HTTP (adlight/serve)
            # torch-free from here: LitServe's spawned workers re-import the main module, and
            # this one has imported the whole training stack
            os.execv(sys.executable, [sys.executable, "-m", "adlight.serve", *argv[1:]])
        if argv[:1] == ["demo"]:  # an exported model in a local Gradio page (adlight/demo)
            from adlight.demo.command import main as demo_main
            from adlight.export.command import main as export_main

            # on a checkpoint the demo exports it first, through the export handed in here
            demo_main(argv[1:], export=lambda args: export_main(args, AdlightCLI))
            return
        run(args)
    except Exception as error:
        cause = adlight_cause(error)
        line = one_line(cause) if cause is not None else _write_failure_line(error)
        if line is None:
            raise
        print(f"adlight: error: {line}", file=sys.stderr)
        sys.exit(2)


def _write_failure_line(error: BaseException | None) -> str | None:
    """A full disk (or a read-only one) anywhere in a run, as one line naming the file."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in WRITE_ERRNOS:
            return write_failure(error.filename, error)
        error = error.__cause__ or error.__context__
    return None


if __name__ == "__main__":  # pragma: no cover
    main()
