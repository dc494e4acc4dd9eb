"""HAM10000 (Tschandl et al., Sci. Data 2018): dermatoscopic images of skin lesions.

Layout of the official release (Harvard Dataverse, doi:10.7910/DVN/DBW86T; the same files on
Kaggle's "skin-cancer-mnist-ham10000"), after unzipping both image archives into ``root``::

    root/HAM10000_metadata.csv            lesion_id,image_id,dx,dx_type,age,sex,localization
    root/HAM10000_images_part_1/<image_id>.jpg
    root/HAM10000_images_part_2/<image_id>.jpg

10,015 images (600 x 450 JPEG) of seven diagnoses (``dx``): nv 6,705, mel 1,113, bkl 1,099,
bcc 514, akiec 327, vasc 142, df 115. Dataverse's ingested copy of the metadata is the
tab-separated ``HAM10000_metadata.tab``; it is read when the CSV is absent.

Zhao & Karray's protocol, the default: ``nv`` (melanocytic nevi) is normal; 100 normal images
are held out for test and the rest train; 100 random images of each disease are the test
anomalies. On top of the paper, 15 images of every class (the most the smallest class, df,
leaves after its 100 test images) form the validation split that chooses the threshold; the
paper reports AUROC only, which needs none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from adlight.data.table_datamodule import TableDataModule, TableRow
from adlight.errors import DataError

#: the seven diagnoses of the ``dx`` column
HAM10000_DIAGNOSES: tuple[str, ...] = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
HAM10000_METADATA = "HAM10000_metadata.csv"
HAM10000_METADATA_TAB = "HAM10000_metadata.tab"
HAM10000_IMAGE_DIRS: tuple[str, ...] = ("HAM10000_images_part_1", "HAM10000_images_part_2")


class HAM10000DataModule(TableDataModule):
    """HAM10000 with one or more diagnoses normal and the others anomalous.

    Args:
        root: the folder holding ``HAM10000_metadata.csv`` and the two image folders.
        normal_classes: diagnoses that are normal (default: ``nv``).
        anomalous_classes: diagnoses that are anomalous; default every other diagnosis.
        exclude_classes: diagnoses left out altogether.
        val_size, test_size, anomaly_test_size: per diagnosis, a count (int) or a fraction
            (float) for validation, normal test and anomalous test images (the paper: 100
            normal and 100 per disease for test).
        Everything else as :class:`~adlight.data.TableDataModule`.
    """

    def __init__(
        self,
        root: str,
        normal_classes: Sequence[str] = ("nv",),
        anomalous_classes: Sequence[str] | None = None,
        exclude_classes: Sequence[str] = (),
        val_size: int | float = 15,
        test_size: int | float = 100,
        anomaly_test_size: int | float = 100,
        **kwargs,
    ) -> None:
        self.root = Path(root)
        normal = [normal_classes] if isinstance(normal_classes, str) else list(normal_classes)
        exclude = [exclude_classes] if isinstance(exclude_classes, str) else list(exclude_classes)
        for argument, values in (("normal_classes", normal), ("exclude_classes", exclude),
                                 ("anomalous_classes", anomalous_classes or [])):
            for value in [values] if isinstance(values, str) else values:
                if value not in HAM10000_DIAGNOSES:
                    raise DataError(
                        f"{argument} value {value!r} is not a HAM10000 diagnosis "
                        f"({', '.join(HAM10000_DIAGNOSES)})"
                    )
        if anomalous_classes is None:
            anomalous_classes = [d for d in HAM10000_DIAGNOSES if d not in normal + exclude]
        super().__init__(
            table=str(self.root / HAM10000_METADATA),
            label_column="dx",
            normal_values=normal,
            anomalous_values=anomalous_classes,
            exclude_values=exclude,
            image_template="{image_id}.jpg",
            image_column="image_id",  # fixed here: the release has no masks, groups or choices
            mask_column=None,
            mask_dirs=None,
            group_column=None,
            test_groups=None,
            num_test_groups=None,
            delimiter=None,
            image_dirs=[str(self.root / d) for d in HAM10000_IMAGE_DIRS],
            val_size=val_size,
            test_size=test_size,
            anomaly_test_size=anomaly_test_size,
            **kwargs,
        )

    def _read_rows(self) -> tuple[list[str], list[TableRow], str]:
        if not self.root.is_dir():
            raise DataError(
                f"HAM10000 root {self.root} does not exist; set root to the folder holding "
                f"{HAM10000_METADATA} and {' and '.join(HAM10000_IMAGE_DIRS)}"
            )
        if not self.table.is_file() and (self.root / HAM10000_METADATA_TAB).is_file():
            self.table = self.root / HAM10000_METADATA_TAB
        if not self.table.is_file():
            raise DataError(
                f"HAM10000 metadata {self.root / HAM10000_METADATA} does not exist (nor "
                f"{HAM10000_METADATA_TAB}); expected the official layout: {HAM10000_METADATA} "
                f"and the folders {', '.join(HAM10000_IMAGE_DIRS)} of <image_id>.jpg in {self.root}"
            )
        missing = [d for d in HAM10000_IMAGE_DIRS if not (self.root / d).is_dir()]
        if missing:
            raise DataError(
                f"HAM10000 image folder {self.root / missing[0]} does not exist; unzip "
                f"{missing[0]}.zip of the official release into {self.root}"
            )
        return super()._read_rows()
