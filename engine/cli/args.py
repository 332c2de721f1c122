"""Argument types the commands share (each command's ``add_cli`` builds its own arguments)."""

from __future__ import annotations

import argparse
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
