"""The auditor's signed context offer, attacked from the coordinator's side of the wire:
it relays the offer, so it could hand a participant another key holder's public context
(one whose secret key it knows) and read that participant's ciphertexts."""

from __future__ import annotations

from dataclasses import replace

import pytest
from he_session import SETTINGS, HESession, Message, make_inputs

from crypto.agreement import AgreementKey
from crypto.errors import MessageError, SecurityViolation
from crypto.signing import IdentityKey
from protocols.he import HEKeyHolder
from protocols.he.messages import OFFER_LABEL, ContextOffer
from protocols.he.participant import HEParticipant

SESSION = "he-setup"


@pytest.fixture(scope="module")
def auditor() -> HEKeyHolder:
    return HEKeyHolder(SETTINGS)


@pytest.fixture(scope="module")
def rogue() -> HEKeyHolder:
    """Another key holder, e.g. one the coordinator runs itself."""
    return HEKeyHolder(SETTINGS)


def accept(offer: bytes, auditor: HEKeyHolder, session: str = SESSION) -> HEParticipant:
    p = HEParticipant("p0", SETTINGS)
    p.accept_context(offer, auditor_public=auditor.identity_public, session=session)
    return p


def test_the_auditors_offer_is_accepted(auditor: HEKeyHolder) -> None:
    p = accept(auditor.context_offer(session=SESSION), auditor)
    assert p.public.fingerprint == auditor.fingerprint


def test_another_key_holders_offer_is_refused(auditor: HEKeyHolder, rogue: HEKeyHolder) -> None:
    with pytest.raises(SecurityViolation, match="not signed by the auditor"):
        accept(rogue.context_offer(session=SESSION), auditor)


def test_a_re_signed_offer_is_refused(auditor: HEKeyHolder, rogue: HEKeyHolder) -> None:
    genuine = ContextOffer.from_bytes(auditor.context_offer(session=SESSION))
    theirs = ContextOffer.from_bytes(rogue.context_offer(session=SESSION))
    attacker = IdentityKey.generate()
    for forged in (
        replace(genuine, public_context=theirs.public_context),  # the rogue's CKKS key
        replace(genuine, sealbox_public=AgreementKey.generate().public_bytes()),  # tag seeds
        genuine,  # even unchanged, signed by someone else
    ):
        resigned = replace(forged, signature=attacker.sign(forged.signed_part(), label=OFFER_LABEL))
        with pytest.raises(SecurityViolation, match="not signed by the auditor"):
            accept(resigned.to_bytes(), auditor)


def test_an_altered_offer_under_the_genuine_signature_is_refused(
    auditor: HEKeyHolder, rogue: HEKeyHolder
) -> None:
    genuine = ContextOffer.from_bytes(auditor.context_offer(session=SESSION))
    theirs = ContextOffer.from_bytes(rogue.context_offer(session=SESSION))
    for altered in (
        replace(genuine, public_context=theirs.public_context),
        replace(genuine, sealbox_public=theirs.sealbox_public),
    ):
        with pytest.raises(SecurityViolation, match="not signed"):
            accept(altered.to_bytes(), auditor)


def test_an_offer_of_another_session_is_refused(auditor: HEKeyHolder) -> None:
    with pytest.raises(SecurityViolation, match="session 'old-run'"):
        accept(auditor.context_offer(session="old-run"), auditor)
    offer = ContextOffer.from_bytes(auditor.context_offer(session="old-run"))
    relabelled = replace(offer, session=SESSION)  # the signature binds the session
    with pytest.raises(SecurityViolation, match="not signed"):
        accept(relabelled.to_bytes(), auditor)


def test_a_malformed_offer_is_a_message_error(auditor: HEKeyHolder) -> None:
    offer = auditor.context_offer(session=SESSION)
    with pytest.raises(MessageError):
        accept(offer[:-1], auditor)
    bad_session = replace(ContextOffer.from_bytes(offer), session="he setup")
    with pytest.raises(MessageError, match="identifier"):
        accept(bad_session.to_bytes(), auditor)


def test_a_coordinator_swapping_one_participants_offer_excludes_only_that_participant(
    auditor: HEKeyHolder, rogue: HEKeyHolder
) -> None:
    """In transit: the coordinator hands p3 the rogue's offer; p3 refuses it and is left
    out of the round (it never encrypts under the rogue key); the others aggregate."""
    swapped = rogue.context_offer(session=SESSION)

    def swap_for_p3(msg: Message) -> bytes:
        return swapped if (msg.kind, msg.receiver) == ("he_context", "p3") else msg.payload

    s = HESession(SETTINGS, keyholder=auditor, wire=swap_for_p3)
    result = s.run("swap", make_inputs(4, 200, seed=3))
    assert set(result.excluded) == {"p3"} and "not signed by the auditor" in result.excluded["p3"]
    assert result.contributors == {"p0", "p1", "p2"}
