"""Writing a piece table back as TOML (the standard library reads TOML but does not write it).

Only what piece files hold: strings, booleans, numbers, tables, and arrays of scalars or of tables
(`[[bend]]`). Checked by reading the text back with tomllib (tests/test_explore_genome.py).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping

__all__ = ["dumps"]

_BARE = re.compile(r"[A-Za-z0-9_-]+")


def _key(k: str) -> str:
    return k if _BARE.fullmatch(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)  # JSON's escapes are TOML basic-string escapes
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{_key(k)} = {_value(x)}" for k, x in v.items() if x is not None) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _is_table_array(v: Any) -> bool:
    return isinstance(v, (list, tuple)) and bool(v) and all(isinstance(x, Mapping) for x in v)


def _table(out: list[str], path: tuple[str, ...], table: Mapping[str, Any]) -> None:
    subtables, arrays = [], []
    for k, v in table.items():
        if v is None:  # TOML has no null: the loader's default stands in for it
            continue
        if isinstance(v, Mapping) and v:
            subtables.append((k, v))
        elif _is_table_array(v):
            arrays.append((k, v))
        elif isinstance(v, (list, tuple)) and not v and k == "bend":
            continue  # no bends: leave the key out rather than write an empty array of tables
        else:
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in subtables:
        name = ".".join(_key(p) for p in (*path, k))
        out.append("")
        out.append(f"[{name}]")
        _table(out, (*path, k), v)
    for k, items in arrays:
        name = ".".join(_key(p) for p in (*path, k))
        for item in items:
            out.append("")
            out.append(f"[[{name}]]")
            _table(out, (*path, k), item)


def dumps(table: Mapping[str, Any], header: str = "") -> str:
    """`table` as TOML text, with `header` (lines) as comments on top."""
    out = [f"# {line}" if line else "#" for line in header.splitlines()]
    if out:
        out.append("")
    _table(out, (), table)
    return "\n".join(out).strip("\n") + "\n"
