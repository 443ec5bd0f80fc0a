"""README "Deploy across agencies" is the steps the test harness performs (issue 27).

The harness (securepool/runtime/flower_harness.py) starts the deployment the Flower
tests run on; the README tells an agency's engineer to type the same commands. This
fails when the two diverge: the flags of the SuperLink's and the SuperNode's commands,
the certificate's names (the SuperLink connects to itself at 127.0.0.1), the keys of a
node service's NODE.toml and of a relay's node config, and the run config keys of the
submitted run."""

from __future__ import annotations

import ipaddress
import re
import textwrap
import tomllib
from pathlib import Path

import pytest
from cryptography import x509

from securepool.node.relay import RELAY_KEYS
from securepool.node.service import OPTIONAL, REQUIRED
from securepool.runtime.flower_harness import SUPERNODE_TEST_ONLY, LocalDeployment

ROOT = Path(__file__).resolve().parents[1]


def _section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index("## Deploy across agencies")
    return text[start : text.index("\n## ", start + 3)]


def _blocks() -> list[str]:
    """The fenced code blocks of the section, continuation lines joined."""
    blocks = re.findall(r"```\n(.*?)```", _section(), flags=re.S)
    return [re.sub(r"\\\n\s*", " ", textwrap.dedent(b)) for b in blocks]


def _command(name: str) -> str:
    found = [line for b in _blocks() for line in b.splitlines() if line.startswith(name + " ")]
    assert len(found) == 1, f"README shows {len(found)} {name} commands"
    return found[0]


def _flags(argv: list[str] | str) -> set[str]:
    tokens = argv.split() if isinstance(argv, str) else argv
    return {t for t in tokens if t.startswith("--")}


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> LocalDeployment:
    return LocalDeployment(tmp_path_factory.mktemp("readme"))  # PKI only, no process


def test_the_superlink_command_is_the_harness_s(harness: LocalDeployment) -> None:
    assert _flags(_command("flower-superlink")) == _flags(harness.superlink_argv())


def test_the_supernode_command_is_the_harness_s(harness: LocalDeployment) -> None:
    readme = _flags(_command("flower-supernode"))
    ours = _flags(harness.supernode_argv(Path("key"), "node-id=x"))
    assert readme == ours
    assert not readme & _flags(list(SUPERNODE_TEST_ONLY))
    config = re.search(r"--node-config '([^']*)'", _command("flower-supernode"))
    assert config is not None
    keys = set(re.findall(r'([\w-]+)="', config.group(1)))
    assert keys == set(RELAY_KEYS)  # the relay's node config names the socket, nothing else


def test_the_certificate_names_the_address_the_superlink_calls_itself_at(
    harness: LocalDeployment,
) -> None:
    cert = x509.load_pem_x509_certificate(harness.pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in san.get_values_for_type(x509.IPAddress)
    extfile = re.search(r'subjectAltName=([^"\\]*)', _section())
    assert extfile is not None
    names = extfile.group(1).split(",")
    assert "IP:127.0.0.1" in names and "DNS:localhost" in names
    assert any(n.startswith("IP:") and n != "IP:127.0.0.1" for n in names)


def test_the_node_toml_has_every_key_of_the_service() -> None:
    block = next(b for b in _blocks() if b.startswith("[node]"))
    keys = set(tomllib.loads(block)["node"])
    assert keys == set(REQUIRED) | set(OPTIONAL)


def test_the_submitted_run_config_keys_are_the_app_s() -> None:
    command = _command("flwr run")
    keys = set(re.findall(r"([\w-]+)=", command.split("--run-config", 1)[1]))
    app = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["flwr"]["app"]["config"]
    assert keys <= set(app) and {"coordinator", "coordinator-args", "nodes"} <= keys


def test_the_readme_certificate_recipe_run_verbatim_serves_tls_at_127_0_0_1(
    tmp_path: Path,
) -> None:
    """Step 1's openssl commands, run as written (the placeholders filled in), give a
    certificate the federation CA vouches for and that a TLS client checking the name
    127.0.0.1 accepts: the address the SuperLink's run launcher connects to itself at
    (issue 27: a certificate naming only a DNS name left every run unstarted)."""
    import shutil
    import socket
    import ssl
    import subprocess
    import threading

    if shutil.which("openssl") is None or shutil.which("bash") is None:
        pytest.skip("needs openssl and bash")
    block = next(b for b in re.findall(r"```\n(.*?)```", _section(), flags=re.S) if "openssl" in b)
    script = textwrap.dedent(block)
    script = script.replace("SUPERLINK_HOST", "superlink.example").replace(
        "SUPERLINK_IP", "192.0.2.10"
    )
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    ca = x509.load_pem_x509_certificate((tmp_path / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((tmp_path / "server.pem").read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {"superlink.example", "localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {
        "192.0.2.10",
        "127.0.0.1",
    }
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "server.pem", tmp_path / "server.key")
    client_ctx = ssl.create_default_context(cafile=str(tmp_path / "ca.crt"))
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def serve() -> None:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
        ):
            assert tls.recv(2) == b"ok"
        thread.join(timeout=10)
