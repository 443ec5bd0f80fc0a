"""Map TOML tables onto frozen dataclasses, collecting every problem at once.

A *section* is a frozen dataclass whose fields all have defaults. Field types may be
``bool``, ``int``, ``float``, ``str``, an ``Enum`` subclass (TOML gives the value),
``X | None``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[str, X]`` (a table of
values) or another section (a sub-table; a ``tuple[Section, ...]`` is an array of
tables). Unknown keys and wrong types are reported with their dotted path; a section
may add cross-field checks with ``def problems(self) -> list[str]``, which must return
every problem and never raise.

Every ``float`` key must be finite: TOML's ``nan`` and ``inf`` are refused here, for
every section, before any range check runs. Range checks in ``problems`` use
:func:`check_float`, which is written so that NaN cannot pass (``x <= 0`` is False for
NaN; ``not (x > 0)`` is True).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from enum import Enum
from typing import Any, TypeVar, Union

T = TypeVar("T")

_MISSING = object()


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if issubclass(tp, Enum):
            return "one of " + ", ".join(repr(m.value) for m in tp)
        return {
            "bool": "a boolean",
            "int": "an integer",
            "float": "a number",
            "str": "a string",
        }.get(tp.__name__, f"a table ({tp.__name__})")
    return str(tp)


def _convert(value: Any, tp: Any, path: str, problems: list[str]) -> Any:
    """Return ``value`` converted to ``tp``; on failure append a problem, return _MISSING."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(value, non_none[0], path, problems)
        raise TypeError(f"unsupported union type at {path}: {tp}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return _MISSING
        if len(args) == 2 and args[1] is Ellipsis:
            item_types = [args[0]] * len(value)
        else:
            if len(value) != len(args):
                problems.append(f"{path}: expected a list of {len(args)} items, got {len(value)}")
                return _MISSING
            item_types = list(args)
        out = [
            _convert(v, t, f"{path}[{i}]", problems)
            for i, (v, t) in enumerate(zip(value, item_types, strict=True))
        ]
        return _MISSING if any(o is _MISSING for o in out) else tuple(out)
    if origin is dict:
        key_type, value_type = typing.get_args(tp)
        if key_type is not str:
            raise TypeError(f"unsupported key type at {path}: {tp}")
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {type(value).__name__}")
            return _MISSING
        items = {k: _convert(v, value_type, f"{path}.{k}", problems) for k, v in value.items()}
        return _MISSING if any(v is _MISSING for v in items.values()) else items
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a table, got {type(value).__name__}")
            return _MISSING
        return load_section(tp, value, path=path, problems=problems)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            problems.append(f"{path}: {value!r} is not {_type_name(tp)}")
            return _MISSING
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            if not math.isfinite(value):
                problems.append(f"{path}: must be a finite number, got {value!r}")
                return _MISSING
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    else:
        raise TypeError(f"unsupported field type at {path}: {tp}")
    problems.append(f"{path}: expected {_type_name(tp)}, got {value!r}")
    return _MISSING


def check_float(
    name: str,
    value: float,
    *,
    gt: float | None = None,
    ge: float | None = None,
    lt: float | None = None,
    le: float | None = None,
) -> list[str]:
    """``[]`` if ``value`` is finite and inside the bounds given, else one problem.

    Written so that NaN and infinity never pass: every bound is tested as
    ``value > gt`` etc., all of which are False for NaN.
    """
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    ok = ok and math.isfinite(value)
    ok = ok and (gt is None or value > gt) and (ge is None or value >= ge)
    ok = ok and (lt is None or value < lt) and (le is None or value <= le)
    if ok:
        return []
    lo = f"({gt:g}" if gt is not None else (f"[{ge:g}" if ge is not None else "(-inf")
    hi = f"{lt:g})" if lt is not None else (f"{le:g}]" if le is not None else "inf)")
    if hi == "inf)" and lo != "(-inf":
        want = f"> {gt:g}" if gt is not None else f">= {ge:g}"
    elif lo == "(-inf" and hi != "inf)":
        want = f"< {lt:g}" if lt is not None else f"<= {le:g}"
    else:
        want = f"in {lo}, {hi}"
    return [f"{name} must be a finite number {want}, got {value!r}"]


def load_section(cls: type[T], table: dict[str, Any], *, path: str, problems: list[str]) -> T:
    """Build ``cls`` from ``table``; append every problem found to ``problems``.

    On problems the returned object carries defaults where values were bad, so that
    cross-field checks can still run and report more problems in one go.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key in table:
        if key not in fields:
            problems.append(
                f"{path}.{key}: unknown key (known: {', '.join(sorted(fields)) or 'none'})"
            )
    kwargs: dict[str, Any] = {}
    for name in fields:
        tp = hints[name]
        if name in table:
            converted = _convert(table[name], tp, f"{path}.{name}", problems)
            if converted is not _MISSING:
                kwargs[name] = converted
        elif dataclasses.is_dataclass(tp) and isinstance(tp, type):
            # an absent sub-table still gets its cross-field checks
            kwargs[name] = load_section(tp, {}, path=f"{path}.{name}", problems=problems)
    obj = cls(**kwargs)
    check = getattr(obj, "problems", None)
    if callable(check):
        problems.extend(f"{path}: {p}" for p in check())
    return obj
