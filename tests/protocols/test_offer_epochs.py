"""Epochs of the auditor's offers (issue 21, item 5): signed inside the trust offer and
the HE context offer, and a participant's record that refuses older ones.

The node-level attacks (a coordinator replaying a retired key's offer to real nodes) are
in tests/securepool/test_offer_replay.py; here the pieces, each with its bad inputs."""

from __future__ import annotations

import contextlib
import struct
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import InvalidSignature, MessageError, SecurityViolation, StageError
from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.he.messages import OFFER_LABEL, ContextOffer, verify_context_offer
from protocols.offer_epochs import HE_CONTEXT, TRUST_OFFER, OfferEpochs
from protocols.trust_offer import (
    TRUST_SETUP_SESSION,
    TrustOffer,
    check_epoch,
    open_trust_offer,
    verify_trust_offer,
)

AUDITOR = IdentityKey.generate()
PKI = AUDITOR.public_bytes()
K1, K2 = SummaryOpeningKey().public_bytes(), SummaryOpeningKey().public_bytes()


def _offer(key: bytes, epoch: int) -> bytes:
    return TrustOffer.signed(AUDITOR, opening_public=key, session=TRUST_SETUP_SESSION, epoch=epoch)


# --- the trust offer -------------------------------------------------------------------


def test_a_trust_offer_carries_its_epoch_under_the_signature() -> None:
    offer = _offer(K2, 2)
    got = open_trust_offer(offer, auditor_public=PKI, session=TRUST_SETUP_SESSION)
    assert (got.epoch, got.opening_public) == (2, K2)
    assert verify_trust_offer(offer, auditor_public=PKI, session=TRUST_SETUP_SESSION) == K2
    # the epoch is the u32 right after the session: bumping it on the wire breaks the
    # signature (an old key cannot be dressed up as the newest)
    at = offer.index(struct.pack(">I", 2) + struct.pack(">I", len(K2)))
    bumped = offer[:at] + struct.pack(">I", 9) + offer[at + 4 :]
    with pytest.raises(InvalidSignature):
        open_trust_offer(bumped, auditor_public=PKI, session=TRUST_SETUP_SESSION)
    zero = offer[:at] + struct.pack(">I", 0) + offer[at + 4 :]
    with pytest.raises(MessageError, match="epoch"):
        open_trust_offer(zero, auditor_public=PKI, session=TRUST_SETUP_SESSION)


@pytest.mark.parametrize("epoch", [0, -1, 1 << 32, True, 1.0, "2", None])
def test_an_invalid_epoch_is_refused_typed(epoch: object) -> None:
    with pytest.raises(MessageError, match="epoch"):
        check_epoch(epoch)
    with pytest.raises(MessageError, match="epoch"):
        TrustOffer.signed(
            AUDITOR,
            opening_public=K1,
            session=TRUST_SETUP_SESSION,
            epoch=epoch,  # type: ignore[arg-type]
        )


def test_a_version_1_offer_without_an_epoch_is_refused() -> None:
    offer = bytearray(_offer(K1, 1))
    offer[2] = 1  # the version byte after the magic
    with pytest.raises(MessageError, match="version"):
        open_trust_offer(bytes(offer), auditor_public=PKI, session=TRUST_SETUP_SESSION)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=4),
    cut=st.integers(0, 10**4),
    noise=st.binary(max_size=200),
)
def test_fuzz_the_trust_offer_decoder_raises_only_typed_errors(
    edits: list[tuple[int, int]], cut: int, noise: bytes
) -> None:
    raw = bytearray(_offer(K1, 3))
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    for data in (bytes(raw[: max(1, cut % (len(raw) + 1))]), bytes(raw), noise):
        with contextlib.suppress(MessageError, InvalidSignature, StageError):
            open_trust_offer(data, auditor_public=PKI, session=TRUST_SETUP_SESSION)


# --- the HE context offer --------------------------------------------------------------


def _context(epoch: int, sealbox: bytes = b"\x22" * 32) -> bytes:
    unsigned = ContextOffer("he-setup", b"ctx", sealbox, b"", b"galois" * 10, epoch=epoch)
    signature = AUDITOR.sign(unsigned.signed_part(), label=OFFER_LABEL)
    return replace(unsigned, signature=signature).to_bytes()


