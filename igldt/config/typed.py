"""Plain merged YAML data <-> the typed dataclasses of `schema.py`, checked key by key.

Every refusal is one line naming the full key, the value and what the key takes, e.g.
`train.lr: expected a number, got 'abc'`. Conversions kept on purpose: an integer where a number is
expected (YAML writes `lr: 1`), a string Python reads as a number (YAML 1.1 reads `1e-3` as a
string), a list where a tuple is declared, and train.amp's YAML booleans (`off`). Booleans are never
taken as numbers, nor numbers as booleans or strings.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from .errors import ConfigError
from .schema import YAML_BOOL_WORDS, Config


class _Mismatch(Exception):
    """A value that does not fit its type; `convert` turns it into the ConfigError naming the key."""


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def describe(tp: Any) -> str:
    """What a type accepts, in the words of an error message."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(a) for a in args if a is not type(None)) + " or null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of any of {', '.join(map(str, typing.get_args(args[0])))}"
        return f"a list of {len(args)} {_plural(args[0])}"
    if dataclasses.is_dataclass(tp):
        return "a mapping"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(tp, "a mapping")


def _plural(tp: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings"}.get(tp, describe(tp))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def convert(value: Any, tp: Any, key: str, metadata: Mapping = types.MappingProxyType({})) -> Any:
    """`value` as type `tp`, or a ConfigError naming `key`."""
    words = metadata.get(YAML_BOOL_WORDS)
    if words and isinstance(value, bool):
        value = words[value]
    if dataclasses.is_dataclass(tp):
        return section(tp, value, key)
    try:
        return _scalar_or_container(value, tp, key)
    except _Mismatch:
        raise ConfigError(f"{key}: expected {describe(tp)}, got {_short(value)}") from None


def _scalar_or_container(value: Any, tp: Any, key: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _scalar_or_container(value, inner, key)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise _Mismatch
    if origin is tuple:
        return _tuple(value, args, key)
    if origin is dict:
        return check_partial(value, key)
    return _scalar(value, tp)


def _tuple(value: Any, args: tuple, key: str) -> tuple:
    if not isinstance(value, (list, tuple)):
        raise _Mismatch
    items = [args[0]] * len(value) if len(args) == 2 and args[1] is Ellipsis else list(args)
    if len(items) != len(value):
        raise _Mismatch
    return tuple(_scalar_or_container(v, t, key) for v, t in zip(value, items))


def _scalar(value: Any, tp: type) -> Any:
    if tp is bool and isinstance(value, bool):
        return value
    if tp is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if tp is float and not isinstance(value, bool):
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise _Mismatch from None
    if tp is str and isinstance(value, str):
        return value
    raise _Mismatch


def section(cls: type, raw: Any, key: str) -> Any:
    """A dataclass from a mapping: unknown keys refused, missing ones from the class's defaults
    (a role given whole) or refused."""
    where = f"{key}." if key else ""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key or 'config'}: expected a mapping, got {_short(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{where}{unknown[0]}'; known here: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        if name in raw:
            values[name] = convert(raw[name], _hints(cls)[name], where + name, f.metadata)
        elif f.default is dataclasses.MISSING:
            raise ConfigError(f"config key '{where}{name}' is missing (a section given whole must set it)")
    return cls(**values)


def check_partial(raw: Any, key: str, cls: type = Config) -> dict:
    """A stage section: a partial config in the nesting of `cls`, each value checked against the
    type of the key it sets; returned with the values converted (`None` reads as empty)."""
    raw = {} if raw is None else raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{key}: expected a mapping of config sections, got {_short(raw)}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "stages"}
    out = {}
    for name, value in raw.items():
        if name not in fields:
            raise ConfigError(f"unknown config key '{key}.{name}'; known here: {', '.join(sorted(fields))}")
        tp = _hints(cls)[name]
        if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):  # merged into the section, as load.py merges it
            out[name] = check_partial(value, f"{key}.{name}", tp)
        else:
            out[name] = convert(value, tp, f"{key}.{name}", fields[name].metadata)
    return out
