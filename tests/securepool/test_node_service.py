"""The node as the agency's own service, its relay a carrier of bytes (issue 27).

Every node of a real pool (participants and the auditor) is served by a
:class:`~securepool.node.service.NodeService` on its own Unix socket; the coordinator's
driver reaches each only through a :class:`~securepool.node.relay.RelayApp`, as a Flower
ClientApp does. Attacks come from the relay's side of the socket: another OS user,
malformed frames, a relay config that asks for the node's files."""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from binding_helpers import Pool, Recording, assert_exact, pool, run_config
from split_helpers import stages_of

from crypto.errors import ConfigError
from securepool.config import parse_config
from securepool.node.relay import RelayApp, relay
from securepool.node.service import NodeService, ServiceConfig
from securepool.runtime.inprocess import InProcessDriver
from securepool.runtime.socket_link import LinkError, LocalLink, encode_request

NOBODY = 65534
SHARES = "secagg/shares"


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A short directory for sockets (a Unix socket path is at most 107 bytes)."""
    d = Path(tempfile.mkdtemp(prefix="sp-", dir="/tmp"))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


class Services:
    """One NodeService thread per node app; :meth:`driver` relays to them."""

    def __init__(self, apps: Mapping[str, Any], where: Path) -> None:
        self.where = where
        self.apps = dict(apps)
        self.running: dict[str, tuple[NodeService, threading.Thread]] = {}
        for node_id, app in self.apps.items():
            self.start(node_id, app)

    def path(self, node_id: str) -> Path:
        return self.where / f"{node_id}.sock"

    def start(self, node_id: str, app: Any) -> None:
        service = NodeService(app, self.path(node_id))
        thread = threading.Thread(target=service.serve_forever, daemon=True)
        thread.start()
        assert service.ready.wait(10)
        self.running[node_id] = (service, thread)

    def stop(self, node_id: str) -> None:
        service, thread = self.running.pop(node_id)
        service.stop()
        thread.join(10)
        assert not thread.is_alive()

    def stop_all(self) -> None:
        for node_id in list(self.running):
            self.stop(node_id)

    def relays(self) -> dict[str, RelayApp]:
        return {n: RelayApp(LocalLink(self.path(n), timeout=60)) for n in self.apps}


def relayed_pool(cfg: Any, tmp: Path, where: Path, **kw: Any) -> tuple[Pool, list[Services]]:
    """:func:`binding_helpers.pool` whose driver reaches every node through its relay."""
    made: list[Services] = []

    def driver(apps: dict[str, Any]) -> InProcessDriver:
        services = Services(apps, where)
        made.append(services)
        return InProcessDriver(services.relays())

    return pool(cfg, tmp, driver=driver, **kw), made


def test_a_mask_pool_with_the_trust_check_completes_over_relays(
    tmp_path: Path, sockets: Path
) -> None:
    p, made = relayed_pool(run_config("mask", n=6, iterations=2), tmp_path, sockets)
    try:
        records = p.run()
    finally:
        for services in made:
            services.stop_all()
    assert len(records) == 2
    for record in records:
        (group,) = record.groups
        assert group.status == "aggregated", group.status
        assert set(group.contributors) == set(group.members)
        assert_exact(p, record)
    assert p.flags() == {}
    assert not any(sockets.iterdir())  # every service removed its socket


class Restarting(InProcessDriver):
    """Restarts ``node``'s service (a fresh node over the same state directory, as a
    restarted process builds it) just before the first ``secagg/shares`` stage."""

    def __init__(self, services: Services, node: str, rebuild: Any) -> None:
        super().__init__(services.relays())
        self.services, self.node, self.rebuild, self.done = services, node, rebuild, False

    def exchange(self, stage: str, batch: Mapping[str, bytes], **kw: Any) -> Any:
        carried = {st for payload in batch.values() for st in stages_of(stage, payload)}
        if SHARES in carried and not self.done:
            self.done = True
            self.services.stop(self.node)
            self.services.start(self.node, self.rebuild())
        return super().exchange(stage, batch, **kw)


def test_a_killed_and_restarted_node_service_rejoins(tmp_path: Path, sockets: Path) -> None:
    """p03's service dies after train in iteration 1 and comes back with a fresh node
    over its state directory: its session was in memory, so it is a dropout of that
    iteration (the group completes without it); its ledger and replay counters were on
    disk, so it takes part in iteration 2."""
    cfg = run_config("mask", n=7, iterations=2)
    state = tmp_path / "p03"
    made: list[Services] = []
    kwargs: dict[str, Any] = {}

    def node(pid: str, **kw: Any) -> Recording:
        kwargs.update(kw)
        return Recording(pid, state_dir=state, sessions_on_disk=False, **kw)

    def driver(apps: dict[str, Any]) -> InProcessDriver:
        services = Services(apps, sockets)
        made.append(services)
        return Restarting(services, "p03", lambda: node("p03", **kwargs))

    p = pool(cfg, tmp_path, nodes={"p03": node}, driver=driver)
    try:
        first, second = p.run()
    finally:
        for services in made:
            services.stop_all()
    (g1,) = first.groups
    (g2,) = second.groups
    assert g1.status == "aggregated" and "p03" not in g1.contributors
    assert "p03" not in p.flags()  # a dropout, not a liar
    assert g2.status == "aggregated" and "p03" in g2.contributors
    assert (state / "node_state.json").is_file() and not (state / "session.json").exists()
    assert oct(state.stat().st_mode & 0o777) == "0o700"
    assert oct((state / "node_state.json").stat().st_mode & 0o777) == "0o600"


@pytest.fixture
def one_service(sockets: Path) -> Iterator[tuple[NodeService, Path]]:
    calls: list[tuple[str, bytes]] = []

    class Echo:
        def handle(self, stage: str, payload: bytes) -> bytes:
            calls.append((stage, payload))
            return b"answer:" + payload

    path = sockets / "n.sock"
    service = NodeService(Echo(), path)
    thread = threading.Thread(target=service.serve_forever, daemon=True)
    thread.start()
    assert service.ready.wait(10)
    try:
        yield service, path
    finally:
        service.stop()
        thread.join(10)


def test_the_socket_is_its_owners_alone(one_service: tuple[NodeService, Path]) -> None:
    _service, path = one_service
    st = path.lstat()
    assert oct(st.st_mode & 0o777) == "0o600" and st.st_uid == os.geteuid()
    assert LocalLink(path).exchange("beacon/start", b"x") == b"answer:x"


def unprivileged_python() -> tuple[str, dict[str, str]] | None:
    """A Python another OS user can run with this venv's packages (the venv's own
    interpreter may live in a directory only root can enter, e.g. pyenv under /root):
    the system's interpreter of the same minor version, with the venv's site-packages
    and the repository on its path. None if there is none."""
    exe = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not exe.is_file():
        return None
    paths = [sysconfig.get_paths()["purelib"], str(Path(__file__).resolve().parents[2])]
    return str(exe), {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}


def _as_nobody(path: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from pathlib import Path\n"
        "from securepool.runtime.socket_link import LocalLink, LinkError\n"
        "try:\n"
        f"    LocalLink(Path({str(path)!r}), timeout=10).exchange('beacon/start', b'x')\n"
        "except LinkError as exc:\n"
        "    print('refused:', exc); sys.exit(3)\n"
        "print('answered'); sys.exit(0)\n"
    )
    found = unprivileged_python()
    assert found is not None
    exe, env = found
    return subprocess.run(
        [exe, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        preexec_fn=lambda: os.setuid(NOBODY),
        cwd="/",
        env=env,
    )


@pytest.mark.skipif(
    os.geteuid() != 0 or unprivileged_python() is None,
    reason="needs root (to act as another OS user) and a system Python of this version",
)
def test_another_os_user_is_refused_even_with_the_socket_open_to_it(
    one_service: tuple[NodeService, Path],
) -> None:
    """First as deployed (0600: the kernel refuses the connect), then with the socket
    opened to everyone (the service itself refuses the peer by its kernel-checked uid)."""
    _service, path = one_service
    os.chmod(path.parent, 0o755)
    out = _as_nobody(path)
    assert out.returncode == 3 and "not reachable" in out.stdout, out
    os.chmod(path, 0o666)
    out = _as_nobody(path)
    assert out.returncode == 3 and "may not use the node" in out.stdout, out


def test_malformed_frames_close_only_their_connection(
    one_service: tuple[NodeService, Path],
) -> None:
    _service, path = one_service
    good = encode_request("beacon/start", b"ok")
    for junk in (b"", b"GET / HTTP/1.1\r\n\r\n", good[:9], b"SPL1\x00\x00", b"SPL1\xff\xff"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(10)
            s.connect(str(path))
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                assert s.recv(100) == b""  # closed, no reply
            except (ConnectionResetError, BrokenPipeError):
                pass  # closed before it read everything: no reply either
    assert LocalLink(path).exchange("beacon/start", b"ok") == b"answer:ok"


def test_a_relay_holds_no_key_record_or_state() -> None:
    base = {"node-id": "agency1", "role": "participant", "factory": "f", "relay": "/tmp/x.sock"}
    assert isinstance(relay(base), RelayApp)
    for extra in ("key-file", "records", "state-dir", "config"):
        with pytest.raises(ConfigError, match=extra):
            relay({**base, extra: "/srv/x"})
    with pytest.raises(ConfigError, match="absolute"):
        relay({**base, "relay": "x.sock"})


def test_a_relay_that_finds_no_service_is_a_dropout(sockets: Path) -> None:
    with pytest.raises(LinkError, match="not reachable"):
        RelayApp(LocalLink(sockets / "none.sock", timeout=5)).handle("beacon/start", b"")


def test_the_relay_imports_neither_torch_nor_the_node() -> None:
    code = (
        "import sys, securepool.runtime.flower_app, securepool.node.relay\n"
        "bad = [m for m in ('torch', 'securepool.node.app', 'securepool.node.keys',"
        " 'securepool.node.records') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_node_config_lists_every_problem_at_once(tmp_path: Path) -> None:
    bad = tmp_path / "node.toml"
    bad.write_text(
        '[node]\nid = "auditor"\nrole = "participant"\nconfig = "run.toml"\n'
        'socket = "/tmp/a.sock"\nkey = "x"\ntorch-threads = 0\nrelay-user = "no-such-user"\n'
    )
    with pytest.raises(ConfigError) as info:
        ServiceConfig.from_toml(bad)
    text = "\n".join(info.value.problems)
    for needle in (
        "node.state-dir is required",
        "node.registry-dir is required",
        "node.key is not a key",
        "node.config must be an absolute path",
        "the auditor's node.id is 'auditor'",
        "node.torch-threads",
        "no OS user named 'no-such-user'",
    ):
        assert needle in text, text
    good = ServiceConfig.from_table(
        {
            "node": {
                "id": "agency1",
                "role": "participant",
                "config": "/srv/run.toml",
                "state-dir": "/srv/a",
                "registry-dir": "/srv/reg",
                "socket": "/run/a.sock",
                "relay-user": "nobody",
            }
        }
    )
    assert dataclasses.asdict(good)["relay_user"] == "nobody" and good.relay_uid() == NOBODY


def test_a_refusal_of_its_own_records_stays_whole_in_the_agency_s_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 27 item 3: the agency sees why its node refused its own records (wrong
    column count) with the file's full path in its own log; what leaves the node names
    the file, not the agency's folders."""
    from split_helpers import config_text

    from securepool.models import build_model, flatten
    from securepool.node.serve import build_participant
    from securepool.node.wire import Reply, encode_globals

    text = config_text(n=4, mode="mask", iterations=1, models=1, max_models=1)
    cfg = parse_config(tomllib.loads(text))
    folder = tmp_path / "agency-folder"
    folder.mkdir()
    bad = folder / "records.csv"
    bad.write_text("1,2,3\n4,5,6\n")  # 3 columns: digits records have 65
    node = build_participant(
        config_text=text,
        pid="p00",
        state_dir=str(folder / "state"),
        registry_dir=str(tmp_path / "registry"),
        n_features=64,
        n_classes=10,
        records=str(bad),
    )
    m = cfg.pool.models[0]
    params = flatten(build_model(m.arch, n_features=64, n_classes=10, seed=m.seed, hidden=m.hidden))
    with caplog.at_level("WARNING", logger="securepool.node"):
        reply = Reply.from_bytes(node.handle("evaluate", encode_globals({m.id: params})))
    assert not reply.ok
    reason = str(reply.meta["reason"])
    assert "records.csv" in reason and "agency-folder" not in reason, reason
    assert str(bad) in caplog.text
