"""The auditor's mask verdict is bound to its group instance (issue 21, item 2).

A session string does not name one group: a coordinator that equivocates on the beacon
runs two groups under one session string. The verdict therefore names the members, the
survivors and the digest of every masked input it judged, and each client refuses a
verdict whose instance is not its own view, before anything is unmasked.

Every attack is performed from the coordinator's side: real SecAgg+ clients and the
real auditor node (judge requests over its wire), with the coordinator's messages
crafted by the test; and once through the real coordinator, participant nodes and
auditor node with a tap on the link.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pytest
from binding_helpers import pool, run_config, tapped

from crypto.errors import MessageError, SecurityViolation
from crypto.fixedpoint import decode
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput, Weighting
from protocols.he.settings import HESettings
from protocols.secagg.binding import BindingKeys, JudgeRequest, MaskVerdict
from protocols.secagg.binding_wire import decode_judge_request, encode_judge_request
from protocols.secagg.client import ClientStage, SecAggClient, SessionHistory
from protocols.secagg.messages import (
    ConsistencySignature,
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.secagg.server import SecAggServer
from protocols.secagg.settings import MaskSettings
from protocols.trust_offer import TRUST_SETUP_SESSION, verify_trust_offer
from securepool.node.auditor import AUDITOR_ID, AuditorNode
from securepool.node.wire import NodeStage, Reply, pack_list, unpack_list
from securepool.trust.config import ThresholdRule, TrustConfig

SETTINGS = MaskSettings(max_weight=128.0)
DIGEST = hashlib.sha256(b"the global model every member was sent").digest()
LENGTH = 12
SESSION = "it0007/lr"
#: P6 that flags nobody honest (fixed threshold near the largest cosine difference,
#: screens and the norm rule off): every flag or refusal below is the attack's
QUIET = TrustConfig(
    enabled=True,
    sketch_dim=8,
    threshold_rule=ThresholdRule.FIXED,
    threshold=1.99,
    norm_ratio=0.0,
    duplicate_ratio=0.0,
    central_ratio=0.0,
    align_floor=-1.0,
)
UNMASK = NodeStage.SECAGG_UNMASK.value
T = TypeVar("T")
Craft = Callable[[JudgeRequest], JudgeRequest]


@dataclass
class Auditor:
    """The real auditor node, and what clients know of it (from its signed offer)."""

    node: AuditorNode
    binding: BindingKeys

    def judge(self, request: JudgeRequest) -> tuple[bytes, bytes]:
        """The auditor node's signed verdict for ``request`` (its wire, its checks);
        MessageError / StageError carried in its refusal are raised as AssertionError
        with the reason, so tests can match it."""
        raw = self.node.handle(
            NodeStage.MASK_JUDGE.value, pack_list([encode_judge_request(request)])
        )
        outer = Reply.from_bytes(raw)
        assert outer.ok, outer.meta
        (one,) = unpack_list(outer.body, what="answers")
        answer = Reply.from_bytes(one)
        if not answer.ok:
            raise AssertionError(
                f"refused: {answer.meta.get('error')}: {answer.meta.get('reason')}"
            )
        data, signature = unpack_list(answer.body, what="verdict", expected=2)
        return data, signature


@pytest.fixture
def auditor(tmp_path: Path) -> Auditor:
    identity = IdentityKey.generate()
    node = AuditorNode(
        settings=HESettings(),
        identity=identity,
        registry={AUDITOR_ID: identity.public_bytes()},
        state_dir=tmp_path / "auditor",
        corrupt_fraction=0.2,
        weighting=Weighting.RECORDS,  # these sessions' inputs carry record-count weights
        trust=QUIET,
    )
    offer = Reply.from_bytes(node.handle(NodeStage.TRUST_OFFER.value, b""))
    assert offer.ok
    opening = verify_trust_offer(
        offer.body, auditor_public=identity.public_bytes(), session=TRUST_SETUP_SESSION
    )
    keys = BindingKeys(
        auditor_public=opening, auditor_identity=identity.public_bytes(), dim=QUIET.sketch_dim
    )
    return Auditor(node, keys)


@dataclass
class Instance:
    """One group instance of a session: its honest clients (each its own view) and the
    honest server state the coordinator keeps, run up to the verdict."""

    session: str
    inputs: dict[str, ClientInput]
    clients: dict[str, SecAggClient]
    server: SecAggServer

    def request(self) -> JudgeRequest:
        return self.server.judge_request()

    def unmask_request(self, verdict: tuple[bytes, bytes]) -> bytes:
        """What a coordinator sends this instance's clients: their own survivor list
        and consistency signatures, with ``verdict`` (whichever it chooses)."""
        s = self.server
        s.collect_signatures()
        return encode_message(
            UnmaskRequest(
                self.session,
                tuple(sorted(s.survivors)),
                tuple(sorted(s.shared - s.survivors)),
                dict(s.signers),
                *verdict,
            )
        )


def instance(
    binding: BindingKeys, members: list[str], *, seed: int, session: str = SESSION
) -> Instance:
    """Advertise .. consistency round, honestly, for ``members`` (fresh inputs)."""
    rng = np.random.default_rng(seed)
    inputs = {
        pid: ClientInput(
            rng.uniform(-1, 1, LENGTH).astype(np.float32), weight=float(rng.integers(1, 50))
        )
        for pid in members
    }
    keys = {pid: IdentityKey.generate() for pid in members}
    directory = {pid: k.public_bytes() for pid, k in keys.items()}
    joint_seed = os.urandom(32)
    server = SecAggServer(
        session=session,
        settings=SETTINGS,
        directory=directory,
        length=LENGTH,
        min_contributors=3,
        joint_seed=joint_seed,
        members=members,
        binding=binding,
    )
    clients = {
        pid: SecAggClient(
            pid=pid,
            session=session,
            identity=keys[pid],
            directory=directory,
            settings=SETTINGS,
            update=inputs[pid].update,
            weight=inputs[pid].weight,
            members=members,
            joint_seed=joint_seed,
            model_digest=DIGEST,
            history=SessionHistory(),
            binding=binding,
        )
        for pid in members
    }
    for pid, c in clients.items():
        server.receive(c.start(), sender=pid)
    keys_msg = server.close_keys()
    for pid, c in clients.items():
        server.receive(c.handle(keys_msg), sender=pid)
    for pid, msg in server.close_shares().items():
        server.receive(clients[pid].handle(msg), sender=pid)
    survivors = server.close_inputs()
    for pid in sorted(server.survivors):
        server.receive(clients[pid].handle(survivors), sender=pid)
    return Instance(session, inputs, clients, server)


def refused_by_every_client(victim: Instance, verdict: tuple[bytes, bytes], what: str) -> None:
    """Every client of ``victim`` refuses the unmask request carrying ``verdict``,
    naming ``what`` differs, and stays where it was: no share left it."""
    payload = victim.unmask_request(verdict)
    for pid, client in sorted(victim.clients.items()):
        with pytest.raises(SecurityViolation, match="another group instance") as caught:
            client.handle(payload)
        assert what in str(caught.value), caught.value
        assert client.stage is ClientStage.UNMASK, pid  # refusals change nothing
    # the honest server the coordinator runs refuses it too
    with pytest.raises(SecurityViolation, match="another group instance"):
        victim.server.close_signatures(verdict)


def unmasks_exactly(inst: Instance, verdict: tuple[bytes, bytes]) -> None:
    """The instance's own verdict: every client answers, the sum is the contributors'."""
    msg = inst.server.close_signatures(verdict)
    for pid in sorted(inst.server.signers):
        reply = inst.clients[pid].handle(msg)
        assert isinstance(decode_message(reply), UnmaskResponse)
        inst.server.receive(reply, sender=pid)
    total = inst.server.close_unmask()
    assert inst.server.spec is not None
    values = decode(total, inst.server.spec)
    who = inst.server.contributors
    assert who == frozenset(inst.inputs)  # QUIET: nobody honest is flagged
    want = sum(inst.inputs[p].weight * inst.inputs[p].update.astype(np.float64) for p in who)
    np.testing.assert_allclose(values[:-1], want, atol=1e-3)
    assert values[-1] == pytest.approx(sum(inst.inputs[p].weight for p in who), abs=1e-3)


MEMBERS_A = [f"p{i:02d}" for i in range(6)]


def test_a_verdict_of_another_group_under_the_same_session_is_refused(auditor: Auditor) -> None:
    """Beacon equivocation: the invited are split into two groups that both run
    session ``it0007/lr``. The auditor judges one instance, once per session, and the
    coordinator hands that clean verdict to the other group: every client of the other
    group refuses it before unmasking. The judged group unmasks exactly as before."""
    a = instance(auditor.binding, MEMBERS_A, seed=1)
    b = instance(auditor.binding, [f"p{i:02d}" for i in range(6, 12)], seed=2)
    verdict_a = auditor.judge(a.request())
    # the second instance cannot get a verdict of its own: one per session
    with pytest.raises(AssertionError, match="already has a verdict"):
        auditor.judge(b.request())
    refused_by_every_client(b, verdict_a, "members, survivors, masked-input digests")
    unmasks_exactly(a, verdict_a)


def test_a_verdict_of_the_same_members_with_other_inputs_is_refused(auditor: Auditor) -> None:
    """Same session, same member ids, same survivors: only the masked inputs differ.
    Without the digests in the verdict every client would accept it."""
    a = instance(auditor.binding, MEMBERS_A, seed=1)
    b = instance(auditor.binding, MEMBERS_A, seed=3)
    assert a.server.survivors == b.server.survivors
    verdict_a = auditor.judge(a.request())
    payload = b.unmask_request(verdict_a)
    for client in b.clients.values():
        with pytest.raises(SecurityViolation) as caught:
            client.handle(payload)
        assert str(caught.value).endswith("(its masked-input digests are not this group's)")
        assert client.stage is ClientStage.UNMASK


def _more_members(req: JudgeRequest) -> JudgeRequest:
    return dataclasses.replace(req, members=req.members | {"p99"})


def _fewer_survivors(req: JudgeRequest) -> JudgeRequest:
    gone = max(req.survivors)  # its input would be unmasked without ever being judged

    def keep(m: Mapping[str, T]) -> dict[str, T]:
        return {p: v for p, v in m.items() if p != gone}

    return dataclasses.replace(
        req,
        survivors=req.survivors - {gone},
        reports=keep(req.reports),
        projected=keep(req.projected),
        neighbours=keep(req.neighbours),
    )


def _other_digest(req: JudgeRequest) -> JudgeRequest:
    digests = dict(req.digests)
    digests[min(digests)] = hashlib.sha256(b"another masked input").digest()
    return dataclasses.replace(req, digests=digests)


#: each part of a group instance the coordinator can change, and how a refusal names it
CRAFTS = pytest.mark.parametrize(
    ("craft", "what"),
    [
        (_more_members, "(its members are not"),
        (_fewer_survivors, "(its survivors are not"),
        (_other_digest, "(its masked-input digests are not"),
    ],
    ids=["members", "survivors", "digests"],
)


@CRAFTS
def test_a_verdict_the_auditor_signed_for_a_crafted_instance_is_refused(
    auditor: Auditor, craft: Craft, what: str
) -> None:
    """The coordinator composes the judge request: it asks the real auditor to judge
    the group's session with one part of the instance changed (a member added, a
    survivor left out so its input would be summed unjudged, a digest replaced). The
    auditor signs what it judged; each client checks that part against its own view
    and refuses, before anything is unmasked."""
    victim = instance(auditor.binding, MEMBERS_A, seed=4)
    crafted = craft(victim.request())
    verdict = auditor.judge(crafted)
    signed = MaskVerdict.verified(
        *verdict, auditor=auditor.binding.auditor_identity, session=SESSION
    )
    assert signed.members == crafted.members and signed.survivors == crafted.survivors
    refused_by_every_client(victim, verdict, what)


def test_the_auditor_refuses_an_inconsistent_instance_without_spending_the_session(
    auditor: Auditor,
) -> None:
    """A judge request whose parts do not describe one group (survivors or digests of
    non-members, reports of non-survivors) is refused with a typed error; the session
    is not spent, so the honest request still gets its verdict and unmasks exactly."""
    inst = instance(auditor.binding, MEMBERS_A, seed=5)
    honest = inst.request()
    bad = [
        dataclasses.replace(honest, members=honest.members - {"p00"}),
        dataclasses.replace(honest, members=frozenset()),
        dataclasses.replace(honest, digests={**honest.digests, "p99": bytes(32)}),
        dataclasses.replace(honest, survivors=honest.survivors | {"p99"}),
        dataclasses.replace(honest, neighbours={**honest.neighbours, "p00": frozenset({"p99"})}),
        # p05 left out of the survivors, its report and projection still there
        dataclasses.replace(honest, survivors=honest.survivors - {"p05"}),
    ]
    for req in bad:
        with pytest.raises(MessageError):
            decode_judge_request(encode_judge_request(req))
        with pytest.raises(AssertionError, match="MessageError"):
            auditor.judge(req)
    unmasks_exactly(inst, auditor.judge(honest))


# --- through the real coordinator, nodes and auditor node ---------------------------


@CRAFTS
def test_real_nodes_refuse_a_verdict_of_another_instance(
    tmp_path: Path, craft: Craft, what: str
) -> None:
    """Whoever runs the link rewrites the coordinator's judge request into a crafted
    instance of the same session; the auditor node signs it (its one verdict for the
    session). The coordinator's own server refuses it (the group aborts), and the
    verdict injected into every real participant node's unmask request is refused by
    each: no share leaves any node."""

    def rewrite(stage: str, node: str, payload: bytes) -> bytes:
        if stage != NodeStage.MASK_JUDGE.value:
            return payload
        requests = [decode_judge_request(r) for r in unpack_list(payload, what="requests")]
        return pack_list([encode_judge_request(craft(r)) for r in requests])

    made, tap = tapped(rewrite)
    p = pool(run_config("mask", n=6), tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    assert group.status.startswith("aborted") and "another group instance" in group.status
    assert not made[0].parts(UNMASK)  # the honest coordinator code sent no unmask request
    # the attacker delivers the auditor's verdict with the group's own consistency round
    (judged,) = made[0].parts(NodeStage.MASK_JUDGE.value)
    (answer,) = unpack_list(Reply.from_bytes(judged.answer or b"").body, what="answers")
    verdict = unpack_list(Reply.from_bytes(answer).body, what="verdict", expected=2)
    signatures: dict[str, bytes] = {}
    survivor_list = None
    for part in made[0].parts(NodeStage.SECAGG_SURVIVORS.value):
        survivor_list = decode_message(part.payload, SurvivorList)
        sig = decode_message(Reply.from_bytes(part.answer or b"").body, ConsistencySignature)
        signatures[sig.sender] = sig.signature
    assert survivor_list is not None and len(signatures) == 6
    payload = encode_message(
        UnmaskRequest(survivor_list.session, survivor_list.survivors, (), signatures, *verdict)
    )
    for pid in sorted(signatures):
        reply = Reply.from_bytes(p.nodes[pid].handle(UNMASK, payload))
        assert not reply.ok
        reason = str(reply.meta.get("reason"))
        assert "another group instance" in reason and what in reason, reason
