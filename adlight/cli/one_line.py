"""One line per error on the command line: the :class:`AdlightError` behind an exception, and
jsonargparse's parser errors without the usage of every option."""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from typing import NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from adlight.errors import AdlightError

# lines of jsonargparse's messages that say how it searched, not what is wrong
_SEARCH_LINES = re.compile(r"(Does not validate against any of the Union subtypes|Subtypes:|Errors:|"
                           r"Given value type:|Given value:|Expected a <class 'NoneType'>|"
                           r"Problem with given class_path .*:|Parser key \"[^\"]+\":).*")
# a value given for a nested key (--model.network.init_args.latent_dim 1.5) is reported as this
_NO_ATTRIBUTE = re.compile(r"module '([\w.]+)' has no attribute '(\w+)'")
_NESTED = re.compile(r"NestedArg\(key='([^']+)', val='(.*)'\)")


def one_line(error: BaseException) -> str:
    # errors raised in DataLoader workers arrive with the worker's traceback in the
    # message; the last line is the one that names the problem
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def adlight_cause(error: BaseException | None) -> AdlightError | None:
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


def parser_message(message: str) -> str:
    """jsonargparse's (often nested, many-line) message as one line: the key, the value given
    and the reasons, without the lines that describe its search."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    if not lines:
        return "invalid arguments"
    key = re.match(r'Parser key "([^"]+)":\s*(.*)', lines[0])
    given = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Given value:")]
    reasons = [re.sub(r"\.? Got value: .*", "", line) for line in (raw.lstrip("- ") for raw in lines[1:])
               if not _SEARCH_LINES.fullmatch(line)]
    reasons = list(dict.fromkeys(reasons))  # the same reason may come from several subtypes
    head = lines[0]
    if key is not None:
        nested = _NESTED.fullmatch(given[-1]) if given else None
        if nested:
            head = f"{key.group(1)}.{nested.group(1)}={nested.group(2)}".replace(".init_args", "")
        else:
            head = key.group(1) + (f"={given[-1]}" if given else "")
    if key is not None and key.group(2) and not _SEARCH_LINES.fullmatch(key.group(2)):
        reasons.insert(0, key.group(2))
    line = f"{head}: {'; '.join(reasons)}" if reasons else head
    return line + _did_you_mean(line)


def _did_you_mean(line: str) -> str:
    """For a class path with a typo (``adlight.models.AutoencoderModle``): the close names the
    module does have."""
    missing = _NO_ATTRIBUTE.search(line)
    if missing is None:
        return ""
    try:
        names = dir(importlib.import_module(missing.group(1)))
    except Exception:  # noqa: BLE001 - a suggestion only; the line already says what is wrong
        return ""
    close = difflib.get_close_matches(missing.group(2), [n for n in names if not n.startswith("_")], n=1)
    return f"; did you mean '{missing.group(1)}.{close[0]}'?" if close else ""


class AdlightParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are ``adlight: error: ...`` lines (exit 2)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises: a caller or a debugging user wants the exception
        cause = adlight_cause(ex)
        line = one_line(cause) if cause is not None else parser_message(message)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"adlight: error: {line} (see {prog} --help)\n")
        sys.exit(2)
