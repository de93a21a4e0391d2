"""Checks a config section's field values against the field types it declares.

JSON and `hepta train --set` hand in 2.0 where an int is meant and 1 where a bool is meant, so
every section checks its values' types before its ranges. The checks follow the resolved
annotations (`typing.get_type_hints`): `int`, `float`, `bool`, `str`, `Literal[...]` choices,
`X | None` and `tuple[int, ...]`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from functools import cache
from typing import Any, Literal, Union


class FieldError(ValueError):
    """A config value outside what its field allows; the message names `section.field`, the value and the rule."""


def require(ok: bool, section: Any, name: str, allowed: str) -> None:
    """Raise FieldError for `section.name` unless `ok`; `allowed` says what the field accepts."""
    if not ok:
        raise FieldError(f"ModelConfig.{qualified(section, name)}={getattr(section, name)!r} is invalid: {allowed}")


def qualified(section: Any, name: str) -> str:
    prefix = getattr(type(section), "SECTION", "")
    return f"{prefix}.{name}" if prefix else name


@cache
def field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _what_fits(hint: Any, value: object) -> tuple[bool, str]:
    """(does value fit hint, what the hint allows in words)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        fits, allowed = _what_fits(inner, value)
        return value is None or fits, f"{allowed} or null"
    if origin is Literal:
        return value in args, f"use one of {args}"
    if origin is tuple:
        return isinstance(value, tuple) and all(_is_int(v) for v in value), "it must be a list of integers"
    if dataclasses.is_dataclass(hint):  # a ModelConfig section
        return isinstance(value, hint), f"it must be a {hint.__name__}"
    if hint is bool:
        return isinstance(value, bool), "it must be true or false"
    if hint is int:
        return _is_int(value), "it must be an integer"
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool), "it must be a number"
    if hint is str:
        return isinstance(value, str), "it must be a string"
    raise AssertionError(f"no type check for {hint!r}")


def check_types(section: Any) -> None:
    """Raise FieldError for the first field whose value does not fit its declared type.

    JSON lists become tuples first (config.json stores `dense_layers` as a list).
    """
    hints = field_types(type(section))
    for f in dataclasses.fields(section):
        value = getattr(section, f.name)
        if isinstance(value, list) and typing.get_origin(hints[f.name]) is tuple:
            value = tuple(value)
            object.__setattr__(section, f.name, value)
        fits, allowed = _what_fits(hints[f.name], value)
        require(fits, section, f.name, allowed)
