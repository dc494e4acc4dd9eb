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

A config file may extend another (``base: _base.yaml``, :mod:`adlight.config_files`), and the
datamodule's ``image_size`` drives the network's (see :data:`LINKED_SIZES`). ``adlight export``
and ``adlight predict --exported`` dispatch to :mod:`adlight.export` / :mod:`adlight.inference`.

Just over 300 lines because it is the one place that wires everything; the checks it runs
live beside it (``arguments``, ``checkpoints``, ``run_dirs``, ``cli_errors``).
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from adlight import arguments, run_dirs
from adlight.callbacks import PredictionWriter, RunProgress, TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint, find_last_checkpoint
from adlight.checkpoints import (
    SPECIAL_PATHS,
    Checkpoint,
    check_parameter_shapes,
    check_same_linked,
    check_same_model,
    read_checkpoint,
    with_run_config,
)
from adlight.cli_errors import AdlightParser, adlight_cause, one_line
from adlight.config_files import expand_config_args, load_config
from adlight.data import AnomalyDataModule
from adlight.errors import ConfigError
from adlight.models import AnomalyModule
from adlight.tracking import ConfigToLoggers, WandbOptions, finish_wandb_runs, make_wandb_logger

# the datamodule's stored image size is the size the network is built for: one value
# drives both. Backbones are not linked: they resize any image to their own input_size
# (the pretrained weights' resolution), so the two sizes may differ on purpose.
# (source, target) pairs: one source may drive several targets (a GAN's two networks)
LINKED_SIZES = (("data.init_args.image_size", "model.init_args.network.init_args.image_size"),)


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
        for source, target in LINKED_SIZES:
            # on parse: a model without the target (no network, a backbone) ignores the link
            parser.link_arguments(source, target, apply_on="parse")

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
        if trainer_config.get("logger") is False:
            # without a logger Lightning writes into default_root_dir itself, where a second run
            # would meet (and overwrite) the first one's files: give the run a version of its own
            root = Path(trainer_config.get("default_root_dir") or Path.cwd())
            kwargs["default_root_dir"] = str(run_dirs.next_version(root / "lightning_logs"))
        try:
            trainer = super().instantiate_trainer(**kwargs)
        except (MisconfigurationException, TypeError, ValueError) as error:
            # Lightning checks some values by type only here (devices=abc: TypeError)
            raise ConfigError(f"trainer: {one_line(error)}") from None
        run_dirs.check_writable(trainer.default_root_dir, "trainer.default_root_dir")
        for logger in trainer.loggers:
            if logger.save_dir is not None:
                run_dirs.check_writable(logger.save_dir, f"{type(logger).__name__} save_dir")
        # appended after construction so that Lightning still adds its default
        # ModelCheckpoint when the config has none (ckpt_path="best" keeps working)
        trainer.callbacks.append(RandomStateCheckpoint())
        if section.get("save_last", True) and trainer_config.get("enable_checkpointing") is not False:
            trainer.callbacks.append(LastCheckpoint())
        # an ETA line per epoch, and progress.json for a sweep that runs this fit elsewhere
        trainer.callbacks.append(RunProgress())
        options = section.get("wandb")
        if options is not None and options.enabled:
            default_root = trainer_config.get("default_root_dir") or trainer.default_root_dir
            wandb_logger = make_wandb_logger(options, trainer.loggers, default_root)
            trainer.loggers = [*trainer.loggers, wandb_logger]
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

    def _version_roots(self) -> list[Path]:
        """Folders in which this run's ``version_N`` is created."""
        roots = [Path(lg.root_dir) for lg in self.trainer.loggers if isinstance(lg, (TensorBoardLogger, CSVLogger))]
        if not self.trainer.loggers:  # instantiate_trainer gave it <root>/lightning_logs/version_N
            roots.append(Path(self.trainer.default_root_dir).parent)
        return roots

    def _run_subcommand(self, subcommand: str) -> None:
        before = {root: run_dirs.versions(root) for root in self._version_roots()}
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            # a failed run leaves no version_N behind that holds only its own bookkeeping
            if self.trainer.is_global_zero:
                for root, existing in before.items():
                    run_dirs.remove_failed_versions(root, existing)
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
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


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

            # the export is handed the CLI that builds the model: it never imports cli.py
            export_main(argv[1:], AdlightCLI) if argv[0] == "export" else exported_predict_main(argv[1:])
            return
        run(args)
    except Exception as error:
        cause = adlight_cause(error)
        if cause is None:
            raise
        print(f"adlight: error: {one_line(cause)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
