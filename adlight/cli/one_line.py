"""One line per error on the command line: the :class:`AdlightError` behind an exception, and
jsonargparse's parser errors without the usage of every option."""

from __future__ import annotations

import difflib
import importlib
import inspect
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
    if key is not None and given and given[-1].startswith(("{", "[")):
        # a whole section given in a config file: name the key inside it, never dump it
        return _nested_message(key.group(1), lines)
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
    reasons = [_readable_reason(reason) for reason in reasons]
    line = f"{head}: {'; '.join(reasons)}" if reasons else head
    return line + _did_you_mean(line) + _option_hint(line, lines)


_LITERAL = re.compile(r"Expected a typing\.Literal\[(.*)\]")
_NOT_ACCEPTED = re.compile(r"Option '([\w.]+)' is not accepted")


def _readable_reason(reason: str) -> str:
    literal = _LITERAL.match(reason)
    return f"must be one of {literal.group(1)}" if literal else reason


def _nested_message(section: str, lines: list[str]) -> str:
    """The innermost key and value of a message about a whole section (``model={...}``)."""
    keys, value, reason, class_path = [section], None, None, None
    for line in lines[1:]:
        text = line.lstrip("- ")
        inner = re.match(r'Parser key "([^"]+)":\s*(.*)', text)
        if inner:
            keys.append(inner.group(1))
            continue
        problem = re.match(r"Problem with given class_path '([^']+)'", text)
        if problem:
            class_path = problem.group(1)
            continue
        if _SEARCH_LINES.fullmatch(text) or text.startswith("Expected a <class 'NoneType'>"):
            continue
        if reason is None:
            got = re.search(r"\.? Got value: (.*)", text)
            value = got.group(1) if got else None
            reason = re.sub(r"\.? Got value: .*", "", text)
    option = _NOT_ACCEPTED.search(reason or "")
    if option:
        keys.append(option.group(1))
    head = ".".join(keys) + (f"={value}" if value is not None else "")
    if class_path and (_NO_ATTRIBUTE.search(reason or "") or "No module named" in (reason or "")):
        head = f"{head}.class_path={class_path}"
    line = f"{head}: {_readable_reason(reason or 'invalid value')}"
    if option and class_path:
        line += _accepted_options(class_path, option.group(1))
    return line + _did_you_mean(line)


def _accepted_options(class_path: str, given: str) -> str:
    """"; did you mean X? (accepted: ...)" from the arguments of ``class_path``'s ``__init__``."""
    module, _, name = class_path.rpartition(".")
    try:
        parameters = inspect.signature(getattr(importlib.import_module(module), name).__init__).parameters
    except Exception:  # noqa: BLE001 - a suggestion only; the line already says what is wrong
        return ""
    names = [p for p in parameters if p != "self" and parameters[p].kind not in
             (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    close = difflib.get_close_matches(given, names, n=1)
    return (f"; did you mean '{close[0]}'?" if close else "") + f" (accepted: {', '.join(names)})"


def _option_hint(line: str, lines: list[str]) -> str:
    """A command-line option typo (``--model.los``): the close names of that class's arguments."""
    option = _NOT_ACCEPTED.search(line)
    problem = next((re.search(r"Problem with given class_path '([^']+)'", x) for x in lines
                    if "Problem with given class_path" in x), None)
    if option is None or problem is None:
        return ""
    return _accepted_options(problem.group(1), option.group(1))


def _did_you_mean(line: str) -> str:
    """For a class path with a typo (``adlight.models.AutoencoderModle``): the close class names
    the module does have."""
    missing = _NO_ATTRIBUTE.search(line)
    if missing is None:
        return ""
    try:
        module = importlib.import_module(missing.group(1))
    except Exception:  # noqa: BLE001 - a suggestion only; the line already says what is wrong
        return ""
    names = [n for n in dir(module) if not n.startswith("_") and inspect.isclass(getattr(module, n, None))]
    close = difflib.get_close_matches(missing.group(2), names, n=1)
    return f"; did you mean '{missing.group(1)}.{close[0]}'?" if close else ""


#: the commands adlight.cli.main dispatches before LightningCLI's fit/validate/test/predict
#: see them, listed by ``adlight --help``
OTHER_COMMANDS = {
    "export": "write a fitted model as ONNX / OpenVINO / TorchScript with metadata.json",
    "predict --exported": "score a folder with an exported model (no torch needed)",
    "sweep": "run a grid of configs locally or on SLURM",
    "benchmark": "regenerate a paper's table (a sweep and its report)",
    "compare": "one page of test runs side by side",
    "serve": "serve an exported model over HTTP (pip install \"adlight[serve]\")",
    "demo": "a local page to try an exported model or a checkpoint (pip install \"adlight[demo]\")",
}


class AdlightParser(LightningArgumentParser):
    """LightningCLI's parser whose errors are ``adlight: error: ...`` lines (exit 2)."""

    def format_help(self) -> str:
        text = super().format_help()
        if getattr(self, "_subcommands_action", None) is None:  # a subcommand's own help
            return text
        width = max(len(name) for name in OTHER_COMMANDS) + 2
        listed = "".join(f"    {name:<{width}}{what}\n" for name, what in OTHER_COMMANDS.items())
        return f"{text}\nother commands (adlight COMMAND --help for each):\n{listed}"

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or os.environ.get("JSONARGPARSE_DEBUG"):
            super().error(message, ex)  # raises: a caller or a debugging user wants the exception
        cause = adlight_cause(ex)
        line = one_line(cause) if cause is not None else parser_message(message)
        prog = self.prog.replace(" [options]", "")
        sys.stderr.write(f"adlight: error: {line} (see {prog} --help)\n")
        sys.exit(2)
