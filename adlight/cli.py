"""``adlight fit | validate | test | predict --config FILE.yaml``: a LightningCLI.

Model and datamodule are chosen by ``class_path`` in the YAML (any
:class:`~adlight.models.AnomalyModule` and :class:`~adlight.data.AnomalyDataModule`);
every option can be overridden on the command line (``--data.image_size 64``). On top
of LightningCLI this adds the test report (``metrics.json``, figures), the prediction
writer (``adlight predict``), ``--test_after_fit`` and one-line errors for bad input.
"""

from __future__ import annotations

import sys

from lightning.pytorch.cli import LightningCLI

from adlight.callbacks import PredictionWriter, TestReport
from adlight.data import AnomalyDataModule
from adlight.errors import AdlightError
from adlight.models import AnomalyModule


class AdlightCLI(LightningCLI):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("model_class", AnomalyModule)
        kwargs.setdefault("datamodule_class", AnomalyDataModule)
        kwargs.setdefault("subclass_mode_model", True)
        kwargs.setdefault("subclass_mode_data", True)
        # the module takes its optimiser as an argument (OptimizerCallable), so the YAML
        # shows the whole experiment; LightningCLI's own --optimizer would be a second way
        kwargs.setdefault("auto_configure_optimizers", False)
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(TestReport, "report")
        parser.add_lightning_class_args(PredictionWriter, "prediction_writer")
        parser.add_argument(
            "--test_after_fit", type=bool, default=True,
            help="fit only: test the fitted model on the test split and write the report",
        )

    def after_fit(self) -> None:
        if self.config[self.subcommand].get("test_after_fit", False) and not self.trainer.interrupted:
            # verbose=False: the TestReport callback prints the table (with the thresholds used)
            self.trainer.test(self.model, datamodule=self.datamodule, verbose=False)


def _message(error: BaseException) -> str:
    # errors raised in DataLoader workers arrive with the worker's traceback in the
    # message; the last line is the one that names the problem
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def main(args: list[str] | None = None) -> None:
    try:
        AdlightCLI(args=args)
    except AdlightError as error:
        print(f"adlight: error: {_message(error)}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":  # pragma: no cover
    main()
