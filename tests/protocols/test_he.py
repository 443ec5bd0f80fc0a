"""HE mode end to end through the real roles (tests/protocols/he_session.py), with every
security claim tried as an attack."""

from __future__ import annotations

import struct
from dataclasses import replace

import numpy as np
import pytest
import tenseal as ts
from he_session import MODEL, SETTINGS, HESession, Message, make_inputs, tamper
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.ckks.coefficients import CoefficientSum
from crypto.ckks.vectors import chunk_codec, encrypt_chunks
from crypto.errors import ConfigError, SecurityViolation, ThresholdNotMet
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.he import HEKeyHolder, HESettings
from protocols.he.layout import SlotLayout
from protocols.he.messages import (
    ContextOffer,
    ContributionReceipt,
    DecryptRequest,
    HEUpload,
)
from protocols.he.participant import RECEIPT_LABEL


def reference(inputs: dict[str, ClientInput]) -> tuple[np.ndarray, float]:
    total = sum(inp.weight * inp.update.astype(np.float64) for inp in inputs.values())
    return np.asarray(total), float(sum(inp.weight for inp in inputs.values()))


def assert_matches(result_sum: np.ndarray, result_weight: float, inputs: dict) -> None:
    ref_sum, ref_weight = reference(inputs)
    assert result_weight == pytest.approx(ref_weight, rel=1e-7)
    mean, ref_mean = result_sum / result_weight, ref_sum / ref_weight
    assert np.max(np.abs(mean - ref_mean)) <= 1e-6 * np.max(np.abs(ref_mean))


def only(inputs: dict[str, ClientInput], *pids: str) -> dict[str, ClientInput]:
    return {p: inputs[p] for p in pids}


@pytest.fixture
def keyholder() -> HEKeyHolder:
    return HEKeyHolder(SETTINGS)


@settings(deadline=None, max_examples=10)
@given(n=st.integers(3, 6), d=st.integers(1, 5000), seed=st.integers(0, 2**32 - 1))
def test_sum_of_encrypted_weighted_updates_matches_plaintext(n: int, d: int, seed: int) -> None:
    inputs = make_inputs(n, d, seed=seed)
    result = HESession(SETTINGS).run(f"prop-{n}-{d}-{seed}", inputs)
    assert result.contributors == set(inputs) and result.excluded == {}
    assert_matches(result.weighted_sum, result.total_weight, inputs)


def test_every_shipped_context_lacks_the_secret_key(keyholder: HEKeyHolder) -> None:
    s = HESession(SETTINGS, keyholder=keyholder)
    s.run("ctx", make_inputs(3, 100))
    shipped = [m for m in s.log if m.kind == "he_context"]
    assert {m.receiver for m in shipped} == {"coordinator", "p0", "p1", "p2"}
    assert len(shipped) == 4
    for entry in shipped:
        ctx = ts.context_from(ContextOffer.from_bytes(entry.payload).public_context)
        assert not ctx.has_secret_key() and not ctx.is_private()


def test_coordinator_transcript_holds_ciphertexts_not_weights(keyholder: HEKeyHolder) -> None:
    inputs = make_inputs(4, 300, seed=5)
    s = HESession(SETTINGS, keyholder=keyholder)
    s.run("view", inputs)
    view = s.received("coordinator")
    kinds = {e.kind for e in view}
    assert kinds == {"he_context", "he_upload", "he_receipt", "he_aggregate"}
    for entry in s.received("coordinator", "he_upload"):
        upload = HEUpload.from_bytes(entry.payload)
        fields = {"session", "participant", "context_fingerprint", "d", "chunks"}
        assert set(vars(upload)) == fields
    # no individual weight, raw or normalised, as a double in either byte order, in what
    # the participants sent it (the aggregate it receives carries only the group's total).
    # (4-byte floats are not searched: 56.0f is the tail of the CKKS scale 2^39 as a double)
    needles = [
        struct.pack(f, w)
        for inp in inputs.values()
        for w in (inp.weight, inp.weight / SETTINGS.weight_unit)
        for f in (">d", "<d")
    ]
    from_participants = [e for e in view if e.sender in inputs]
    assert {e.kind for e in from_participants} == {"he_upload", "he_receipt"}
    for entry in from_participants:
        assert not any(n in entry.payload for n in needles), entry.kind
    # the individual updates are not there either: the decoded aggregate is all it sees
    raw = [inp.update.tobytes()[:16] for inp in inputs.values()]
    assert not any(r in e.payload for e in view for r in raw)


