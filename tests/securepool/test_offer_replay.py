"""Replayed auditor offers (issue 21, item 5): an offer of a key the auditor has retired
is refused by every participant node that has accepted the key's successor.

The real coordinator, real participant nodes and the real auditor node over the
in-process driver. The auditor rotates a key in its state directory
(:meth:`AuditorNode.rotate_opening_key`, :meth:`AuditorNode.rotate_he_keys`): the new
key gets the next epoch, signed inside its offer. The coordinator lies by relaying the
auditor's genuine, signed offer of the retired key (kept from before the rotation)
instead of the current one; a tap on the link records what each node answered."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from binding_helpers import (
    QUIET_P6,
    QUIET_P6_TOML,
    Pool,
    Tap,
    assert_exact,
    pool,
    run_config,
    tapped,
)
from split_helpers import config_text

from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.he.messages import ContextOffer
from protocols.offer_epochs import HE_CONTEXT, TRUST_OFFER
from protocols.trust_offer import TRUST_SETUP_SESSION, open_trust_offer
from securepool.config import parse_config
from securepool.coordinator.launch import demo_nodes, inprocess_split, node_specs
from securepool.node.auditor import (
    AUDITOR_ID,
    HE_EPOCH_FILE,
    OPENING_EPOCH_FILE,
    OPENING_FILE,
    AuditorNode,
    opening_epoch,
)
from securepool.node.wire import NodeStage, Reply

TRAIN = NodeStage.TRAIN.value


def _offer(auditor: Any, stage: NodeStage) -> bytes:
    reply = Reply.from_bytes(auditor.handle(stage.value, b""))
    assert reply.ok, reply.meta
    return reply.body


def _answers(tap: Tap, stage: str, since: int) -> dict[str, Reply]:
    """Each participant's answer to ``stage`` among the parts logged after ``since``."""
    out = {}
    for part in tap.log[since:]:
        if part.stage == stage and part.node != AUDITOR_ID:
            assert part.answer is not None, part.node
            out[part.node] = Reply.from_bytes(part.answer)
    return out


def _refused_by_all(p: Pool, tap: Tap, since: int, *, kind: str) -> None:
    """The last iteration's group got nothing: every member refused its train message
    (the replayed offer), so nothing was sealed or encrypted to the retired key."""
    (group,) = p.records[-1].groups
    assert group.status.startswith("aborted") and not group.contributors, group.status
    answers = _answers(tap, TRAIN, since)
    assert sorted(answers) == sorted(group.members)
    for pid, reply in answers.items():
        assert not reply.ok and not reply.body, pid  # no update, no advert, no upload
        assert reply.meta["error"] == "SecurityViolation", reply.meta
        assert f"stale auditor {kind}: epoch 1, but epoch 2" in reply.meta["reason"]
    # no SecAgg+ stage answered (the key directory rides on the train request and is
    # refused with it; key adverts for later rounds are not sealed to anything), hence
    # no binding report sealed to the old key
    later = [
        part
        for part in tap.log[since:]
        if part.stage.startswith("secagg/")
        and part.stage != NodeStage.SECAGG_PREKEYS.value
        and part.answer is not None
        and Reply.from_bytes(part.answer).ok
    ]
    assert later == []


@pytest.mark.parametrize("mode", ["mask", "plaintext"])
def test_a_replayed_trust_offer_of_a_retired_opening_key_is_refused(
    tmp_path: Path, mode: str
) -> None:
    """Plaintext mode under the validation vote, whose ballots are sealed to the offer's
    key (without the vote a plaintext participant seals nothing, and is sent no offer)."""
    made, tap = tapped()
    trust = {**QUIET_P6, "voting": "validation"} if mode == "plaintext" else None
    p = pool(run_config(mode, n=6, iterations=3, trust=trust), tmp_path, driver=tap)
    coord, auditor = p.coordinator, p.nodes[AUDITOR_ID]
    coord.connect()
    old = coord.trust_offer
    pki = p.auditor_identity.public_bytes()
    first = open_trust_offer(old, auditor_public=pki, session=TRUST_SETUP_SESSION)
    retired = SummaryOpeningKey.from_private_bytes(
        (tmp_path / OPENING_FILE).read_bytes(), coord.cfg.trust.kem
    )
    assert first.epoch == 1 and first.opening_public == retired.public_bytes()
    p.records.append(coord.step())  # honest, under epoch 1
    assert_exact(p, p.records[-1])
    # the auditor rotates its opening key; the honest coordinator relays the new offer
    assert auditor.rotate_opening_key() == 2
    assert coord.trust_relay is not None
    coord.trust_relay.accept_offer(auditor.handle(NodeStage.TRUST_OFFER.value, b""))
    assert coord.trust_offer != old
    second = open_trust_offer(coord.trust_offer, auditor_public=pki, session=TRUST_SETUP_SESSION)
    assert second.epoch == 2 and second.opening_public != retired.public_bytes()
    p.records.append(coord.step())  # honest, under epoch 2: unchanged
    assert_exact(p, p.records[-1])
    # the coordinator replays the auditor's genuine offer of the retired key
    since = len(made[0].log)
    coord.trust_offer = old
    p.records.append(coord.step())
    _refused_by_all(p, made[0], since, kind=TRUST_OFFER)


