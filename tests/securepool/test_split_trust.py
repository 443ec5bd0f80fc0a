"""The trust check over the split runtimes: the auditor is a node of its own, reached
through the coordinator, with its keys and decisions in its own files (issue 12).

Every attack is performed from the attacker's side of the wire: a lying participant is a
participant node whose masked input (or ciphertext) is poisoned and whose sealed binding
report covers it; a lying link (coordinator or SuperLink operator) is a driver that
rewrites the auditor's bytes. The auditor judges in its own node (built from its files,
also once per message, as Flower runs it)."""

from __future__ import annotations

import json
import os
import stat
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import QUIET_P6_TOML
from split_helpers import config_text

from crypto.errors import ConfigError
from crypto.fixedpoint import FixedPointSpec
from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.codec import Reader, decode_fields
from protocols.he.messages import ContextOffer
from protocols.secagg import binding
from protocols.secagg.binding import BindingReport, MaskVerdict, projection
from protocols.secagg.client import SecAggClient, encode_input
from protocols.trust_offer import TRUST_SETUP_SESSION, TrustOffer
from securepool.config import RunConfig, parse_config
from securepool.coordinator.launch import demo_nodes, inprocess_split, node_specs
from securepool.coordinator.loop import PoolCoordinator
from securepool.models import build_model, flatten
from securepool.node.app import ParticipantNode
from securepool.node.auditor import AUDITOR_ID, MASK_FILE, OPENING_FILE
from securepool.node.wire import (
    NodeStage,
    Reply,
    TrainRequest,
    decode_bundle,
    pack_list,
    unpack_list,
)
from securepool.runtime.inprocess import InProcessDriver

#: P6 set so that honest nodes are never flagged (fixed threshold near the maximum cosine
#: difference, screens off) while the norm rule stays on: every flag below is then the
#: attack's (the binding's checks do not depend on these settings), so no test depends
#: on P6's false-positive rate under a fresh random projection
TRUST = "\n" + QUIET_P6_TOML


def trust_text(mode: str, *, trust: bool = True, n: int = 8, iterations: int = 2) -> str:
    text = config_text(n=n, mode=mode, iterations=iterations, models=1, max_models=1)
    return text + (TRUST if trust else "")


def cfg_of(text: str) -> RunConfig:
    return parse_config(tomllib.loads(text))


class CoverClient(SecAggClient):
    """Masks its poisoned update honestly, but reports the sketch of ``cover`` (the
    honest update it trained): a sealed report that hides the poison."""

    cover: np.ndarray

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = super()._report_body(seed, dim)
        s = self._settings
        spec: FixedPointSpec | None = self._spec
        assert spec is not None
        cover = encode_input(self.cover, self._weight, spec, clip=s.clip, max_weight=s.max_weight)
        r_cover = projection(seed, length=cover.size, dim=dim).apply(cover)
        return BindingReport(self.session, self.pid, r_cover, honest.self_seed, dict(honest.seeds))


class Poisoner:
    """A participant node that multiplies its trained update by ``factor`` (1.0: an
    honest node, recorded); with ``cover`` its mask-mode report is the honest update's
    sketch instead of its input's. ``sent``: per iteration, (global it was sent, the
    update it put in, its weight)."""

    def __init__(self, node: ParticipantNode, *, factor: float = 1.0, cover: bool = False) -> None:
        self.node, self.factor, self.cover = node, factor, cover
        self.honest: np.ndarray | None = None
        self.sent: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
        original = node._local_update

        def poisoned(model_id: str, params: Any, iteration: int, members: Any) -> Any:
            update, weight, meta = original(model_id, params, iteration, members)
            if update is not None:
                self.honest = update.copy()
                update = (update * factor).astype(np.float32)
                self.sent[iteration] = (params.copy(), update.copy(), weight)
            return update, weight, meta

        node._local_update = poisoned  # type: ignore[method-assign]

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply = self.node.handle(stage, payload)
        client = self.node._client
        if self.cover and client is not None and type(client) is SecAggClient:
            client.__class__ = CoverClient
            assert self.honest is not None
            client.cover = self.honest  # type: ignore[attr-defined]
        return reply