def test_a_context_offer_carries_its_epoch_under_the_signature() -> None:
    raw = _context(4)
    got = verify_context_offer(raw, auditor_public=PKI, session="he-setup")
    assert got.epoch == 4
    copy = got.without_galois()
    assert copy.epoch == 4 and copy.key_material() == got.key_material()
    again = verify_context_offer(copy.to_bytes(), auditor_public=PKI, session="he-setup")
    assert again.epoch == 4
    bumped = replace(got, epoch=5).to_bytes()  # same signature, another epoch
    with pytest.raises(SecurityViolation, match="not signed"):
        verify_context_offer(bumped, auditor_public=PKI, session="he-setup")
    # the epoch is the last u64 of the offer; 0 is refused when decoded
    with pytest.raises(MessageError, match="epoch"):
        ContextOffer.from_bytes(raw[:-8] + struct.pack(">Q", 0))
    assert _context(4, b"\x33" * 32) != raw  # another key: another key_material
    other = ContextOffer.from_bytes(_context(4, b"\x33" * 32))
    assert other.key_material() != got.key_material()


# --- a participant's record --------------------------------------------------------------


def test_the_record_refuses_older_epochs_and_another_key_under_the_newest() -> None:
    record = OfferEpochs()
    assert record.admit(TRUST_OFFER, auditor_public=PKI, epoch=1, key=K1)
    assert not record.admit(TRUST_OFFER, auditor_public=PKI, epoch=1, key=K1)  # same: ok
    assert record.admit(TRUST_OFFER, auditor_public=PKI, epoch=2, key=K2)  # rotated
    before = record.to_json()
    with pytest.raises(SecurityViolation, match="stale auditor trust-offer: epoch 1"):
        record.admit(TRUST_OFFER, auditor_public=PKI, epoch=1, key=K1)
    with pytest.raises(SecurityViolation, match="another key under epoch 2"):
        record.admit(TRUST_OFFER, auditor_public=PKI, epoch=2, key=K1)
    assert record.to_json() == before  # a refusal changes nothing
    # kinds are separate records: an HE context of epoch 1 is not "older"
    assert record.admit(HE_CONTEXT, auditor_public=PKI, epoch=1, key=b"ctx")
    # another auditor identity (the PKI's key changed) starts a record of its own
    new_pki = IdentityKey.generate().public_bytes()
    assert record.admit(TRUST_OFFER, auditor_public=new_pki, epoch=1, key=K1)
    with pytest.raises(MessageError, match="unknown kind"):
        record.admit("other", auditor_public=PKI, epoch=1, key=K1)
    with pytest.raises(MessageError, match="epoch"):
        record.admit(TRUST_OFFER, auditor_public=PKI, epoch=0, key=K1)


def test_the_record_round_trips_through_json() -> None:
    record = OfferEpochs()
    record.admit(TRUST_OFFER, auditor_public=PKI, epoch=7, key=K1)
    record.admit(HE_CONTEXT, auditor_public=PKI, epoch=2, key=b"ctx")
    back = OfferEpochs.from_json(record.to_json())
    assert back == record
    with pytest.raises(SecurityViolation):
        back.admit(TRUST_OFFER, auditor_public=PKI, epoch=6, key=K1)
    assert OfferEpochs.from_json({}) == OfferEpochs()


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=70),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_JSON
    | st.dictionaries(
        st.sampled_from([TRUST_OFFER, HE_CONTEXT, "x"]),
        st.fixed_dictionaries(
            {
                "auditor": st.text(max_size=70) | st.just("ab" * 32),
                "epoch": _JSON | st.integers(),
                "key": st.just("cd" * 32) | st.text(max_size=70),
            }
        )
        | _JSON,
    )
)
def test_fuzz_a_stored_record_restores_or_raises_message_error(doc: object) -> None:
    with contextlib.suppress(MessageError):  # anything else fails the test
        back = OfferEpochs.from_json(doc)
        assert OfferEpochs.from_json(back.to_json()) == back