def test_a_replayed_he_context_offer_of_a_retired_key_pair_is_refused(tmp_path: Path) -> None:
    made, tap = tapped()
    p = pool(run_config("he", n=6, iterations=2, trust={}), tmp_path, driver=tap)
    coord, auditor = p.coordinator, p.nodes[AUDITOR_ID]
    old = ContextOffer.from_bytes(_offer(auditor, NodeStage.HE_OFFER)).without_galois()
    assert old.epoch == 1
    assert auditor.rotate_he_keys() == 2
    coord.connect()  # the coordinator fetches the current offer (epoch 2)
    assert ContextOffer.from_bytes(coord.he_offer).epoch == 2
    p.records.append(coord.step())  # honest, under epoch 2
    assert_exact(p, p.records[-1])
    since = len(made[0].log)
    coord.mode.relayed = old.to_bytes()  # type: ignore[attr-defined]
    p.records.append(coord.step())
    _refused_by_all(p, made[0], since, kind=HE_CONTEXT)


def test_another_key_under_an_accepted_epoch_is_refused(tmp_path: Path) -> None:
    """An auditor whose state was reset (a new state directory, same identity key)
    starts again at epoch 1 with a new key: nodes that accepted epoch 1 of the old key
    refuse it (an epoch never goes back), rather than trust either key."""
    made, tap = tapped()
    p = pool(run_config("mask", n=6, iterations=2), tmp_path / "a", driver=tap)
    coord = p.coordinator
    coord.connect()
    p.records.append(coord.step())
    assert_exact(p, p.records[-1])
    fresh = AuditorNode(
        settings=coord.cfg.he_settings(),
        identity=p.nodes[AUDITOR_ID]._identity,
        registry=coord.registry,
        state_dir=tmp_path / "b",
        corrupt_fraction=coord.cfg.aggregation.mask.corrupt_fraction,
        weighting=coord.cfg.aggregation.weighting,
        trust=coord.cfg.trust,
    )
    since = len(made[0].log)
    coord.trust_offer = _offer(fresh, NodeStage.TRUST_OFFER)  # genuine, epoch 1, new key
    p.records.append(coord.step())
    (group,) = p.records[-1].groups
    assert group.status.startswith("aborted") and not group.contributors
    for reply in _answers(made[0], TRAIN, since).values():
        assert reply.meta["error"] == "SecurityViolation", reply.meta
        assert "another key under epoch 1" in reply.meta["reason"]


class PerMessage:
    """A participant node built afresh from its state directory for every message (as
    Flower runs it): what it accepted must come back from its node_state.json."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply: bytes = self.spec.build(**self.spec.args).handle(stage, payload)
        return reply


def test_a_node_built_from_its_files_for_every_message_still_refuses(tmp_path: Path) -> None:
    text = config_text(n=6, mode="mask", iterations=2, models=1, max_models=1)
    text += QUIET_P6_TOML
    cfg = parse_config(tomllib.loads(text))
    nodes: dict[str, Any] = dict(demo_nodes(cfg, text, tmp_path))
    specs = {s.node_id: s for s in node_specs(cfg, text, tmp_path, n_features=64, n_classes=10)}
    nodes["p00"] = PerMessage(specs["p00"])
    auditor = nodes[AUDITOR_ID]
    old = _offer(auditor, NodeStage.TRUST_OFFER)
    assert auditor.rotate_opening_key() == 2
    coord = inprocess_split(cfg, nodes, tmp_path)
    made: list[Tap] = []

    def factory() -> Any:
        made.append(Tap(nodes))
        return made[-1]

    coord._driver_factory = factory
    coord.connect()
    (group,) = coord.step().groups
    assert group.status == "aggregated", group.status
    since = len(made[0].log)
    coord.trust_offer = old
    (group,) = coord.step().groups
    assert group.status.startswith("aborted")
    reply = _answers(made[0], TRAIN, since)["p00"]
    assert not reply.ok
    assert reply.meta["error"] == "SecurityViolation", reply.meta
    assert "stale auditor trust-offer: epoch 1, but epoch 2" in reply.meta["reason"]


def test_an_offer_signed_by_another_identity_is_still_refused(tmp_path: Path) -> None:
    """The epoch does not replace the signature: a forged offer with a high epoch is
    refused under the auditor's PKI key."""
    from protocols.trust_offer import TrustOffer

    made, tap = tapped()
    p = pool(run_config("mask", n=6, iterations=1), tmp_path, driver=tap)
    coord = p.coordinator
    coord.connect()
    coord.trust_offer = TrustOffer.signed(
        IdentityKey.generate(),
        opening_public=SummaryOpeningKey().public_bytes(),
        session=TRUST_SETUP_SESSION,
        epoch=1 << 31,
    )
    p.records.append(coord.step())
    for reply in _answers(made[0], TRAIN, 0).values():
        assert reply.meta["error"] == "InvalidSignature", reply.meta


