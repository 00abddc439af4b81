"""TOML files into frozen, typed dataclasses, with errors that name file, key, value and expectation.

Every schema in the project (pieces, shows, render jobs) is a frozen dataclass; this module holds
the one validator that turns a TOML table into one of them. Ranges and help text live on the
field itself (`setting(...)`), so the schema is the single source of truth for validation, for
documentation and for the OSC parameter schema later on.

    @dataclass(frozen=True)
    class Optim:
        lr: float = setting(2e-3, gt=0, le=1, doc="learning rate")

    cfg = load_dataclass(Optim, {"lr": 0.01}, source="pieces/x.toml", prefix="optim")
"""

from __future__ import annotations

import collections.abc
import dataclasses
import difflib
import math
import tomllib
import types
from pathlib import Path
from typing import Any, Literal, Mapping, TypeVar, Union, get_args, get_origin, get_type_hints

from .errors import ConfigError

T = TypeVar("T")

__all__ = ["setting", "load_dataclass", "read_toml", "to_dict", "ConfigError"]


def setting(default: Any = dataclasses.MISSING, *, ge=None, le=None, gt=None, lt=None, doc: str = "",
            default_factory: Any = dataclasses.MISSING):
    """A dataclass field with an allowed range and a line of help.

    `ge`/`le` are inclusive bounds, `gt`/`lt` exclusive. For tuples the bounds apply to every item.
    """
    meta = {"ge": ge, "le": le, "gt": gt, "lt": lt, "doc": doc}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: str | Path) -> dict:
    """Read a TOML file; a missing or malformed file is one ConfigError naming it."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(str(path), "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(path), "", "is a directory, expected a .toml file") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(path), "", f"not valid TOML ({e})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(path), "", f"cannot be read ({e})") from None


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if tp is type(None):
        return "nothing"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp) if a is not type(None))
    if origin is tuple:
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_type_name(args[0])}"
        return f"a list of {len(args)} items ({', '.join(_type_name(a) for a in args)})"
    if origin in (dict, Mapping, collections.abc.Mapping):
        return f"a table of {_type_name(get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return "a table"
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(tp, str(tp))


def _check_range(value, meta, source, key):
    if not meta or not isinstance(value, (int, float)) or isinstance(value, bool):
        return
    bounds = []
    ok = True
    if meta.get("ge") is not None:
        ok &= value >= meta["ge"]
        bounds.append(f">= {meta['ge']}")
    if meta.get("gt") is not None:
        ok &= value > meta["gt"]
        bounds.append(f"> {meta['gt']}")
    if meta.get("le") is not None:
        ok &= value <= meta["le"]
        bounds.append(f"<= {meta['le']}")
    if meta.get("lt") is not None:
        ok &= value < meta["lt"]
        bounds.append(f"< {meta['lt']}")
    if not ok:
        raise ConfigError(source, key, f"{value!r} is out of range, expected {' and '.join(bounds)}")


def _convert(value: Any, tp: Any, source: str, key: str, meta: Mapping | None) -> Any:
    origin = get_origin(tp)
    wrong = lambda: ConfigError(source, key, f"{value!r} is {type(value).__name__}, expected {_type_name(tp)}")  # noqa: E731

    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, source, key, meta)
            except ConfigError as e:
                errors.append(e)
        # A single real option: its own message is the most precise one.
        if len([o for o in options if o is not type(None)]) == 1:
            raise errors[0]
        raise wrong()
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            close = difflib.get_close_matches(str(value), [str(a) for a in allowed], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(source, key, f"{value!r} is not allowed, expected {_type_name(tp)}{hint}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise wrong()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise wrong()
        _check_range(value, meta, source, key)
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise wrong()
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(source, key, f"{value!r} is not a finite number")
        _check_range(value, meta, source, key)
        return value
    if tp is str:
        if not isinstance(value, str):
            raise wrong()
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise wrong()
        args = get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], source, f"{key}[{i}]", meta) for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(source, key, f"{value!r} has {len(value)} items, expected {_type_name(tp)}")
        return tuple(_convert(v, a, source, f"{key}[{i}]", meta) for i, (v, a) in enumerate(zip(value, args)))
    if origin in (dict, Mapping, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise wrong()
        kt, vt = get_args(tp)
        return types.MappingProxyType(
            {_convert(k, kt, source, f"{key}", None): _convert(v, vt, source, f"{key}.{k}", meta)
             for k, v in value.items()})
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise wrong()
        return load_dataclass(tp, value, source=source, prefix=key)
    if tp is Any:
        return value
    raise TypeError(f"config type {tp!r} at {key} is not supported by the loader")


def load_dataclass(cls: type[T], data: Mapping[str, Any], *, source: str, prefix: str = "") -> T:
    """Validate a mapping (a parsed TOML table) into the frozen dataclass `cls`.

    Raises ConfigError naming `source` and the dotted key on: an unknown key (with the closest
    known key suggested), a missing required key, a wrong type, or a value out of range.
    """
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    dotted = lambda name: f"{prefix}.{name}" if prefix else name  # noqa: E731
    for name in data:
        if name not in fields:
            close = difflib.get_close_matches(name, list(fields), n=1, cutoff=0.5)
            hint = f", did you mean {close[0]!r}?" if close else f", expected one of {', '.join(sorted(fields))}"
            raise ConfigError(source, dotted(name), f"unknown key{hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(data[name], hints[name], source, dotted(name), f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(source, dotted(name), f"missing, expected {_type_name(hints[name])}")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except ValueError as e:
        # __post_init__ cross-field checks raise ValueError("key: message").
        key, _, msg = str(e).partition(": ")
        raise ConfigError(source, dotted(key) if msg else prefix, msg or str(e)) from None


def to_dict(obj: Any) -> Any:
    """A dataclass (nested, with mapping proxies and tuples) as plain TOML/JSON-able data."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj
