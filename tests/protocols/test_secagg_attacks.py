"""SecAgg+ correctness under dropouts, and its security properties shown by attack."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from secagg_session import (
    DIGEST,
    DROP_STAGES,
    Session,
    make_inputs,
    reference,
    run_session,
)

from crypto.errors import (
    EncodingError,
    InvalidSignature,
    MessageError,
    SecurityViolation,
    StageError,
    ThresholdNotMet,
)
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.secagg.client import ClientStage, SecAggClient
from protocols.secagg.graph import session_parameters
from protocols.secagg.messages import UnmaskRequest, decode_message, encode_message
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings

ROOT = Path(__file__).resolve().parents[2]


@settings(deadline=None, max_examples=25)
@given(
    n=st.integers(4, 12),
    drops=st.dictionaries(st.integers(0, 11), st.sampled_from(DROP_STAGES), max_size=5),
)
def test_masks_cancel_for_every_allowed_dropout_set(n: int, drops: dict[int, ClientStage]) -> None:
    inputs = make_inputs(n, 7, seed=n)
    plan = {f"p{i:02d}": s for i, s in drops.items() if i < n}
    try:
        result = run_session(inputs, drops=plan)
    except ThresholdNotMet:
        params = session_parameters(n, dropout=0.1, corrupt=0.2)
        t, consistency = params.threshold, params.consistency
        gone = {p for p, s in plan.items() if s is not ClientStage.CONSISTENCY}
        # signers of the survivor list: everybody who did not drop at all
        signers = n - len(plan)
        assert len(plan) > 0 and (
            signers < consistency or n - len(gone) < max(3, t) or len(plan) >= n - t
        )
        return
    expected_in = frozenset(p for p in inputs if plan.get(p) in (None, ClientStage.CONSISTENCY))
    assert result.contributors == expected_in
    ref, weight = reference(inputs, result.contributors)
    step = 1.0 / 2**19  # the scale spec_for picks for n <= 12 and max_weight 128 is finer
    assert np.abs(result.weighted_sum - ref).max() <= len(result.contributors) * step
    assert abs(result.total_weight - weight) <= len(result.contributors) * step


def test_too_few_survivors_is_a_clean_threshold_error() -> None:
    inputs = make_inputs(5, 4)
    plan = {"p00": ClientStage.INPUT, "p01": ClientStage.INPUT, "p02": ClientStage.SHARE}
    with pytest.raises(ThresholdNotMet):
        run_session(inputs, drops=plan)


def test_flagged_participants_leave_through_the_dropout_path() -> None:
    inputs = make_inputs(6, 5)
    for p in inputs:
        object.__setattr__(inputs[p], "sealed_summary", b"sealed:" + p.encode())
    seen: dict[str, bytes] = {}

    def vet(summaries: dict[str, bytes]) -> dict[str, str]:
        seen.update(summaries)
        return {"p03": "too far from the trusted participant"}

    result = run_session(inputs, vet=vet)
    assert set(seen) == set(inputs) and seen["p01"] == b"sealed:p01"
    assert "p03" not in result.contributors
    assert result.excluded["p03"].startswith("untrusted")
    ref, _ = reference(inputs, result.contributors)
    assert np.abs(result.weighted_sum - ref).max() < 1e-4


def test_server_asking_for_both_shares_of_a_peer_is_refused() -> None:
    """Attack 1: list a survivor also as dropped to get its b share AND its key share."""
    s = Session()
    s.to_masked()
    honest = decode_message(s.unmask, UnmaskRequest)
    victim = honest.survivors[0]
    evil = encode_message(
        UnmaskRequest("s", honest.survivors, (*honest.dropped, victim), honest.signatures)
    )
    for p in honest.survivors:
        c = s.clients[p]
        with pytest.raises(SecurityViolation, match="both surviving and dropped"):
            c.handle(evil)
        assert c.stage is ClientStage.UNMASK  # nothing revealed, nothing changed
    # the honest request is answered once; a second request (now listing the victim as
    # dropped, to collect the key share too) is refused
    first = s.clients[honest.survivors[1]]
    reply = decode_message(first.handle(s.unmask))
    assert victim in reply.b_shares or victim not in first._held
    assert not reply.s_shares
    with pytest.raises(StageError):
        first.handle(evil)


def test_server_cannot_drop_a_survivor_after_the_consistency_check() -> None:
    s = Session()
    s.to_masked()
    honest = decode_message(s.unmask, UnmaskRequest)
    victim = honest.survivors[0]
    shrunk = tuple(p for p in honest.survivors if p != victim)
    evil = encode_message(UnmaskRequest("s", shrunk, (victim,), honest.signatures))
    for p in shrunk:
        with pytest.raises(SecurityViolation, match="survivor list changed"):
            s.clients[p].handle(evil)


def test_swapped_public_key_is_detected() -> None:
    """Attack 4: the server substitutes its own mask key for p01's."""
    s = Session()
    s.advertise()
    keys = dict(decode_message(s.directory).keys)
    c_pk, _, digest, sig = keys["p01"]
    keys["p01"] = (c_pk, b"\x11" * 32, digest, sig)
    evil = s.crafted_directory(keys=keys)
    for _p, c in s.clients.items():
        with pytest.raises((InvalidSignature, SecurityViolation)):
            c.handle(evil)
        assert c.stage is ClientStage.SHARE


def test_overflowing_scale_is_refused_by_clients() -> None:
    """Attack 2: a scale that would let the group's sum wrap is refused up front (the
    clients derive the scale from the settings and refuse any other one)."""
    s = Session()
    s.advertise()
    evil = s.crafted_directory(scale=2.0**40)
    with pytest.raises(SecurityViolation, match="'scale'"):
        s.clients["p00"].handle(evil)
    assert s.clients["p00"].stage is ClientStage.SHARE


