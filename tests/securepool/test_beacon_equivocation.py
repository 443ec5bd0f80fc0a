"""Beacon equivocation, mounted from the coordinator's side against real nodes.

The attack (issue 21, item 1): the commit and reveal rounds run honestly for 12 nodes;
then the target and two colluders are sent an Outcome holding only their 3 reveals, so
the assignment makes them one group, while everyone else gets the honest outcome. The
target would run a SecAgg+ session with colluders only and they would subtract their
inputs. Each defence is shown on the real :class:`ParticipantNode` (and, for HE, the
real :class:`AuditorNode`):

* the omission bound: an outcome leaving out more than ``max_left_out`` is not endorsed;
* with that bound lifted, the target endorses the fake outcome, but it sends no SecAgg+
  message without a quorum certificate on what it endorsed, and the coordinator cannot
  build one: the colluders' signatures are too few, the honest quorum signed another
  statement;
* one endorsement per round per node, across a restart;
* the HE key holder folds and decrypts no group without a certified statement, and no
  contributor outside the certified group.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import Tap
from split_helpers import config, config_text, coordinator_over, node_builders, with_auditor

from protocols.beacon import BeaconCoordinator, Outcome, Reveal, joint_seed
from protocols.quorum import Endorsement, QuorumCertificate, Statement
from securepool.assignment import groups_for
from securepool.config import RunConfig, parse_config
from securepool.node.agreement import QuorumRule, model_hash, models_context
from securepool.node.app import ParticipantNode
from securepool.node.auditor import AUDITOR_ID
from securepool.node.wire import NodeStage, Reply, TrainRequest, pack_list, unpack_list

TARGET, COLLUDERS = "p00", ("p01", "p02")
POOL = bytes(range(32))


def _cfg(*, n: int = 12, max_left_out: float | None = None, mode: str = "mask") -> RunConfig:
    import tomllib

    text = config_text(n=n, mode=mode, models=1, max_models=1)
    if max_left_out is not None:
        text = text.replace("[assignment]\n", f"[assignment]\nmax_left_out = {max_left_out}\n")
    return parse_config(tomllib.loads(text))


class Round:
    """One beacon round run honestly by the attacker-coordinator with real nodes, after
    which it may send any outcome to anyone."""

    def __init__(self, cfg: RunConfig, nodes: dict[str, ParticipantNode]) -> None:
        self.cfg, self.nodes = cfg, nodes
        self.registry = {p: n._identity.public_bytes() for p, n in nodes.items()}
        self.beacon = BeaconCoordinator(self.registry)
        start = self.beacon.start(iteration=1, pool_digest=POOL, invited=sorted(nodes))
        for pid, node in nodes.items():
            self.beacon.receive_commit(pid, _ok(node.handle("beacon/start", start)))
        commits = self.beacon.commit_list()
        self.reveals = {}
        self.adverts = {}  # each node's SecAgg+ key advert for the round, with its reveal
        for pid, node in nodes.items():
            raw = _ok(node.handle("beacon/commits", commits))
            self.reveals[pid] = Reveal.from_bytes(raw)
            self.beacon.receive_reveal(pid, raw)
            if cfg.aggregation.mode.value == "mask":
                self.adverts[pid] = _ok(node.handle("secagg/prekeys", (1).to_bytes(4, "big")))
        self.params = np.zeros(650, np.float32)  # the logreg on digits: 64 x 10 + 10

    def assign(self, seed: bytes, members: Any) -> dict[str, tuple[str, ...]]:
        return groups_for(self.cfg, seed, members)

    def honest(self) -> tuple[bytes, Any]:
        return self.beacon.finish(assign=self.assign)

    def fake(self, among: tuple[str, ...]) -> bytes:
        """An outcome holding only the reveals of ``among`` (one group of them)."""
        nonces = {p: self.reveals[p].nonce for p in among}
        seed = joint_seed(iteration=1, pool_digest=POOL, reveals=nonces)
        groups = tuple(sorted((m, tuple(sorted(g))) for m, g in self.assign(seed, among).items()))
        return Outcome(1, tuple(self.reveals[p] for p in sorted(among)), groups).to_bytes()

    def train(self, pid: str, outcome: bytes) -> Reply:
        groups = Outcome.from_bytes(outcome).group_map()
        mine = [m for m, g in groups.items() if pid in g]
        req = TrainRequest(
            outcome,
            mine[0] if mine else "",
            self.params if mine else np.zeros(0, np.float32),
            iteration=1,
            model_hashes=tuple((m, model_hash(self.params)) for m in sorted(groups)),
        )
        return Reply.from_bytes(self.nodes[pid].handle("train", req.to_bytes()))


def _ok(raw: bytes) -> bytes:
    reply = Reply.from_bytes(raw)
    assert reply.ok, reply.meta
    return reply.body


def _nodes(cfg: RunConfig, root: Path | None = None) -> dict[str, ParticipantNode]:
    builders, _registry = node_builders(cfg, root)
    return {pid: build() for pid, build in builders.items()}


def _certificate(digest: bytes, signers: dict[str, Any]) -> bytes:
    """What the coordinator can build from the signatures it holds on ``digest``."""
    sigs = []
    for pid in sorted(signers):
        e = Endorsement.from_bytes(bytes.fromhex(signers[pid]))
        assert e.digest == digest
        sigs.append((pid, e.signature))
    return QuorumCertificate(1, digest, tuple(sigs)).to_bytes()


def _forged(node: ParticipantNode, statement: Statement) -> str:
    """A colluder's endorsement of anything (it holds its own key)."""
    e = Endorsement.sign(node._identity, participant=node.pid, statement=statement)
    return e.to_bytes().hex()


def _refused(raw: bytes) -> dict[str, Any]:
    reply = Reply.from_bytes(raw)
    assert not reply.ok
    return dict(reply.meta)


def test_an_outcome_leaving_out_nine_of_twelve_is_not_endorsed() -> None:
    cfg = _cfg()
    rnd = Round(cfg, _nodes(cfg))
    meta = dict(rnd.train(TARGET, rnd.fake((TARGET, *COLLUDERS))).meta)
    assert meta["error"] == "SecurityViolation"
    assert "leaves out 9 of 12" in meta["reason"] and "max_left_out" in meta["reason"]


def test_equivocation_leaves_the_target_without_a_certificate_so_nothing_leaves_it() -> None:
    cfg = _cfg(max_left_out=0.9)  # the omission bound lifted: the quorum alone must hold
    nodes = _nodes(cfg)
    rnd = Round(cfg, nodes)
    fake = rnd.fake((TARGET, *COLLUDERS))
    honest, _result = rnd.honest()
    # the target accepts the fake view (it cannot tell) and endorses it
    target_reply = rnd.train(TARGET, fake)
    assert target_reply.ok and target_reply.meta["selected"]  # in a group of the fake
    fake_digest = Endorsement.from_bytes(bytes.fromhex(target_reply.meta["endorsement"])).digest
    others = {p: rnd.train(p, honest) for p in nodes if p != TARGET}
    assert all(r.ok for r in others.values())
    honest_sigs = {p: r.meta["endorsement"] for p, r in others.items()}
    honest_digest = Endorsement.from_bytes(bytes.fromhex(honest_sigs["p03"])).digest
    assert fake_digest != honest_digest
    rule = QuorumRule.of(rnd.registry, corrupt_fraction=0.2, left_out_fraction=0.9)
    assert (rule.corrupt, rule.quorum) == (3, 8)
    # the coordinator's best certificates: the target's own signature plus every corrupt
    # node's (f = 3: two colluders and one more) on the fake statement ...
    fake_statement = _statement_of(rnd, fake, cfg)
    assert fake_statement.digest() == fake_digest
    corrupt = {p: _forged(nodes[p], fake_statement) for p in (*COLLUDERS, "p03")}
    too_few = _certificate(fake_digest, {TARGET: target_reply.meta["endorsement"], **corrupt})
    # ... or a genuine quorum of the honest nodes, on the statement they endorsed
    genuine = _certificate(honest_digest, honest_sigs)
    for cert in (too_few, genuine):
        meta = _refused(nodes[TARGET].handle("beacon/quorum", cert))
        assert meta["error"] == "SecurityViolation"
        assert ("8 needed" if cert is too_few else "another statement") in meta["reason"]
        # its masked input never leaves (its ShareKeys, shares of fresh keys to the
        # members of the view it was shown, may: they protect nothing ever sent)
        meta = _refused(nodes[TARGET].handle("secagg/shares", b"any"))
        assert meta["error"] in ("SecurityViolation", "StageError"), meta
    # the honest nodes hold their certificate and go on
    member = next(p for p in others if others[p].meta.get("selected"))
    assert Reply.from_bytes(nodes[member].handle("beacon/quorum", genuine)).ok


def test_the_masked_input_without_a_certificate_is_refused() -> None:
    cfg = _cfg()
    nodes = _nodes(cfg)
    rnd = Round(cfg, nodes)
    honest, _ = rnd.honest()
    member = next(p for p in nodes if rnd.train(p, honest).meta.get("selected"))
    meta = _refused(nodes[member].handle("secagg/shares", b"any"))
    assert meta["error"] == "SecurityViolation" and "quorum certificate" in meta["reason"]


