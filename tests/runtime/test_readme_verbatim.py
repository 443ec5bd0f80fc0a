"""README "Deploy across agencies", typed as written, completes an iteration (issue 27).

Every command of the section is taken from README.md itself, not from the harness: the
certificate recipe (a bash script), the SuperLink behind ``securepool proxy`` (the
layout the README recommends), ``securepool keygen`` and ``ssh-keygen`` per node,
``$FLWR_HOME/config.toml`` and ``flwr supernode register``, each agency's NODE.toml and
``securepool node serve``, each SuperNode as the unprivileged relay account, ``flwr run``
from the repository root, then ``flwr ls``, ``flwr log --stream`` and ``flwr stop``. The
only changes are the README's placeholders and what a test on one machine must change,
all in :data:`PLACES`: names and addresses (everything listens on 127.0.0.1 here),
free ports for the fixed ones, the folders under a temporary root, and ``nobody`` for
the README's ``flwr`` account. What the README says in prose (copy each ``.pub`` into
the registry renamed, the auditor's NODE.toml without records and with its role, the
agreed run config) is done here as it says. Four agencies and the auditor, so the
README's ``nodes=5`` stands as written.

A README edit that breaks a command (a flag Flower does not know, a certificate that
does not name the address the SuperLink calls itself at, a NODE.toml key the service
refuses, a wrong app config key) fails this test; ``tests/test_readme_deploy.py`` checks
the same commands flag by flag against the harness the other deployment tests use.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest

pytest.importorskip(
    "securepool.runtime.flower", reason="flwr is not installed (it is a dependency)"
)  # first: it turns Flower telemetry off before flwr loads

from securepool.config import parse_config, parse_toml
from securepool.data import partition
from securepool.node.keys import public_path
from securepool.runtime.flower_harness import (
    RELAY_USER,
    LocalDeployment,
    free_port,
    listening,
    relays_as_another_user,
)

ROOT = Path(__file__).resolve().parents[2]
AGENCIES = ("agency1", "agency2", "agency3", "agency4")
NODES = (*AGENCIES, "auditor")
TIMEOUT = 420.0  # a hang guard for the run (about a minute on a quiet machine)

if not relays_as_another_user():
    pytest.skip(
        "the README runs each SuperNode as another OS user: needs root and a system "
        "Python of this version",
        allow_module_level=True,
    )

#: the agreed run config (README step 5: `runtime = "flower"`, an absolute registry)
RUN_CONFIG = """
[run]
seed = 5
runtime = "flower"
registry = "{registry}"
stage_timeout = 90.0
[data]
participants = 4
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[assignment]
min_group_size = 3
min_models = 1
max_models = 1
[training]
epochs = 1
lr = 0.3
[convergence]
max_iterations = 3
[aggregation]
mode = "mask"
[trust]
enabled = true
"""


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Deploy across agencies")
    return text[start : text.index("\n## ", start + 3)]


def blocks() -> list[str]:
    """The section's fenced blocks, as a shell reads them (continuations joined)."""
    return [textwrap.dedent(b) for b in re.findall(r"```\n(.*?)```", section(), flags=re.S)]


def block(starting: str) -> str:
    found = [b for b in blocks() if b.lstrip().startswith(starting)]
    assert len(found) == 1, f"README shows {len(found)} blocks starting {starting!r}"
    return found[0]


def inline(starting: str) -> str:
    """The one inline command of the section that starts with ``starting`` (a span the
    README wraps across lines is joined)."""
    prose = re.sub(r"```.*?```", "", section(), flags=re.S)
    spans = {" ".join(s.split()) for s in re.findall(r"`([^`]+)`", prose)}
    found = [s for s in spans if s.startswith(starting + " ")]
    assert len(found) == 1, f"README shows {found or 'no'} inline {starting!r} commands"
    return found[0]


class Places:
    """The README's placeholders and machine-specific values, and what they are here."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.federation_port, self.superlink_port = free_port(), free_port()
        self.table = [
            ("SUPERLINK_HOST", "localhost"),
            ("SUPERLINK_IP", "127.0.0.1"),
            ("COORDINATOR_IP", "127.0.0.1"),
            ("0.0.0.0", "127.0.0.1"),  # tests listen on loopback only
            ("/srv/securepool", str(root / "srv")),
            ("/run/securepool", str(root / "run")),
            ("/data/", str(root / "data") + "/"),
            ("/path/to/ca.crt", str(root / "ca.crt")),
            ('relay-user = "flwr"', f'relay-user = "{RELAY_USER}"'),
        ]

    def fill(self, text: str, node: str = "agency1") -> str:
        for placeholder, value in self.table:
            text = text.replace(placeholder, value)
        text = re.sub(r"(:|--port )8000\b", rf"\g<1>{self.federation_port}", text)
        text = re.sub(r"(:|--port )9000\b", rf"\g<1>{self.superlink_port}", text)
        text = re.sub(r"--port 9094\b", f"--port {free_port()}", text)
        return text.replace("agency1", node)


def bash(script: str, *, cwd: Path, env: dict[str, str], timeout: float = 120.0) -> str:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, f"{script}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    return done.stdout


def until(
    ready: Callable[[], bool], what: str, timeout: float, logs: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"{what} not within {timeout:.0f} s\n{logs()}"
        time.sleep(0.3)


def records(places: Places) -> None:
    """Each agency's own records file (the built-in digits partition of its place)."""
    (places.root / "data").mkdir()
    cfg = parse_config(parse_toml(RUN_CONFIG.format(registry="/r"), Path("run.toml")))
    data = partition(cfg.data, seed=cfg.run.seed)
    for agency, part in zip(AGENCIES, data.participants.values(), strict=True):
        x = np.concatenate([part.x_train.numpy(), part.x_test.numpy()])
        y = np.concatenate([part.y_train.numpy(), part.y_test.numpy()])
        np.savez(places.root / "data" / f"{agency}.npz", x=x, y=y)


@pytest.fixture(scope="module")
def deployment() -> Iterator[dict[str, Any]]:
    # under /tmp, not pytest's 0700 tmp: the relay account must reach the CA and its key
    root = Path(tempfile.mkdtemp(prefix="sp-readme-", dir="/tmp"))
    os.chmod(root, 0o755)
    try:
        yield from _deployment(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _deployment(root: Path) -> Iterator[dict[str, Any]]:
    places = Places(root)
    for folder in ("srv", "srv/registry", "srv/runs", "run"):
        (root / folder).mkdir()
    os.chmod(root / "run", 0o755)  # the relay account reaches its socket in there
    records(places)
    with LocalDeployment(root / "harness") as d:
        # COLUMNS: `flwr ls` fits its table to the terminal; a wide one shows whole ids
        env = {**d.env, "FLWR_HOME": str(root / "flwr-home"), "COLUMNS": "300"}
        run = lambda script, cwd=root: bash(places.fill(script), cwd=cwd, env=env)  # noqa: E731
        # 1. CA and SuperLink certificate
        run(block("openssl req -x509"))
        # 2. the SuperLink on loopback, `securepool proxy` in front of it
        link = block("flower-superlink").replace(
            "--host 0.0.0.0 --port 8000", "--host 127.0.0.1 --port 9000"
        )
        d.spawn("superlink", ["bash", "-c", "exec " + places.fill(link)], env=env, cwd=root)
        proxy = places.fill(block("securepool proxy"))
        d.spawn("proxy", ["bash", "-c", "exec " + proxy], env=env, cwd=root)
        for name, port in (("superlink", places.superlink_port), ("proxy", places.federation_port)):
            d.wait_until(lambda port=port: listening(port), name, 60)
        # 3. keys; 4. the operator's Flower config and the nodes' registrations
        config_toml = root / "flwr-home" / "config.toml"
        config_toml.parent.mkdir(exist_ok=True)
        config_toml.write_text(places.fill(block("[superlink]")))
        for node in NODES:
            run(places.fill(inline("securepool keygen"), node))
            key = root / "srv" / node / "identity.key"
            (root / "srv" / "registry" / f"{node}.pub").write_bytes(public_path(key).read_bytes())
            run(places.fill(inline("ssh-keygen"), node))
            os.chown(root / f"{node}_node", *_ids(RELAY_USER))  # the SuperNode's account's
            run(places.fill(inline("flwr supernode register"), node))
        # 5. the agreed run config
        (root / "srv" / "run.toml").write_text(
            RUN_CONFIG.format(registry=root / "srv" / "registry")
        )
        # 6. each node's service (all started, then each waited for); 7. its SuperNode,
        # as the relay account
        for node in NODES:
            toml = places.fill(block("[node]"), node)
            if node == "auditor":
                toml = toml.replace('role = "participant"', 'role = "auditor"')
                toml = "".join(x for x in toml.splitlines(True) if not x.startswith("records"))
            (root / "srv" / node / "node.toml").write_text(toml)
            serve = places.fill(inline("securepool node serve"), node)
            d.spawn(f"{node}-service", ["bash", "-c", "exec " + serve], env=env, cwd=root)
        for node in NODES:
            d.wait_until((root / "run" / f"{node}.sock").exists, f"{node}-service", 120)
            supernode = places.fill(block("flower-supernode"), node)
            if node == "auditor":
                supernode = supernode.replace('role="participant"', 'role="auditor"')
            relay_env, _, as_relay_user = d.unprivileged(node, RELAY_USER)
            d.spawn(
                node,
                ["bash", "-c", "exec " + supernode],
                env=relay_env,
                cwd=root,
                preexec=as_relay_user,
            )
        # 8. submit, follow, stop
        submitted = run(block("flwr run"), cwd=ROOT)
        found = re.search(r"started run (\d+)", submitted)
        assert found, submitted
        run_id = found.group(1)
        listed = run(inline("flwr ls"))
        follow = places.fill(inline("flwr log")).replace("RUN_ID", run_id)
        d.spawn("log", ["bash", "-c", "exec " + follow], env=env, cwd=root)
        out = root / "srv" / "runs" / "r1"
        metrics = out / "metrics.jsonl"
        until(
            lambda: metrics.exists() and bool(metrics.read_text().strip()),
            "iteration 1",
            TIMEOUT,
            lambda: "\n".join(
                f"--- {n}\n{d.log_text(n)[-2500:]}"
                for n in ("log", "superlink", "proxy", *NODES)
            ),
        )
        coordinators = d.serverapp_pids()
        stopped = run(inline("flwr stop").replace("RUN_ID", run_id))
        d.wait_until(lambda: d.procs["log"].poll() is not None, "log", 60)
        until(lambda: not any(_running(pid) for pid in coordinators), "the stop", 30)
        yield {
            "root": root,
            "out": out,
            "run_id": run_id,
            "listed": listed,
            "stopped": stopped,
            "coordinators": coordinators,
            "log": d.log_text("log"),
            "final_ls": run(inline("flwr ls")),
            "service_log": d.log_text("agency1-service"),
        }


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


def _ids(name: str) -> tuple[int, int]:
    import pwd

    entry = pwd.getpwnam(name)
    return entry.pw_uid, entry.pw_gid


def test_the_readme_s_commands_bring_up_a_deployment_that_completes_an_iteration(
    deployment: dict[str, Any],
) -> None:
    import json

    out = deployment["out"]
    first = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first["iteration"] == 1
    assert (out / "run.json").exists()
    assert oct(out.stat().st_mode & 0o777) == "0o700"
    assert deployment["run_id"] in deployment["listed"]
    assert "it   1 | test error" in deployment["log"], deployment["log"][-3000:]


def test_flwr_stop_as_the_readme_says_stops_the_run(deployment: dict[str, Any]) -> None:
    """`flwr stop` marks the run stopped and the coordinator's process (the ServerApp)
    exits within seconds, before its second iteration commits."""
    assert deployment["coordinators"], "no ServerApp process seen"
    lines = (deployment["out"] / "metrics.jsonl").read_text().splitlines()
    assert len(lines) < 3 and not (deployment["out"] / "summary.json").exists()
    line = [x for x in deployment["final_ls"].splitlines() if deployment["run_id"] in x]
    assert line and "stopped" in line[0], deployment["final_ls"]


def test_the_command_texts_taken_are_the_readme_s() -> None:
    """What the fixture runs is found in the README, once each (a renamed or duplicated
    command fails here before any process starts)."""
    for start in ("openssl req -x509", "flower-superlink", "securepool proxy", "[superlink]"):
        assert block(start)
    for start in ("[node]", "flower-supernode", "flwr run"):
        assert block(start)
    commands = [
        "securepool keygen",
        "ssh-keygen",
        "flwr supernode register",
        "securepool node serve",
        "flwr ls",
        "flwr log",
        "flwr stop",
    ]
    for start in commands:
        assert shlex.split(inline(start))[0] in {"securepool", "ssh-keygen", "flwr"}