def assert_exact(coord: PoolCoordinator, record: Any, nodes: Mapping[str, Any]) -> None:
    """The last iteration's aggregate is exactly (within quantisation) the weighted mean
    of what its contributors put in: nobody left out is in it, nobody in it is lost."""
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    sent = [nodes[p].sent[_iteration(nodes, p)] for p in group.contributors]
    params = sent[0][0]
    mean = sum(w * u.astype(np.float64) for _, u, w in sent) / sum(w for *_, w in sent)
    np.testing.assert_allclose(coord.state.globals[group.model_id], params + mean, atol=1e-5)


def _iteration(nodes: Mapping[str, Any], pid: str) -> int:
    return int(max(nodes[pid].sent))


def recorded(swap: Mapping[str, Any] | None = None, n: int = 8) -> dict[str, Any]:
    """Every participant wrapped in a recording :class:`Poisoner` (honest unless in
    ``swap``)."""
    out: dict[str, Any] = {f"p{i:02d}": Poisoner for i in range(n)}
    out.update(swap or {})
    return out


class PerMessage:
    """A NodeApp built afresh from its spec for every message (as Flower runs it)."""

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply: bytes = self.spec.build(**self.spec.args).handle(stage, payload)
        return reply


def run(
    text: str, root: Path, *, swap: Mapping[str, Any] | None = None, driver: Any = None
) -> tuple[PoolCoordinator, list[Any], dict[str, Any]]:
    cfg = cfg_of(text)
    nodes: dict[str, Any] = dict(demo_nodes(cfg, text, root))
    for pid, make in (swap or {}).items():
        nodes[pid] = make(nodes[pid])
    coord = inprocess_split(cfg, nodes, root)
    if driver is not None:
        coord._driver_factory = lambda: driver(nodes)
    coord.connect()
    records = [coord.step() for _ in range(cfg.convergence.max_iterations)]
    return coord, records, nodes


def test_honest_nodes_pass_the_split_trust_check_and_the_aggregate_is_exact(
    tmp_path: Path,
) -> None:
    coord, records, nodes = run(trust_text("mask"), tmp_path, swap=recorded())
    assert_exact(coord, records[-1], nodes)
    assert coord.trust is not None
    report = coord.trust.report()
    assert [v["session"] for v in report["verdicts"]] == ["it0001/lr", "it0002/lr"]
    # the signed verdict names P6's trusted participant and threshold, as in-process
    assert all(v["trusted"] in nodes and v["threshold"] > 0 for v in report["verdicts"])
    assert report["flags"] == []  # the binding never blames an honest node
    # the auditor's decisions are its own files, owner-only; no judged request is left
    state = tmp_path / AUDITOR_ID
    assert json.loads((state / MASK_FILE).read_text()) == ["it0001/lr", "it0002/lr"]
    assert stat.S_IMODE((state / OPENING_FILE).stat().st_mode) == 0o600


@pytest.mark.parametrize("per_message", [False, True], ids=["long-lived", "per-message"])
def test_a_poisoned_input_behind_an_honest_cover_report_is_flagged(
    tmp_path: Path, per_message: bool
) -> None:
    text = trust_text("mask")
    swap = recorded({"p02": lambda n: Poisoner(n, factor=-4.0, cover=True)})
    if per_message:  # the auditor lives one message at a time, from its files
        cfg = cfg_of(text)
        specs = {s.node_id: s for s in node_specs(cfg, text, tmp_path, n_features=64, n_classes=10)}
        swap[AUDITOR_ID] = lambda _n: PerMessage(specs[AUDITOR_ID])
    coord, records, nodes = run(text, tmp_path, swap=swap)
    first, second = (rec.groups[0] for rec in records)
    assert "p02" not in first.contributors and "report" in first.excluded["p02"]
    # marked (strikes = 1) after the next beacon had started: that beacon is dropped for
    # a fresh one without it, so no group of iteration 2 counts it among its members
    assert "p02" not in second.members and second.status == "aggregated"
    assert_exact(coord, records[-1], nodes)
    assert coord.trust is not None and "p02" in coord.trust.report()["untrusted"]
    # the marks are checkpointed with the pool (a --resume keeps them)
    trust = coord.component_states()["trust"]
    assert [f["iteration"] for f in trust["flags"] if f["participant"] == "p02"] == [1]
    assert [m["participant"] for m in trust["marks"]][:1] == ["p02"]