# --- the auditor's epoch files -----------------------------------------------------------


def _auditor(state_dir: Path, identity: IdentityKey | None = None) -> AuditorNode:
    cfg = run_config("mask", n=6)
    return AuditorNode(
        settings=cfg.he_settings(),
        identity=identity or IdentityKey.generate(),
        registry={},
        state_dir=state_dir,
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        weighting=cfg.aggregation.weighting,
        trust=cfg.trust,
    )


def _epoch_of(auditor: AuditorNode) -> int:
    offer = _offer(auditor, NodeStage.TRUST_OFFER)
    pki = auditor._identity.public_bytes()
    return open_trust_offer(offer, auditor_public=pki, session=TRUST_SETUP_SESSION).epoch


def test_the_auditor_counts_its_opening_keys_across_restarts(tmp_path: Path) -> None:
    identity = IdentityKey.generate()
    auditor = _auditor(tmp_path, identity)
    assert opening_epoch(tmp_path) == 0  # nothing made yet
    first = _offer(auditor, NodeStage.TRUST_OFFER)
    assert _epoch_of(auditor) == 1 and opening_epoch(tmp_path) == 1
    assert auditor.rotate_opening_key() == 2
    restarted = _auditor(tmp_path, identity)  # a new process over the same files
    assert _epoch_of(restarted) == 2
    assert _offer(restarted, NodeStage.TRUST_OFFER) == _offer(auditor, NodeStage.TRUST_OFFER)
    assert _offer(restarted, NodeStage.TRUST_OFFER) != first
    # deleting the key file is a rotation too: the next use makes epoch 3
    (tmp_path / OPENING_FILE).unlink()
    assert _epoch_of(_auditor(tmp_path, identity)) == 3
    # a crash after the epoch was counted and before the key was written: the next key
    # counts past it (an epoch is never reused for another key)
    (tmp_path / OPENING_FILE).unlink()
    (tmp_path / OPENING_EPOCH_FILE).write_text("7")
    assert _epoch_of(_auditor(tmp_path, identity)) == 8


def test_keys_made_before_epoch_files_are_epoch_1_and_rotate_to_2(tmp_path: Path) -> None:
    identity = IdentityKey.generate()
    _offer(_auditor(tmp_path, identity), NodeStage.TRUST_OFFER)
    (tmp_path / OPENING_EPOCH_FILE).unlink()  # a state directory of an older version
    legacy = _auditor(tmp_path, identity)
    assert _epoch_of(legacy) == 1 and (tmp_path / OPENING_EPOCH_FILE).exists()
    assert legacy.rotate_opening_key() == 2


@pytest.mark.parametrize("content", ["0", "-3", "x", '"2"', "1.5", ""])
def test_a_bad_epoch_file_is_a_typed_refusal(tmp_path: Path, content: str) -> None:
    identity = IdentityKey.generate()
    _offer(_auditor(tmp_path, identity), NodeStage.TRUST_OFFER)
    (tmp_path / OPENING_EPOCH_FILE).write_text(content)
    reply = Reply.from_bytes(_auditor(tmp_path, identity).handle("trust/offer", b""))
    assert not reply.ok and reply.meta["error"] == "StageError", reply.meta
    assert OPENING_EPOCH_FILE in reply.meta["reason"]


def test_the_auditor_counts_its_he_key_pairs(tmp_path: Path) -> None:
    identity = IdentityKey.generate()
    auditor = _auditor(tmp_path, identity)
    first = ContextOffer.from_bytes(_offer(auditor, NodeStage.HE_OFFER))
    assert first.epoch == 1 and json.loads((tmp_path / HE_EPOCH_FILE).read_text()) == 1
    assert auditor.rotate_he_keys() == 2
    second = ContextOffer.from_bytes(_offer(_auditor(tmp_path, identity), NodeStage.HE_OFFER))
    assert second.epoch == 2 and second.key_material() != first.key_material()
