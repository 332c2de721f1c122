"""Arguments the commands share: a command's options are declared once, on its options dataclass.

``add_options`` makes the arguments from the dataclass's fields (types and defaults included) and
``options_from`` fills the dataclass back from what argparse parsed, so no default is written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable


def number_or(word: str, meaning: Any = None, convert: Callable[[str], Any] = float) -> Callable[[str], Any]:
    """An argparse type taking a number or ``word`` (``--lr auto``, ``--b auto``, ``--n all``), which stands
    for ``meaning``; anything else is refused by argparse with the usage line, before any work starts."""

    def parse(text: str) -> Any:
        if text == word:
            return meaning
        try:
            return convert(text)
        except ValueError:
            kind = "whole number" if convert is int else "number"
            raise argparse.ArgumentTypeError(f"{text!r} is neither a {kind} nor {word}") from None

    parse.__name__ = f"number or {word}"
    return parse


def add_options(parser: argparse.ArgumentParser, options: type, helps: dict[str, str],
                **overrides: dict[str, Any]) -> None:
    """One ``--field-name`` argument per field of the ``options`` dataclass named in ``helps``, in that order.

    Type and default come from the dataclass, so a default is written once (on the dataclass) and the
    help says it; ``overrides`` adds or replaces add_argument keywords for a field (choices, nargs, a type).
    """
    hints = typing.get_type_hints(options)
    defaults = {f.name: f.default for f in dataclasses.fields(options)}
    for name, text in helps.items():
        default = defaults[name]
        kind = _plain_type(hints[name])
        keywords: dict[str, Any] = {"help": text, "default": default}
        if kind is bool:
            keywords["action"] = "store_true"
        else:
            keywords["type"] = kind
            if default is not None and default is not dataclasses.MISSING:
                keywords["help"] = f"{text} (default {default})"
        keywords.update(overrides.get(name, {}))
        parser.add_argument("--" + name.replace("_", "-"), dest=name, **keywords)


def options_from(args: argparse.Namespace, options: type, **given: Any) -> Any:
    """The ``options`` dataclass filled from the parsed arguments it has fields for, plus ``given``."""
    names = {f.name for f in dataclasses.fields(options)}
    values = {name: value for name, value in vars(args).items() if name in names}
    return options(**{**values, **given})


def _plain_type(hint: Any) -> Callable[[str], Any]:
    """``Optional[int]`` -> int, ``str | Path`` -> str; argparse converts text with it."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint
