"""P6 validation vote: participants score their peers' updates on their own records.

The rule and the ballots are tested as functions; the vote itself as the ``plain/ballot``
stage of whole runs (securepool.runner.start_job), every attack performed from the
attacker's side of the wire: lying nodes (sign-flippers that stuff their ballots), a
lying coordinator (crafted ballot requests sent to a node) and a lying link (a driver
that rewrites a ballot on its way back).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crypto.errors import ConfigError, DecryptionError, MessageError
from crypto.hpke import SummaryOpeningKey
from protocols.ballots import decode_ballot, encode_ballot, open_ballot, seal_ballot
from protocols.summaries import Summary, summarize
from securepool.config import parse_config
from securepool.node.app import ParticipantNode
from securepool.node.attacker import AttackerNode
from securepool.node.wire import BallotRequest, NodeStage, PlainJudgeRequest, Reply
from securepool.runner import start_job
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig, VotingRule
from securepool.trust.voting import validation_vote

# --- the rule ------------------------------------------------------------------------


def test_plurality_of_best_scores_wins() -> None:
    ballots = {
        "a": {"b": 0.2, "c": 0.5, "a": 0.0},  # own entry ignored -> votes b
        "b": {"a": 0.4, "c": 0.3},  # votes c
        "c": {"a": 0.9, "b": 0.1},  # votes b
        "outsider": {"c": 0.0},  # not a candidate: no vote
    }
    assert validation_vote(ballots, ["a", "b", "c"]) == "b"
    assert validation_vote({}, ["a", "b"]) is None


def test_ties_go_to_the_lowest_median_loss_then_the_name() -> None:
    ballots = {"a": {"b": 0.2, "c": 0.9}, "b": {"a": 0.3, "c": 0.1}, "c": {"a": 0.1, "b": 0.4}}
    # one vote each for b, c, a; medians: a 0.2, b 0.3, c 0.5
    assert validation_vote(ballots, ["a", "b", "c"]) == "a"
    same = {"a": {"b": 0.1}, "b": {"a": 0.1}}
    assert validation_vote(same, ["a", "b"]) == "a"


def _summaries(updates: dict[str, np.ndarray]) -> dict[str, Summary]:
    """Each update's summary, as the coordinator computes it in plaintext mode."""
    return {p: summarize(u.astype(np.float32), dim=64, seed=bytes(32)) for p, u in updates.items()}


def _seal_ballots(auditor: Auditor, ballots: dict[str, dict[str, float]]) -> dict[str, bytes]:
    key = auditor.public_key()
    return {v: seal_ballot(b, auditor_public=key, session="s", voter=v) for v, b in ballots.items()}


def test_ballot_wire_format_round_trips_and_refuses_bad_input() -> None:
    scores = {"a": 0.25, "b-2": 1.5}
    assert decode_ballot(encode_ballot(scores)) == scores
    good = encode_ballot(scores)
    with pytest.raises(MessageError, match="not a valid identifier"):  # ids have one spelling
        decode_ballot(encode_ballot({"bé": 1.5}))
    with pytest.raises(MessageError, match="version"):
        decode_ballot(b"\x02" + good[1:])
    with pytest.raises(MessageError, match="truncated"):
        decode_ballot(good[:-1])
    with pytest.raises(MessageError, match="trailing"):
        decode_ballot(good + b"\x00")
    with pytest.raises(MessageError, match="NaN or infinite"):
        decode_ballot(encode_ballot({"a": float("inf")}))
    with pytest.raises(MessageError, match="twice"):
        entry = encode_ballot({"a": 0.25})[3:]
        decode_ballot(b"\x01\x00\x02" + entry + entry)
    with pytest.raises(MessageError, match="header"):
        decode_ballot(b"\x01")


