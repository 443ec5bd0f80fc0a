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
