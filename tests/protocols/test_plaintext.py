from __future__ import annotations

import numpy as np
import pytest

from crypto.errors import MessageError, ThresholdNotMet
from protocols.aggregation import ClientInput, DropoutPlan, Router, Stage
from protocols.plaintext import PlaintextAggregator, decode_plain_update, encode_plain_update
from protocols.transcript import Transcript


def test_fedavg_matches_hand_computation() -> None:
    inputs = {
        "a": ClientInput(np.array([1.0, 2.0], dtype=np.float32), weight=1),
        "b": ClientInput(np.array([3.0, 0.0], dtype=np.float32), weight=3),
        "c": ClientInput(np.array([0.0, 4.0], dtype=np.float32), weight=4),
    }
    result = PlaintextAggregator(min_contributors=3).aggregate(session="s", inputs=inputs)
    # weighted sum = 1*[1,2] + 3*[3,0] + 4*[0,4] = [10, 18]; total weight 8
    np.testing.assert_allclose(result.weighted_sum, [10.0, 18.0])
    assert result.total_weight == 8.0
    np.testing.assert_allclose(result.mean(), [1.25, 2.25])


def test_dropouts_and_vetting_remove_participants() -> None:
    inputs = {
        p: ClientInput(np.full(3, float(i), dtype=np.float32), weight=1, sealed_summary=b"s")
        for i, p in enumerate("abcde")
    }
    result = PlaintextAggregator(min_contributors=3).aggregate(
        session="s",
        inputs=inputs,
        vet=lambda summaries, observed=None: {"e": "too far"},
        dropouts=DropoutPlan({"a": Stage.INPUT}),
    )
    assert result.contributors == {"b", "c", "d"}
    assert result.excluded == {"a": "dropped out", "e": "untrusted: too far"}
    np.testing.assert_allclose(result.mean(), [2.0, 2.0, 2.0])
    with pytest.raises(ThresholdNotMet):
        PlaintextAggregator(min_contributors=5).aggregate(
            session="s", inputs=inputs, dropouts=DropoutPlan({"a": Stage.INPUT})
        )


def test_coordinator_transcript_sees_every_update_in_the_clear() -> None:
    """The baseline's leak, shown: the coordinator's view holds each raw update."""
    router = Router({"coordinator": Transcript("coordinator")})
    vec = np.array([0.5, -1.5], dtype=np.float32)
    PlaintextAggregator(min_contributors=1, router=router).aggregate(
        session="s", inputs={"a": ClientInput(vec, weight=7)}
    )
    (entry,) = router.transcripts["coordinator"].received()
    decoded, weight = decode_plain_update(entry.payload)
    np.testing.assert_array_equal(decoded, vec)
    assert weight == 7


def test_malformed_wire_updates_raise() -> None:
    good = encode_plain_update(np.ones(4, dtype=np.float32), 2.0)
    with pytest.raises(MessageError):
        decode_plain_update(good[:-1])
    with pytest.raises(MessageError):
        decode_plain_update(b"\x09" + good[1:])
    with pytest.raises(MessageError):
        decode_plain_update(b"")


def test_client_input_rejects_bad_values() -> None:
    with pytest.raises(MessageError):
        ClientInput(np.array([np.nan], dtype=np.float32), weight=1)
    with pytest.raises(MessageError):
        ClientInput(np.ones(2, dtype=np.float64), weight=1)  # type: ignore[arg-type]
    with pytest.raises(MessageError):
        ClientInput(np.ones(2, dtype=np.float32), weight=0)


def test_one_wrong_length_update_leaves_its_group_only() -> None:
    inputs = {p: ClientInput(np.full(3, 1.0, dtype=np.float32), weight=1) for p in "abcd"}
    inputs["d"] = ClientInput(np.ones(5, dtype=np.float32), weight=1)
    result = PlaintextAggregator(min_contributors=3).aggregate(session="s", inputs=inputs)
    assert result.contributors == {"a", "b", "c"}
    assert result.excluded == {"d": "wrong size: update of length 5, group has 3"}
    np.testing.assert_allclose(result.weighted_sum, [3.0, 3.0, 3.0])
