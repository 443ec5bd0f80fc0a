"""Smoke test of the beacon benchmark: it runs and prints the documented JSON keys
(no timing assertions: figures belong to the benchmark, not to tests)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from protocols.quorum import Endorsement
from securepool.bench import beacon


def test_bench_beacon_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    assert beacon.main(["--n", "6", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    row = out["results"]["6"]
    for key in ("round_s", "participant_ms", "coordinator_ms", "baseline_assign_ms"):
        assert row[key] > 0
    # one commit (iteration, digest, id, commitment, signature) and one reveal each
    assert 100 < row["bytes_sent_per_participant"] < 300
    assert row["coordinator_bytes_out"] == 6 * row["bytes_received_per_participant"]


QUORUM_TIMES = (
    "endorse_ms",
    "verify_certificate_ms",
    "verify_certificate_shared_ms",
    "collect_ms",
    "auditor_accept_ms",
    "quorum_vs_round",
)


def test_bench_beacon_measures_the_quorum_on_the_same_rounds(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The quorum's figures next to the round's: sizes as protocols.quorum defines them
    under the default settings, bytes consistent with the real encodings (the
    certificate grows by one signer's bytes per signer, so with q), no timing compared."""
    assert beacon.main(["--n", "6", "9", "--repeats", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["quorum_settings"] == {
        "corrupt_fraction": 0.2,
        "max_left_out": 0.25,
        "min_group_size": 3,
    }
    sizes: dict[int, float] = {}
    rows = {int(n): row for n, row in out["results"].items()}
    for n, row in rows.items():
        for key in QUORUM_TIMES:
            assert row[key] > 0, key
        big_n, f, q, w = row["N"], row["f"], row["q"], row["w"]
        assert big_n == n and f == math.ceil(0.2 * n) and w == math.floor(0.25 * n)
        assert q == (big_n + f) // 2 + 1 and 2 * q - big_n > f  # two quorums share an honest
        # every participant endorsed; the certificate holds the first q of them
        assert row["certificate_signers"] == q <= n
        cert = row["certificate_bytes_received_per_participant"]
        sizes[n] = cert
        # the endorsement goes as hex in the reply's JSON metadata: 2x its bytes + the key
        endorsement = Endorsement(1, "p000", bytes(32), bytes(64)).to_bytes()
        hexed = len(json.dumps({"endorsement": endorsement.hex()})) - len("{}")
        assert row["endorsement_bytes_sent_per_participant"] == hexed + len(", ")
        assert hexed == 2 * len(endorsement) + len('"endorsement": ""')
        assert (
            row["coordinator_quorum_bytes_in"] == n * row["endorsement_bytes_sent_per_participant"]
        )
        assert row["coordinator_quorum_bytes_out"] == n * cert  # every member (participation 1)
        assert row["auditor_quorum_bytes_received"] > row["statement_bytes"] + cert
        assert 0 < row["quorum_wire_extra_bytes_per_participant"] < 128  # framing only
        assert row["log2_choices"] >= f
        assert 0 <= row["omission_bound"] <= 1 and row["omission_bound_min_group_size"] == 1
        groups, size = row["omission_groups"], row["omission_group_size"]
        assert size >= 3 and groups * size <= big_n - w
    assert rows[9]["q"] > rows[6]["q"]
    signer_bytes = (sizes[9] - sizes[6]) / (rows[9]["q"] - rows[6]["q"])
    assert signer_bytes == 2 + 4 + len("p000") + 2 + 64  # the id and the signature, framed


DEMO = """
[run]
seed = 5
[data]
participants = 6
[[pool.models]]
id = "lr"
arch = "logreg"
seed = 1
[training]
epochs = 1
[convergence]
error_range = [0.0, 0.01]
max_iterations = 2
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "mask"
"""


def test_bench_beacon_demo_times_the_beacon_inside_whole_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Whole runs of the coordinator loop over in-process nodes: the time in the
    beacon's state machines is a small, non-zero share; the methods are restored."""
    steps = [cls.__dict__[name] for cls, name in beacon.BEACON_STEPS]
    config = tmp_path / "demo.toml"
    config.write_text(DEMO)
    assert beacon.main(["--demo", str(config), "--repeats", "1"]) == 0
    (run,) = json.loads(capsys.readouterr().out)["runs"]
    assert run["iterations"] == 2
    assert 0 < run["beacon_s"] < run["wall_s"] and 0 < run["beacon_share"] < 1
    assert [cls.__dict__[name] for cls, name in beacon.BEACON_STEPS] == steps
