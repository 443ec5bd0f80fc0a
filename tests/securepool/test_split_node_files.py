"""A node's own files: its identity key (``securepool keygen``) and its record file."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import numpy as np
import pytest
from split_helpers import config_text

from crypto.errors import ConfigError, KeyMaterialError
from securepool.cli import main
from securepool.config import parse_config
from securepool.node.keys import keygen, load_identity, load_public, public_path
from securepool.node.records import load_records


def test_keygen_creates_a_0600_file_and_a_public_file(tmp_path: Path) -> None:
    key = tmp_path / "agency" / "id.key"
    old = os.umask(0)  # even a permissive umask gives 0600
    try:
        public = keygen(key)
    finally:
        os.umask(old)
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_identity(key).public_bytes() == public == load_public(public_path(key))
    with pytest.raises(ConfigError, match="refusing to overwrite"):
        keygen(key)


def test_a_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    key = tmp_path / "id.key"
    keygen(key)
    for mode in (0o644, 0o640, 0o606):
        key.chmod(mode)
        with pytest.raises(KeyMaterialError, match="chmod 600"):
            load_identity(key)
    key.chmod(0o600)
    key.write_bytes(b"SPIK\x01short")
    with pytest.raises(KeyMaterialError, match="not a SecurePool identity key"):
        load_identity(key)
    with pytest.raises(KeyMaterialError, match="does not exist"):
        load_identity(tmp_path / "missing.key")


def test_cli_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "k"
    assert main(["keygen", "--out", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert load_public(public_path(key)).hex() in capsys.readouterr().out.replace("\n", "")
    assert main(["keygen", "--out", str(key)]) == 2


def _load(path: Path) -> object:
    return load_records(
        path, n_features=3, n_classes=2, local_test_fraction=0.25, min_records=4, seed=1
    )


def test_records_from_csv_and_npz(tmp_path: Path) -> None:
    rows = "\n".join(f"{i},{i / 2},{-i},{i % 2}" for i in range(8))
    (tmp_path / "r.csv").write_text("a,b,c,label\n" + rows + "\n")
    x = np.arange(24, dtype=np.float64).reshape(8, 3)
    np.savez(tmp_path / "r.npz", x=x, y=np.array([0, 1] * 4))
    for name in ("r.csv", "r.npz"):
        data = _load(tmp_path / name)
        assert data.x_train.shape == (6, 3) and data.x_test.shape == (2, 3)  # type: ignore[attr-defined]
        assert data.y_train.dtype.is_floating_point is False  # type: ignore[attr-defined]


def test_bad_record_files_name_every_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.array([[0, 1.0, np.nan, 4]] * 3), y=np.array([0, 5, 1]))
    with pytest.raises(ConfigError) as info:
        _load(bad)
    text = str(info.value)
    for problem in ("4 features", "NaN", "labels must be in 0..1", "below min_records"):
        assert problem in text
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("1,2,3,0\n1,2,1\nx,1,1,0\n")
    with pytest.raises(ConfigError, match="not a number"):
        _load(ragged)
    np.savez(tmp_path / "nox.npz", y=np.zeros(3))
    with pytest.raises(ConfigError, match="missing array"):
        _load(tmp_path / "nox.npz")
    (tmp_path / "r.txt").write_text("1")
    with pytest.raises(ConfigError, match=r"\.csv or \.npz"):
        _load(tmp_path / "r.txt")


def test_runtime_key_is_validated() -> None:
    with pytest.raises(ConfigError, match="runtime"):
        parse_config(tomllib.loads(config_text().replace('"inprocess"', '"threads"')))
    vote = config_text(runtime="multiprocess", mode="plaintext") + (
        '[trust]\nenabled = true\nvoting = "validation"\n'
    )
    # the validation vote is a stage (plain/ballot) of every runtime
    assert parse_config(tomllib.loads(vote)).trust.voting.value == "validation"
    flower = config_text(runtime="flower")
    no_mode = flower.replace("[data]", 'registry = "/keys"\n[data]').replace(
        '[evaluation]\nmode = "federated"\n', ""
    )
    assert "[evaluation]" not in no_mode
    deployed = parse_config(tomllib.loads(no_mode))
    assert deployed.evaluation.mode.value == "federated"  # the default when deployed
    with pytest.raises(ConfigError, match=r"run\.registry must name"):
        parse_config(tomllib.loads(flower))
    with pytest.raises(ConfigError, match="absolute path"):
        parse_config(tomllib.loads(flower.replace("[data]", 'registry = "keys"\n[data]')))
    assert parse_config(tomllib.loads(config_text(runtime="multiprocess"))).run.runtime.value == (
        "multiprocess"
    )


def test_a_supernodes_node_config_is_checked_before_anything_runs(tmp_path: Path) -> None:
    """The factories Flower's ClientApp calls: every problem of a node config at once; a
    key file others can read, or one the PKI does not hold, is refused."""
    from crypto.errors import KeyMaterialError
    from securepool.node.keys import keygen
    from securepool.node.serve import flower_auditor, flower_participant

    with pytest.raises(ConfigError) as info:
        flower_participant({"node-id": "p00", "role": "participant", "colour": "red"})
    text = str(info.value)
    for missing in ("factory", "config", "state-dir", "registry-dir", "colour"):
        assert missing in text
    with pytest.raises(ConfigError, match="only the auditor's"):
        flower_participant({"node-id": "auditor", "role": "participant"})
    cfg = tmp_path / "run.toml"
    cfg.write_text(config_text(runtime="inprocess"))
    key = tmp_path / "p00" / "identity.key"
    keygen(key)
    registry = tmp_path / "registry"
    registry.mkdir()
    node = {
        "node-id": "p00",
        "role": "participant",
        "factory": "securepool.node.serve:flower_participant",
        "config": str(cfg),
        "state-dir": str(key.parent),
        "registry-dir": str(registry),
    }
    with pytest.raises(KeyMaterialError, match="not enrolled"):
        flower_participant(node)
    (registry / "p00.pub").write_bytes((key.parent / "identity.key.pub").read_bytes())
    assert flower_participant(node).pid == "p00"
    key.chmod(0o644)
    with pytest.raises(KeyMaterialError, match="chmod 600"):
        flower_participant(node)
    with pytest.raises(ConfigError, match="auditor's node-id"):
        flower_auditor({**node, "role": "auditor"})
