"""Flower components of SecurePool (``[tool.flwr.app.components]`` in pyproject.toml).

* ``server_app``: the coordinator's process. It builds a :class:`FlowerDriver` over the
  Grid (waiting for ``nodes`` nodes and learning their ids), then calls the function
  named by the run config's ``coordinator`` (``"package.module:function"``) as
  ``coordinator(driver, coordinator_args)``, and closes the driver.
* ``client_app``: every participant's and the auditor's process. It answers messages of
  type ``query.securepool`` with :func:`securepool.runtime.flower.answer`, which builds
  the node's NodeApp from the factory named in the SuperNode's node config.

Run config (defaults in pyproject.toml, override with ``flwr run -c 'key=value'``):
``coordinator``, ``coordinator-args`` (one string handed to it, e.g. a config path),
``nodes`` (how many to wait for), ``discovery-timeout`` (s), ``max-reply-bytes``,
``poll-interval`` (s); ``sim-node-names`` and ``sim-node-factory`` name the simulated
nodes and their factory on the simulation engine, and ``sim-node-root`` (optional) the
directory of their files, handed to the factory as node config ``sim-node-root`` (a
deployed node's own node config takes precedence over all three).
"""

from __future__ import annotations

from typing import Any

from crypto.errors import ConfigError
from securepool.runtime.flower import (
    FlowerDriver,
    answer,
    load_callable,
)

from flwr.app import Context, Message  # isort: skip  (flower.py disables telemetry first)
from flwr.clientapp import ClientApp  # isort: skip
from flwr.serverapp import Grid, ServerApp  # isort: skip

server_app = ServerApp()
client_app = ClientApp()


def run_config_settings(run_config: dict[str, Any]) -> dict[str, Any]:
    """The ServerApp's settings from the run config; every problem listed at once."""
    problems = []
    coordinator = run_config.get("coordinator", "")
    if not isinstance(coordinator, str) or ":" not in coordinator:
        problems.append("run config 'coordinator' must name 'package.module:function'")
    nodes = run_config.get("nodes", 0)
    if type(nodes) is not int or nodes < 1:
        problems.append("run config 'nodes' must be an int >= 1 (nodes to wait for)")
    numbers = {}
    for key in ("discovery-timeout", "poll-interval", "max-reply-bytes"):
        value = run_config.get(key)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            problems.append(f"run config {key!r} must be a number > 0")
        else:
            numbers[key] = value
    args = run_config.get("coordinator-args", "")
    if not isinstance(args, str):
        problems.append("run config 'coordinator-args' must be a string")
    if problems:
        raise ConfigError(problems)
    return {
        "coordinator": coordinator,
        "args": args,
        "nodes": nodes,
        "discovery_timeout": float(numbers["discovery-timeout"]),
        "poll_interval": float(numbers["poll-interval"]),
        "max_reply_bytes": int(numbers["max-reply-bytes"]),
    }


@server_app.main()
def coordinator_main(grid: Grid, context: Context) -> None:
    """Discover the nodes, hand the driver to the coordinator, close it afterwards."""
    settings = run_config_settings(dict(context.run_config))
    coordinator = load_callable(settings["coordinator"])
    driver = FlowerDriver.discover(
        grid,
        expected=settings["nodes"],
        timeout=settings["discovery_timeout"],
        max_reply_bytes=settings["max_reply_bytes"],
        poll_interval=settings["poll_interval"],
    )
    try:
        coordinator(driver, settings["args"])
    finally:
        driver.close()


@client_app.query("securepool")
def node_query(message: Message, context: Context) -> Message:
    """One SecurePool message of any stage (see :func:`answer`)."""
    return answer(message, context)
