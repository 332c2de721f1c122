"""Arguments the commands share: a command's options are declared once, on its options dataclass.

``add_options`` makes the arguments from the dataclass's fields (types and defaults included) and
``options_from`` fills the dataclass back from what argparse parsed, so no default is written twice.
``DETECT_HELP`` says what each detection option does, for ``detect`` and ``batch`` alike.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable


DEVICE_HELP = "auto, cuda, cuda:N, mps or cpu"
"""What every ``--device`` takes."""

DETECT_HELP = {
    "model": "model file (.safetensors); default: the bundled model",
    "tile": "tile size in pixels (default: the model's)",
    "overlap": "tile overlap in pixels",
    "threshold": "slick probability threshold (default: the model's own, from its card)",
    "device": DEVICE_HELP,
    "band": "band name (HH, VV, HV, VH) or 1-based index",
    "bounds": "only this extent",
    "bounds_crs": "CRS of --bounds (default: the analysis UTM zone)",
    "prefix": "output file prefix (default: the scene's file name)",
    "min_area_km2": "drop slicks smaller than this (km²) from the outlines and the mask; 0 keeps every patch (default: the model's own, from its card)",
    "land_mask": "land never becomes a slick: default (GSHHG coastline), none, or your own land polygon file or raster (non-zero = land)",
    "land_buffer": "widen land by this many pixels",
    "nodata_buffer": "no slick within this many pixels of no data",
    "runtime": "what runs the model: auto (the fastest measured on this machine for this model, once) or one forced, "
               "alone or with a precision (e.g. 'openvino bf16')",
    "source_grid": "write rasters on the scene's own grid",
    "overwrite": "replace existing outputs of the same prefix",
    "tta": "average over the tile's mirror images (4x the model's work; on by default, measured better on real scenes)",
    "rotations": "with mirror averaging, also average over the tile's rotations by 90 degrees (8x the model's work; measured worse than mirrors alone on real scenes)",
    "half_turn": "with mirror averaging, average over the tile and its half turn only (2x the model's work; measured between one view and four on real scenes)",
}
"""What each field of ``DetectOptions`` but ``fast`` (which only benchmarks turn off) does, for the help."""


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


def add_options(parser: argparse.ArgumentParser, options: Any, helps: dict[str, str],
                **overrides: dict[str, Any]) -> None:
    """One ``--field-name`` argument per field of the ``options`` dataclass named in ``helps``, in that order.

    Type and default come from the dataclass (or from ``options`` itself when it is an instance: an
    experiment's own recipe), so a default is written once and the help says it; ``overrides`` adds or
    replaces add_argument keywords for a field (choices, nargs, a type, or ``flag`` for another option name).
    """
    hints = typing.get_type_hints(options if isinstance(options, type) else type(options))
    defaults = {f.name: getattr(options, f.name, f.default) for f in dataclasses.fields(options)}
    for name, text in helps.items():
        default = defaults[name]
        kind = _plain_type(hints[name])
        keywords: dict[str, Any] = {"help": text, "default": default}
        if kind is bool:
            # An option on by default needs its --no- form to be turned off.
            keywords["action"] = argparse.BooleanOptionalAction if default else "store_true"
        else:
            keywords["type"] = kind
            if default is not None and default is not dataclasses.MISSING:
                keywords["help"] = f"{text} (default {default:g})" if isinstance(default, float) else f"{text} (default {default})"
        keywords.update(overrides.get(name, {}))
        flag = keywords.pop("flag", "--" + name.replace("_", "-"))
        parser.add_argument(flag, dest=name, **keywords)


class Given(argparse.Action):
    """Stores an option's value and notes that the command line gave it (``given``): for an option whose
    meaning, when left out, depends on another option (``generator train --kind``)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Any = None) -> None:
        setattr(namespace, self.dest, values)
        namespace.given = given(namespace) | {self.dest}


def given(args: argparse.Namespace) -> set[str]:
    """The options parsed with ``Given`` that the command line gave."""
    return set(getattr(args, "given", ()))


def options_from(args: argparse.Namespace, options: Any, **given: Any) -> Any:
    """The ``options`` dataclass (or a copy of the instance ``options``) with the parsed arguments it has
    fields for, plus ``given``."""
    names = {f.name for f in dataclasses.fields(options)}
    values = {name: value for name, value in vars(args).items() if name in names}
    if isinstance(options, type):
        return options(**{**values, **given})
    return dataclasses.replace(options, **{**values, **given})


def _plain_type(hint: Any) -> Callable[[str], Any]:
    """``Optional[int]`` -> int, ``str | Path`` -> str; argparse converts text with it."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return typing.get_origin(hint) or hint
