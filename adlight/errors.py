"""Errors adlight raises for bad user input.

Every error a user can cause derives from :class:`AdlightError`; the CLI prints these as
one clear line (naming the file, argument or value) instead of a traceback.
"""


class AdlightError(Exception):
    """Base class for errors caused by user input or configuration."""


class DataError(AdlightError, ValueError):
    """A dataset root, file, image or mask is missing or unusable."""


class ConfigError(AdlightError, ValueError):
    """Arguments that cannot work together (sizes, channels, thresholds, ...)."""


class CheckpointError(AdlightError, ValueError):
    """A ``--ckpt_path`` that is missing, unreadable, or of another model than the config's."""


class OutputError(AdlightError, OSError):
    """An output directory (``default_root_dir``, a logger's ``save_dir``) that cannot be written."""


class SmallValidationWarning(UserWarning):
    """The validation split has too few images of a class for an F1-optimal image threshold
    to mean much (``min_val_images``; :mod:`adlight.data.threshold_normals`)."""
