"""One line for a jsonargparse parsing error, naming the option and the closest valid names.

jsonargparse reports a bad value or an unknown option inside a class (``--model.init_args.lrr``) as a nested
report: the parser key, each class it tried, each alternative of a union, and finally the failure itself. This
module reads that report back into its failures (:func:`failures`), each with the option path that leads to it,
and turns the most useful one into a message and a hint (:func:`describe`): an unknown option with "did you mean"
over the arguments that the class accepts (or, at the top level, the options the parser knows), a config file that
does not exist with the similarly named files beside it, or the failing option with jsonargparse's reason.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from jsonargparse import ArgumentParser

_KEY = re.compile(r'^(?:- )?Parser key "(?P<key>[^"]+)":\s*(?P<rest>.*)$')
_CLASS = re.compile(r"^- Problem with given class_path '(?P<class_path>[^']+)':$")
# Lines of the report that describe its structure, not a failure (the None alternative of every Optional).
_STRUCTURE = re.compile(
    r"^(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*|"
    r"Given value: .*|- Expected a <class 'NoneType'>)$"
)
# An unknown key in a class's arguments, or (a config file's) at the top level.
_NOT_ACCEPTED = re.compile(
    r"^(?:Option '(?P<name>[^']+)' is not accepted"
    r"|(?:Subcommand|Group) '[^']+' does not accept option '(?P<key>[^']+)')$"
)
_UNRECOGNIZED = re.compile(r"^unrecognized arguments: (?P<arguments>.+)$")
_REQUIRED = re.compile(r"^the following arguments are required: (?P<names>.+)$")
_MISSING_FILE = re.compile(r"^File does not exist: '(?P<path>[^']+)'$")
_CLASS_REPR = re.compile(r"<class '(?P<name>[\w.]+)'>")
_NOT_A_CHOICE = re.compile(r"^Expected a typing\.Literal\[(?P<choices>.*)\](?:\. Got value: (?P<value>.*))?$")
_GIVEN_VALUE = re.compile(r"^\s*Given value: (?P<value>.*)$", re.MULTILINE)


@dataclass(frozen=True)
class Failure:
    """One failure of a jsonargparse report.

    Args:
        keys: the option path leading to it, e.g. ``("model", "init_args", "lr")``.
        class_path: the innermost class being parsed there, if any.
        outer_class: the outermost one with the key naming it (``("model", "lightning_modules.sdm.SDMLitModule")``),
            for the ``--model.help CLASS`` hint.
        text: jsonargparse's reason.
    """

    keys: tuple[str, ...]
    class_path: str | None
    outer_class: tuple[str, str] | None
    text: str

    @property
    def option(self) -> str:
        """The failing option as the command line spells it."""
        return "--" + ".".join(self.keys) if self.keys else "the command line"


def failures(message: str) -> list[Failure]:
    """The failures of a jsonargparse error ``message``, each once, in report order."""
    stack: list[tuple[int, str, str]] = []  # (indent, "key" or "class", value)
    found: list[Failure] = []
    for line in message.splitlines():
        text = line.strip()
        if not text:
            continue
        indent = len(line) - len(line.lstrip())
        while stack and stack[-1][0] >= indent:
            stack.pop()
        if match := _KEY.match(text):
            stack.append((indent, "key", match["key"]))
            if match["rest"]:
                found.append(_failure(stack, match["rest"]))
        elif match := _CLASS.match(text):
            stack.append((indent, "class", match["class_path"]))
        elif not _STRUCTURE.match(text):
            found.append(_failure(stack, text.removeprefix("- ")))
    return list(dict.fromkeys(found))


def _failure(stack: list[tuple[int, str, str]], text: str) -> Failure:
    keys: list[str] = []
    classes = [value for _, kind, value in stack if kind == "class"]
    outer_class = None
    for _, kind, value in stack:
        if kind == "key":
            keys.extend(value.split("."))
        elif outer_class is None:  # a subclass spec at the top (model, data, trainer.logger): its args are init_args
            outer_class = (".".join(keys), value)
            keys.append("init_args")
    return Failure(tuple(keys), classes[-1] if classes else None, outer_class, text)


def describe(message: str, parser: ArgumentParser | None, command: str) -> tuple[str, str]:
    """A one-line message and a hint for the jsonargparse error ``message``.

    Args:
        message: the error's text.
        parser: the parser that failed; its options are the "did you mean" candidates of an unknown top-level
            option (None: no suggestions there).
        command: how the user runs the command (for the help hint), e.g. ``python -m experiments.fit``.
    """
    found = failures(message) or [Failure((), None, None, message.splitlines()[0])]
    unknown = [(failure, name) for failure in found for name in _unknown_names(failure)]
    if unknown:
        failure, name = unknown[0]
        return _unknown_option(failure, name, parser, command)
    first = found[0]
    if first.keys == ("config",) and (missing := _MISSING_FILE.match(first.text)):
        return _missing_config(Path(missing["path"]))
    if not first.keys and (required := _REQUIRED.match(first.text)):
        names = ", ".join(f"--{name.strip()}" for name in required["names"].split(","))
        return f"missing required option {names}", _help_hint(first, command)
    if choice := _NOT_A_CHOICE.match(first.text):
        given = choice["value"] or (value["value"] if (value := _GIVEN_VALUE.search(message)) else "?")
        return _not_a_choice(first, given, ast.literal_eval(f"[{choice['choices']}]"), command)
    reasons = "; ".join(dict.fromkeys(_CLASS_REPR.sub(r"\g<name>", failure.text) for failure in found
                                      if failure.keys == first.keys))
    return f"{first.option}: {reasons}", _help_hint(first, command)


def _not_a_choice(failure: Failure, given: str, choices: list, command: str) -> tuple[str, str]:
    names = [str(choice) for choice in choices]
    close = difflib.get_close_matches(given, names, n=1)
    suggestion = f"; did you mean {close[0]}?" if close else ""
    return f"{failure.option}: {given} is not one of {', '.join(names)}{suggestion}", _help_hint(failure, command)


def _unknown_names(failure: Failure) -> list[str]:
    if match := _NOT_ACCEPTED.match(failure.text):
        return [match["name"] or match["key"]]
    if match := _UNRECOGNIZED.match(failure.text):
        return [word[2:].split("=")[0] for word in match["arguments"].split() if word.startswith("--")]
    return []


def _unknown_option(failure: Failure, name: str, parser: ArgumentParser | None, command: str) -> tuple[str, str]:
    prefix = ".".join(failure.keys)
    option = f"--{prefix}.{name}" if prefix else f"--{name}"
    if failure.class_path is not None:
        candidates = class_options(failure.class_path)
        owner = f" (not an argument of {failure.class_path})"
    else:
        candidates = sorted({known for each in all_parsers(parser) for known in parser_options(each)}) if parser else []
        owner = ""
    options = [f"--{prefix}.{close}" if prefix else f"--{close}" for close in closest(name, candidates)]
    suggestion = f"; did you mean {' or '.join(options)}?" if options else ""
    return f"unknown option {option}{owner}{suggestion}", _help_hint(failure, command)


def _missing_config(path: Path) -> tuple[str, str]:
    siblings = [p.name for p in path.parent.glob("*.y*ml")] if path.parent.is_dir() else []
    close = closest(path.name, siblings)
    suggestion = f"; did you mean {' or '.join(str(path.parent / name) for name in close)}?" if close else ""
    return f"config file not found: {path}{suggestion}", "the experiment configs are under configs/"


def closest(name: str, candidates: list[str]) -> list[str]:
    """The candidates most similar to ``name`` (difflib ratio at least 0.6, and within 0.05 of the best one)."""
    scored = sorted(((difflib.SequenceMatcher(None, name, candidate).ratio(), candidate) for candidate in candidates),
                    reverse=True)
    best = scored[0][0] if scored else 1.0
    return [candidate for score, candidate in scored[:3] if score >= max(0.6, best - 0.05)]


def _help_hint(failure: Failure, command: str) -> str:
    if failure.outer_class is not None:
        key, class_path = failure.outer_class
        return f"`{command} --{key}.help {class_path}` lists its options"
    return f"`{command} --help` lists the options"


def class_options(class_path: str) -> list[str]:
    """The dotted names of every argument jsonargparse accepts for ``class_path`` (nested dataclass fields
    included, e.g. ``network.model_channels``); empty when the class cannot be imported."""
    module_name, _, class_name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
        parser = ArgumentParser(exit_on_error=False)
        parser.add_class_arguments(cls, fail_untyped=False)
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [name for name in parser_options(parser) if not name.endswith(".help")]


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
    """The long options of ``parser`` without their leading ``--`` (``model.init_args.lr``, ``print_config``)."""
    return [option[2:] for action in parser._actions for option in action.option_strings if option.startswith("--")]


def all_parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and the parsers of its subcommands, recursively."""
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                yield from all_parsers(subparser)
