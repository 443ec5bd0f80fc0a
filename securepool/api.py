"""The Python API: :func:`run` a job as ``securepool run`` does, from a config file, a
TOML string or a dict (:func:`securepool.load_pool` then uses its pool).

    import securepool
    summary = securepool.run("examples/digits.toml", out="runs/demo")
    pool = securepool.load_pool("runs/demo")

The run goes through the command line's own code (:func:`securepool.runner.start_job`):
the same checks, all at once, before anything is written (a
:class:`~crypto.errors.ConfigError` listing every problem), the same run directory,
the same summary. What the library says goes to :mod:`logging` under ``"securepool"``
(nothing is printed); configure it (``logging.basicConfig(level=logging.INFO)``) to see
the iterations.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from enum import Enum
from pathlib import Path
from typing import Any

from crypto.errors import ConfigError

#: how a config given as text or as a dict is named in messages
TEXT_SOURCE = Path("<config string>")
DICT_SOURCE = Path("<config dict>")


def run(
    config: str | os.PathLike[str] | Mapping[str, Any], *, out: str | os.PathLike[str]
) -> dict[str, Any]:
    """Run a job into the new (or empty) directory ``out``; return its summary (the
    content of ``out/summary.json``: ``converged``, ``iterations``, ``pool``,
    ``best_accuracy``, every model's test error and acceptance, ...).

    ``config`` is a path (a :class:`pathlib.Path`, or a string without a newline or
    ``=``), a TOML string (with a newline or ``=``), or a dict shaped like the TOML
    (``{"data": {"dataset": "digits"}, "pool": {"models": [{"id": "lr"}]}}``). A text or
    dict config is stored in ``out/config.toml`` as TOML, as a file's would be; relative
    paths inside it are read from the current directory.

    Raises :class:`~crypto.errors.ConfigError` (every problem at once, nothing written)
    for bad input, as ``securepool run`` exits 2. A run that stops at
    ``convergence.max_iterations`` without converging is not an error: its summary says
    ``"converged": False``. Note: the run sets torch's thread count to
    ``run.torch_threads`` (default 1) in this process, as the command does.
    """
    from securepool.runner import start_job

    out_path = _out_path(out)
    if isinstance(config, Mapping):
        return start_job(DICT_SOURCE, out_path, config_text=_dict_to_toml(config))
    if isinstance(config, str) and ("\n" in config or "=" in config):
        return start_job(TEXT_SOURCE, out_path, config_text=config)
    if isinstance(config, str | os.PathLike):
        if not os.fspath(config).strip():
            raise ConfigError(["config is empty: name a TOML file, or pass TOML text or a dict"])
        return start_job(Path(config), out_path)
    raise ConfigError(
        [f"config must be a path, a TOML string or a dict, not {type(config).__name__}"]
    )


def _out_path(out: object) -> Path:
    if not isinstance(out, str | os.PathLike):
        raise ConfigError([f"out must be a path, not {type(out).__name__}"])
    if not os.fspath(out).strip():
        raise ConfigError(["out is empty: name a new (or empty) directory for the run"])
    return Path(out)


def _dict_to_toml(config: Mapping[str, Any]) -> str:
    """TOML text for a config dict; ConfigError naming every value TOML cannot hold."""
    from securepool.sweep.grid import dump_toml

    problems: list[str] = []
    table = _plain(config, "config", problems)
    if problems:
        raise ConfigError(problems)
    return dump_toml(table)


def _plain(value: Any, where: str, problems: list[str]) -> Any:
    """``value`` as TOML-able plain data (str, bool, int, float, list, dict)."""
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                problems.append(f"{where}: key {k!r} is not a string")
                continue
            out[k] = _plain(v, f"{where}.{k}", problems)
        return out
    if isinstance(value, list | tuple):
        items = [_plain(v, f"{where}[{i}]", problems) for i, v in enumerate(value)]
        if any(isinstance(i, dict) for i in items) and not all(isinstance(i, dict) for i in items):
            problems.append(f"{where}: a list mixing tables and values (TOML cannot hold it)")
        return items
    if isinstance(value, Enum):
        return _plain(value.value, where, problems)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    for kind in (bool, int, float, str):  # subclasses too (numpy's float64 is a float)
        if isinstance(value, kind):
            return kind(value)
    item = getattr(value, "item", None)  # a numpy scalar
    if callable(item) and getattr(value, "shape", None) == ():
        return _plain(item(), where, problems)
    what = "None (TOML has no null: leave the key out)" if value is None else repr(value)
    problems.append(f"{where}: {what} is not a TOML value")
    return value


__all__ = ["run"]
