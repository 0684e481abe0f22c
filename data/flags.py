"""Command-line flags derived from config dataclasses, so that a setting is written once.

A config field that a command exposes carries its help text (and, where the type does not say it,
its flag name, parser or choices) in its metadata; the commands add the flags from the dataclass
and build the config back from the parsed arguments::

    @dataclass
    class TrainConfig:
        epochs: int = option(12, "training epochs")
        amp: bool = option(True, "mixed precision on CUDA", flag="--no-amp")

    add_options(parser, TrainConfig)            # --epochs N, --no-amp, each with its help and default
    cfg = options_from_args(TrainConfig, args)  # TrainConfig(epochs=..., amp=...)

A new option is one field. Flags are ``--`` + the field name with dashes; a bool defaulting to
False is a switch, one defaulting to True is turned off by its ``--no-...`` flag; ``X | None``
takes an X; choices (and the help) may be a callable, read when the parser is built (e.g. from an
extension table defined further down). The default is appended to every help text. Lives in the bottom layer so that every
layer's configs (data, runtime, train, export) use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["add_options", "comma_list", "int_list", "non_negative_float", "option", "option_fields",
           "options_from_args", "positive_int"]

_KEY = "edgereid.flag"


def option(default: Any = dataclasses.MISSING, help: str | Callable[[], str] = "", *, default_factory: Any = dataclasses.MISSING,
           flag: str | None = None, type: Callable[[str], Any] | None = None,
           choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None, metavar: str | None = None,
           nargs: str | int | None = None, required: bool = False, show_default: bool = True) -> Any:
    """A dataclass field that is also a command-line flag (see the module docstring)."""
    if not help:
        raise ValueError("option(): every flag needs its help text")
    meta = {"help": help, "flag": flag, "type": type, "choices": choices, "metavar": metavar, "nargs": nargs,
            "required": required, "show_default": show_default}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata={_KEY: meta})
    return dataclasses.field(default=default, metadata={_KEY: meta})


def positive_int(text: str) -> int:
    """A flag's parser: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def non_negative_float(text: str) -> float:
    """A flag's parser: a finite number >= 0."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {text!r}")
    return v


def comma_list(text: str) -> list[str]:
    """``"8.6, 8.9"`` -> ``["8.6", "8.9"]`` (a flag's parser)."""
    return [v.strip() for v in text.split(",") if v.strip()]


def int_list(text: str) -> list[int]:
    """``"3,6,9"`` -> ``[3, 6, 9]`` (a flag's parser)."""
    try:
        return [int(v) for v in comma_list(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected comma-separated integers, e.g. 3,6,9") from None


def option_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of a config dataclass that are flags, in declaration order."""
    return [f for f in dataclasses.fields(cls) if _KEY in f.metadata]


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _base_type(hint: Any) -> tuple[Any, bool]:
    """``X | None`` -> (X, True); anything else -> (hint, False)."""
    args = typing.get_args(hint)
    if (typing.get_origin(hint) in (typing.Union, types.UnionType)) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else hint), True
    return hint, False


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return str(value)


def add_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, cls: type, *,
                only: Iterable[str] | None = None, skip: Iterable[str] = (), defaults: Mapping[str, Any] | None = None,
                required: Iterable[str] = ()) -> None:
    """Add a flag for every :func:`option` field of ``cls`` (``only`` some, or all but ``skip``).

    ``defaults`` overrides a field's default for this command (field name -> value); ``required``
    names fields that this command requires.
    """
    hints = typing.get_type_hints(cls)
    wanted = set(only) if only is not None else None
    skip, defaults, required = set(skip), dict(defaults or {}), set(required)
    fields = {f.name: f for f in option_fields(cls)}
    unknown = (wanted or set()) | skip | set(defaults) | required
    if unknown - set(fields):
        raise ValueError(f"add_options({cls.__name__}): {sorted(unknown - set(fields))} are not option fields")
    for name, f in fields.items():
        if (wanted is not None and name not in wanted) or name in skip:
            continue
        meta = f.metadata[_KEY]
        default = defaults.get(name, _default(f))
        hint, _optional = _base_type(hints[name])
        flag = meta["flag"] or "--" + name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": name, "help": meta["help"]() if callable(meta["help"]) else meta["help"]}
        if hint is bool and meta["type"] is None:
            if default and not flag.startswith("--no-"):
                flag = "--no-" + flag[2:]
            kwargs["action"] = "store_false" if flag.startswith("--no-") else "store_true"
            kwargs["default"] = bool(default)
            parser.add_argument(flag, **kwargs)
            continue
        convert = meta["type"] or (hint if hint in (int, float, str) else None)
        if convert is None:
            raise TypeError(f"{cls.__name__}.{name}: a {hints[name]} field needs option(type=...) to parse its flag")
        kwargs["type"] = convert
        choices = meta["choices"]
        if choices is not None:
            kwargs["choices"] = list(choices() if callable(choices) else choices)
        for key in ("metavar", "nargs"):
            if meta[key] is not None:
                kwargs[key] = meta[key]
        if "metavar" not in kwargs and "choices" not in kwargs:
            kwargs["metavar"] = flag[2:].replace("-", "_").upper()  # the flag's name, not the field's
        if meta["required"] or name in required:
            kwargs["required"] = True
        else:
            kwargs["default"] = default
            if meta["show_default"] and default is not None:
                kwargs["help"] += f" (default {_show(default)})"
        parser.add_argument(flag, **kwargs)


def options_from_args(cls: type, args: argparse.Namespace, *, only: Iterable[str] | None = None,
                      **overrides: Any) -> Any:
    """An instance of ``cls`` from parsed flags (``only`` some fields; the others keep their defaults).

    ``overrides`` set fields directly (values the command computes from other flags).
    """
    wanted = set(only) if only is not None else None
    values = {f.name: getattr(args, f.name) for f in option_fields(cls)
              if hasattr(args, f.name) and (wanted is None or f.name in wanted)}
    values.update(overrides)
    return cls(**values)
