"""Argument checks shared by datamodules and models: one message format for every layer."""

from __future__ import annotations

from adlight.errors import AdlightError, ConfigError


def check_int(name: str, value: object, minimum: int = 1,
              error: type[AdlightError] = ConfigError) -> int:
    """``value`` if it is an int >= ``minimum`` (a bool is not), else ``error`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise error(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_fraction(value: object, name: str, *, low: float = 0.0, high: float = 1.0,
                   low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """``value`` as a float if it is a number in the interval, else a ConfigError naming ``name``."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (low <= value if low_inclusive else low < value) and \
             (value <= high if high_inclusive else value < high)
    if not ok:
        interval = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"
        raise ConfigError(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)
