"""The sweep's grid: ``--grid KEY=V1,V2`` axes, their cells, and every problem at once.

A key is a dotted path into the run configuration's TOML (``privacy.noise_multiplier``,
``aggregation.mode``, ``pool.models.mlp.hidden`` or ``pool.models.1.hidden`` for an entry
of an array of tables, by id or index). A value is TOML (``0.8``, ``true``, ``"mask"``,
``[0.0, 0.1]``); a bare word that is not TOML is taken as a string (``mask``).

:func:`plan` builds the table of every cell and validates each one with the run's own
config parser before anything is written, so a bad key or value is reported with every
other problem in one :class:`~crypto.errors.ConfigError`.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import tomllib
from dataclasses import dataclass
from typing import Any

from crypto.errors import ConfigError
from securepool.config import RunConfig, parse_config


@dataclass(frozen=True)
class Axis:
    """One ``--grid`` option: a config key and the values it takes, in order."""

    key: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Cell:
    """One point of the grid: the settings, the full config table and a stable name.

    The name depends only on the settings (not on the order of ``--grid`` options), so
    a repeated sweep finds the runs it already finished.
    """

    settings: tuple[tuple[str, Any], ...]
    table: dict[str, Any]
    config: RunConfig

    @property
    def name(self) -> str:
        return cell_name(dict(self.settings))


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def cell_name(settings: dict[str, Any]) -> str:
    """A filesystem-safe, readable and unique name for a set of settings."""
    canonical = json.dumps(sorted(settings.items()), sort_keys=True)
    digest = hashlib.sha256(canonical.encode()).hexdigest()[:8]
    parts = [f"{k.rsplit('.', 1)[-1]}-{format_value(v)}" for k, v in sorted(settings.items())]
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", "_".join(parts))[:80].strip("_")
    return f"{slug}-{digest}" if slug else digest


def split_values(text: str) -> list[str]:
    """Split ``V1,V2`` at top-level commas (not inside brackets or quotes)."""
    out, depth, quote, cur = [], 0, "", []
    for ch in text:
        if quote:
            cur.append(ch)
            if ch == quote:
                quote = ""
            continue
        if ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
            continue
        cur.append(ch)
    out.append("".join(cur).strip())
    return out


def parse_value(text: str) -> Any:
    """TOML value, or the bare text as a string when it is not TOML."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


def parse_axes(specs: list[str]) -> tuple[list[Axis], list[str]]:
    """Parse ``KEY=V1,V2`` options; return the axes and every syntax problem."""
    axes: list[Axis] = []
    problems: list[str] = []
    seen: set[str] = set()
    for spec in specs:
        key, sep, rest = spec.partition("=")
        key = key.strip()
        if not sep or not key:
            problems.append(f"--grid {spec!r}: expected KEY=V1,V2,...")
            continue
        if not _KEY.match(key):
            problems.append(f"--grid {spec!r}: {key!r} is not a dotted config key")
            continue
        if key in seen:
            problems.append(f"--grid {key}: given twice (put all its values in one --grid)")
            continue
        seen.add(key)
        texts = split_values(rest)
        if any(t == "" for t in texts):
            problems.append(f"--grid {spec!r}: empty value")
            continue
        values = [parse_value(t) for t in texts]
        canon = [json.dumps(v, sort_keys=True) for v in values]
        dupes = sorted({t for t, c in zip(texts, canon, strict=True) if canon.count(c) > 1})
        if dupes:
            problems.append(f"--grid {key}: value(s) given twice: {', '.join(dupes)}")
            continue
        axes.append(Axis(key, tuple(values)))
    return axes, problems