def test_a_boosted_update_reported_honestly_is_flagged_by_p6(tmp_path: Path) -> None:
    swap = recorded({"p04": lambda n: Poisoner(n, factor=25.0)})
    coord, records, nodes = run(trust_text("mask", iterations=1), tmp_path, swap=swap)
    (group,) = records[0].groups
    assert "p04" not in group.contributors and "untrusted" in group.excluded["p04"]
    assert_exact(coord, records[0], nodes)


class StripFlags(InProcessDriver):
    """A link that rewrites the auditor's verdicts so that they flag nobody (keeping the
    auditor's signature): what a SuperLink operator or a coordinator would try."""

    def __init__(self, nodes: dict[str, Any]) -> None:
        super().__init__(nodes)
        self.rewrote = 0

    def exchange(
        self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
    ) -> dict[str, bytes | None]:
        replies = super().exchange(stage, batch, timeout=timeout, **kw)
        raw = replies.get(AUDITOR_ID)
        if raw is None:
            return replies
        if stage == NodeStage.BUNDLE.value:
            stages = [st for st, _ in decode_bundle(batch[AUDITOR_ID])]
            parts = unpack_list(Reply.from_bytes(raw).body, what="parts")
            parts = [
                self._strip(p) if st == NodeStage.MASK_JUDGE.value else p
                for st, p in zip(stages, parts, strict=True)
            ]
            replies[AUDITOR_ID] = Reply(True, pack_list(parts)).to_bytes()
        elif stage == NodeStage.MASK_JUDGE.value:
            replies[AUDITOR_ID] = self._strip(raw)
        return replies

    def _strip(self, raw: bytes) -> bytes:
        reply = Reply.from_bytes(raw)
        if not reply.ok or not reply.body:
            return raw
        out = []
        for one in unpack_list(reply.body, what="answers"):
            data, sig = unpack_list(Reply.from_bytes(one).body, what="verdict", expected=2)
            reader = Reader(data, magic=binding.MAGIC, version=binding.VERSION, name="verdict")
            fields = decode_fields(reader, MaskVerdict.SCHEMA)
            forged = MaskVerdict(
                fields["session"],
                {},
                {},
                dict(fields["commitments"]),
                members=frozenset(fields["members"]),
                survivors=frozenset(fields["survivors"]),
                digests=dict(fields["digests"]),
            ).encode()
            self.rewrote += 1
            out.append(Reply(True, pack_list([forged, sig])).to_bytes())
        return Reply(True, pack_list(out)).to_bytes()


def test_a_verdict_stripped_of_its_flags_on_the_wire_gets_no_aggregate(tmp_path: Path) -> None:
    swap = recorded({"p02": lambda n: Poisoner(n, factor=-4.0, cover=True)})
    made: list[StripFlags] = []

    def driver(nodes: dict[str, Any]) -> StripFlags:
        made.append(StripFlags(nodes))
        return made[0]

    coord, records, _ = run(trust_text("mask", iterations=1), tmp_path, swap=swap, driver=driver)
    (group,) = records[0].groups
    assert made[0].rewrote >= 1
    assert group.status.startswith("aborted") and "verdict" in group.status
    assert not group.contributors  # the poisoned input never reached the pool
    spec = coord.cfg.pool.models[0]
    initial = flatten(build_model(spec.arch, n_features=64, n_classes=10, seed=spec.seed))
    np.testing.assert_array_equal(coord.state.globals["lr"], initial)