def run_until_request(
    s: HESession, inputs: dict[str, ClientInput], session: str
) -> tuple[HESession, dict[str, bytes], dict[str, tuple[bytes, ...]], DecryptRequest]:
    """An honest group up to the decrypt request; returns receipts and per-pid chunks."""
    contribs = s.contribute(session, inputs)
    receipts = {pid: c.receipt for pid, c in contribs.items()}
    chunks = {pid: HEUpload.from_bytes(c.upload).chunks for pid, c in contribs.items()}
    request, _ = s.coordinator.build_request(session=session, contributions=contribs)
    return s, receipts, chunks, DecryptRequest.from_bytes(request)


def test_keyholder_refuses_a_single_participants_ciphertext_as_aggregate(
    keyholder: HEKeyHolder,
) -> None:
    inputs = make_inputs(3, 500, seed=7)
    agg = HESession(SETTINGS, keyholder=keyholder)
    agg, receipts, chunks, honest = run_until_request(agg, inputs, "attack-1")
    public = agg.coordinator.public
    # 1. the ciphertext of p0 alone, with only p0's receipt: too few contributions
    lone = replace(honest, receipts=(receipts["p0"],), chunks=chunks["p0"])
    with pytest.raises(ThresholdNotMet):
        keyholder.decrypt_aggregate(lone.to_bytes())
    # ... and moved to a fresh session id: receipts are bound to their session
    moved = replace(lone, session="attack-1b", receipts=tuple(receipts.values()))
    with pytest.raises(SecurityViolation, match="another session"):
        keyholder.decrypt_aggregate(moved.to_bytes())
    # a fresh session of the same group to try the subtler forgeries
    agg, receipts, chunks, honest = run_until_request(agg, inputs, "attack-2")
    all_receipts = tuple(receipts.values())

    def forged(blobs: list[tuple[bytes, ...]], session: str) -> bytes:
        acc = CoefficientSum(chunk_codec(public), n_chunks=len(blobs[0]))
        scratch = acc.scratch()
        for b in blobs:
            acc.read_all(b, scratch)
            acc.add_checked(scratch)
        chunks = tuple(acc.to_bytes())
        return replace(honest, session=session, receipts=all_receipts, chunks=chunks).to_bytes()

    # 2. p0's ciphertext with all three receipts
    with pytest.raises(SecurityViolation, match="not the sum"):
        keyholder.decrypt_aggregate(forged([chunks["p0"]], "attack-2"))
    # each session decrypts once: every further forgery needs a fresh honest session
    for attack, blobs in (
        ("attack-3", lambda c: [c["p0"], c["p0"], c["p0"]]),  # p0 three times
        ("attack-4", lambda c: [c["p0"], zeros(public, c["p0"])]),  # p0 + own encryptions
    ):
        agg, receipts, chunks, honest = run_until_request(agg, inputs, attack)
        all_receipts = tuple(receipts.values())
        with pytest.raises(SecurityViolation, match="not the sum"):
            keyholder.decrypt_aggregate(forged(blobs(chunks), attack))


def zeros(public, like: tuple[bytes, ...]) -> tuple[bytes, ...]:  # type: ignore[no-untyped-def]
    """What a coordinator can add on its own: encryptions of values it chose (here 0)."""
    return tuple(encrypt_chunks(public, np.zeros((len(like), public.params.slots))))


def test_keyholder_refuses_replays_forged_receipts_and_duplicates(keyholder: HEKeyHolder) -> None:
    inputs = make_inputs(3, 200, seed=11)
    agg = HESession(SETTINGS, keyholder=keyholder)
    _, receipts, _, honest = run_until_request(agg, inputs, "replay")
    keyholder.decrypt_aggregate(honest.to_bytes())
    with pytest.raises(SecurityViolation, match="already decrypted"):
        keyholder.decrypt_aggregate(honest.to_bytes())
    # the coordinator signs a receipt for p1 with a key of its own
    _, receipts, _, honest = run_until_request(agg, inputs, "forge")
    rec = ContributionReceipt.from_bytes(receipts["p1"])
    forged_signature = IdentityKey.generate().sign(rec.signed_part(), label=RECEIPT_LABEL)
    fake = replace(rec, signature=forged_signature)
    bad = replace(honest, receipts=(receipts["p0"], fake.to_bytes(), receipts["p2"]))
    with pytest.raises(SecurityViolation, match="does not verify"):
        keyholder.decrypt_aggregate(bad.to_bytes())
    # the same receipt counted twice
    _, receipts, _, honest = run_until_request(agg, inputs, "dup")
    dup = replace(honest, receipts=(receipts["p0"], receipts["p0"], receipts["p1"]))
    with pytest.raises(SecurityViolation, match="two receipts"):
        keyholder.decrypt_aggregate(dup.to_bytes())


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda b: b[: len(b) // 2], "bad upload"),  # truncated
        (lambda b: b[:-40] + bytes(x ^ 0x5A for x in b[-40:]), "signed digest"),  # corrupted
        (lambda b: b"", "bad upload"),
        (lambda b: b"\x00" + b[1:], "bad magic"),
    ],
)
def test_bad_upload_bytes_exclude_that_participant_only(
    keyholder: HEKeyHolder,
    change,
    reason: str,  # type: ignore[no-untyped-def]
) -> None:
    inputs = make_inputs(4, 700, seed=13)
    s = HESession(SETTINGS, keyholder=keyholder, wire=tamper("p3", "he_upload", change))
    session = f"bad-{reason.replace(' ', '-')}-{id(change)}"  # ids have no spaces
    result = s.run(session, inputs)
    assert set(result.excluded) == {"p3"} and reason in result.excluded["p3"]
    assert result.contributors == {"p0", "p1", "p2"}
    kept = {k: v for k, v in inputs.items() if k != "p3"}
    assert_matches(result.weighted_sum, result.total_weight, kept)