def test_group_too_large_for_the_modulus_raises_before_anything_is_sent() -> None:
    """Flower returned an error of 9.93 at n = 1030; here the session refuses to start."""
    n = 1030
    ids = {f"p{i:04d}": IdentityKey.generate() for i in range(n)}
    directory = {p: k.public_bytes() for p, k in ids.items()}
    evil_settings = MaskSettings(scale=2.0**21, max_weight=1.0, clip=1.0)
    joint = bytes(range(32))
    server = SecAggServer(
        session="s",
        settings=evil_settings,
        directory=directory,
        length=2,
        min_contributors=3,
        joint_seed=joint,
    )
    update = np.ones(2, dtype=np.float32)
    for p, key in ids.items():
        client = SecAggClient(
            pid=p,
            session="s",
            identity=key,
            directory=directory,
            settings=evil_settings,
            update=update,
            weight=1.0,
            members=directory,
            joint_seed=joint,
            model_digest=DIGEST,
        )
        server.receive(client.start())
    with pytest.raises(EncodingError, match="headroom"):
        server.close_keys()


def test_replay_out_of_stage_wrong_round_and_malformed_change_nothing() -> None:
    """Attack 5, against both state machines."""
    s = Session()
    s.advertise()
    c = s.clients["p00"]
    share_msg = c.handle(s.directory)
    with pytest.raises(StageError):  # replayed directory
        c.handle(s.directory)
    s.server.receive(share_msg)
    with pytest.raises(StageError):  # replayed share message
        s.server.receive(share_msg)
    late = s.client("p01")
    with pytest.raises(StageError):  # a key advertisement is out of stage now
        s.server.receive(late.start())
    other = s.client("p00", session="other-round")
    with pytest.raises(StageError, match="session"):  # wrong round
        s.server.receive(other.start())
    for bad in (b"", b"XX" + share_msg[2:], share_msg[:20], share_msg + b"}}}"):
        with pytest.raises(MessageError):
            s.server.receive(bad)
    stage_before = c.stage
    with pytest.raises(MessageError):
        c.handle(s.directory[:-5])
    assert c.stage is stage_before


def test_server_transcript_carries_no_sample_count_or_metric() -> None:
    """Attack 6: scan everything the coordinator received for the weights."""
    inputs = make_inputs(6, 32, seed=4)
    weights = {77.0, 91.0, 53.0, 29.0, 61.0, 83.0}
    inputs = {
        p: ClientInput(inp.update, weight=w)
        for (p, inp), w in zip(inputs.items(), sorted(weights), strict=False)
    }
    result = run_session(inputs)
    assert result.total_weight == pytest.approx(sum(weights), abs=1e-3)
    assert {p for p, _ in result.received} == set(inputs)
    received = b"".join(payload for _, payload in result.received)
    for w in weights:
        for packed in (struct.pack("<d", w), struct.pack("<f", w), struct.pack(">d", w)):
            assert packed not in received
        # as a JSON number (a field like num_examples): delimiters on both sides, so
        # random bytes of the masked vectors cannot match by chance (~1e-8 per byte)
        assert re.search(rb"[:\[,] ?%d(\.0+)?[,\]}]" % int(w), received) is None


def test_no_numpy_rng_in_crypto_or_protocols() -> None:
    """Attack 3's root cause in Flower: masks from np.random. None of that here."""
    pattern = re.compile(r"np\.random|numpy\.random|import random|from random")
    offenders = [
        str(f.relative_to(ROOT))
        for pkg in ("crypto", "protocols")
        for f in (ROOT / pkg).rglob("*.py")
        if pattern.search(f.read_text())
    ]
    assert offenders == []


def test_self_mask_seeds_are_256_bit() -> None:
    s = Session()
    for c in s.clients.values():
        assert len(c._b) == 32
    assert len({c._b for c in s.clients.values()}) == len(s.clients)


def test_ten_percent_dropout_at_n_100_completes() -> None:
    """The graph choice survives the dropout rate it was sized for (d kept tiny)."""
    rng = np.random.default_rng(1)
    inputs = make_inputs(100, 3, seed=2)
    drops = {
        p: DROP_STAGES[int(rng.integers(0, 4))]
        for p in rng.choice(sorted(inputs), 10, replace=False)
    }
    settings = MaskSettings(max_weight=128.0, expected_dropout=0.1)
    result = run_session(inputs, settings=settings, drops=drops)
    ref, _ = reference(inputs, result.contributors)
    assert np.abs(result.weighted_sum - ref).max() < len(result.contributors) * 2**-10


def test_one_wrong_length_update_leaves_its_group_only() -> None:
    inputs = make_inputs(6, 5)
    inputs["p05"] = ClientInput(np.ones(9, dtype=np.float32), weight=1.0)
    result = run_session(inputs)
    assert result.contributors == frozenset(f"p0{i}" for i in range(5))
    assert "session length 5 != update 9" in result.excluded["p05"]
    ref, _ = reference(inputs, result.contributors)
    assert np.abs(result.weighted_sum - ref).max() < 5 * 2**-10


def test_a_group_where_nobody_advertises_is_threshold_not_met_not_a_crash() -> None:
    """Every member's DP budget spent (no updates, so no adverts): the server closes the
    key stage with ThresholdNotMet (the model keeps its state), not another error."""
    ids = {f"p{i}": IdentityKey.generate() for i in range(4)}
    server = SecAggServer(
        session="it0001/lr",
        settings=MaskSettings(),
        directory={p: k.public_bytes() for p, k in ids.items()},
        length=5,
        min_contributors=3,
        joint_seed=bytes(32),
    )
    with pytest.raises(ThresholdNotMet):
        server.close_keys()