def set_path(table: dict[str, Any], key: str, value: Any) -> str | None:
    """Set a dotted ``key`` in ``table`` in place; return a problem instead of raising."""
    node: Any = table
    parts = key.split(".")
    for i, part in enumerate(parts[:-1]):
        where = ".".join(parts[: i + 1])
        if isinstance(node, dict):
            node = node.setdefault(part, {})
        elif isinstance(node, list):
            node = _list_item(node, part)
            if node is None:
                return f"{key}: {'.'.join(parts[:i])} has no entry {part!r} (an index or an id)"
        else:
            return f"{key}: {'.'.join(parts[:i])} is a value, not a table"
        if not isinstance(node, dict | list):
            return f"{key}: {where} is a value, not a table"
    leaf = parts[-1]
    if isinstance(node, list):
        return f"{key}: {'.'.join(parts[:-1])} is an array: name an entry (index or id)"
    if isinstance(node.get(leaf), dict | list) and not isinstance(value, type(node[leaf])):
        return f"{key}: is a table, give a key inside it"
    node[leaf] = value
    return None


def _list_item(items: list[Any], part: str) -> Any:
    if part.isdigit() and int(part) < len(items):
        return items[int(part)]
    for item in items:
        if isinstance(item, dict) and item.get("id") == part:
            return item
    return None


def _build(base: dict[str, Any], settings: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    table = copy.deepcopy(base)
    problems = [p for k, v in settings.items() if (p := set_path(table, k, v)) is not None]
    return table, problems


def _check(table: dict[str, Any]) -> tuple[RunConfig | None, list[str]]:
    try:
        return parse_config(table), []
    except ConfigError as exc:
        return None, list(exc.problems)


def plan(base: dict[str, Any], axes: list[Axis]) -> list[Cell]:
    """Every cell of the grid over the config table ``base``.

    Raises ConfigError listing every problem: first each value on its own (against the
    base config), then the combinations whose values are each fine but clash.
    """
    problems: list[str] = []
    base_table = copy.deepcopy(base)
    _, parse_problems = _check(base_table)
    if parse_problems:
        raise ConfigError([f"base config: {p}" for p in parse_problems])
    bad_values: set[tuple[str, str]] = set()
    for axis in axes:
        for v in axis.values:
            table, structural = _build(base_table, {axis.key: v})
            found = structural or _check(table)[1]
            if found:
                bad_values.add((axis.key, json.dumps(v, sort_keys=True)))
                problems.extend(f"--grid {axis.key}={format_value(v)}: {p}" for p in found)
    cells: list[Cell] = []
    for combo in itertools.product(*(a.values for a in axes)):
        settings = dict(zip((a.key for a in axes), combo, strict=True))
        if any((k, json.dumps(v, sort_keys=True)) in bad_values for k, v in settings.items()):
            continue
        table, _ = _build(base_table, settings)
        cfg, found = _check(table)
        label = " ".join(f"{k}={format_value(v)}" for k, v in settings.items())
        problems.extend(f"cell {label}: {p}" for p in found)
        if cfg is not None:
            cells.append(Cell(tuple(settings.items()), table, cfg))
    if problems:
        raise ConfigError(problems)
    names = [c.name for c in cells]
    if len(set(names)) != len(names):  # pragma: no cover - sha256 prefix collision
        raise ConfigError(["two cells got the same directory name; rename a value"])
    return cells


def dump_toml(table: dict[str, Any]) -> str:
    """TOML text of a config table (the shapes run configs use); round-trips exactly."""
    lines: list[str] = []

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, list):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, float) and v != v:
            return "nan"
        if isinstance(v, float) and v in (float("inf"), float("-inf")):
            return "inf" if v > 0 else "-inf"
        return repr(v)

    def is_tables(v: Any) -> bool:
        return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)

    def emit(prefix: str, tbl: dict[str, Any], header: str) -> None:
        scalars = {k: v for k, v in tbl.items() if not isinstance(v, dict) and not is_tables(v)}
        if header:
            lines.append(header)
        lines.extend(f"{json.dumps(k)} = {value(v)}" for k, v in scalars.items())
        for k, v in tbl.items():
            name = f"{prefix}.{json.dumps(k)}" if prefix else json.dumps(k)
            if isinstance(v, dict):
                emit(name, v, f"[{name}]")
            elif is_tables(v):
                for item in v:
                    emit(name, item, f"[[{name}]]")

    emit("", table, "")
    text = "\n".join(lines) + "\n"
    if tomllib.loads(text) != table:  # pragma: no cover - a shape this writer cannot express
        raise ConfigError(["internal: the cell's config does not round-trip through TOML"])
    return text
