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
- ``adlight compare RUN_DIR RUN_DIR ...`` writes one page of test runs side by side.

A config file may extend another (``base: _base.yaml``, :mod:`adlight.config_files`), and the
datamodule's ``image_size`` drives the network's (see :data:`LINKED_SIZES`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

from adlight.callbacks import PredictionWriter, TestReport
from adlight.callbacks.resume import LastCheckpoint, RandomStateCheckpoint, find_last_checkpoint
from adlight.config_files import expand_config_args, load_config
from adlight.data import AnomalyDataModule
from adlight.errors import AdlightError, ConfigError
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
        if isinstance(args, dict):  # LightningCLI(args={...}): already a config, no files
            super().parse_arguments(parser, args)
            return
        args = list(sys.argv[1:] if args is None else args)
        # the link overwrites a size the config also gives: a different one is an error,
        # checked before parsing too, as --print_config exits inside the parser
        for source, target in LINKED_SIZES:
            given = _explicit_values(args, source)
            if given:
                _check_linked(source, given[-1], target, _explicit_values(args, target)[-1:])
        super().parse_arguments(parser, expand_config_args(args))
        subcommand = self.config.get("subcommand")
        section = self.config[subcommand] if subcommand else self.config
        for source, target in LINKED_SIZES:
            _check_linked(source, section.get(source), target, _explicit_values(args, target)[-1:])

    def _section(self, config) -> dict:
        return config[self.subcommand] if self.subcommand else config

    def instantiate_trainer(self, **kwargs):
        if self._section(self.config_init).get("trainer", {}).get("strategy") == "ddp":
            # Lightning's DDP, except that models with nothing to train (the feature-head
            # models) are not wrapped, which torch's DDP refuses (see adlight/strategies.py)
            from adlight.strategies import DDPStrategy

            kwargs.setdefault("strategy", DDPStrategy())
        trainer = super().instantiate_trainer(**kwargs)
        section = self._section(self.config_init)
        trainer_config = section.get("trainer", {})
        # appended after construction so that Lightning still adds its default
        # ModelCheckpoint when the config has none (ckpt_path="best" keeps working)
        trainer.callbacks.append(RandomStateCheckpoint())
        if section.get("save_last", True) and trainer_config.get("enable_checkpointing") is not False:
            trainer.callbacks.append(LastCheckpoint())
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
        # none found: Lightning's own "last" warns and starts from scratch

    def before_fit(self) -> None:
        self._resolve_last_checkpoint()

    def before_validate(self) -> None:
        self._resolve_last_checkpoint()

    def before_test(self) -> None:
        self._resolve_last_checkpoint()

    def before_predict(self) -> None:
        self._resolve_last_checkpoint()

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", False) and not self.trainer.interrupted:
            # verbose=False: the TestReport callback prints the table (with the thresholds used)
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


def _message(error: BaseException) -> str:
    # errors raised in DataLoader workers arrive with the worker's traceback in the
    # message; the last line is the one that names the problem
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def _adlight_cause(error: BaseException) -> AdlightError | None:
    """The :class:`AdlightError` behind ``error``, if any.

    jsonargparse instantiates subclass-mode arguments inside its type checks, so a
    :class:`DataError` raised by a datamodule's ``__init__`` reaches us as a ``ValueError``
    ("Does not validate against any of the Union subtypes ...") raised from it.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, AdlightError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


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
        cause = _adlight_cause(error)
        if cause is None:
            raise
        print(f"adlight: error: {_message(cause)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