def test_the_auditor_refuses_a_second_verdict_for_a_session_after_a_restart(
    tmp_path: Path,
) -> None:
    seen: list[bytes] = []

    class Recorder:
        def __init__(self, auditor: Any) -> None:
            self.auditor = auditor
            self._identity = auditor._identity

        def handle(self, stage: str, payload: bytes) -> bytes:
            if stage == NodeStage.BUNDLE.value:
                seen.extend(p for st, p in decode_bundle(payload) if st == "mask/judge")
            elif stage == "mask/judge":
                seen.append(payload)
            reply: bytes = self.auditor.handle(stage, payload)
            return reply

    text = trust_text("mask", iterations=1)
    run(text, tmp_path, swap={AUDITOR_ID: Recorder})
    assert seen
    cfg = cfg_of(text)
    spec = next(
        s
        for s in node_specs(cfg, text, tmp_path, n_features=64, n_classes=10)
        if s.node_id == AUDITOR_ID
    )
    restarted = spec.build(**spec.args)
    reply = Reply.from_bytes(restarted.handle("mask/judge", seen[0]))
    (answer,) = unpack_list(reply.body, what="x")
    refused = Reply.from_bytes(answer)
    assert not refused.ok and "already has a verdict" in refused.meta["reason"]


def test_he_mode_judges_folds_in_the_auditor_node_and_keeps_its_galois_keys(
    tmp_path: Path,
) -> None:
    text = trust_text("he")
    swap = recorded({"p03": lambda n: Poisoner(n, factor=12.0)})
    offers: list[bytes] = []

    class SeesTrain(Poisoner):  # what a participant is sent in its train stage
        def handle(self, stage: str, payload: bytes) -> bytes:
            parts = (
                decode_bundle(payload) if stage == NodeStage.BUNDLE.value else [(stage, payload)]
            )
            offers.extend(TrainRequest.from_bytes(p).he_offer for st, p in parts if st == "train")
            return super().handle(stage, payload)

    swap["p00"] = SeesTrain
    coord, records, nodes = run(text, tmp_path, swap=swap)
    # participants get the signed offer without the fold's Galois keys (only the
    # coordinator folds), and it still verifies under the auditor's key
    assert offers and all(ContextOffer.from_bytes(o).galois_keys == b"" for o in offers)
    assert ContextOffer.from_bytes(coord.he_offer).galois_keys
    first, second = (rec.groups[0] for rec in records)
    assert "p03" not in first.contributors and "untrusted" in first.excluded["p03"]
    assert "p03" not in second.members  # marked: the next beacon is drawn without it
    assert_exact(coord, records[-1], nodes)
    assert coord.trust is not None and "p03" in coord.trust.report()["untrusted"]
    # a restarted auditor offers the same context (Galois keys from its files) and
    # refuses to judge a session twice
    cfg = cfg_of(text)
    spec = next(
        s
        for s in node_specs(cfg, text, tmp_path, n_features=64, n_classes=10)
        if s.node_id == AUDITOR_ID
    )
    again = Reply.from_bytes(spec.build(**spec.args).handle("he/offer", b"")).body
    assert again == coord.he_offer
    # one session per pool iteration; the second's beacon round is 3: the one drawn
    # during iteration 1 (round 2) held the then newly marked p03 and was dropped
    assert set(json.loads((tmp_path / AUDITOR_ID / "folded.json").read_text())) == {
        "it0001/lr",
        "it0003/lr",
    }


def test_the_trust_check_is_accepted_in_split_runtimes() -> None:
    for mode in ("plaintext", "mask", "he"):
        text = trust_text(mode).replace('runtime = "inprocess"', 'runtime = "multiprocess"')
        assert cfg_of(text).trust.enabled  # parse_config raises ConfigError on problems
    text = trust_text("plaintext").replace('runtime = "inprocess"', 'runtime = "multiprocess"')
    # the validation vote too (its plain/ballot stage: tests/securepool/test_validation_vote)
    assert cfg_of(text + 'voting = "validation"\n').trust.voting.value == "validation"
    # a fold_dim that is not the sketch's is refused in every runtime, never overridden
    he = trust_text("he").replace('runtime = "inprocess"', 'runtime = "multiprocess"')
    with pytest.raises(ConfigError, match=r"aggregation\.he\.fold_dim = 128 must be 0"):
        cfg_of(he + "[aggregation.he]\nfold_dim = 128\n")


