"""A driving-distraction set: images of drivers behaving normally or distracted.

Zhao & Karray use a "daytime driving distraction dataset" of 25 drivers and four behaviours
(normal, talking, texting, GPS): train on the normal images of 16 drivers, test on all
images of the other 9. That set has no public release with a fixed layout, so this preset
reads either of two layouts (``docs/datasets.md`` says why these two)::

    root/<behaviour>/<driver>/**/*.jpg       folders: behaviour first, then the driver id
    table=FILE.csv with columns image,behaviour,driver   (image paths relative to root)

Behaviour names are matched exactly (``normal``, ``talking``, ``texting``, ``GPS`` unless
``normal_behaviours`` / ``anomalous_behaviours`` say otherwise); a folder or table value that
is neither normal, anomalous nor excluded is an error naming it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adlight.data.image_tensors import list_images
from adlight.data.table_datamodule import TableDataModule, TableRow
from adlight.errors import DataError

DRIVING_BEHAVIOURS: tuple[str, ...] = ("normal", "talking", "texting", "GPS")

#: the columns of the rows built from the folder layout
_IMAGE, _BEHAVIOUR, _DRIVER = "image", "behaviour", "driver"


class DrivingDistractionDataModule(TableDataModule):
    """Driver images by behaviour, split so that the test drivers are never trained on.

    Args:
        root: the folder of behaviour folders, or the folder the table's image paths are
            relative to.
        table: optional CSV/TSV with one row per image; without it the folder layout is read.
        image_column, behaviour_column, driver_column: the table's column names.
        normal_behaviours: behaviours that are normal (default ``normal``).
        anomalous_behaviours: behaviours that are anomalous (default talking, texting, GPS).
        exclude_behaviours: behaviours left out (e.g. a set's other distractions).
        test_drivers: the drivers to test on; default ``num_test_drivers`` drawn at random
            (seeded) from all drivers, as the paper's 9 of 25.
        Everything else as :class:`~adlight.data.TableDataModule`: ``val_size`` is taken from
        the training drivers only; ``test_size``/``anomaly_test_size`` default to all the test
        drivers' images.
    """

    def __init__(
        self,
        root: str,
        table: str | None = None,
        image_column: str = _IMAGE,
        behaviour_column: str = _BEHAVIOUR,
        driver_column: str = _DRIVER,
        normal_behaviours: Sequence[str] = ("normal",),
        anomalous_behaviours: Sequence[str] | None = ("talking", "texting", "GPS"),
        exclude_behaviours: Sequence[str] = (),
        test_drivers: Sequence[str | int] | None = None,
        num_test_drivers: int = 9,
        **kwargs,
    ) -> None:
        self.root = Path(root)
        self.from_folders = table is None
        if self.from_folders:
            image_column, behaviour_column, driver_column = _IMAGE, _BEHAVIOUR, _DRIVER
        super().__init__(
            table=table,
            label_column=behaviour_column,
            normal_values=normal_behaviours,
            anomalous_values=anomalous_behaviours,
            exclude_values=exclude_behaviours,
            image_column=image_column,
            image_template=None,  # fixed here: the layouts name image paths, without masks
            mask_column=None,
            mask_dirs=None,
            image_dirs=[str(self.root)],
            group_column=driver_column,
            test_groups=test_drivers,
            num_test_groups=None if test_drivers is not None else num_test_drivers,
            **kwargs,
        )

    def _read_rows(self) -> tuple[list[str], list[TableRow], str]:
        if not self.root.is_dir():
            raise DataError(
                f"driving root {self.root} does not exist; set root to the folder of behaviour "
                "folders (<root>/<behaviour>/<driver>/*.jpg), or give table= with image paths "
                "relative to root"
            )
        if not self.from_folders:
            return super()._read_rows()
        rows = []
        behaviours = sorted(p for p in self.root.iterdir()
                            if p.is_dir() and not p.name.startswith("."))
        if not behaviours:
            raise DataError(
                f"driving root {self.root} has no behaviour folders; expected "
                "<root>/<behaviour>/<driver>/*.jpg (e.g. normal/, talking/, texting/, GPS/)"
            )
        for folder in behaviours:
            for image in list_images(folder, argument="behaviour folder"):
                parts = image.relative_to(folder).parts
                if len(parts) < 2:
                    raise DataError(
                        f"image {image} lies directly in the behaviour folder {folder}; put it in "
                        f"a driver folder: {folder}/<driver>/{image.name}"
                    )
                rows.append(TableRow(str(image), {
                    _IMAGE: str(image), _BEHAVIOUR: folder.name, _DRIVER: parts[0],
                }))
        return [_IMAGE, _BEHAVIOUR, _DRIVER], rows, str(self.root)