def test_sealed_ballot_opens_only_for_its_session_and_voter() -> None:
    key = SummaryOpeningKey()
    sealed = seal_ballot({"a": 0.5}, auditor_public=key.public_bytes(), session="s", voter="v")
    assert open_ballot(key, sealed, session="s", voter="v") == {"a": 0.5}
    for session, voter in (("s2", "v"), ("s", "w")):  # replayed or re-attributed: refused
        with pytest.raises(DecryptionError):
            open_ballot(key, sealed, session=session, voter=voter)
    with pytest.raises(DecryptionError):
        open_ballot(key, sealed[:-1] + bytes([sealed[-1] ^ 1]), session="s", voter="v")


def _stuff(ballot: Mapping[str, float], voter: str, accomplices: set[str]) -> dict[str, float]:
    """A colluder's ballot: an accomplice scores best, everyone else worst."""
    return {c: 0.0 if c in accomplices else 9.0 for c in ballot if c != voter}


def test_stuffed_ballots_of_a_minority_do_not_elect_an_attacker() -> None:
    """The attack, performed: two colluders score each other best; the honest majority's
    votes still elect an honest participant, and the colluders' sign-flipped updates are
    flagged."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=500)
    honest = {f"h{i}": direction + 0.3 * rng.normal(size=500) for i in range(6)}
    bad = {"m0": -(direction + 0.3 * rng.normal(size=500)), "m1": -direction}
    updates = {**honest, **bad}
    # honest voters: models close to the shared direction score best
    ballots = {
        v: {c: float(np.linalg.norm(u - direction)) for c, u in updates.items() if c != v}
        for v in updates
    }
    stuffed = {v: _stuff(b, v, set(bad)) if v in bad else b for v, b in ballots.items()}
    assert min(stuffed["m0"], key=stuffed["m0"].__getitem__) == "m1"
    auditor = Auditor(TrustConfig(enabled=True, voting=VotingRule.VALIDATION, sketch_dim=64))
    sealed = _seal_ballots(auditor, stuffed)
    verdict, _ = auditor.vet_opened("s", _summaries(updates), ballots=sealed)
    assert verdict.trusted in honest
    assert set(verdict.flagged) == {"m0", "m1"}


def test_a_colluding_majority_wins_the_vote() -> None:
    """The limit threat_model.md states, performed: when colluders are a majority of a
    group, their stuffed ballots elect one of their own (any plurality rule has this)."""
    losses = {"h0": 0.1, "h1": 0.1, "m0": 5.0, "m1": 5.0, "m2": 5.0}
    honest = {v: {c: losses[c] for c in losses if c != v} for v in ("h0", "h1")}
    stuffed = {v: {c: 0.0 if c == "m0" else 9.0 for c in losses if c != v} for v in ("m1", "m2")}
    stuffed["m0"] = {c: 0.0 if c == "m1" else 9.0 for c in losses if c != "m0"}
    assert validation_vote({**honest, **stuffed}, losses) in {"m0", "m1"}


def test_a_bad_ballot_flags_its_voter_and_the_vote_goes_on() -> None:
    rng = np.random.default_rng(1)
    updates = {f"h{i}": 1.0 + 0.1 * rng.normal(size=200) for i in range(4)}
    ballots = {v: {c: 0.5 for c in updates if c != v} for v in updates}
    ballots["h3"] = {"h0": float("nan")}
    auditor = Auditor(TrustConfig(enabled=True, voting=VotingRule.VALIDATION, sketch_dim=64))
    sealed = _seal_ballots(auditor, ballots)
    sealed["h2"] = b"\x00" * 80  # does not open
    verdict, _ = auditor.vet_opened("s", _summaries(updates), ballots=sealed)
    assert "NaN or infinite" in verdict.flagged["h3"]
    assert verdict.flagged["h2"].startswith("ballot rejected")
    assert verdict.trusted in {"h0", "h1"}


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_validation_vote_is_refused_outside_plaintext_mode(mode: str) -> None:
    with pytest.raises(ConfigError, match=r"voting = 'validation'.*plaintext"):
        parse_config(
            {"aggregation": {"mode": mode}, "trust": {"enabled": True, "voting": "validation"}}
        )


# --- the wire ------------------------------------------------------------------------


def test_ballot_request_and_judge_request_round_trip_and_refuse_bad_input() -> None:
    params = np.arange(4, dtype=np.float32)
    cands = {"p01": np.ones(4, np.float32), "p00": -np.ones(4, np.float32)}
    raw = BallotRequest("it0001/lr", "lr", params, cands).to_bytes()
    back = BallotRequest.from_bytes(raw)
    assert (back.session, back.model_id, sorted(back.candidates)) == (
        "it0001/lr",
        "lr",
        ["p00", "p01"],
    )
    assert np.array_equal(back.params, params) and np.array_equal(
        back.candidates["p00"], cands["p00"]
    )
    with pytest.raises(MessageError, match="trailing"):
        BallotRequest.from_bytes(raw + b"\x00")
    with pytest.raises(MessageError, match=r"truncated|longer"):
        BallotRequest.from_bytes(raw[:-1])
    one = BallotRequest("s", "lr", params, {"p00": params}).to_bytes()
    entry = 2 + 3 + 8 + 4 * params.size  # id "p00" and its vector
    twice = one[: -(2 + entry)] + b"\x00\x02" + 2 * one[-entry:]
    with pytest.raises(MessageError, match="twice"):
        BallotRequest.from_bytes(twice)
    judge = PlainJudgeRequest("s", 8, {"p00": b"y", "p01": b"z"}, {"p01": b"b", "p02": b"c"})
    assert PlainJudgeRequest.from_bytes(judge.to_bytes()) == judge


# --- whole runs ----------------------------------------------------------------------

RUN = """
[run]
seed = 5
runtime = "{runtime}"
[data]
participants = {n}
[pool]
models = [{{ id = "lr", arch = "logreg" }}]
[assignment]
min_group_size = {group}
beacon = "seeded-insecure"
[training]
epochs = 1
lr = 0.5
[convergence]
max_iterations = {iterations}
error_range = [0.0, 0.0001]
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "plaintext"
[trust]
enabled = true
voting = "validation"
{trust}
"""

#: P6 set so that honest nodes are never flagged (screens off, a fixed threshold near the
#: largest cosine difference): every flag is then the attack's
QUIET = """strikes = 1
threshold_rule = "fixed"
threshold = 1.9
duplicate_ratio = 0.0
central_ratio = 0.0
align_floor = -1.0
"""


def _config(
    tmp_path: Path,
    *,
    n: int = 6,
    group: int = 3,
    iterations: int = 1,
    runtime: str = "inprocess",
    trust: str = QUIET,
    extra: str = "",
) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(
        RUN.format(runtime=runtime, n=n, group=group, iterations=iterations, trust=trust) + extra
    )
    return path


class Rewire:
    """A lying link: wraps the runtime's driver, keeps every stage (with how many nodes
    answered it) and hands every reply to ``rewrite`` on its way back."""

    def __init__(self, inner: Any, rewrite: Callable[[str, str, bytes], bytes]) -> None:
        self.inner, self.rewrite = inner, rewrite
        self.stages: list[tuple[str, int]] = []

    def nodes(self) -> tuple[str, ...]:
        return tuple(self.inner.nodes())

    def exchange(self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any) -> Any:
        replies = self.inner.exchange(stage, batch, timeout=timeout, **kw)
        self.stages.append((stage, sum(1 for r in replies.values() if _ok(r))))
        return {p: r if r is None else self.rewrite(stage, p, r) for p, r in replies.items()}

    def close(self) -> None:
        self.inner.close()


def _ok(raw: bytes | None) -> bool:
    return raw is not None and Reply.from_bytes(raw).ok


def _tamper_ballot_of(victim: str) -> Callable[[str, str, bytes], bytes]:
    """Flip the last byte of ``victim``'s sealed ballot (its reply to plain/ballot)."""

    def rewrite(stage: str, pid: str, raw: bytes) -> bytes:
        if stage != NodeStage.PLAIN_BALLOT.value or pid != victim:
            return raw
        reply = Reply.from_bytes(raw)
        body = reply.body[:-1] + bytes([reply.body[-1] ^ 1])
        return Reply(reply.ok, body, reply.meta).to_bytes()

    return rewrite


