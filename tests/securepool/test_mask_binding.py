"""P6 in mask mode judges the input each participant masked, not what it claims (issue 13,
mask part). Every attack goes through the real coordinator, participant nodes and
auditor node over the in-process driver: a lying participant is a participant node
whose SecAgg+ client masks its (poisoned) input honestly and seals a crafted binding
report (an honest-looking cover sketch, the lie moved into r, into a pairwise projection
p_ij or into the self-mask projection q); a lying coordinator is a tap on the link that
rewrites what the participants are sent.

Covered elsewhere, not repeated here (tests/securepool/test_split_trust.py): a -4x input
behind an honest cover report flagged, marked and kept out of the next iteration
(``test_a_poisoned_input_behind_an_honest_cover_report_is_flagged``); honest nodes pass
with no flag (``test_honest_nodes_pass_the_split_trust_check_and_the_aggregate_is_exact``);
the auditor signs one verdict per session, also after a restart
(``test_the_auditor_refuses_a_second_verdict_for_a_session_after_a_restart``); a verdict
stripped of its flags on the wire gets no aggregate."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import (
    POISONS,
    QUIET_P6,
    Pool,
    Recording,
    assert_exact,
    kernel_poison,
    pool,
    run_config,
    tapped,
)
from numpy.typing import NDArray
from split_helpers import stages_of

from crypto.prg import expand_mask
from crypto.signing import IdentityKey
from protocols.secagg.binding import BindingReport, MaskVerdict, projection
from protocols.secagg.client import SecAggClient, encode_input
from protocols.secagg.labels import PAIR_MASK_LABEL, SELF_MASK_LABEL, pair_sign
from protocols.secagg.messages import (
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.summaries import Summary, summarize
from securepool.node.wire import NodeStage, Reply, TrainRequest
from securepool.trust.auditor import Auditor
from securepool.trust.check import public_projection_seed
from securepool.trust.config import TrustConfig

BINDING_WORDS = ("report", "dispute", "binding", "false", "mask projection")
UNMASK = NodeStage.SECAGG_UNMASK.value


class LyingClient(SecAggClient):
    """Masks its input honestly; its binding report lies as ``lie`` says, always with
    the ``r`` that makes check (a') hold for the seeds it claims (the best a liar can
    do: it knows y_i, R and every mask): ``"cover"`` reports the sketch of ``cover``
    with its true seeds (the only way to hide a poisoned input, and inconsistent),
    ``"b"`` claims a self-mask seed it did not use, ``"pair:<peer>"`` a pairwise seed
    towards ``peer`` it did not use, ``"omit:<peer>"`` leaves that seed out (its mask
    folded into r), ``"stranger"`` claims a seed towards a member that is no neighbour,
    ``"garbage"`` sends bytes that are no sealed report at all. ``"sabotage:<peer>"``
    is no report lie: it masks with a seed of its own towards ``peer`` and reports it
    (its input is true, the pair's masks do not cancel); ``"sabotage-b"`` masks with a
    self-mask seed other than the one it shared, and reports it."""

    lie: str
    cover: NDArray[np.float32]
    neighbours_reported: tuple[str, ...] = ()
    peer: str = ""

    def _report(self, digests: Any) -> bytes:
        sealed = super()._report(digests)
        return b"\x00" * 64 if self.lie == "garbage" else sealed

    def _on_delivery(self, msg: Any) -> bytes:
        kind, _, peer = self.lie.partition(":")
        if kind == "sabotage":
            self._mask_seeds[peer] = bytes(range(32))
        elif kind == "sabotage-b":
            self._b = bytes(range(32))
        return super()._on_delivery(msg)

    def _mask(self, label: bytes, seed: bytes, seed_dim: int, proj_seed: bytes) -> Any:
        assert self._spec is not None and self._encoded is not None
        proj = projection(proj_seed, length=self._encoded.size, dim=seed_dim)
        m = expand_mask(seed, label=label, length=self._encoded.size, dtype=self._spec.dtype)
        return proj.apply(m)

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = super()._report_body(seed, dim)
        self.neighbours_reported = tuple(sorted(honest.seeds))
        kind, _, self.peer = self.lie.partition(":")
        seeds, r, b = dict(honest.seeds), honest.r, honest.self_seed
        false = bytes(range(1, 33))
        if kind == "cover":
            s, spec = self._settings, self._spec
            assert spec is not None
            cover = encode_input(
                self.cover, self._weight, spec, clip=s.clip, max_weight=s.max_weight
            )
            r = projection(seed, length=cover.size, dim=dim).apply(cover)
        elif kind == "b":
            r = r + self._mask(SELF_MASK_LABEL, b, dim, seed)
            r = r - self._mask(SELF_MASK_LABEL, false, dim, seed)
            b = false
        elif kind in ("pair", "omit"):
            true_m = self._mask(PAIR_MASK_LABEL, seeds[self.peer], dim, seed)
            sign = pair_sign(self.pid, self.peer)
            r = r + true_m if sign > 0 else r - true_m  # take the true mask's place
            if kind == "pair":
                seeds[self.peer] = false
                m = self._mask(PAIR_MASK_LABEL, false, dim, seed)
                r = r - m if sign > 0 else r + m
            else:
                del seeds[self.peer]
        elif kind == "stranger":
            self.peer = sorted(set(self.members) - set(seeds) - {self.pid})[0]
            seeds[self.peer] = false
        return BindingReport(self.session, self.pid, r, b, seeds)


class MaskLiar(Recording):
    """A participant node whose SecAgg+ client is a :class:`LyingClient` (``lie``) with
    its honest trained update as the cover; ``client``: that client."""

    def __init__(self, pid: str, *, lie: str, **kwargs: Any) -> None:
        super().__init__(pid, **kwargs)
        self.lie = lie
        self.client: LyingClient | None = None

    def _train(self, req: TrainRequest) -> Reply:
        reply = super()._train(req)
        if self._client is not None:
            self._client.__class__ = LyingClient
            client: Any = self._client
            client.lie, client.cover = self.lie, self.honest
            self.client = client
        return reply


class Vanishes(Recording):
    """An honest node that stops answering at ``stage`` (a dropout)."""

    def __init__(self, pid: str, *, stage: str, **kwargs: Any) -> None:
        super().__init__(pid, **kwargs)
        self.vanish_at = stage

    def handle(self, stage: str, payload: bytes) -> bytes:
        if self.vanish_at in stages_of(stage, payload):
            raise ConnectionError(f"{self.pid} is gone")
        return super().handle(stage, payload)


def liar(lie: str, poison: str | None = None) -> Any:
    """A :class:`MaskLiar` factory for :func:`binding_helpers.pool` (``poison``: a name
    in :data:`binding_helpers.POISONS`, or an honest update behind the lie)."""
    return functools.partial(MaskLiar, lie=lie, poison=POISONS[poison] if poison else None)


def _run(tmp_path: Path, *, n: int = 8, extra: str = "", **kw: Any) -> tuple[Pool, Any]:
    p = pool(run_config("mask", n=n, extra=extra), tmp_path, **kw)
    (record,) = p.run()
    return p, record


def test_a_backdoored_input_behind_an_honest_cover_report_is_flagged(tmp_path: Path) -> None:
    bad = {"p06", "p07"}
    made, tap = tapped()
    p, record = _run(
        tmp_path, nodes={pid: liar("cover", "backdoor_shift") for pid in bad}, driver=tap
    )
    (group,) = record.groups
    for pid in bad:
        assert (
            group.excluded[pid] == "untrusted: proven lie: report does not match its masked input"
        )
    assert p.flags() == {pid: "proven lie: report does not match its masked input" for pid in bad}
    assert_exact(p, record)
    # the flagged were unmasked as dropouts: key shares only, never their self-mask shares
    responses = [
        decode_message(Reply.from_bytes(part.answer).body, UnmaskResponse)
        for part in made[0].parts(UNMASK)
        if part.answer is not None
    ]
    assert len(responses) >= 3
    for resp in responses:
        assert not bad & set(resp.b_shares)
        assert bad & set(resp.s_shares)


def test_the_old_public_kernel_no_longer_hides_a_perturbation(tmp_path: Path) -> None:
    """A perturbation in the kernel of the projection that was public before the inputs
    (what the sealed summary used) is visible in the bound sketch: R is drawn after.
    P6 with a fixed threshold of 1 (screens off, the norm rule on): under the old public
    sketch the attacker passes, under the bound one it is flagged by P6 (not by the
    binding: it reports honestly)."""
    trust = {**QUIET_P6, "threshold": 1.0}
    cfg = run_config("mask", n=8, trust=trust)
    attack = functools.partial(Recording, poison=kernel_poison(cfg, norm_ratio=2.0))
    p = pool(cfg, tmp_path, nodes={"p05": attack})
    (record,) = p.run()
    # the attack as intended: the old public sketch of what each node sent sees nothing
    seed = public_projection_seed(cfg.run.seed, "it0001/lr")
    old: dict[str, Summary] = {}
    for pid, node in p.nodes.items():
        if isinstance(node, Recording):
            old[pid] = summarize(node.sent[max(node.sent)][1], dim=256, seed=seed)
    attacker = p.nodes["p05"]
    honest_sketch = summarize(attacker.honest, dim=256, seed=seed).sketch
    np.testing.assert_allclose(old["p05"].sketch, honest_sketch, atol=1e-5)
    verdict, _ = Auditor(TrustConfig(**trust)).vet_opened("it0001/lr", old)
    assert "p05" not in verdict.flagged
    # the bound sketch does
    (group,) = record.groups
    reason = p.flags()["p05"]
    assert not any(w in reason for w in ("report", "dispute")), reason
    assert "p05" not in group.contributors
    assert_exact(p, record)


FALSE_SEED = "(a claimed weight, or a false mask seed)"


def _flagged_alone(p: Pool, record: Any, liar_id: str, reason: str) -> None:
    """``liar_id`` is flagged for ``reason`` before unmasking, nobody else is, every
    honest member stays in the aggregate and the aggregate is exact."""
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    assert reason in p.flags()[liar_id], p.flags()
    assert set(p.flags()) == {liar_id}
    assert set(group.contributors) == set(group.members) - {liar_id}
    assert_exact(p, record)


def test_a_false_pair_seed_costs_only_its_liar(tmp_path: Path) -> None:
    """The lie the old p_ij carried (a poisoned input behind an honest-looking r): the
    seed it claims towards p02 leaves it a pseudo-random r; flagged alone before any
    dispute, p02 stays in (issue 22, items 2 and 3)."""
    p, record = _run(tmp_path, nodes={"p07": liar("pair:p02", "scale_minus_5")})
    _flagged_alone(p, record, "p07", FALSE_SEED)


def test_a_false_self_mask_seed_costs_only_its_liar(tmp_path: Path) -> None:
    """What used to be a lie moved into q_i, found after unmasking, the aggregate
    discarded: now the auditor expands b_i itself."""
    p, record = _run(tmp_path, nodes={"p07": liar("b", "scale_minus_5")})
    _flagged_alone(p, record, "p07", FALSE_SEED)


def test_a_false_seed_towards_a_dropped_neighbour_costs_only_its_liar(tmp_path: Path) -> None:
    """p03 shared its keys and never sent a masked input: it cannot dispute p07's seed,
    and it need not (the auditor expands the seed and sees the pseudo-random r)."""
    dropout = functools.partial(Vanishes, stage=NodeStage.SECAGG_SHARES.value)
    nodes = {"p07": liar("pair:p03", "scale_minus_5"), "p03": dropout}
    p, record = _run(tmp_path, nodes=nodes)
    client = p.nodes["p07"].client
    assert client is not None and "p03" in client.neighbours_reported
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    assert set(p.flags()) == {"p07"} and FALSE_SEED in p.flags()["p07"]
    assert set(group.contributors) == set(group.members) - {"p07", "p03"}
    assert_exact(p, record)


def test_an_omitted_seed_flags_its_liar_and_keeps_the_neighbour(tmp_path: Path) -> None:
    """Issue 22 item 2: the omitting member folds its mask towards p01 into r; who
    shared keys with whom is the share round's, so the omission is its own lie."""
    p, record = _run(tmp_path, nodes={"p07": liar("omit:p01")})
    _flagged_alone(p, record, "p07", "report omits the mask seed towards ['p01']")


def test_omitting_towards_every_neighbour_flags_its_liar_alone(tmp_path: Path) -> None:
    """The issue's availability attack at full strength: an honest input, every
    neighbour's seed left out. No dispute, no honest member excluded."""

    class OmitAll(LyingClient):
        def _report_body(self, seed: bytes, dim: int) -> BindingReport:
            honest = SecAggClient._report_body(self, seed, dim)
            r = honest.r
            for peer, s_ in honest.seeds.items():
                m = self._mask(PAIR_MASK_LABEL, s_, dim, seed)
                r = r + m if pair_sign(self.pid, peer) > 0 else r - m
            return BindingReport(self.session, self.pid, r, honest.self_seed, {})

    class OmitAllNode(MaskLiar):
        def _train(self, req: TrainRequest) -> Reply:
            reply = super()._train(req)
            if self._client is not None:
                self._client.__class__ = OmitAll
            return reply

    node = functools.partial(OmitAllNode, lie="omit-all", poison=None)
    p, record = _run(tmp_path, nodes={"p07": node})
    _flagged_alone(p, record, "p07", "report omits the mask seed towards")


def test_a_sabotaging_pair_seed_is_a_dispute_then_the_liar_is_named(tmp_path: Path) -> None:
    """The limit: p07 masks with a seed of its own towards p02 and reports it (its input
    is true, the pair's masks do not cancel). Nobody can tell before unmasking which
    side's seed is the shared one: both leave this aggregate, the post-check names p07
    from the rebuilt keys and p02 gets no strike."""
    p, record = _run(tmp_path, nodes={"p07": liar("sabotage:p02")})
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    assert "p07" not in group.contributors and "p02" not in group.contributors
    assert group.excluded["p07"] == "untrusted: proven lie: false mask seed in the dispute with p02"
    assert "not blamed" in group.excluded["p02"]
    assert set(p.flags()) == {"p07"}
    assert_exact(p, record)


def _kept_its_model(p: Pool, group: Any) -> None:
    """The group's aggregate was discarded: its global model is the one it started with."""
    params = p.nodes[group.members[0]].sent[1][0]
    np.testing.assert_array_equal(p.coordinator.state.globals[group.model_id], params)


def test_a_sabotaging_self_mask_seed_is_named_and_its_aggregate_discarded(
    tmp_path: Path,
) -> None:
    """The other limit: p07 masks with a self-mask seed other than the one it shared
    (SecAgg+ without verifiable secret sharing cannot see it before unmasking); the
    post-check names it and the aggregate, which unmasking could not clear of its mask,
    is discarded rather than used."""
    p, record = _run(tmp_path, nodes={"p07": liar("sabotage-b")})
    (group,) = record.groups
    assert group.status.startswith("aggregate discarded"), group.status
    why = "proven lie: reported a self-mask seed it did not share (found after unmasking)"
    assert p.flags() == {"p07": why}
    _kept_its_model(p, group)


def test_a_report_that_does_not_open_flags_its_sender(tmp_path: Path) -> None:
    p, record = _run(tmp_path, nodes={"p04": liar("garbage")})
    (group,) = record.groups
    assert group.excluded["p04"].startswith("untrusted: proven lie: binding report rejected")
    assert set(p.flags()) == {"p04"}
    assert_exact(p, record)


def test_a_report_naming_a_non_neighbour_flags_its_sender(tmp_path: Path) -> None:
    """Degree 6 in a group of 12: some members are no neighbour of p00."""
    extra = "[aggregation.mask]\ndegree = 6\ncorrupt_fraction = 0.0\n"
    p, record = _run(tmp_path, n=12, extra=extra, nodes={"p00": liar("stranger")})
    client = p.nodes["p00"].client
    assert client is not None and client.peer not in client.neighbours_reported
    (group,) = record.groups
    assert (
        group.excluded["p00"]
        == f"untrusted: proven lie: report names non-neighbours ['{client.peer}']"
    )
    assert set(p.flags()) == {"p00"}
    assert_exact(p, record)


@pytest.mark.parametrize(
    ("pid", "stage"),
    [("p01", NodeStage.SECAGG_SHARES.value), ("p02", NodeStage.SECAGG_SURVIVORS.value)],
    ids=["before-its-input", "before-its-report"],
)
def test_honest_groups_with_dropouts_are_never_flagged_and_stay_exact(
    tmp_path: Path, pid: str, stage: str
) -> None:
    p, record = _run(tmp_path, n=7, nodes={pid: functools.partial(Vanishes, stage=stage)})
    (group,) = record.groups
    assert pid not in group.contributors  # vanished: left out, not blamed
    assert p.flags() == {}
    assert_exact(p, record)


# --- a lying coordinator ----------------------------------------------------------------


def _with_verdict(payload: bytes, data: bytes, sig: bytes) -> bytes:
    req = decode_message(payload, UnmaskRequest)
    return encode_message(
        UnmaskRequest(req.session, req.survivors, req.dropped, req.signatures, data, sig)
    )


def _real_verdict(req: UnmaskRequest, auditor: IdentityKey) -> MaskVerdict:
    """The auditor's genuine verdict the unmask request carries."""
    return MaskVerdict.verified(
        req.verdict, req.verdict_signature, auditor=auditor.public_bytes(), session=req.session
    )


def _on_unmask(rewrite: Any) -> Any:
    """A link rewrite of the unmask requests only."""

    def on(stage: str, node: str, payload: bytes) -> bytes:
        return rewrite(payload) if stage == UNMASK else payload

    return on


def _refused_by_all(tmp_path: Path, rewrite: Any, *, iterations: int = 1) -> list[Any]:
    """Every participant refuses the rewritten unmask request of the last iteration:
    nothing is revealed, the group gets no aggregate. The run's records."""
    made, tap = tapped(_on_unmask(rewrite))
    p = pool(run_config("mask", n=6, iterations=iterations), tmp_path, driver=tap)
    records = p.run()
    (group,) = records[-1].groups
    assert group.status.startswith("aborted"), group.status
    session = decode_message(made[0].parts(UNMASK)[-1].payload, UnmaskRequest).session
    answers = [
        Reply.from_bytes(part.answer)
        for part in made[0].parts(UNMASK)
        if decode_message(part.payload, UnmaskRequest).session == session
        and part.answer is not None
    ]
    assert len(answers) == len(group.members)
    assert not any(a.ok for a in answers)  # no UnmaskResponse: no share left any node
    for a in answers:
        assert "without a valid auditor verdict" in str(a.meta.get("reason")), a.meta
    return records


def test_an_unmask_request_without_a_verdict_is_refused(tmp_path: Path) -> None:
    _refused_by_all(tmp_path, lambda p: _with_verdict(p, b"", b""))


def test_a_forged_verdict_is_refused(tmp_path: Path) -> None:
    forger = IdentityKey.generate()

    def forge(payload: bytes) -> bytes:
        session = decode_message(payload, UnmaskRequest).session
        return _with_verdict(payload, *MaskVerdict(session, {}, {}).sign(forger))

    _refused_by_all(tmp_path, forge)


def test_a_verdict_of_another_session_is_refused(tmp_path: Path) -> None:
    """The auditor's real, signed verdict of iteration 1 replayed in iteration 2."""
    first: dict[str, tuple[bytes, bytes]] = {}

    def replay(payload: bytes) -> bytes:
        req = decode_message(payload, UnmaskRequest)
        if req.session == "it0001/lr":
            first.setdefault("verdict", (req.verdict, req.verdict_signature))
            return payload
        return _with_verdict(payload, *first["verdict"])

    records = _refused_by_all(tmp_path, replay, iterations=2)
    assert records[0].groups[0].status == "aggregated"


def test_a_verdict_that_shrinks_the_aggregate_below_the_threshold_is_refused(
    tmp_path: Path,
) -> None:
    """Coordinator and auditor collude (the auditor's real key signs): leaving out all
    but two members would unmask a sum of two. Clients refuse: SecAgg+ privacy does not
    rest on the auditor."""
    keys: list[IdentityKey] = []

    def collude(payload: bytes) -> bytes:
        req = decode_message(payload, UnmaskRequest)
        left = {pid: "colluding auditor" for pid in sorted(req.survivors)[2:]}
        real = _real_verdict(req, keys[0])  # of this very group instance
        bad = MaskVerdict(
            req.session,
            {},
            left,
            members=real.members,
            survivors=real.survivors,
            digests=real.digests,
        )
        return _with_verdict(payload, *bad.sign(keys[0]))

    made, tap = tapped(_on_unmask(collude))
    p = pool(run_config("mask", n=6), tmp_path, driver=tap)
    keys.append(p.auditor_identity)
    (record,) = p.run()
    (group,) = record.groups
    assert group.status.startswith("aborted"), group.status
    answers = [Reply.from_bytes(part.answer or b"") for part in made[0].parts(UNMASK)]
    assert len(answers) == 6 and not any(a.ok for a in answers)
    assert all("contributors" in str(a.meta.get("reason")) for a in answers)


def test_a_survivor_list_with_a_false_digest_of_its_input_is_refused(tmp_path: Path) -> None:
    def lie(stage: str, node: str, payload: bytes) -> bytes:
        if stage != NodeStage.SECAGG_SURVIVORS.value or node != "p00":
            return payload
        msg = decode_message(payload, SurvivorList)
        digests = dict(msg.digests)
        digests["p00"] = bytes(32)  # the coordinator would choose the projection
        return encode_message(SurvivorList(msg.session, msg.survivors, digests))

    _made, tap = tapped(lie)
    p = pool(run_config("mask", n=6), tmp_path, driver=tap)
    (record,) = p.run()
    (group,) = record.groups
    assert "not the hash of what it sent" in group.excluded["p00"]
    assert "p00" not in group.contributors
    assert "p00" not in p.flags()  # it is left out, not blamed
    assert_exact(p, record)