def test_plaintext_mode_judges_each_update_as_the_coordinator_received_it(
    tmp_path: Path,
) -> None:
    """The auditor judges the coordinator's summaries of the updates it received (a
    participant tells it nothing of its own): a -4x and a 25x update are flagged, and
    the aggregate is exactly the rest's."""
    swap = recorded(
        {
            "p01": lambda n: Poisoner(n, factor=-4.0),
            "p05": lambda n: Poisoner(n, factor=25.0),
        }
    )
    coord, records, nodes = run(trust_text("plaintext", iterations=1), tmp_path, swap=swap)
    (group,) = records[0].groups
    for p in ("p01", "p05"):
        assert group.excluded[p].startswith("untrusted: ")
    assert set(group.contributors) == {f"p{i:02d}" for i in range(8)} - {"p01", "p05"}
    assert_exact(coord, records[0], nodes)
    assert coord.trust is not None
    assert {f["participant"] for f in coord.trust.report()["flags"]} == {"p01", "p05"}


def test_participants_refuse_an_opening_key_the_auditor_did_not_sign(tmp_path: Path) -> None:
    """A coordinator that hands participants its own opening key (to open their
    reports) gets no training reply, hence nothing sealed to that key."""
    text = trust_text("mask", iterations=1)
    cfg = cfg_of(text)
    nodes = demo_nodes(cfg, text, tmp_path)
    coord = inprocess_split(cfg, nodes, tmp_path)
    coord.connect()
    mine = SummaryOpeningKey()
    coord.trust_offer = TrustOffer.signed(
        IdentityKey.generate(), opening_public=mine.public_bytes(), session=TRUST_SETUP_SESSION
    )
    (group,) = coord.step().groups
    assert group.status.startswith("aborted") and not group.contributors
    assert all("signature" in why.lower() for why in group.excluded.values()), group.excluded


def test_with_the_auditor_in_its_own_process_the_coordinator_holds_no_secret(
    tmp_path: Path,
) -> None:
    """multiprocess runtime, mask mode with the trust check: mid-iteration (after the
    verdict, before unmasking) the walk of the coordinator
    (``separation_helpers.coordinator_view``: from the coordinator and from its frames'
    locals, where the iteration's SecAgg+ server and verdict live) finds no secret-key
    object but the server's own throwaway probe key (the auditor's opening key lives in
    the auditor's process) and no float vector of the model's size but the global
    model."""
    from separation_helpers import WalkAt, foreign_secrets, probe_keys

    from securepool.coordinator.launch import multiprocess_coordinator

    text = trust_text("mask", n=4, iterations=1).replace(
        'runtime = "inprocess"', 'runtime = "multiprocess"'
    )
    cfg = cfg_of(text)
    coord = multiprocess_coordinator(cfg, text, tmp_path / "run", timeout=120.0)
    factory = coord._driver_factory
    spies: list[WalkAt] = []

    def spied() -> WalkAt:
        spies.append(WalkAt(factory(), coord, at=NodeStage.SECAGG_UNMASK))
        return spies[-1]

    coord._driver_factory = spied
    try:
        coord.connect()
        (group,) = coord.step().groups
        pids = spies[0].inner.pids()  # type: ignore[attr-defined]
    finally:
        coord.close()
    assert AUDITOR_ID in pids and os.getpid() not in pids.values()
    assert group.status == "aggregated" and len(group.contributors) == 4
    seen = spies[0].view
    assert seen is not None
    # the walk reached the iteration's SecAgg+ server, its verdict and the trust state
    assert {"SecAggServer", "MaskVerdict", "BindingKeys", "TrustLedger"} <= seen.types
    assert probe_keys(seen) and seen.described(foreign_secrets(seen)) == []
    size = coord.layouts["lr"].size
    for arr in seen.arrays:
        if arr.ndim == 1 and arr.size == size and arr.dtype.kind == "f":
            assert any(np.array_equal(arr, g) for g in coord.state.globals.values()) or (
                np.array_equal(arr, _initial(coord))
            ), f"a model-sized float vector that is no global model: {seen.path(arr)}"


def _initial(coord: PoolCoordinator) -> np.ndarray:
    spec = coord.cfg.pool.models[0]
    return flatten(build_model(spec.arch, n_features=64, n_classes=10, seed=spec.seed))
