"""The plaintext baseline's wire form, the inputs every mode takes, the group length rule."""

from __future__ import annotations

import numpy as np
import pytest

from crypto.errors import MessageError
from protocols.aggregation import ClientInput, group_length
from protocols.plaintext import decode_plain_update, encode_plain_update


def test_the_coordinator_decodes_every_update_in_the_clear() -> None:
    """The baseline's leak, shown: what a node uploads is its raw update and weight."""
    vec = np.array([0.5, -1.5], dtype=np.float32)
    decoded, weight = decode_plain_update(encode_plain_update(vec, 7.0))
    np.testing.assert_array_equal(decoded, vec)
    assert decoded.dtype == np.float32 and weight == 7.0


def test_malformed_wire_updates_raise() -> None:
    good = encode_plain_update(np.ones(4, dtype=np.float32), 2.0)
    with pytest.raises(MessageError):
        decode_plain_update(good[:-1])
    with pytest.raises(MessageError):
        decode_plain_update(b"\x09" + good[1:])
    with pytest.raises(MessageError):
        decode_plain_update(b"")
    with pytest.raises(MessageError, match="non-positive weight"):
        decode_plain_update(encode_plain_update(np.ones(4, dtype=np.float32), 0.0))
    with pytest.raises(MessageError, match="non-finite"):
        decode_plain_update(encode_plain_update(np.array([np.inf], dtype=np.float32), 1.0))


def test_client_input_rejects_bad_values() -> None:
    with pytest.raises(MessageError):
        ClientInput(np.array([np.nan], dtype=np.float32), weight=1)
    with pytest.raises(MessageError):
        ClientInput(np.ones(2, dtype=np.float64), weight=1)  # type: ignore[arg-type]
    with pytest.raises(MessageError):
        ClientInput(np.ones(2, dtype=np.float32), weight=0)


def test_one_wrong_length_update_leaves_its_group_only() -> None:
    length, wrong = group_length({"a": 3, "b": 3, "c": 3, "d": 5})
    assert length == 3
    assert wrong == {"d": "wrong size: update of length 5, group has 3"}
    # a tie goes to the smaller length; an empty group has none
    length, wrong = group_length({"a": 4, "b": 2})
    assert length == 2 and wrong == {"a": "wrong size: update of length 4, group has 2"}
    with pytest.raises(MessageError):
        group_length({})