def test_ciphertext_under_another_context_excludes_that_participant(
    keyholder: HEKeyHolder,
) -> None:
    inputs = make_inputs(4, 700, seed=17)
    s = HESession(SETTINGS, keyholder=keyholder)
    # p3 (misbehaving, or misconfigured with another auditor's key) holds the offer of
    # another key holder; an honest p3 would refuse it (test_he_offer.py)
    other = HEKeyHolder(SETTINGS)
    s.participant("p3").accept_context(
        other.context_offer(session="he-setup"),
        auditor_public=other.identity_public,
        session="he-setup",
    )
    result = s.run("foreign", inputs)
    assert "another CKKS context" in result.excluded["p3"]
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, *("p0", "p1", "p2")))


def test_ciphertext_with_other_parameters_fails_to_load_and_is_excluded(
    keyholder: HEKeyHolder,
) -> None:
    """p3 lies about its context (right fingerprint) but encrypted with other parameters."""
    inputs = make_inputs(4, 700, seed=19)
    agg = HESession(SETTINGS, keyholder=keyholder)
    other = HESettings(poly_modulus_degree=8192, coeff_mod_bit_sizes=(50, 60), scale_bits=39)
    foreign_public = HEKeyHolder(other).context_offer(session="he-setup")
    from crypto.ckks.context import PublicCKKSContext

    foreign = PublicCKKSContext.from_bytes(
        ContextOffer.from_bytes(foreign_public).public_context, params=other.params
    )
    p3 = agg.participant("p3")
    session = "other-params"
    layout = SlotLayout(d=700, slots=SETTINGS.params.slots, tag_slots=SETTINGS.tag_slots)
    blobs = encrypt_chunks(foreign, np.zeros((layout.n_chunks, foreign.params.slots)))
    honest_up, _ = p3.upload(
        session=session, update=inputs["p3"].update, weight=10.0, model_digest=MODEL
    )
    up = replace(HEUpload.from_bytes(honest_up), chunks=tuple(blobs))

    def swap(_: bytes) -> bytes:
        return up.to_bytes()

    # re-sign the swapped upload as p3 would (p3 is the misbehaving party here)
    from protocols.he.participant import upload_digest

    def resign(raw: bytes) -> bytes:
        rec = ContributionReceipt.from_bytes(raw)
        rec = replace(rec, upload_digest=upload_digest(up.to_bytes()))
        signature = p3.identity.sign(rec.signed_part(), label=RECEIPT_LABEL)
        return replace(rec, signature=signature).to_bytes()

    def both(msg: Message) -> bytes:
        if msg.sender == "p3" and msg.kind == "he_upload":
            return swap(msg.payload)
        if msg.sender == "p3" and msg.kind == "he_receipt":
            return resign(msg.payload)
        return msg.payload

    agg.wire = both
    result = agg.run(session, inputs)
    assert "bad upload: CiphertextError" in result.excluded["p3"]
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, *("p0", "p1", "p2")))


def test_wrong_size_update_is_excluded(keyholder: HEKeyHolder) -> None:
    inputs = make_inputs(4, 300, seed=23)
    inputs["p2"] = ClientInput(np.ones(301, dtype=np.float32), weight=5.0)
    result = HESession(SETTINGS, keyholder=keyholder).run("size", inputs)
    assert "wrong size" in result.excluded["p2"]
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, *("p0", "p1", "p3")))


def test_value_over_headroom_excludes_that_participant(keyholder: HEKeyHolder) -> None:
    inputs = make_inputs(4, 300, seed=29)
    inputs["p1"] = ClientInput(np.full(300, 100.0, dtype=np.float32), weight=50.0)
    result = HESession(SETTINGS, keyholder=keyholder).run("big", inputs)
    assert "max_abs_value" in result.excluded["p1"]
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, "p0", "p2", "p3"))


