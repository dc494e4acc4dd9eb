"""Argument checks shared by datamodules and models: one message format for every layer."""

from __future__ import annotations

from adlight.errors import AdlightError, ConfigError


def check_int(name: str, value: object, minimum: int = 1,
              error: type[AdlightError] = ConfigError) -> int:
    """``value`` if it is an int >= ``minimum`` (a bool is not), else ``error`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be an int >= {minimum}, got {value!r}")
    return value
