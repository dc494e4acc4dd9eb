"""Datamodules: a source of records read by a split policy (``adlight.data.splits``).

Every datamodule yields the batch of ``docs/contracts.md``: ``image`` (N x C x H x W in [0, 1]),
``label``, ``mask`` (when the data has masks), ``path``, ``index``, ``class_id``.
"""

from adlight.data.base import AnomalyDataModule, SplitDatasets
from adlight.data.class_datamodules import ClassSplitBase, OneClassDataModule, OneVsRestDataModule
from adlight.data.datasets import ImageFileDataset, Sample, TensorImageDataset
from adlight.data.digits import DigitsDataModule
from adlight.data.driving import DRIVING_BEHAVIOURS, DrivingDistractionDataModule
from adlight.data.folder import FolderDataModule
from adlight.data.generated import WithGeneratedNormals
from adlight.data.ham10000 import HAM10000_DIAGNOSES, HAM10000DataModule
from adlight.data.image_tensors import IMAGE_EXTENSIONS, list_images, load_image
from adlight.data.loader import LoaderOptions
from adlight.data.masks import load_mask
from adlight.data.mvtec import MVTEC_CATEGORIES, MVTEC_URL, MVTecDataModule
from adlight.data.splits import stratified_split
from adlight.data.table_datamodule import TableDataModule
from adlight.data.transforms import augmentation_transform, eval_transform

__all__ = [
    "DRIVING_BEHAVIOURS",
    "HAM10000_DIAGNOSES",
    "IMAGE_EXTENSIONS",
    "MVTEC_CATEGORIES",
    "MVTEC_URL",
    "AnomalyDataModule",
    "ClassSplitBase",
    "DigitsDataModule",
    "DrivingDistractionDataModule",
    "FolderDataModule",
    "HAM10000DataModule",
    "ImageFileDataset",
    "LoaderOptions",
    "MVTecDataModule",
    "OneClassDataModule",
    "OneVsRestDataModule",
    "Sample",
    "SplitDatasets",
    "TableDataModule",
    "TensorImageDataset",
    "WithGeneratedNormals",
    "augmentation_transform",
    "eval_transform",
    "list_images",
    "load_image",
    "load_mask",
    "stratified_split",
]