def test_flagged_and_dropped_participants_are_left_out_and_threshold(
    keyholder: HEKeyHolder,
) -> None:
    inputs = make_inputs(5, 400, seed=31)
    s = HESession(SETTINGS, keyholder=keyholder)
    result = s.run("vet", inputs, drops={"p0"}, flagged={"p4": "too far"})
    assert result.excluded == {"p0": "dropped out", "p4": "untrusted: too far"}
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, *("p1", "p2", "p3")))
    with pytest.raises(ThresholdNotMet):
        s.run("few", inputs, drops={"p0", "p1", "p2"})


def test_same_parameters_other_key_is_caught_by_the_auditor(keyholder: HEKeyHolder) -> None:
    """The residual case: a participant that lies about its context and uses the same
    parameters under another key cannot be told apart by the coordinator; the auditor's
    tag check refuses the whole aggregate (the group keeps its last model)."""
    inputs = make_inputs(4, 300, seed=37)
    agg = HESession(SETTINGS, keyholder=keyholder)
    p3 = agg.participant("p3")
    liar = HEKeyHolder(SETTINGS)
    p3.accept_context(
        liar.context_offer(session="he-setup"),
        auditor_public=liar.identity_public,
        session="he-setup",
    )
    real = agg.coordinator.public
    p3._public.fingerprint = real.fingerprint  # type: ignore[union-attr,misc]
    # its tag seed is sealed to the liar's sealbox key: the auditor cannot open it
    with pytest.raises(SecurityViolation, match="tag seed of 'p3'"):
        agg.run("liar", inputs)


def test_settings_list_every_problem() -> None:
    with pytest.raises(ConfigError) as err:
        HESettings(min_group_size=2, weight_unit=0.0, tag_slots=0, workers=-1).check()
    assert len(err.value.problems) == 4
    with pytest.raises(ConfigError, match="headroom"):
        HESettings(scale_bits=45).check()
    with pytest.raises(ConfigError, match="exceeds 109"):
        HESettings(poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 60)).check()
    HESettings().check()
    SETTINGS.check()


def test_summing_threads_give_the_same_aggregate_and_exclusions(keyholder: HEKeyHolder) -> None:
    settings = replace(SETTINGS, workers=3)
    inputs = make_inputs(5, 3000, seed=41)
    wire = tamper("p4", "he_upload", lambda b: b[:-30] + bytes(30))
    result = HESession(settings, keyholder=keyholder, wire=wire).run("workers", inputs)
    assert "signed digest" in result.excluded["p4"]
    assert_matches(result.weighted_sum, result.total_weight, only(inputs, "p0", "p1", "p2", "p3"))


_REAL: dict[str, object] = {}


def _real_upload() -> dict[str, object]:
    if not _REAL:
        agg = HESession(SETTINGS)
        up, rec = agg.participant("p0").upload(
            session="fz",
            update=np.linspace(-1, 1, 50).astype(np.float32),
            weight=10.0,
            model_digest=MODEL,
        )
        _REAL.update(agg=agg, up=up, rec=rec)
    return _REAL


@settings(deadline=None, max_examples=150)
@given(
    in_receipt=st.booleans(),
    edits=st.lists(st.tuples(st.integers(0, 10**7), st.integers(0, 255)), min_size=1, max_size=3),
    head=st.booleans(),
)
def test_fuzz_the_coordinators_upload_check_raises_only_project_errors(
    in_receipt: bool, edits: list[tuple[int, int]], head: bool
) -> None:
    """Mutated uploads and receipts into the coordinator's real checks: a typed error
    (which excludes that sender, test_bad_upload_bytes_exclude_that_participant_only) or a
    valid contribution, never another exception."""
    from crypto.errors import SecurePoolError
    from protocols.he.coordinator import upload_chunks

    real = _real_upload()
    agg = real["agg"]
    assert isinstance(agg, HESession)
    raw = bytearray(real["rec"] if in_receipt else real["up"])  # type: ignore[arg-type]
    for pos, byte in edits:
        raw[(pos % 64 if head else pos) % len(raw)] = byte
    up = real["up"] if in_receipt else bytes(raw)
    rec = bytes(raw) if in_receipt else real["rec"]
    try:
        c = agg.coordinator.check_upload(session="fz", sender="p0", upload=up, receipt=rec)  # type: ignore[arg-type]
        upload_chunks(c.upload, c.digest, c.n_chunks)
    except SecurePoolError:
        return
    assert (up, rec) == (real["up"], real["rec"]) or c.participant == "p0"