def _patch_driver(
    monkeypatch: pytest.MonkeyPatch, runtime: str, rewrite: Callable[[str, str, bytes], bytes]
) -> list[Rewire]:
    """Every driver the runner's coordinator builds goes through :class:`Rewire`."""
    from securepool.coordinator import launch

    built: list[Rewire] = []
    name = "InProcessDriver" if runtime == "inprocess" else "MultiprocessDriver"
    real = getattr(launch, name)

    def factory(*args: Any, **kw: Any) -> Rewire:
        built.append(Rewire(real(*args, **kw), rewrite))
        return built[-1]

    monkeypatch.setattr(launch, name, factory)
    return built


def _patch_nodes(monkeypatch: pytest.MonkeyPatch, cls: Callable[[str], type]) -> None:
    """The in-process runtime builds ``cls(pid)`` for participant ``pid``."""
    from securepool.coordinator import launch

    monkeypatch.setattr(launch, "participant_class", lambda cfg, pid: cls(pid))


def _flags(summary: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(summary["trust"]["flags"])


def test_the_ballots_elect_the_trusted_participant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every voter scores its group's highest id best: that member is trusted in every
    verdict (the nearest-neighbour vote, the rule without ballots, would pick it by
    chance only), and the vote costs one round trip, ``plain/ballot``, before the
    auditor's ``plain/judge``."""

    class Favours(ParticipantNode):
        def score_candidates(self, model_id: str, params: Any, candidates: Any) -> dict[str, float]:
            best = max([*candidates, self.pid])
            return {c: 0.0 if c == best else 1.0 for c in candidates}

    _patch_nodes(monkeypatch, lambda pid: Favours)
    drivers = _patch_driver(monkeypatch, "inprocess", lambda stage, pid, raw: raw)
    records: list[Any] = []
    summary = start_job(
        _config(tmp_path, iterations=2), tmp_path / "run", on_iteration=records.append
    )
    verdicts = summary["trust"]["verdicts"]
    assert len(verdicts) == 2 and not _flags(summary)
    for verdict, record in zip(verdicts, records, strict=True):
        (group,) = record.groups
        assert group.status == "aggregated" and len(group.contributors) == 6
        assert verdict["trusted"] == max(group.contributors)
    stages = [s for s, _ in drivers[0].stages]
    for i, stage in enumerate(stages):
        if stage == "train":
            assert stages[i + 1 : i + 3] == ["plain/ballot", "plain/judge"]
    assert stages.count("plain/ballot") == 2
    asked = dict(drivers[0].stages)["plain/ballot"]
    assert asked == 6  # every member answered with its ballot


def test_sign_flippers_stuffing_their_ballots_are_marked(tmp_path: Path) -> None:
    """A plaintext run, 10 participants, 2 sign-flipping attacker nodes that also stuff
    their ballots (each scores the other attacker best; the misalignment screen is off,
    so their updates and ballots take part in the vote): the honest majority's ballots
    elect an honest participant in every verdict and the attackers are marked. The
    stuffing is AttackerNode's own (score_candidates), as configured by [attack]."""
    cfg_path = _config(
        tmp_path,
        n=10,
        group=5,
        iterations=3,
        trust="align_floor = -1.0\n",
        extra='[attack]\nenabled = true\nkind = "sign_flip"\nfraction = 0.2\n',
    )
    from securepool.config import parse_toml
    from securepool.node.attacker import malicious_ids

    malicious = malicious_ids(parse_config(parse_toml(cfg_path.read_text(), cfg_path)))
    summary = start_job(cfg_path, tmp_path / "run")
    assert set(summary["attack"]["malicious"]) == malicious and len(malicious) == 2
    assert set(summary["untrusted_participants"]) == malicious
    trail = json.loads((tmp_path / "run" / "summary.json").read_text())["trust"]
    assert all(m["participant"] in malicious for m in trail["marks"])
    assert trail["verdicts"] and all(v["trusted"] not in malicious for v in trail["verdicts"])


def test_a_coordinator_gets_one_ballot_per_session_on_what_was_trained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lying coordinator sends a node crafted ballot requests first (another session,
    another global model, a non-member, a misshapen update): each is refused and costs
    the node nothing; the genuine one is answered once, its replay refused."""
    refusals: dict[str, str] = {}
    answered: list[bytes] = []

    class Lies(Rewire):
        def exchange(
            self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
        ) -> Any:
            if stage != NodeStage.PLAIN_BALLOT.value:
                return super().exchange(stage, batch, timeout=timeout, **kw)
            req = BallotRequest.from_bytes(batch["p00"])
            size = req.params.size
            crafted = {
                "session": BallotRequest("it9999/lr", "lr", req.params, req.candidates),
                "global": BallotRequest(req.session, "lr", req.params + 1, req.candidates),
                "member": BallotRequest(
                    req.session, "lr", req.params, {**req.candidates, "p99": req.params}
                ),
                "shape": BallotRequest(
                    req.session, "lr", req.params, {"p01": np.zeros(size + 1, np.float32)}
                ),
            }
            for what, lie in crafted.items():
                raw = self.inner.exchange(stage, {"p00": lie.to_bytes()}, timeout=timeout)
                reply = Reply.from_bytes(raw["p00"])
                assert not reply.ok, what
                refusals[what] = f"{reply.meta['error']}: {reply.meta['reason']}"
            replies = super().exchange(stage, batch, timeout=timeout, **kw)
            answered.append(replies["p00"])
            again = self.inner.exchange(stage, {"p00": batch["p00"]}, timeout=timeout)
            refusals["replay"] = str(Reply.from_bytes(again["p00"]).meta)
            return replies

    from securepool.coordinator import launch

    real = launch.InProcessDriver
    monkeypatch.setattr(launch, "InProcessDriver", lambda apps: Lies(real(apps), lambda *a: a[2]))
    summary = start_job(_config(tmp_path), tmp_path / "run")
    assert set(refusals) == {"session", "global", "member", "shape", "replay"}
    for what in ("session", "global", "member", "shape"):
        assert refusals[what].startswith("SecurityViolation"), refusals[what]
    assert "no session to vote in" in refusals["replay"]
    (raw,) = answered
    assert raw is not None and Reply.from_bytes(raw).ok
    assert not _flags(summary)  # the genuine ballots all opened


def test_a_ballot_tampered_with_on_the_wire_flags_its_voter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lying link flips a byte of p02's sealed ballot: it does not open at the
    auditor, which flags p02 (its update leaves the aggregate); nobody else is."""
    _patch_driver(monkeypatch, "inprocess", _tamper_ballot_of("p02"))
    summary = start_job(_config(tmp_path), tmp_path / "run")
    flags = _flags(summary)
    assert [f["participant"] for f in flags] == ["p02"]
    assert flags[0]["reason"].startswith("ballot rejected")
    (excluded,) = summary["excluded"]["p02"]
    assert excluded["reason"].startswith("untrusted: ballot rejected")


def test_the_ballot_stage_runs_across_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """runtime = "multiprocess": every node scores and seals in its own process, the
    auditor opens the ballots in its own; the one tampered with on the way flags its
    voter, every other opens."""
    drivers = _patch_driver(monkeypatch, "multiprocess", _tamper_ballot_of("p01"))
    summary = start_job(_config(tmp_path, n=4, runtime="multiprocess"), tmp_path / "run")
    stages = dict(drivers[0].stages)
    assert stages["plain/ballot"] == 4  # every member answered
    flags = _flags(summary)
    assert [f["participant"] for f in flags] == ["p01"]
    assert flags[0]["reason"].startswith("ballot rejected")
    (verdict,) = summary["trust"]["verdicts"]
    assert verdict["trusted"] in {"p00", "p02", "p03"}


def test_a_node_rebuilt_for_every_message_votes_from_its_session_file(tmp_path: Path) -> None:
    """As Flower runs it: a fresh ParticipantNode for every message, over its state
    directory. What it keeps from train to vote is in its session file between the two
    stages, gone once it voted; every ballot is cast and opens."""
    import tomllib

    from split_helpers import coordinator_over, node_builders

    from crypto.signing import IdentityKey
    from securepool.node.app import SESSION_FILE
    from securepool.node.auditor import AUDITOR_ID, AuditorNode
    from securepool.runtime.inprocess import InProcessDriver

    cfg = parse_config(tomllib.loads(_config(tmp_path, n=4).read_text()))
    builders, registry = node_builders(cfg, tmp_path / "nodes")
    held: dict[str, bool] = {}

    class PerMessage:
        def __init__(self, pid: str) -> None:
            self.pid = pid

        def handle(self, stage: str, payload: bytes) -> bytes:
            reply: bytes = builders[self.pid]().handle(stage, payload)
            session = tmp_path / "nodes" / self.pid / SESSION_FILE
            if stage in ("train", "plain/ballot"):
                doc = json.loads(session.read_text()) if session.exists() else {}
                held[f"{self.pid} {stage}"] = doc.get("ballot") is not None
            return reply

    answered: list[int] = []

    class Counting(InProcessDriver):
        def exchange(
            self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
        ) -> Any:
            replies = super().exchange(stage, batch, timeout=timeout, **kw)
            if stage == NodeStage.PLAIN_BALLOT.value:
                answered.append(sum(1 for r in replies.values() if _ok(r)))
            return replies

    apps: dict[str, Any] = {pid: PerMessage(pid) for pid in builders}
    key = IdentityKey.generate()
    registry[AUDITOR_ID] = key.public_bytes()
    apps[AUDITOR_ID] = AuditorNode(
        settings=cfg.he_settings(),
        identity=key,
        registry=registry,
        state_dir=tmp_path / "auditor",
        corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
        weighting=cfg.aggregation.weighting,
        trust=cfg.trust,
    )
    coord = coordinator_over(cfg, apps, registry, Counting)
    coord.run()
    assert answered == [4]
    assert coord.trust is not None and not coord.trust.report()["flags"]
    assert all(held[f"{pid} train"] for pid in builders)  # kept between the stages
    assert not any(held[f"{pid} plain/ballot"] for pid in builders)  # gone once voted


def test_an_attacker_node_scores_its_accomplice_best() -> None:
    """AttackerNode.score_candidates (what it seals in plain/ballot): honest losses on its
    own records, except the first malicious peer, which gets the best score."""
    from securepool.config import parse_config, parse_toml
    from securepool.coordinator.launch import InProcessNodes

    text = (
        '[run]\nseed = 1\n[data]\ndataset = "digits"\nparticipants = 6\n'
        '[[pool.models]]\nid = "lr"\narch = "logreg"\n'
        '[attack]\nenabled = true\nkind = "sign_flip"\nparticipants = ["p01", "p03"]\n'
    )
    cfg = parse_config(parse_toml(text, Path("x.toml")))
    nodes = InProcessNodes(cfg)
    attacker, honest = nodes.apps["p01"], nodes.apps["p02"]
    assert isinstance(attacker, AttackerNode) and not isinstance(honest, AttackerNode)
    d = 64 * 10 + 10
    rng = np.random.default_rng(0)
    params = np.zeros(d, np.float32)
    candidates = {p: rng.normal(0, 0.1, d).astype(np.float32) for p in ("p00", "p02", "p03")}
    fair = honest.score_candidates("lr", params, candidates)
    stuffed = attacker.score_candidates("lr", params, candidates)
    assert min(stuffed, key=lambda p: stuffed[p]) == "p03"  # its accomplice
    assert stuffed["p00"] == pytest.approx(
        ParticipantNode.score_candidates(attacker, "lr", params, candidates)["p00"]
    )
    assert set(fair) == set(stuffed)
    nodes.close()
