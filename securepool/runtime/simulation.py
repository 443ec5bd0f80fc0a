"""Flower's simulation engine (Ray backend), with the ServerApp and ClientApp of deployment.

:func:`run_simulation` runs :data:`~securepool.runtime.flower_app.server_app` and
:data:`~securepool.runtime.flower_app.client_app` on ``len(names)`` simulated
SuperNodes: the coordinator named by ``coordinator`` gets a
:class:`~securepool.runtime.flower.FlowerDriver` exactly as in deployment, and simulated
node ``i`` is ``names[i]``, its NodeApp built by ``factory`` (``"package.module:fn"``)
from a node config holding its ``node-id``.

Ray stays on this machine: ``_node_ip_address = "127.0.0.1"``, no dashboard, and Ray's
usage statistics and Flower's telemetry are off (both would otherwise send data to their
vendors' servers). tests/runtime/test_simulation.py lists every socket of the Ray
processes and fails on any non-loopback address.

Why not ``flwr.simulation.run_simulation`` or ``flwr run`` with a simulation
connection: in flwr 1.42 the first gives simulated nodes an empty run config (so a node
cannot learn its name or factory), and the second cannot pass Ray's
``_node_ip_address`` (Ray then binds to the host's address). This module therefore calls
the engine one level down (``flwr.simulation.run_simulation._run_simulation``, the
function both of those call) with a run config read from a generated app directory.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crypto.encoding import require_identifier
from crypto.errors import ConfigError
from securepool.node.agreement import AUDITOR_ID
from securepool.runtime.driver import MAX_MESSAGE_BYTES

# Read when ray is first imported, inherited by every Ray process. Usage statistics
# would go to Ray's vendor. Without the second, Ray takes this host's outward address as
# its node address even when told 127.0.0.1 (resolve_ip_for_localhost), asks the OS for
# a route to a public DNS server to find it, and its gRPC servers listen on every
# interface; with it, Ray is a single-machine Ray and binds to loopback.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

#: Ray's settings: loopback only, no dashboard, quiet; merged under the caller's
RAY_INIT_ARGS: dict[str, Any] = {
    "_node_ip_address": "127.0.0.1",
    "include_dashboard": False,
    "dashboard_host": "127.0.0.1",
    "logging_level": "ERROR",
    "log_to_driver": False,
}
#: keys of RAY_INIT_ARGS a caller may not change (they keep Ray on this machine)
LOOPBACK_KEYS = ("_node_ip_address", "include_dashboard", "dashboard_host")


def _toml_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value)  # a TOML basic string is a JSON string


def run_simulation(
    *,
    names: Sequence[str],
    factory: str,
    coordinator: str,
    coordinator_args: str = "",
    num_cpus: int = 2,
    cpus_per_node: float = 1.0,
    discovery_timeout: float = 300.0,
    poll_interval: float = 0.05,
    max_reply_bytes: int = MAX_MESSAGE_BYTES,
    ray_init_args: Mapping[str, Any] | None = None,
    node_root: str = "",
) -> None:
    """Run the SecurePool Flower app on ``len(names)`` simulated nodes; block until done.

    ``coordinator(driver, coordinator_args)`` runs in the simulation's ServerApp thread
    in this process; each simulated ClientApp runs in a Ray actor process on this
    machine. ``node_root`` (run config ``sim-node-root``) is handed to every simulated
    node's factory as node config ``sim-node-root``: the directory its files are in (e.g.
    :func:`securepool.node.serve.simulated_participant`). Raises
    :class:`~crypto.errors.ConfigError` for bad names or settings, and whatever the
    coordinator raised.

    Security: a simulation is one machine and one trust domain: it measures the
    protocols at scale, it does not separate the roles (use the deployment for that).
    """
    problems = []
    if len(names) < 1:
        problems.append("names: at least one simulated node")
    for name in names:
        try:
            require_identifier("node name", name)
        except ConfigError as err:
            problems.extend(err.problems)
        except Exception as err:  # CryptoError: the message names the problem
            problems.append(str(err))
    if len(set(names)) != len(names):
        problems.append("names must be distinct")
    if ":" not in factory or ":" not in coordinator:
        problems.append("factory and coordinator must be 'package.module:function'")
    if node_root and not Path(node_root).is_absolute():
        problems.append(f"node_root must be an absolute path, got {node_root!r}")
    changed = [k for k in LOOPBACK_KEYS if ray_init_args and k in ray_init_args]
    if changed:
        problems.append(f"ray_init_args may not change {changed}: Ray stays on loopback")
    if problems:
        raise ConfigError(problems)

    from ray._private import ray_constants

    if ray_constants.ENABLE_RAY_CLUSTER:
        raise ConfigError(
            [
                "ray was imported before securepool.runtime.simulation: it would not stay on "
                "loopback (set RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before importing ray)"
            ]
        )
    from flwr.app import Context, RecordDict
    from flwr.simulation.run_simulation import _run_simulation
    from flwr.supercore.telemetry import EventType

    from securepool.runtime.flower_app import client_app, server_app

    run_config: dict[str, str | int | float | bool] = {
        "coordinator": coordinator,
        "coordinator-args": coordinator_args,
        "nodes": len(names),
        "discovery-timeout": float(discovery_timeout),
        "poll-interval": float(poll_interval),
        "max-reply-bytes": int(max_reply_bytes),
        "sim-node-names": ",".join(names),
        "sim-node-factory": factory,
    }
    if node_root:
        run_config["sim-node-root"] = node_root
    init_args = {**RAY_INIT_ARGS, "num_cpus": num_cpus, **(ray_init_args or {})}
    backend_config = {
        "init_args": init_args,
        "client_resources": {"num_cpus": cpus_per_node, "num_gpus": 0.0},
    }
    with tempfile.TemporaryDirectory(prefix="securepool-sim-") as app_dir:
        # the simulated nodes read their run config from this app directory
        lines = [
            "[project]",
            'name = "securepool-simulation"',
            'version = "0.1.0"',
            "[tool.flwr.app]",
            'publisher = "securepool"',
            "[tool.flwr.app.components]",
            'serverapp = "securepool.runtime.flower_app:server_app"',
            'clientapp = "securepool.runtime.flower_app:client_app"',
            "[tool.flwr.app.config]",
        ]
        lines += [f'"{k}" = {_toml_value(v)}' for k, v in run_config.items()]
        (Path(app_dir) / "pyproject.toml").write_text("\n".join(lines) + "\n")
        # the engine creates the run; the ServerApp gets the same run config
        context = Context(
            run_id=0, node_id=0, node_config={}, state=RecordDict(), run_config=run_config
        )
        _run_simulation(
            num_supernodes=len(names),
            exit_event=EventType.PYTHON_API_RUN_SIMULATION_LEAVE,
            client_app=client_app,
            server_app=server_app,
            backend_name="ray",
            backend_config=backend_config,
            server_app_context=context,
            app_dir=app_dir,
            is_app=True,
        )


def participant_names(n: int, *, auditor: bool = False) -> list[str]:
    """``p0 .. p{n-1}`` (and ``auditor`` last): the simulated nodes' SecurePool ids."""
    return [f"p{i}" for i in range(n)] + ([AUDITOR_ID] if auditor else [])
