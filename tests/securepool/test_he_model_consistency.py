"""Model consistency in HE mode (issue 21, item 4; Pasquini et al., CCS 2022).

A coordinator that sends one group member another global model than the rest (here: one
weight of it nudged) could make that member's update stand out in the group's sum. In
mask mode the members compare the digests in their adverts; in HE mode they never see
each other, so each member signs its own session digest
(:func:`securepool.consistency.session_digest`, computed by the node from what it was
sent, as in mask mode) into its receipt, and the auditor refuses to fold or decrypt a
group whose receipts name different digests.

The attack is mounted from the coordinator's side: the real coordinator, real
participant nodes and the real auditor node, over a link (a :class:`Tap`) that rewrites
one member's TrainRequest. With the trust check on (``he/fold``, then ``he/decrypt``)
and off (``he/decrypt`` only) the auditor refuses, the group is not aggregated and
keeps its last global, and the session is not spent (as the mask auditor refuses an
inconsistent group instance). Below the nodes, the key holder itself: a request mixing
two models is refused without spending the session, and a receipt whose model digest
the coordinator rewrites no longer verifies.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import QUIET_P6, Pool, Tap, assert_exact, pool, run_config, tapped
from hypothesis import given, settings
from hypothesis import strategies as st

from crypto.errors import InvalidSignature, SecurePoolError, SecurityViolation
from protocols.aggregation import ClientInput
from protocols.beacon import group_joint_seed
from protocols.he import HEKeyHolder, HESettings
from protocols.he.keyholder import require_one_model
from protocols.he.messages import AggregateRelease, ContributionReceipt, DecryptRequest
from securepool.bench.sessions import HEGroup
from securepool.consistency import session_digest
from securepool.coordinator.records import IterationRecord
from securepool.node.agreement import model_hash
from securepool.node.auditor import AUDITOR_ID, FOLDED_FILE, SPENT_FILE
from securepool.node.wire import NodeStage, Reply, TrainRequest, unpack_list

VICTIM = "p01"
SETTINGS = HESettings(
    poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39, weight_unit=50.0
)
MODEL = bytes.fromhex("cd" * 32)  # the digest of the model most members were sent
OTHER = bytes.fromhex("ab" * 32)  # another model's digest


# --- through the real coordinator, participant nodes and auditor node -----------------


def nudge_one_member(stage: str, node: str, payload: bytes) -> bytes:
    """The coordinator's side of the link: the victim's global model with one weight
    moved; every other member gets the global model unchanged."""
    if stage != NodeStage.TRAIN.value or node != VICTIM:
        return payload
    req = TrainRequest.from_bytes(payload)
    if not req.model_id:
        return payload
    params = req.params.copy()
    params[0] += 0.5
    # the round's model list rewritten to match for the victim alone (else it refuses the
    # model at once, see test_split_inprocess): its endorsement is then on another
    # statement, but the other members' quorum certifies the group it is a member of
    hashes = dict(req.model_hashes) | {req.model_id: model_hash(params)}
    return dataclasses.replace(
        req, params=params, model_hashes=tuple(sorted(hashes.items()))
    ).to_bytes()


def receipts(tap: Tap) -> dict[str, ContributionReceipt]:
    """Every member's signed receipt, as it answered ``train``."""
    out = {}
    for part in tap.parts(NodeStage.TRAIN.value):
        if part.node == AUDITOR_ID or part.answer is None:
            continue
        reply = Reply.from_bytes(part.answer)
        assert reply.ok, reply.meta
        _upload, receipt = unpack_list(reply.body, what="HE upload", expected=2)
        out[part.node] = ContributionReceipt.from_bytes(receipt)
    return out


def auditor_answers(tap: Tap, stage: NodeStage) -> list[Reply]:
    """The auditor's answer to every request of ``stage`` it was sent."""
    out = []
    for part in tap.parts(stage.value):
        if part.node == AUDITOR_ID and part.answer is not None:
            body = Reply.from_bytes(part.answer).body
            out += [Reply.from_bytes(one) for one in unpack_list(body, what="answers")]
    return out


def expected_digest(p: Pool, record: IterationRecord, pid: str, session: str) -> bytes:
    """The session digest of what ``pid`` was sent, computed here from the record's
    beacon seed and the model the node trained from (as mask mode's adverts sign it)."""
    node = p.nodes[pid]
    _model, layout = node._models()["lr"]
    params = node.sent[max(node.sent)][0]
    return session_digest(
        session=session,
        model_id="lr",
        group_seed=group_joint_seed(bytes.fromhex(record.joint_seed), model_id="lr"),
        layout=layout,
        training=p.coordinator.cfg.training.settings(),
        params=params,
    )


