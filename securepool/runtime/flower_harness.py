"""A whole Flower deployment on 127.0.0.1, for tests, benchmarks and the README's recipe.

It does by program exactly what "Deploy across agencies" in README.md does by hand:

1. a CA and a SuperLink certificate for ``127.0.0.1``/``localhost`` (cryptography's
   x509 API; ECDSA P-384);
2. one ECDSA P-384 node key per SuperNode in OpenSSH format (what ``ssh-keygen -t
   ecdsa -b 384`` writes; the private key 0600);
3. ``$FLWR_HOME/config.toml`` with one SuperLink connection to 127.0.0.1 and the CA
   (without it the CLI writes a default that points at a public host);
4. a SuperLink with TLS, ``--enable-supernode-auth`` and no runtime dependency
   installation; node keys registered with ``flwr supernode register``;
5. SuperNodes, each with its own ``--port``, its key and its node config;
6. ``flwr run`` of the app in ``app_dir``.

Every process is started in its own session and stopped by its process-group id
(:meth:`LocalDeployment.close`, also on failure); every wait is time-bounded. Flower's
telemetry is off in every process (``FLWR_TELEMETRY_ENABLED=0``).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from crypto.errors import SecurePoolError

LOOPBACK = "127.0.0.1"
CONNECTION = "securepool-local"


class HarnessError(SecurePoolError):
    """A local deployment step failed (the message names the step and its log)."""


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    server_cert: Path
    server_key: Path


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_pki(directory: Path, *, days: int = 2) -> Pki:
    """A CA and a SuperLink certificate for 127.0.0.1 and localhost, signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "SecurePool test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )
    pki = Pki(directory / "ca.crt", directory / "server.pem", directory / "server.key")
    pki.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(
        pki.server_key,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    return pki


def make_node_key(directory: Path, name: str) -> tuple[Path, Path]:
    """An ECDSA P-384 key pair in OpenSSH format (as ``ssh-keygen -t ecdsa -b 384``)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private, public = directory / name, directory / f"{name}.pub"
    _write_private(
        private,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + f" {name}\n".encode()
    )
    return private, public


def write_flwr_config(flwr_home: Path, *, address: str, ca_cert: Path) -> Path:
    """``$FLWR_HOME/config.toml`` with the one connection :data:`CONNECTION`."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    path = flwr_home / "config.toml"
    path.write_text(
        "[superlink]\n"
        f'default = "{CONNECTION}"\n\n'
        f"[superlink.{CONNECTION}]\n"
        f'address = "{address}"\n'
        f'root-certificates = "{ca_cert}"\n',
        encoding="utf-8",
    )
    return path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOOPBACK, port)) == 0


def _toml(value: str | int | float) -> str:
    """A TOML value (a JSON string is a valid TOML basic string, quotes escaped)."""
    return json.dumps(value) if isinstance(value, str) else repr(value)


def _bin(name: str) -> str:
    """A Flower executable of this interpreter's environment."""
    candidate = Path(sys.executable).parent / name
    found = str(candidate) if candidate.exists() else shutil.which(name)
    if found is None:
        raise HarnessError(f"{name} not found (is flwr installed?)")
    return found


#: what the tests add to a SuperNode's command: give up on a SuperLink that is gone
#: within a test's time instead of retrying for ever (not in the README's recipe)
SUPERNODE_TEST_ONLY = ("--max-retries", "3", "--max-wait-time", "30")
#: the Flower executables a SuperNode runs, itself included (started by name on PATH)
SUPERNODE_BINS = ("flower-supernode", "flwr-clientapp", "flower-superexec")


def unprivileged_python() -> tuple[str, list[str]] | None:
    """(an interpreter, the path entries) with which another OS user runs this
    environment's packages: the venv's own interpreter may live where only its owner can
    enter (pyenv under /root), so the system's interpreter of the same minor version,
    with this environment's site-packages on its path. None if there is none."""
    import sysconfig

    exe = Path(f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}")
    if not exe.is_file():
        return None
    return str(exe), [sysconfig.get_paths()["purelib"]]


#: the OS user a relay SuperNode runs as when the harness runs as root (issue 27)
RELAY_USER = "nobody"
#: the factory of a relay SuperNode's ClientApp (:mod:`securepool.node.relay`)
RELAY_FACTORY = "securepool.node.relay:relay"


def relays_as_another_user() -> bool:
    """Whether relay SuperNodes can run as :data:`RELAY_USER` here (root, and a system
    interpreter of this version for that user)."""
    return os.geteuid() == 0 and unprivileged_python() is not None


def node_service_toml(
    workdir: Path,
    node_id: str,
    *,
    config: Path,
    registry: Path,
    key: Path,
    relay_user: str | None = RELAY_USER,
) -> Path:
    """The agency's NODE.toml for ``securepool node serve`` (README, "Deploy across
    agencies"): its state folder is its key's, its socket ``workdir/sockets/ID.sock``
    (the folder 0755 so the relay's user reaches it; the socket itself is that user's,
    0600). ``relay_user`` None: only the service's own user may connect."""
    sockets = workdir / "sockets"
    sockets.mkdir(exist_ok=True)
    os.chmod(sockets, 0o755)
    path = workdir / f"{node_id}.node.toml"
    role = "auditor" if node_id == "auditor" else "participant"
    user = "" if relay_user is None else f"relay-user = {_toml(relay_user)}\n"
    path.write_text(
        f"[node]\nid = {_toml(node_id)}\nrole = {_toml(role)}\nconfig = {_toml(str(config))}\n"
        f"state-dir = {_toml(str(key.parent))}\nregistry-dir = {_toml(str(registry))}\n"
        f"key-file = {_toml(str(key))}\nsocket = {_toml(str(sockets / node_id) + '.sock')}\n" + user
    )
    return path


def relay_node_config(node_toml: Path) -> dict[str, str]:
    """A relay SuperNode's node config for the service of ``node_toml``: its id, role and
    socket, nothing else (:data:`securepool.node.relay.RELAY_KEYS`)."""
    import tomllib

    node = tomllib.loads(node_toml.read_text())["node"]
    return {
        "node-id": node["id"],
        "role": node["role"],
        "factory": RELAY_FACTORY,
        "relay": node["socket"],
    }


