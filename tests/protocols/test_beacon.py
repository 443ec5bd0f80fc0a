"""The commit-reveal beacon, attacked from the coordinator's side of the wire.

Every attack crafts coordinator messages (or rewrites a participant's) and feeds them to
the real :class:`BeaconParticipant` / :class:`BeaconCoordinator` state machines.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.errors import MessageError, SecurePoolError, SecurityViolation, StageError
from crypto.signing import IdentityKey
from protocols.beacon import (
    COMMIT_LABEL,
    BeaconCoordinator,
    BeaconParticipant,
    BeaconStart,
    Commit,
    CommitList,
    Outcome,
    Reveal,
    VerifiedSignatures,
    group_joint_seed,
    joint_seed,
    nonce_commitment,
)

DIGEST = hashlib.sha256(b"pool state").digest()


def two_groups(seed: bytes, members: Sequence[str]) -> Mapping[str, tuple[str, ...]]:
    """A deterministic stand-in for securepool.assignment.assign_from_seed."""
    order = sorted(members, key=lambda p: hashlib.sha256(seed + p.encode()).digest())
    half = len(order) // 2
    return {"m0": tuple(sorted(order[:half])), "m1": tuple(sorted(order[half:]))}


class World:
    """n participants with their own keys and beacon clients, one honest coordinator."""

    def __init__(self, n: int = 6) -> None:
        self.ids = [f"p{i:02d}" for i in range(n)]
        keys = {pid: IdentityKey.generate() for pid in self.ids}
        self.registry = {pid: k.public_bytes() for pid, k in keys.items()}
        self.keys = keys
        self.clients = {
            pid: BeaconParticipant(pid, identity=keys[pid], registry=self.registry)
            for pid in self.ids
        }
        self.coordinator = BeaconCoordinator(self.registry)

    def commit_round(self, iteration: int = 1) -> tuple[bytes, dict[str, bytes], bytes]:
        start = self.coordinator.start(iteration=iteration, pool_digest=DIGEST, invited=self.ids)
        commits = {pid: c.on_start(start) for pid, c in self.clients.items()}
        for pid, raw in commits.items():
            self.coordinator.receive_commit(pid, raw)
        return start, commits, self.coordinator.commit_list()

    def reveal_round(self, clist: bytes, *, skip: Sequence[str] = ()) -> dict[str, bytes]:
        reveals = {pid: c.on_commits(clist) for pid, c in self.clients.items() if pid not in skip}
        for pid, raw in reveals.items():
            self.coordinator.receive_reveal(pid, raw)
        return reveals


def test_honest_run_everyone_agrees_on_seed_and_groups() -> None:
    w = World()
    _, _, clist = w.commit_round()
    reveals = w.reveal_round(clist)
    outcome, result = w.coordinator.finish(assign=two_groups)
    results = [c.on_outcome(outcome, assign=two_groups) for c in w.clients.values()]
    assert {r.joint_seed for r in results} == {result.joint_seed}
    assert all(r.groups == result.groups for r in results)
    assert result.withheld == {} and result.participants == tuple(w.ids)
    nonces = {pid: Reveal.from_bytes(raw).nonce for pid, raw in reveals.items()}
    assert result.joint_seed == joint_seed(iteration=1, pool_digest=DIGEST, reveals=nonces)


def test_a_steered_assignment_is_refused() -> None:
    w = World()
    _, _, clist = w.commit_round()
    w.reveal_round(clist)
    outcome, result = w.coordinator.finish(assign=two_groups)
    out = Outcome.from_bytes(outcome)
    g0, g1 = result.groups["m0"], result.groups["m1"]
    swapped = (("m0", (*g0[1:], g1[0])), ("m1", (*g1[1:], g0[0])))  # trade one member
    steered = replace(out, groups=tuple((m, tuple(sorted(g))) for m, g in swapped))
    for client in w.clients.values():
        with pytest.raises(SecurityViolation, match="steered assignment refused"):
            client.on_outcome(steered.to_bytes(), assign=two_groups)


def test_groups_from_another_seed_are_refused_too() -> None:
    # the coordinator's own choice of seed (e.g. one it ground for) gives other groups
    w = World()
    _, _, clist = w.commit_round()
    w.reveal_round(clist)
    outcome, _ = w.coordinator.finish(assign=two_groups)
    out = Outcome.from_bytes(outcome)
    for attempt in range(100):
        ground = two_groups(hashlib.sha256(b"grind%d" % attempt).digest(), w.ids)
        if tuple(sorted(ground.items())) != out.groups:
            break
    crafted = replace(out, groups=tuple(sorted(ground.items())))
    with pytest.raises(SecurityViolation, match="steered"):
        w.clients["p00"].on_outcome(crafted.to_bytes(), assign=two_groups)


def test_a_forged_reveal_is_refused() -> None:
    w = World()
    _, _, clist = w.commit_round()
    w.reveal_round(clist)
    outcome, _ = w.coordinator.finish(assign=two_groups)
    out = Outcome.from_bytes(outcome)
    forged = tuple(
        Reveal(rv.iteration, rv.participant, os.urandom(32)) if rv.participant == "p03" else rv
        for rv in out.reveals
    )
    for pid in ("p00", "p05"):
        with pytest.raises(SecurityViolation, match=r"'p03' does not open"):
            w.clients[pid].on_outcome(replace(out, reveals=forged).to_bytes(), assign=two_groups)


def test_a_swapped_reveal_is_refused() -> None:
    w = World()
    _, _, clist = w.commit_round()
    w.reveal_round(clist)
    outcome, _ = w.coordinator.finish(assign=two_groups)
    out = Outcome.from_bytes(outcome)
    by_pid = {rv.participant: rv for rv in out.reveals}
    swapped = tuple(
        Reveal(1, "p01", by_pid["p02"].nonce)
        if rv.participant == "p01"
        else Reveal(1, "p02", by_pid["p01"].nonce)
        if rv.participant == "p02"
        else rv
        for rv in out.reveals
    )
    with pytest.raises(SecurityViolation, match="forged or swapped"):
        w.clients["p00"].on_outcome(replace(out, reveals=swapped).to_bytes(), assign=two_groups)


def test_a_withholding_participant_is_dropped_and_named() -> None:
    w = World()
    _, _, clist = w.commit_round()
    w.reveal_round(clist, skip=["p04"])
    outcome, result = w.coordinator.finish(assign=two_groups)
    assert result.withheld == {"p04": "no reveal"}
    assert "p04" not in result.participants
    assert all("p04" not in g for g in result.groups.values())
    for pid, client in w.clients.items():
        if pid != "p04":
            seen = client.on_outcome(outcome, assign=two_groups)
            assert seen.withheld == {"p04": "no valid reveal"}
            assert seen.joint_seed == result.joint_seed


def test_a_reveal_that_does_not_open_its_commitment_drops_its_sender() -> None:
    w = World()
    _, _, clist = w.commit_round()
    reveals = {pid: c.on_commits(clist) for pid, c in w.clients.items()}
    reveals["p02"] = Reveal(1, "p02", os.urandom(32)).to_bytes()  # changed its mind
    reveals["p03"] = reveals["p01"]  # replays another's reveal
    for pid, raw in reveals.items():
        w.coordinator.receive_reveal(pid, raw)
    outcome, result = w.coordinator.finish(assign=two_groups)
    assert set(result.withheld) == {"p02", "p03"}
    assert "does not open" in result.withheld["p02"]
    assert "does not match" in result.withheld["p03"]
    assert w.clients["p00"].on_outcome(outcome, assign=two_groups).joint_seed == result.joint_seed


def test_a_suppressed_reveal_is_detected_by_its_owner() -> None:
    w = World()
    _, _, clist = w.commit_round()
    reveals = {pid: c.on_commits(clist) for pid, c in w.clients.items()}
    for pid, raw in reveals.items():
        if pid != "p01":  # the coordinator "loses" p01's reveal to change the seed
            w.coordinator.receive_reveal(pid, raw)
    outcome, result = w.coordinator.finish(assign=two_groups)
    assert "p01" in result.withheld
    with pytest.raises(SecurityViolation, match="own reveal missing"):
        w.clients["p01"].on_outcome(outcome, assign=two_groups)


def test_replayed_commitments_of_an_old_iteration_are_refused() -> None:
    w = World()
    old_start, old_commits, old_list = w.commit_round(iteration=1)
    w.reveal_round(old_list)
    outcome, _ = w.coordinator.finish(assign=two_groups)
    for c in w.clients.values():
        c.on_outcome(outcome, assign=two_groups)
    # iteration 2: the coordinator replays p03's iteration-1 commitment (whose nonce it
    # has seen revealed) into the list, as is and relabelled
    w.commit_round(iteration=2)
    new = CommitList.from_bytes(w.coordinator.commit_list())
    old3 = Commit.from_bytes(old_commits["p03"])
    for fake in (old3, replace(old3, iteration=2, pool_digest=new.pool_digest)):
        commits = tuple(fake if c.participant == "p03" else c for c in new.commits)
        with pytest.raises(SecurityViolation, match=r"another iteration|not signed"):
            w.clients["p00"].on_commits(replace(new, commits=commits).to_bytes())
    # the whole old commit list, or the old start, is refused outright
    with pytest.raises(SecurityViolation, match="iteration 1"):
        w.clients["p05"].on_commits(old_list)
    with pytest.raises(StageError, match="replayed"):
        w.clients["p05"].on_start(old_start)
    # and the coordinator drops a participant that replays its own old commitment
    c = BeaconCoordinator(w.registry)
    c.start(iteration=3, pool_digest=DIGEST, invited=w.ids)
    c.receive_commit("p03", old_commits["p03"])
    assert "another iteration" in c.dropped["p03"]


def test_commit_list_without_my_commitment_or_with_a_forged_one_is_refused() -> None:
    w = World()
    _, commits, clist = w.commit_round()
    parsed = CommitList.from_bytes(clist)
    without = replace(parsed, commits=tuple(c for c in parsed.commits if c.participant != "p00"))
    with pytest.raises(SecurityViolation, match="own commitment missing"):
        w.clients["p00"].on_commits(without.to_bytes())
    # the coordinator commits in p02's name with its own key
    mine = IdentityKey.generate()
    fake = Commit(1, DIGEST, "p02", os.urandom(32), b"")
    fake = replace(fake, signature=mine.sign(fake.signed_part(), label=COMMIT_LABEL))
    forged = replace(
        parsed, commits=tuple(fake if c.participant == "p02" else c for c in parsed.commits)
    )
    with pytest.raises(SecurityViolation, match="not signed by it"):
        w.clients["p00"].on_commits(forged.to_bytes())
    # and the coordinator refuses a commitment sent by someone else than its signer
    c = BeaconCoordinator(w.registry)
    c.start(iteration=1, pool_digest=DIGEST, invited=w.ids)
    c.receive_commit("p04", commits["p02"])
    assert "names 'p02'" in c.dropped["p04"]


def test_out_of_stage_messages_are_refused() -> None:
    w = World()
    start, _, clist = w.commit_round()
    client = BeaconParticipant("p00", identity=w.keys["p00"], registry=w.registry)
    with pytest.raises(StageError):
        client.on_commits(clist)
    client.on_start(start)
    with pytest.raises(StageError):
        client.on_outcome(Outcome(1, (), ()).to_bytes(), assign=two_groups)
    stranger = BeaconParticipant("p99", identity=IdentityKey.generate(), registry=w.registry)
    with pytest.raises(StageError, match="not invited"):
        stranger.on_start(start)


def test_withholding_bias_is_at_most_2_to_the_c_outcomes() -> None:
    """c colluders who see every honest reveal first can pick among 2^c seeds, no more:
    any other seed needs an honest reveal dropped, which its owner refuses."""
    w = World(8)
    colluders = ["p06", "p07"]
    _, _, clist = w.commit_round()
    reveals = {pid: Reveal.from_bytes(c.on_commits(clist)).nonce for pid, c in w.clients.items()}
    honest = {p: n for p, n in reveals.items() if p not in colluders}
    seeds = set()
    for k in range(len(colluders) + 1):
        for shown in itertools.combinations(colluders, k):
            chosen = {**honest, **{p: reveals[p] for p in shown}}
            seeds.add(joint_seed(iteration=1, pool_digest=DIGEST, reveals=chosen))
    assert len(seeds) == 2 ** len(colluders)


def test_group_joint_seed_is_per_model_and_deterministic() -> None:
    seed = os.urandom(32)
    a, b = group_joint_seed(seed, model_id="m0"), group_joint_seed(seed, model_id="m1")
    assert len(a) == 32 and a != b and a == group_joint_seed(seed, model_id="m0")
    assert a != group_joint_seed(os.urandom(32), model_id="m0")
    with pytest.raises(SecurePoolError):
        group_joint_seed(seed[:31], model_id="m0")
    with pytest.raises(SecurePoolError):
        group_joint_seed(seed, model_id="m 0")


def test_commitment_binds_iteration_and_participant() -> None:
    nonce = os.urandom(32)
    c = nonce_commitment(iteration=1, participant="p0", nonce=nonce)
    assert c != nonce_commitment(iteration=2, participant="p0", nonce=nonce)
    assert c != nonce_commitment(iteration=1, participant="p1", nonce=nonce)


# --- decoders: only MessageError, bounded ----------------------------------------------


def _samples() -> list[bytes]:
    w = World(4)
    start, commits, clist = w.commit_round()
    reveals = w.reveal_round(clist)
    outcome, _ = w.coordinator.finish(assign=two_groups)
    return [start, commits["p00"], clist, reveals["p00"], outcome]


SAMPLES = _samples()
DECODERS = [BeaconStart, Commit, CommitList, Reveal, Outcome]


@pytest.mark.parametrize(
    "cls,raw", list(zip(DECODERS, SAMPLES, strict=True)), ids=[c.__name__ for c in DECODERS]
)
def test_samples_round_trip(cls, raw: bytes) -> None:  # type: ignore[no-untyped-def]
    assert cls.from_bytes(raw).to_bytes() == raw
    with pytest.raises(MessageError):
        cls.from_bytes(raw[:-1])
    with pytest.raises(MessageError):
        cls.from_bytes(raw + b"\x00")


def test_duplicate_ids_and_bad_identifiers_are_message_errors() -> None:
    with pytest.raises(MessageError, match="twice"):
        BeaconStart.from_bytes(BeaconStart(1, DIGEST, ("a", "a")).to_bytes())
    with pytest.raises(MessageError, match="not a valid identifier"):
        BeaconStart.from_bytes(BeaconStart(1, DIGEST, ("a|b",)).to_bytes())
    with pytest.raises(MessageError, match="iteration"):
        Reveal.from_bytes(Reveal(0, "a", b"\x00" * 32).to_bytes())


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.binary(max_size=600), which=st.integers(0, len(DECODERS) - 1))
def test_fuzz_random_bytes_raise_only_message_errors(data: bytes, which: int) -> None:
    with contextlib.suppress(MessageError):  # anything else fails the test
        DECODERS[which].from_bytes(data)  # type: ignore[attr-defined]


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    which=st.integers(0, len(DECODERS) - 1),
    edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4),
    cut=st.integers(0, 10**6),
)
def test_fuzz_mutated_messages_raise_only_message_errors_and_the_state_machines_only_project_errors(
    which: int, edits: list[tuple[int, int]], cut: int
) -> None:
    raw = bytearray(SAMPLES[which])
    for pos, byte in edits:
        raw[pos % len(raw)] = byte
    data = bytes(raw[: max(1, cut % (len(raw) + 1))])
    with contextlib.suppress(MessageError):  # anything else fails the test
        DECODERS[which].from_bytes(data)  # type: ignore[attr-defined]
    # the same bytes fed to a participant at every stage: project errors only
    w = World(3)
    w.commit_round()
    client = w.clients["p00"]
    for step in ("start", "commits", "outcome"):
        try:
            if step == "start":
                client.on_start(data)
            elif step == "commits":
                client.on_commits(data)
            else:
                client.on_outcome(data, assign=two_groups)
        except SecurePoolError:
            pass
    try:
        w.coordinator.receive_commit("p01", data)
        w.coordinator.receive_reveal("p01", data)
    except SecurePoolError:
        pass


def test_shared_verified_signatures_refuse_what_verification_refuses() -> None:
    """The in-process shortcut (one VerifiedSignatures for all participants) must not
    let a forged commitment through once the genuine one has been verified."""
    w = World()
    shared = VerifiedSignatures()
    w.clients = {
        pid: BeaconParticipant(pid, identity=w.keys[pid], registry=w.registry, verified=shared)
        for pid in w.ids
    }
    _, _, clist = w.commit_round()
    parsed = CommitList.from_bytes(clist)
    w.clients["p00"].on_commits(clist)  # verifies and remembers all six
    genuine = next(c for c in parsed.commits if c.participant == "p02")
    attacker = IdentityKey.generate()
    for fake in (
        replace(genuine, commitment=os.urandom(32)),  # genuine signature, other commitment
        replace(genuine, signature=attacker.sign(genuine.signed_part(), label=COMMIT_LABEL)),
    ):
        forged = replace(
            parsed, commits=tuple(fake if c.participant == "p02" else c for c in parsed.commits)
        )
        with pytest.raises(SecurityViolation, match="not signed by it"):
            w.clients["p01"].on_commits(forged.to_bytes())
    assert w.clients["p03"].on_commits(clist)  # the genuine list still passes