def _stored(state_dir: Path, name: str) -> Any:
    path = state_dir / name
    return json.loads(path.read_text()) if path.exists() else []


def test_an_honest_he_run_names_one_model_and_its_aggregate_is_unchanged(
    tmp_path: Path,
) -> None:
    """Every member signs the session digest of the global model it was sent (the
    same inputs as mask mode's advert digest); they agree, so the auditor decrypts and
    the aggregate is the weighted mean of what was sent, as before."""
    made, tap = tapped()
    p = pool(run_config("he", trust={}), tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    assert group.status == "aggregated" and group.excluded == {}
    assert group.contributors == tuple(sorted(group.members))
    assert_exact(p, record)
    signed = receipts(made[0])
    assert set(signed) == set(group.members)
    for pid, rec in signed.items():
        assert rec.model_digest == expected_digest(p, record, pid, rec.session)
    assert len({rec.model_digest for rec in signed.values()}) == 1
    assert all(a.ok for a in auditor_answers(made[0], NodeStage.HE_DECRYPT))


@pytest.mark.parametrize("trust", [False, True], ids=["decrypt-only", "fold-then-decrypt"])
def test_a_member_sent_another_model_makes_the_auditor_refuse_the_group(
    tmp_path: Path, trust: bool
) -> None:
    """The coordinator nudges one weight of the victim's global model. Every node
    trains and uploads (each sees a model of the right size and its own group), but the
    victim signs the digest of the model it was sent, the others that of the real one.
    The auditor refuses the group on the first request it gets for it (``he/fold`` with
    the trust check, ``he/decrypt`` without), with a SecurityViolation naming the two
    digests: nothing of the group is opened, the global model stays where it was, and
    the session is neither spent nor judged."""
    made, tap = tapped(nudge_one_member)
    cfg = run_config("he", trust=QUIET_P6 if trust else {})
    state = tmp_path / AUDITOR_ID
    p = pool(cfg, state, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    link = made[0]
    # each node signed the digest of what it was sent
    signed = receipts(link)
    assert set(signed) == set(group.members)
    session = signed[VICTIM].session
    for pid, rec in signed.items():
        assert rec.model_digest == expected_digest(p, record, pid, session)
    honest = {rec.model_digest for pid, rec in signed.items() if pid != VICTIM}
    assert len(honest) == 1 and signed[VICTIM].model_digest not in honest
    # the auditor refused the group at its first request
    first = NodeStage.HE_FOLD if trust else NodeStage.HE_DECRYPT
    (answer,) = auditor_answers(link, first)
    assert not answer.ok and answer.meta["error"] == "SecurityViolation"
    assert "2 different models" in answer.meta["reason"], answer.meta
    assert f": {VICTIM}" in answer.meta["reason"]
    if trust:  # no verdict, so the coordinator asks for no aggregate of the group
        assert auditor_answers(link, NodeStage.HE_DECRYPT) == []
    # not aggregated: the group keeps its last global
    assert group.status.startswith("aborted") and group.contributors == ()
    last = p.nodes["p00"].sent[max(p.nodes["p00"].sent)][0]
    np.testing.assert_array_equal(p.coordinator.state.globals["lr"], last)
    # refused before the session is spent (and, with the trust check, judged)
    assert session not in _stored(state, SPENT_FILE)
    assert session not in _stored(state, FOLDED_FILE)


# --- the key holder ---------------------------------------------------------------------


def make_inputs(n: int) -> dict[str, ClientInput]:
    """``n`` small random updates of 300 values, sample counts 10..199 (p0, p1, ...)."""
    rng = np.random.default_rng(3)
    return {
        f"p{i}": ClientInput(
            (rng.standard_normal(300) * 0.1).astype(np.float32), float(rng.integers(10, 200))
        )
        for i in range(n)
    }


def _uploads(
    agg: HEGroup, session: str, digests: dict[str, bytes]
) -> dict[str, tuple[bytes, bytes]]:
    inputs = make_inputs(len(digests))
    return {
        pid: agg.participant(pid).upload(
            session=session, update=inp.update, weight=inp.weight, model_digest=digests[pid]
        )
        for pid, inp in inputs.items()
    }


def _request(agg: HEGroup, session: str, sent: dict[str, tuple[bytes, bytes]]) -> bytes:
    """The coordinator's decrypt request over ``sent`` (its checks pass: it cannot tell
    which model a member was sent, and checks receipts as before)."""
    checked = {
        pid: agg.coordinator.check_upload(session=session, sender=pid, upload=up, receipt=rec)
        for pid, (up, rec) in sent.items()
    }
    request, excluded = agg.coordinator.build_request(session=session, contributions=checked)
    assert excluded == {}
    return request


def test_the_key_holder_refuses_two_models_in_one_aggregate_without_spending_it() -> None:
    """The coordinator's own checks pass (it cannot tell which model a member was
    sent); the key holder refuses an aggregate whose receipts name two models before it
    decrypts anything, so the session is not spent: the members sent one model are then
    aggregated exactly, once."""
    keyholder = HEKeyHolder(SETTINGS)
    agg = HEGroup(SETTINGS, keyholder=keyholder)
    session = "mixed"
    digests = {"p0": MODEL, "p1": MODEL, "p2": MODEL, "p3": OTHER}
    sent = _uploads(agg, session, digests)
    with pytest.raises(SecurityViolation, match=r"2 different models .*: p3\)"):
        keyholder.decrypt_aggregate(_request(agg, session, sent))
    # the session is not spent: the members sent one model are still aggregated, once
    del sent["p3"]
    request = _request(agg, session, sent)
    release = AggregateRelease.from_bytes(keyholder.decrypt_aggregate(request))
    assert release.contributors == ("p0", "p1", "p2")
    inputs = make_inputs(4)
    weight = sum(inputs[p].weight for p in release.contributors)
    expected = sum(inputs[p].weight * inputs[p].update.astype(np.float64) for p in sent)
    assert release.total_weight == pytest.approx(weight, rel=1e-6)
    np.testing.assert_allclose(release.weighted_sum, expected, atol=1e-3)
    with pytest.raises(SecurityViolation, match="already decrypted"):
        keyholder.decrypt_aggregate(request)


def test_a_receipt_whose_model_digest_the_coordinator_rewrites_does_not_verify() -> None:
    """The coordinator cannot make the victim's receipt agree with the others: the
    model digest is signed (the receipt's v3 label and domain), so the rewritten receipt
    is refused by the coordinator's own check and, relayed anyway, by the key holder."""
    keyholder = HEKeyHolder(SETTINGS)
    agg = HEGroup(SETTINGS, keyholder=keyholder)
    session = "rewritten"
    sent = _uploads(agg, session, {"p0": MODEL, "p1": MODEL, "p2": OTHER, "p3": MODEL})
    upload, raw = sent.pop("p2")
    rewritten = dataclasses.replace(ContributionReceipt.from_bytes(raw), model_digest=MODEL)
    with pytest.raises(InvalidSignature, match="does not verify"):
        agg.coordinator.check_upload(
            session=session, sender="p2", upload=upload, receipt=rewritten.to_bytes()
        )
    request = DecryptRequest.from_bytes(_request(agg, session, sent))
    forged = dataclasses.replace(request, receipts=(*request.receipts, rewritten.to_bytes()))
    with pytest.raises(SecurityViolation, match=r"receipt of 'p2'.*does not verify"):
        keyholder.decrypt_aggregate(forged.to_bytes())


def test_a_fold_request_mixing_two_models_is_refused_before_it_is_judged() -> None:
    """The same with the HE binding: the key holder opens no fold of a group whose
    receipts name two models, and the session stays unjudged, so the members sent one
    model are still judged (once)."""
    binding = dataclasses.replace(SETTINGS, fold_dim=256)
    keyholder = HEKeyHolder(binding)
    agg = HEGroup(binding, keyholder=keyholder)
    session = "folded"
    sent = _uploads(agg, session, {"p0": MODEL, "p1": OTHER, "p2": MODEL, "p3": MODEL})
    checked = {
        pid: agg.coordinator.check_upload(session=session, sender=pid, upload=up, receipt=rec)
        for pid, (up, rec) in sent.items()
    }
    request, _ = agg.coordinator.build_fold_request(session=session, contributions=checked)
    with pytest.raises(SecurityViolation, match=r"2 different models .*: p1\)"):
        keyholder.open_folds(request)
    assert session not in keyholder.folded_sessions()
    del checked["p1"]
    request, _ = agg.coordinator.build_fold_request(session=session, contributions=checked)
    opening = keyholder.open_folds(request)
    assert set(opening.summaries) == {"p0", "p2", "p3"}
    with pytest.raises(SecurityViolation, match="already judged"):
        keyholder.open_folds(request)


@settings(deadline=None, max_examples=200)
@given(
    edits=st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=3),
    count=st.integers(0, 3),
)
def test_fuzz_the_model_check_raises_only_project_errors(
    edits: list[tuple[int, int]], count: int
) -> None:
    """Mutated receipts into the model check the key holder runs before anything else:
    a typed error or the one digest, never an untyped escape."""
    rec = ContributionReceipt("s", "p0", bytes(32), 5, 1, bytes(32), MODEL, b"x" * 80, bytes(64))
    raw = bytearray(rec.to_bytes())
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    try:
        digest = require_one_model("s", [bytes(raw)] * count + [rec.to_bytes()])
    except SecurePoolError:
        return
    assert digest == MODEL
