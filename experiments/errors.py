"""How condiff commands report a user's mistake: one line and a hint on stderr, not a traceback.

Every entry point parses its command line with :func:`parse_args` (``CondiffCLI`` does so for ``fit`` and ``test``)
and ends with ``run_main(main)``. :func:`parse_args` reports a bad option or config file; :func:`run_main` reports an
error raised later when it is a user's mistake: one of :data:`USER_ERRORS` (a bad option, a missing or truncated
file, an unreadable sample, a missing weights file, a diverged run) or a ``ValueError`` / ``FileNotFoundError`` that
condiff's own code raised (its checks name the file or value at fault). Anything else is a bug and keeps its
traceback; ``CONDIFF_DEBUG=1`` keeps every traceback.
"""

from __future__ import annotations

import os
import re
import sys
from argparse import ArgumentError, RawDescriptionHelpFormatter
from collections.abc import Callable, Sequence
from dataclasses import fields
from types import TracebackType
from typing import Any, TypeVar

from jsonargparse import ActionConfigFile, ArgumentParser, DefaultHelpFormatter, Namespace

from callbacks.nonfinite_guard import NonFiniteLossError
from datamodules.bad_samples import BadSampleError
from experiments.argument_errors import all_parsers, describe
from experiments.checkpoint_io import CorruptCheckpointError
from experiments.quiet import silence_third_party_noise
from lightning_modules.metrics.weights import MissingWeightsError

T = TypeVar("T")
DEBUG_ENV = "CONDIFF_DEBUG"
OWN_PACKAGES = frozenset({"callbacks", "datamodules", "experiments", "lightning_modules"})
# How torch re-raises an error of a DataLoader worker process: the original traceback inside the message.
_WORKER_ERROR = re.compile(r"^Caught \w+ in DataLoader worker process \d+\.\nOriginal Traceback")


class CommandError(Exception):
    """A mistake in how a command was called (an option, a file it names), with a hint on how to fix it.

    Args:
        message: what is wrong, on one line, naming the option or file.
        hint: how to fix it or where to look.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


# Errors written for the user wherever they are raised.
USER_ERRORS: tuple[type[Exception], ...] = (
    CommandError, ArgumentError, BadSampleError, MissingWeightsError, CorruptCheckpointError, NonFiniteLossError,
)
# Errors that are the user's when condiff's own code raised them (elsewhere, e.g. inside numpy, they are bugs).
OWN_CHECK_ERRORS: tuple[type[Exception], ...] = (ValueError, FileNotFoundError, NotADirectoryError)


def debug_mode() -> bool:
    """Whether ``CONDIFF_DEBUG`` asks for full tracebacks."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes"}


def command_name() -> str:
    """How the user ran this command, e.g. ``python -m experiments.fit``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    return f"python -m {spec.name}" if spec is not None and spec.name else sys.argv[0]


class HelpFormatter(DefaultHelpFormatter, RawDescriptionHelpFormatter):
    """jsonargparse's help, keeping the line breaks of the command's description (its usage examples)."""


def command_parser(prog: str, description: str | None) -> ArgumentParser:
    """The parser of a condiff command: ``--config`` files, typed help, no abbreviated option names."""
    return ArgumentParser(prog=prog, description=description, formatter_class=HelpFormatter, allow_abbrev=False)


def parse_dataclass_options(
    options_class: type[T], prog: str, description: str | None, argv: Sequence[str] | None
) -> T:
    """The ``options_class`` dataclass from a command line (``argv``; default ``sys.argv[1:]``), with ``--config``
    files, typed help from its docstring and :func:`parse_args`' one-line mistakes."""
    parser = command_parser(prog, description)
    parser.add_argument("--config", action=ActionConfigFile, help="a YAML file of these options")
    parser.add_class_arguments(options_class, nested_key=None, as_group=False)
    namespace = parser.instantiate(parse_args(parser, None if argv is None else list(argv)))
    return options_class(**{item.name: getattr(namespace, item.name) for item in fields(options_class)})


def parse_args(parser: ArgumentParser, args: Sequence[str] | None = None) -> Namespace:
    """``parser.parse_args(args)``, where a mistake prints :func:`report_lines` (the option and the closest valid
    names) instead of jsonargparse's usage text, and exits with status 2; with ``CONDIFF_DEBUG=1`` it raises
    jsonargparse's full error."""
    parsers = list(all_parsers(parser))
    exit_on_error = [each.exit_on_error for each in parsers]
    for each in parsers:
        each.exit_on_error = False
    try:
        return parser.parse_args(args)
    except ArgumentError as error:
        if debug_mode():
            raise
        print("\n".join(report_lines(CommandError(*describe(str(error), parser, command_name())))), file=sys.stderr)
        raise SystemExit(2) from None
    finally:
        for each, value in zip(parsers, exit_on_error):
            each.exit_on_error = value


def is_user_error(error: BaseException) -> bool:
    """Whether ``error`` reports a user's mistake (module docstring) rather than a bug."""
    if isinstance(error, USER_ERRORS):
        return True
    return isinstance(error, OWN_CHECK_ERRORS) and raising_package(error.__traceback__) in OWN_PACKAGES


def raising_package(traceback: TracebackType | None) -> str | None:
    """The top-level package of the code that raised (the innermost frame of ``traceback``)."""
    if traceback is None:
        return None
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    spec = traceback.tb_frame.f_globals.get("__spec__")
    module = spec.name if spec is not None else traceback.tb_frame.f_globals.get("__name__", "")
    return module.partition(".")[0]


def report_lines(error: Exception) -> list[str]:
    """``error:`` and ``hint:`` lines for a user error: the message's first line, then the rest of it and the
    error's own hint."""
    if isinstance(error, ArgumentError):  # from a parser not read through parse_args
        error = CommandError(*describe(str(error), None, command_name()))
    text = str(error).strip()
    if _WORKER_ERROR.match(text):  # keep the original error's last line: "module.Type: message"
        text = text.splitlines()[-1].partition(": ")[2]
    first, _, rest = text.partition("\n")
    hints = [" ".join(rest.split()), getattr(error, "hint", ""), _data_hint(error)]
    hint = " ".join(part for part in hints if part)
    details = f"{DEBUG_ENV}=1 shows the details"
    return [f"error: {first}", f"hint: {hint} ({details})" if hint else f"hint: {details}"]


def _data_hint(error: Exception) -> str:
    """For a file the data layer did not find: where the data's location is set."""
    missing = isinstance(error, (FileNotFoundError, NotADirectoryError))
    if missing and raising_package(error.__traceback__) == "datamodules":
        return "Is the dataset location right (--data.init_args.root)?"
    return ""


def run_main(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run an entry point's ``main(argv)`` as a command: third-party noise filtered
    (:func:`~experiments.quiet.silence_third_party_noise`) and a user's mistake reported as :func:`report_lines`
    on stderr, exiting with status 2 for a command-line error and 1 otherwise."""
    silence_third_party_noise()
    try:
        main(argv)
    except Exception as error:
        if debug_mode() or not is_user_error(error):
            raise
        print("\n".join(report_lines(error)), file=sys.stderr)
        raise SystemExit(2 if isinstance(error, ArgumentError) else 1) from None
