"""P6 in mask mode judges the input each participant masked, not what it claims (issue 13,
mask part). Every attack goes through the real MaskedAggregator, SecAggServer, clients and
auditor: a lying participant is a SecAggClient subclass whose masked input is poisoned
and whose sealed binding report is crafted (an honest-looking cover sketch, the lie
moved into r, into a pairwise projection p_ij or into the self-mask projection q); a
lying coordinator is a Router that rewrites messages on the wire."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from binding_helpers import honest_group, poisoned

from crypto.errors import AggregateDiscarded, StageError, ThresholdNotMet
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput, DropoutPlan, GroupResult, Router, Stage
from protocols.secagg.aggregator import MaskedAggregator
from protocols.secagg.binding import BindingReport, MaskVerdict, pair_words, projection
from protocols.secagg.client import ClientStage, SecAggClient, encode_input
from protocols.secagg.graph import graph_seed_from, neighbours_of, session_parameters
from protocols.secagg.messages import (
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.secagg.settings import MaskSettings
from protocols.summaries import sketch_projection
from securepool.trust.check import TrustCheck
from securepool.trust.config import TrustConfig

D = 2000
SESSION = "it0001/m"
SETTINGS = MaskSettings(max_weight=128.0)
JOINT = hashlib.sha256(b"joint seed").digest()
MODEL = hashlib.sha256(b"model").digest()
BINDING_WORDS = ("report", "dispute", "binding", "false", "mask projection")


def _group(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return honest_group(n, D, seed)


class LyingClient(SecAggClient):
    """Masks its (poisoned) update honestly but reports the sketch of ``cover``, moving
    the difference into ``where``: "nowhere" (an inconsistent report), "q", or the
    pairwise projection towards neighbour ``where[5:]`` ("pair:<pid>"); "omit:<pid>"
    leaves the projection towards that neighbour out (folded into r)."""

    def __init__(self, *, cover: np.ndarray, where: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cover, self.where = cover, where
        self.neighbours_reported: tuple[str, ...] = ()

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = super()._report_body(seed, dim)
        self.neighbours_reported = tuple(sorted(honest.pairs))
        s = self._settings
        assert self._spec is not None
        cover = encode_input(
            self.cover, self._weight, self._spec, clip=s.clip, max_weight=s.max_weight
        )
        r_cover = projection(seed, length=cover.size, dim=dim).apply(cover)
        delta = honest.r - r_cover  # what the cover hides, in Z_{2^k}
        q, pairs = honest.q, dict(honest.pairs)
        if self.where == "q":
            q = q + delta
        elif self.where.startswith("pair:"):
            peer = self.where[5:]
            p = np.frombuffer(pairs[peer], dtype=honest.r.dtype).copy()
            pairs[peer] = pair_words(p + delta)
        if self.where.startswith("omit:"):  # drop one projection, fold it into r
            dropped = pairs.pop(self.where[5:])
            r_cover = honest.r + np.frombuffer(dropped, dtype=honest.r.dtype)
        return BindingReport(self.session, self.pid, r_cover, q, pairs)


class GarbageReporter(SecAggClient):
    """Sends bytes that are no sealed report at all."""

    def _report(self, digests: Any) -> bytes:
        super()._report(digests)
        return b"\x00" * 64


class StrangerReporter(LyingClient):
    """Claims a mask projection towards a member that is not its neighbour."""

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = SecAggClient._report_body(self, seed, dim)
        pairs = dict(honest.pairs)
        pairs[self.where[9:]] = pair_words(np.zeros_like(honest.r))
        return BindingReport(self.session, self.pid, honest.r, honest.q, pairs)


def _factory(
    liars: dict[str, tuple[np.ndarray, str]], made: dict[str, SecAggClient]
) -> Callable[..., SecAggClient]:
    def make(**kwargs: Any) -> SecAggClient:
        pid = kwargs["pid"]
        if pid in liars:
            cover, where = liars[pid]
            kind = {"garbage": GarbageReporter, "stranger": StrangerReporter}.get(
                where.split(":")[0], LyingClient
            )
            client: SecAggClient = (
                GarbageReporter(**kwargs)
                if kind is GarbageReporter
                else kind(cover=cover, where=where, **kwargs)
            )
        else:
            client = SecAggClient(**kwargs)
        made[pid] = client
        return client

    return make


def _run(
    check: TrustCheck,
    sent: dict[str, np.ndarray],
    *,
    liars: dict[str, tuple[np.ndarray, str]] | None = None,
    session: str = SESSION,
    router: Router | None = None,
    dropouts: DropoutPlan | None = None,
    made: dict[str, SecAggClient] | None = None,
    joint: bytes = JOINT,
) -> GroupResult:
    inputs = {pid: ClientInput(update=sent[pid], weight=10.0) for pid in sent}
    agg = MaskedAggregator(
        settings=SETTINGS,
        min_contributors=3,
        router=router or Router(),
        client_type=_factory(liars or {}, {} if made is None else made),
    )
    vet = check.vet_for(session=session, iteration=1, model_id="m")
    return agg.aggregate(
        session=session,
        inputs=inputs,
        vet=vet,
        dropouts=dropouts,
        joint_seed=joint,
        model_digest=MODEL,
    )


def _check(**kw: Any) -> TrustCheck:
    return TrustCheck(TrustConfig(enabled=True, **kw), seed=3, model_sizes={"m": D})


def _exact(result: GroupResult, sent: dict[str, np.ndarray]) -> None:
    ref = sum(10.0 * np.clip(sent[p].astype(np.float64), -1, 1) for p in result.contributors)
    step = 1.0 / 2**19
    assert np.abs(result.weighted_sum - ref).max() <= len(result.contributors) * step
    assert abs(result.total_weight - 10.0 * len(result.contributors)) <= 1e-3


def _flag_reasons(check: TrustCheck) -> dict[str, str]:
    return {f["participant"]: f["reason"] for f in check.registry.flags}


@pytest.mark.parametrize("poison", ["scale_minus_5", "backdoor_shift"])
def test_a_poisoned_input_behind_an_honest_cover_report_is_flagged(poison: str) -> None:
    check = _check()
    honest = _group(8)
    bad = {"p06", "p07"}
    sent = poisoned(honest, bad, poison)
    router = Rewriting("reply_to_unmask_request", lambda _, payload: payload)
    result = _run(check, sent, liars={p: (honest[p], "nowhere") for p in bad}, router=router)
    for pid in bad:
        assert result.excluded[pid] == "untrusted: report does not match its masked input"
        assert _flag_reasons(check)[pid] == "report does not match its masked input"
    assert not bad & set(result.contributors)
    assert set(_flag_reasons(check)) == bad  # no honest participant flagged
    _exact(result, sent)
    # the flagged were unmasked as dropouts: key shares only, never their self-mask shares
    assert len(router.seen) >= 3
    for payload in router.seen:
        resp = decode_message(payload, UnmaskResponse)
        assert not bad & set(resp.b_shares)
        assert bad & set(resp.s_shares)


def test_the_old_public_kernel_no_longer_hides_a_perturbation() -> None:
    """A perturbation in the kernel of the projection that was public before the inputs
    (what the sealed summary used) is visible in the bound sketch: R is drawn after."""
    check = _check()
    honest = _group(8, seed=1)
    sent = dict(honest)
    buckets, signs = sketch_projection(D, dim=256, seed=check._projection_seed(SESSION))
    kernel = np.zeros(D, dtype=np.float32)
    for b in range(4):  # four pairs of coordinates, each cancelling in its old bucket
        same = np.flatnonzero(buckets == b)[:2]
        kernel[same[0]] = 0.9 * signs[same[0]]
        kernel[same[1]] = -0.9 * signs[same[1]]
    old = np.bincount(buckets, weights=signs * kernel.astype(np.float64), minlength=256)
    assert np.abs(old).max() < 1e-6  # invisible to the old public sketch
    sent["p05"] = (honest["p05"] + kernel).astype(np.float32)
    result = _run(check, sent)  # every participant reports honestly
    assert "p05" in _flag_reasons(check)
    assert not any(w in _flag_reasons(check)["p05"] for w in ("report", "dispute"))
    assert "p05" not in result.contributors
    _exact(result, sent)


def test_a_lie_moved_into_a_pair_projection_is_a_dispute_then_the_liar_is_named() -> None:
    check = _check()
    honest = _group(8, seed=2)
    sent = dict(honest)
    sent["p07"] = (-5.0 * honest["p07"]).astype(np.float32)
    result = _run(check, sent, liars={"p07": (honest["p07"], "pair:p02")})
    assert "p07" not in result.contributors and "p02" not in result.contributors
    assert result.excluded["p07"] == "untrusted: false mask projection in the dispute with p02"
    assert "not blamed" in result.excluded["p02"]
    assert set(_flag_reasons(check)) == {"p07"}  # the honest peer gets no strike
    _exact(result, sent)


def test_a_lie_moved_into_the_self_mask_projection_discards_the_aggregate() -> None:
    check = _check()
    honest = _group(8, seed=3)
    sent = dict(honest)
    sent["p07"] = (-5.0 * honest["p07"]).astype(np.float32)
    with pytest.raises(AggregateDiscarded) as caught:
        _run(check, sent, liars={"p07": (honest["p07"], "q")})
    assert set(caught.value.flagged) == {"p07"}
    assert _flag_reasons(check) == {"p07": "false self-mask projection q (found after unmasking)"}


def test_a_lie_moved_towards_a_dropped_neighbour_discards_the_aggregate() -> None:
    check = _check()
    honest = _group(8, seed=4)
    sent = dict(honest)
    sent["p07"] = (-5.0 * honest["p07"]).astype(np.float32)
    made: dict[str, SecAggClient] = {}
    plan = DropoutPlan({"p03": Stage.INPUT})  # shared its keys, never sent an input
    with pytest.raises(AggregateDiscarded):
        _run(check, sent, liars={"p07": (honest["p07"], "pair:p03")}, dropouts=plan, made=made)
    liar = made["p07"]
    assert isinstance(liar, LyingClient) and "p03" in liar.neighbours_reported
    assert set(_flag_reasons(check)) == {"p07"}
    assert "towards p03" in _flag_reasons(check)["p07"]


def test_a_report_that_does_not_open_flags_its_sender() -> None:
    check = _check()
    sent = _group(8, seed=6)
    result = _run(check, sent, liars={"p04": (sent["p04"], "garbage")})
    assert result.excluded["p04"].startswith("untrusted: binding report rejected")
    assert set(_flag_reasons(check)) == {"p04"}
    _exact(result, sent)


def test_a_report_naming_a_non_neighbour_flags_its_sender() -> None:
    """Degree 6 in a group of 12: some members are no neighbour of p00."""
    check = _check()
    sent = _group(12, seed=7)
    settings = MaskSettings(max_weight=128.0, degree=6, corrupt_fraction=0.0)
    params = session_parameters(
        12, dropout=settings.expected_dropout, corrupt=settings.corrupt_fraction, degree=6
    )
    graph_seed = graph_seed_from(JOINT, session=SESSION)
    graph = neighbours_of("p00", sorted(sent), params.degree, seed=graph_seed)
    stranger = sorted(set(sent) - graph - {"p00"})[0]
    made: dict[str, SecAggClient] = {}
    agg = MaskedAggregator(
        settings=settings,
        min_contributors=3,
        client_type=_factory({"p00": (sent["p00"], f"stranger:{stranger}")}, made),
    )
    inputs = {pid: ClientInput(update=sent[pid], weight=10.0) for pid in sent}
    vet = check.vet_for(session=SESSION, iteration=1, model_id="m")
    result = agg.aggregate(
        session=SESSION, inputs=inputs, vet=vet, joint_seed=JOINT, model_digest=MODEL
    )
    assert result.excluded["p00"] == f"untrusted: report names non-neighbours ['{stranger}']"
    assert set(_flag_reasons(check)) == {"p00"}
    _exact(result, sent)


def test_an_omitted_projection_costs_one_iteration_and_blames_nobody() -> None:
    """The availability limit (threat_model.md): a silent side of a dispute cannot be
    blamed without risking to frame an honest member; nothing poisoned gets in."""
    check = _check()
    sent = _group(8, seed=5)
    result = _run(check, sent, liars={"p07": (sent["p07"], "omit:p01")})
    assert {"p07", "p01"}.isdisjoint(result.contributors)
    assert "not blamed" in result.excluded["p07"] and "not blamed" in result.excluded["p01"]
    assert _flag_reasons(check) == {}
    _exact(result, sent)


@pytest.mark.parametrize("seed", range(6))
def test_honest_groups_are_never_flagged_by_the_binding_and_stay_exact(seed: int) -> None:
    check = _check()
    sent = _group(7 + seed % 3, seed=10 + seed)
    plan = DropoutPlan(
        {"p01": Stage.INPUT} if seed % 3 == 1 else {"p02": Stage.UNMASK} if seed % 3 == 2 else {}
    )
    joint = hashlib.sha256(bytes([seed])).digest()
    result = _run(check, sent, dropouts=plan, joint=joint)
    for why in _flag_reasons(check).values():
        assert not any(w in why for w in BINDING_WORDS), why
    if seed % 3 == 2:  # vanished before its report: left out, not blamed
        assert "p02" not in result.contributors
        assert "p02" not in _flag_reasons(check)
    _exact(result, sent)


# --- a lying coordinator ------------------------------------------------------------


class Rewriting(Router):
    """Rewrites (and keeps) the messages of one kind on the wire."""

    def __init__(self, kind: str, rewrite: Callable[[str, bytes], bytes]) -> None:
        super().__init__()
        self.kind, self.rewrite = kind, rewrite
        self.seen: list[bytes] = []

    def send(self, *, session: str, sender: str, receiver: str, kind: str, payload: bytes) -> bytes:
        if kind == self.kind:
            self.seen.append(payload)
            return self.rewrite(receiver, payload)
        return payload


def _with_verdict(payload: bytes, data: bytes, sig: bytes) -> bytes:
    req = decode_message(payload, UnmaskRequest)
    return encode_message(
        UnmaskRequest(req.session, req.survivors, req.dropped, req.signatures, data, sig)
    )


def _refused_by_all(check: TrustCheck, router: Router, session: str = SESSION) -> None:
    made: dict[str, SecAggClient] = {}
    with pytest.raises(ThresholdNotMet):
        _run(check, _group(6), router=router, made=made, session=session)
    for client in made.values():
        assert client.stage is ClientStage.UNMASK  # nothing revealed


def test_an_unmask_request_without_a_verdict_is_refused() -> None:
    _refused_by_all(_check(), Rewriting("unmask_request", lambda _, p: _with_verdict(p, b"", b"")))


def test_a_forged_verdict_is_refused() -> None:
    forger = IdentityKey.generate()
    data, sig = MaskVerdict(SESSION, {}, {}).sign(forger)
    _refused_by_all(_check(), Rewriting("unmask_request", lambda _, p: _with_verdict(p, data, sig)))


def test_a_verdict_of_another_session_is_refused() -> None:
    check = _check()
    first = Rewriting("unmask_request", lambda _, p: p)
    _run(check, _group(6), router=first, session="it0001/m")
    old = decode_message(first.seen[0], UnmaskRequest)  # the auditor's real, signed verdict
    replay = Rewriting(
        "unmask_request", lambda _, p: _with_verdict(p, old.verdict, old.verdict_signature)
    )
    _refused_by_all(check, replay, session="it0002/m")


def test_a_verdict_that_shrinks_the_aggregate_below_the_threshold_is_refused() -> None:
    """Coordinator and auditor collude (the auditor's real key signs): leaving out all
    but two members would unmask a sum of two. Clients refuse: SecAgg+ privacy does not
    rest on the auditor."""
    check = _check()
    group = _group(6)
    left = {p: "colluding auditor" for p in sorted(group)[2:]}
    data, sig = MaskVerdict(SESSION, {}, left).sign(check.auditor.identity)
    made: dict[str, SecAggClient] = {}
    router = Rewriting("unmask_request", lambda _, p: _with_verdict(p, data, sig))
    with pytest.raises(ThresholdNotMet):
        _run(check, group, router=router, made=made)
    for client in made.values():
        assert client.stage is ClientStage.UNMASK  # nothing revealed


def test_the_auditor_signs_one_verdict_per_session() -> None:
    """A coordinator that wants a second (different) verdict to show some clients."""
    check = _check()
    vet = check.vet_for(session=SESSION, iteration=1, model_id="m")
    captured: list[Any] = []
    real_judge = vet.judge

    def judge_twice(request: Any) -> tuple[bytes, bytes]:
        captured.append(request)
        return real_judge(request)

    vet.judge = judge_twice  # type: ignore[method-assign]
    inputs = {p: ClientInput(update=u, weight=10.0) for p, u in _group(6).items()}
    MaskedAggregator(settings=SETTINGS, min_contributors=3).aggregate(
        session=SESSION, inputs=inputs, vet=vet, joint_seed=JOINT, model_digest=MODEL
    )
    with pytest.raises(StageError, match="one per session"):
        real_judge(captured[0])


def test_a_survivor_list_with_a_false_digest_of_its_input_is_refused() -> None:
    def lie(receiver: str, payload: bytes) -> bytes:
        msg = decode_message(payload, SurvivorList)
        if receiver != "p00":
            return payload
        digests = dict(msg.digests)
        digests["p00"] = bytes(32)  # the coordinator would choose the projection
        return encode_message(SurvivorList(msg.session, msg.survivors, digests))

    check = _check()
    made: dict[str, SecAggClient] = {}
    result = _run(check, _group(6), router=Rewriting("survivor_list", lie), made=made)
    assert "not the hash of what it sent" in result.excluded["p00"]
    assert made["p00"].stage is ClientStage.CONSISTENCY
    assert "p00" not in _flag_reasons(check)  # it is left out, not blamed