def test_one_endorsement_per_round_even_across_a_restart(tmp_path: Path) -> None:
    cfg = _cfg(max_left_out=0.9)
    builders, _ = node_builders(cfg, tmp_path)
    nodes = {pid: build() for pid, build in builders.items()}
    rnd = Round(cfg, nodes)
    honest, _ = rnd.honest()
    assert rnd.train(TARGET, honest).ok
    fake = rnd.fake((TARGET, *COLLUDERS))
    meta = dict(rnd.train(TARGET, fake).meta)  # a second outcome of the same round
    assert meta["error"] == "StageError" and "outside the reveal stage" in meta["reason"]
    rnd.nodes[TARGET] = builders[TARGET]()  # the node restarts from its files
    meta = dict(rnd.train(TARGET, fake).meta)
    assert meta["error"] == "StageError", meta


def _statement_of(rnd: Round, outcome: bytes, cfg: RunConfig) -> Statement:
    out = Outcome.from_bytes(outcome)
    groups = out.group_map()
    rule = QuorumRule.of(rnd.registry, corrupt_fraction=0.2, left_out_fraction=0.9)
    return Statement(
        1,
        POOL,
        rule.universe,
        tuple(
            (rv.participant, rv.nonce) for rv in sorted(out.reveals, key=lambda r: r.participant)
        ),
        tuple(sorted(groups.items())),
        models_context(tuple((m, model_hash(rnd.params)) for m in sorted(groups))),
    )


# --- HE: the key holder ------------------------------------------------------------------


@pytest.fixture(scope="module")
def he_run(tmp_path_factory: pytest.TempPathFactory) -> Any:
    cfg = config(n=6, mode="he", iterations=1, max_models=1, models=1)
    builders, registry = node_builders(cfg)
    nodes = {pid: build() for pid, build in builders.items()}
    apps = with_auditor(cfg, nodes, registry, tmp_path_factory.mktemp("auditor"))
    return cfg, apps, registry


def test_the_key_holder_decrypts_nothing_without_a_certificate(he_run: Any) -> None:
    cfg, apps, registry = he_run
    taps: list[Tap] = []

    def tap(apps: Any) -> Tap:
        taps.append(Tap(apps))
        return taps[-1]

    coord = coordinator_over(cfg, apps, registry, tap)  # type: ignore[arg-type]
    coord._quorum_parts = lambda stage, *, auditor: []  # type: ignore[method-assign]
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    (group,) = records[0].groups
    assert group.status.startswith("aborted") and group.contributors == ()
    (part,) = [p for p in taps[0].parts(NodeStage.HE_DECRYPT.value) if p.node == AUDITOR_ID]
    assert part.answer is not None
    (answer,) = unpack_list(Reply.from_bytes(part.answer).body, what="answers")
    meta = _refused(answer)
    assert meta["error"] == "SecurityViolation" and "no quorum certificate" in meta["reason"]


def test_the_key_holder_refuses_a_forged_statement(he_run: Any) -> None:
    _cfg, apps, registry = he_run
    auditor = apps[AUDITOR_ID]
    members = tuple(sorted(p for p in registry if p != AUDITOR_ID))
    nonce = bytes(32)
    statement = Statement(
        7,
        POOL,
        members,
        tuple((p, nonce) for p in members[:3]),
        (("lr", members[:3]),),
        bytes(32),
    )
    # the corrupt budget (f = 2 of 6) signs; the quorum is 5
    sigs = {p: _forged(apps[p], statement) for p in members[:2]}
    cert = _certificate_round(statement, sigs)
    meta = _refused(auditor.handle("beacon/quorum", pack_list([statement.to_bytes(), cert])))
    assert meta["error"] == "SecurityViolation" and "5 needed" in meta["reason"]
    # a statement over another universe (the coordinator shrinking N) is refused outright
    small = dataclasses.replace(statement, universe=members[:3])
    cert = _certificate_round(small, {p: _forged(apps[p], small) for p in members[:3]})
    meta = _refused(auditor.handle("beacon/quorum", pack_list([small.to_bytes(), cert])))
    assert "another set of participants" in meta["reason"]


def _certificate_round(statement: Statement, signers: dict[str, str]) -> bytes:
    sigs = tuple(
        (p, Endorsement.from_bytes(bytes.fromhex(signers[p])).signature) for p in sorted(signers)
    )
    return QuorumCertificate(statement.round, statement.digest(), sigs).to_bytes()
