"""Argument checks shared by datamodules and models: one message format for every layer."""

from __future__ import annotations

from adlight.errors import AdlightError, ConfigError


def is_int(value: object) -> bool:
    """Whether ``value`` is an int; a bool is not (``True`` would pass as 1)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    """Whether ``value`` is an int or a float; a bool is not."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int = 1,
              error: type[AdlightError] = ConfigError) -> int:
    """``value`` if it is an int >= ``minimum`` (a bool is not), else ``error`` naming ``name``."""
    if not is_int(value) or value < minimum:
        raise error(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def check_fraction(name: str, value: object, zero: bool = True, one: bool = False,
                   error: type[AdlightError] = ConfigError) -> float:
    """``value`` as float if it lies in [0, 1] (``zero``/``one``: whether that end is allowed).

    Else ``error`` naming ``name`` and the interval; a bool is not a number here.
    """
    ok = is_number(value)
    if ok:
        ok = (0.0 <= value if zero else 0.0 < value) and (value <= 1.0 if one else value < 1.0)
    if not ok:
        interval = f"{'[' if zero else '('}0, 1{']' if one else ')'}"
        raise error(f"{name} must be a number in {interval}, got {value!r}")
    return float(value)


def check_seed(name: str, value: object, error: type[AdlightError] = ConfigError) -> int:
    """``value`` if it is an int (any sign; a bool is not), else ``error`` naming ``name``."""
    if not is_int(value):
        raise error(f"{name} must be an int, got {value!r}")
    return value


def check_image_size(name: str, value: object, minimum: int = 1,
                     error: type[AdlightError] = ConfigError) -> int | tuple[int, int]:
    """An image size: an int (a square side) or ``[height, width]``, each >= ``minimum``.

    A pair of equal sides is returned as the int, so a square size has one spelling (the
    fitted heads' identity and the checkpoints compare it as text); an unequal pair as the
    tuple ``(height, width)``.
    """
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or any(not is_int(v) or v < minimum for v in value):
            raise error(f"{name} must be an int >= {minimum} or [height, width] of two such "
                        f"ints, got {list(value)!r}")
        height, width = (int(v) for v in value)
        return height if height == width else (height, width)
    if not is_int(value) or value < minimum:
        raise error(f"{name} must be an int >= {minimum} or [height, width] of two such ints, "
                    f"got {value!r}")
    return value


def image_shape(size: int | tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of a size :func:`check_image_size` accepted."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