def _as_user(name: str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise HarnessError(f"no OS user named {name!r}") from None
    return entry.pw_uid, entry.pw_gid


def _orphans_of(pid: int) -> list[psutil.Process]:
    """Flower helpers started by process ``pid`` that outlived it (``--parent-pid PID``)."""
    out = []
    for p in psutil.process_iter(["cmdline", "ppid"]):
        cmd = p.info.get("cmdline") or []
        if p.info.get("ppid") == 1 and "--parent-pid" in cmd:
            i = cmd.index("--parent-pid")
            if i + 1 < len(cmd) and cmd[i + 1] == str(pid):
                out.append(p)
    return out


class LocalDeployment:
    """SuperLink + SuperNodes on 127.0.0.1 with TLS and node authentication.

    Use as a context manager; :meth:`close` stops every process it started (by its
    process-group id) even when a step failed.
    """

    def __init__(self, workdir: Path, *, pythonpath: list[Path] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.flwr_home = workdir / "flwr-home"
        self.pki = make_pki(workdir / "pki")
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        write_flwr_config(self.flwr_home, address=self.address, ca_cert=self.pki.ca_cert)
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLWR_")}
        env["FLWR_HOME"] = str(self.flwr_home)
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["PYTHONUNBUFFERED"] = "1"
        # the SuperLink and SuperNodes start flower-superexec / flwr-clientapp by name
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        # a federation here never reaches for a proxy, and nothing is installed at run time
        for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy"):
            env.pop(proxy, None)
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        if pythonpath:
            extra = os.pathsep.join(str(p) for p in pythonpath)
            env["PYTHONPATH"] = extra + (
                os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
            )
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}

    # -- processes ----------------------------------------------------------------

    def spawn(
        self,
        name: str,
        argv: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        preexec: Any = None,
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as process ``name`` in a session of its own, its output in
        ``WORKDIR/NAME.log``; :meth:`stop` and :meth:`close` end it by its group id."""
        if name in self.procs:
            raise HarnessError(f"process {name} already started")
        log = self.workdir / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=dict(self.env if env is None else env),
                cwd=self.workdir if cwd is None else cwd,
                start_new_session=True,
                preexec_fn=preexec,
            )
        self.procs[name] = proc
        self.logs[name] = log
        return proc

    def log_text(self, name: str) -> str:
        path = self.logs.get(name)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def stop(self, name: str, *, sig: int = signal.SIGTERM, grace: float = 5.0) -> None:
        """Stop one process, its process group and every descendant, by their ids.

        Flower starts some helpers in sessions of their own (``flower-superexec``), so
        the descendants are listed before the group is signalled and killed after.
        """
        proc = self.procs.get(name)
        if proc is None:
            return
        try:
            descendants = psutil.Process(proc.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        # a SuperNode that exited by itself (e.g. refused) leaves its flower-superexec,
        # re-parented to init; it names its parent's id on its command line
        descendants += _orphans_of(proc.pid)
        for s in (sig, signal.SIGKILL):
            try:
                os.killpg(proc.pid, s)
            except ProcessLookupError:
                break
            try:
                proc.wait(timeout=grace)
                # children of the group may outlive the leader: kill what is left
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.wait(timeout=grace)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(descendants, timeout=grace)

    def serverapp_pids(self) -> list[int]:
        """The ids of the ServerApp processes (``flwr-serverapp``) the SuperLink's
        SuperExec started: the coordinator of each run in progress."""
        link = self.procs.get("superlink")
        if link is None:
            return []
        try:
            tree = psutil.Process(link.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []
        out = []
        for p in tree:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if any("flwr-serverapp" in part for part in p.cmdline()[:2]):
                    out.append(p.pid)
        return out

    def close(self, *, grace: float = 3.0) -> None:
        """Stop every process started, all at once: SIGTERM to every process group,
        ``grace`` seconds for all of them together, then SIGKILL to what is left (groups
        and the descendants listed before, Flower's own sessions included)."""
        procs = list(self.procs.values())  # exited ones too: their groups may live on
        descendants: list[psutil.Process] = []
        for proc in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                descendants += psutil.Process(proc.pid).children(recursive=True)
            descendants += _orphans_of(proc.pid)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        for proc in procs:  # the leader may be gone and its group not: kill every group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        for child in descendants:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
        psutil.wait_procs(descendants, timeout=grace)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace)

    def __enter__(self) -> LocalDeployment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- steps ----------------------------------------------------------------------

    def superlink_argv(self) -> list[str]:
        """The SuperLink's command (README "Deploy across agencies", step 2)."""
        return [
            _bin("flower-superlink"),
            "--ssl-ca-certfile", str(self.pki.ca_cert),
            "--ssl-certfile", str(self.pki.server_cert),
            "--ssl-keyfile", str(self.pki.server_key),
            "--enable-supernode-auth",
            "--disable-runtime-dependency-installation",
            "--database", str(self.workdir / "superlink.db"),
            "--host", LOOPBACK,
            "--port", str(self.port),
        ]  # fmt: skip

    def start_superlink(self, *, timeout: float = 60.0) -> None:
        self.spawn("superlink", self.superlink_argv())
        self.wait_until(lambda: listening(self.port), "superlink", timeout)

    def wait_until(self, ready: object, name: str, timeout: float) -> None:
        """Return once ``ready()`` holds; a :class:`HarnessError` with the end of
        ``name``'s log if that process exits first or ``timeout`` seconds pass."""
        deadline = time.monotonic() + timeout
        proc = self.procs[name]
        while time.monotonic() < deadline:
            if callable(ready) and ready():
                return
            if proc.poll() is not None:
                raise HarnessError(
                    f"{name} exited ({proc.returncode}):\n{self.log_text(name)[-3000:]}"
                )
            time.sleep(0.3)
        raise HarnessError(f"{name} not ready in {timeout:.0f} s:\n{self.log_text(name)[-3000:]}")

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        """One ``flwr`` CLI command against the local connection (time-bounded)."""
        result = subprocess.run(
            [_bin("flwr"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise HarnessError(
                f"flwr {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
            )
        return result

    def node_key(self, name: str, *, register: bool = True) -> Path:
        """A fresh node key; registered with the SuperLink unless ``register`` is False."""
        private, public = make_node_key(self.workdir / "keys", name)
        if register:
            self.cli("supernode", "register", str(public), CONNECTION)
        return private

    def start_service(self, name: str, node_toml: Path, *, timeout: float = 120.0) -> None:
        """``securepool node serve --config NODE_TOML`` (the agency's node service, as
        the user running the tests); returns once its socket is there, a new one if a
        service killed before left its socket behind (the service replaces it)."""
        import stat
        import tomllib

        sock = Path(tomllib.loads(node_toml.read_text())["node"]["socket"])

        def bound() -> tuple[int, int] | None:
            try:
                st = sock.lstat()
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_ctime_ns) if stat.S_ISSOCK(st.st_mode) else None

        stale = bound()
        self.spawn(
            name,
            [
                sys.executable,
                "-c",
                "import sys; from securepool.cli import main; sys.exit(main(sys.argv[1:]))",
                "node",
                "serve",
                "--config",
                str(node_toml),
            ],
        )
        self.wait_until(lambda: bound() not in (None, stale), name, timeout)

    def start_relayed_node(
        self,
        name: str,
        key: Path,
        node_toml: Path,
        *,
        user: str | None,
        service: str | None = None,
        timeout: float = 120.0,
    ) -> subprocess.Popen[bytes]:
        """An agency's node as its own service (process ``service``, default
        ``NAME-service``) and its SuperNode ``name`` relaying bytes to it, run as ``user``
        (None: as the user running the harness)."""
        self.start_service(service or f"{name}-service", node_toml, timeout=timeout)
        return self.start_supernode(name, key, relay_node_config(node_toml), user=user)

    def unprivileged(self, name: str, user: str) -> tuple[dict[str, str], Path, Any]:
        """(env, cwd, preexec) that run ``name``'s processes as ``user``: Flower's
        executables through wrappers on a system interpreter, its own FLWR_HOME."""
        found = unprivileged_python()
        if found is None:
            raise HarnessError("no system Python of this version to run as another user")
        exe, paths = found
        uid, gid = _as_user(user)
        bindir = self.workdir / "bin-unprivileged"
        bindir.mkdir(exist_ok=True)
        os.chmod(bindir, 0o755)
        for tool in SUPERNODE_BINS:
            body = Path(_bin(tool)).read_text().split("\n", 1)[1]
            script = bindir / tool
            if script.exists():  # written for an earlier node: it may be running it
                continue
            # written beside and renamed in: a file open for writing cannot be executed
            # (ETXTBSY), so a SuperNode starting meanwhile never sees it half-written
            staged = bindir / f".{tool}.{os.getpid()}"
            staged.write_text(f"#!{exe}\n{body}")
            os.chmod(staged, 0o755)
            os.replace(staged, script)
        home = self.workdir / f"home-{name}"
        home.mkdir(exist_ok=True)
        os.chown(home, uid, gid)
        os.chmod(home, 0o700)
        env = dict(self.env)
        env["PATH"] = str(bindir) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [env.get("PYTHONPATH")])])
        env["HOME"], env["FLWR_HOME"] = str(home), str(home / "flwr")

        def drop() -> None:
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)

        return env, home, drop

    def start_supernode(
        self,
        name: str,
        key: Path,
        node_config: Mapping[str, str | int],
        *,
        user: str | None = None,
        superlink: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """A SuperNode on its own port, authenticated with ``key``; ``user``: the OS user
        it runs as (its node key is handed to that user; everything else stays ours)."""
        config = " ".join(f"{k}={_toml(v)}" for k, v in node_config.items())
        env, cwd, preexec = self.env, self.workdir, None
        binary = _bin("flower-supernode")
        if user is not None:
            env, cwd, preexec = self.unprivileged(name, user)
            os.chown(key, *_as_user(user))
            binary = str(self.workdir / "bin-unprivileged" / "flower-supernode")
        argv = [*self.supernode_argv(key, config, binary, superlink), *SUPERNODE_TEST_ONLY]
        return self.spawn(name, argv, env=env, cwd=cwd, preexec=preexec)

    def supernode_argv(
        self, key: Path, config: str, binary: str = "", superlink: str | None = None
    ) -> list[str]:
        """A SuperNode's command (README "Deploy across agencies", step 7); ``superlink``:
        another address to reach it at (a proxy in front of it)."""
        return [
            binary or _bin("flower-supernode"),
            "--superlink", superlink or self.address,
            "--root-certificates", str(self.pki.ca_cert),
            "--auth-supernode-private-key", str(key),
            "--host", LOOPBACK,
            "--port", str(free_port()),
            "--node-config", config,
        ]  # fmt: skip

    def run(self, app_dir: Path, run_config: Mapping[str, str | int | float]) -> str:
        """``flwr run`` the app in ``app_dir`` (returns the CLI's output)."""
        overrides = " ".join(f"{k}={_toml(v)}" for k, v in run_config.items())
        result = self.cli("run", str(app_dir), CONNECTION, "--run-config", overrides)
        return result.stdout
