"""P6 trust check: HPKE sealing, summaries, voting, thresholds, verdicts, attacks."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from crypto.errors import DecryptionError, InvalidSignature, KeyMaterialError, MessageError
from crypto.hpke import Kem, SummaryOpeningKey, hpke_seal
from crypto.signing import IdentityKey
from protocols.summaries import open_summary, seal_summary, summarize
from protocols.verdict import Verdict
from securepool.attacks import AttackConfig, AttackKind, UpdateAttack, alie_z
from securepool.trust.auditor import Auditor
from securepool.trust.check import TrustCheck
from securepool.trust.config import (
    Difference,
    ExclusionPolicy,
    ThresholdRule,
    TrustConfig,
    VotingRule,
)
from securepool.trust.difference import difference, threshold_for
from securepool.trust.registry import UntrustedRegistry
from securepool.trust.screening import misaligned, near_duplicates, too_central
from securepool.trust.voting import krum_vote, nearest_neighbour_vote


@pytest.mark.parametrize("kem", list(Kem))
def test_hpke_round_trip_and_every_tampering_fails(kem: Kem) -> None:
    key = SummaryOpeningKey(kem)
    sealed = hpke_seal(key.public_bytes(), b"summary", info=b"s1|p01")
    assert key.open(sealed, info=b"s1|p01") == b"summary"
    with pytest.raises(DecryptionError):
        key.open(sealed, info=b"s2|p01")  # replayed into another session
    with pytest.raises(DecryptionError):
        key.open(sealed, info=b"s1|p02")  # attributed to another participant
    bad = bytearray(sealed)
    bad[-1] ^= 1
    with pytest.raises(DecryptionError):
        key.open(bytes(bad), info=b"s1|p01")
    with pytest.raises(DecryptionError):
        SummaryOpeningKey(kem).open(sealed, info=b"s1|p01")  # someone else's key
    assert "hidden" in repr(key)
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_hpke_rejects_a_bad_public_key() -> None:
    with pytest.raises(KeyMaterialError):
        hpke_seal(b"\x00" * 31, b"x", info=b"")


def test_count_sketch_is_linear_and_keeps_the_norm() -> None:
    rng = np.random.default_rng(0)
    a, b = (rng.normal(size=5000).astype(np.float32) for _ in range(2))
    seed = bytes(32)
    sa, sb = summarize(a, dim=64, seed=seed), summarize(b, dim=64, seed=seed)
    sab = summarize((a + b).astype(np.float32), dim=64, seed=seed)
    np.testing.assert_allclose(sab.sketch, sa.sketch + sb.sketch, rtol=1e-5, atol=1e-4)
    assert sa.norm == pytest.approx(float(np.linalg.norm(a.astype(np.float64))))
    raw = summarize(a, dim=0, seed=seed)
    np.testing.assert_array_equal(raw.sketch, a.astype(np.float64))


def test_sealed_summary_opens_only_in_its_context() -> None:
    key = SummaryOpeningKey()
    s = summarize(np.ones(100, dtype=np.float32), dim=16, seed=bytes(32))
    sealed = seal_summary(s, auditor_public=key.public_bytes(), session="it1/m", participant="p1")
    got = open_summary(key, sealed, session="it1/m", participant="p1", expected_dim=16)
    np.testing.assert_array_equal(got.sketch, s.sketch)
    with pytest.raises(DecryptionError):
        open_summary(key, sealed, session="it2/m", participant="p1", expected_dim=16)
    with pytest.raises(MessageError):
        open_summary(key, sealed, session="it1/m", participant="p1", expected_dim=32)


def test_voting_rules_on_hand_made_vectors() -> None:
    vecs = {
        "a": np.array([1.0, 0.0]),
        "b": np.array([1.1, 0.0]),
        "c": np.array([0.9, 0.1]),
        "d": np.array([1.0, 0.05]),
        "x": np.array([-5.0, 3.0]),
    }
    assert nearest_neighbour_vote(vecs) in {"a", "d"}
    assert krum_vote(vecs) in {"a", "d"}
    assert nearest_neighbour_vote(vecs) != "x" and krum_vote(vecs) != "x"


def test_differences_and_thresholds() -> None:
    t = np.array([1.0, 0.0])
    assert difference(np.array([1.0, 0.0]), t, Difference.RELATIVE_L2) == 0.0
    assert difference(np.array([-1.0, 0.0]), t, Difference.RELATIVE_L2) == pytest.approx(2.0)
    assert difference(np.array([-1.0, 0.0]), t, Difference.COSINE) == pytest.approx(2.0)
    assert difference(np.array([0.0, 3.0]), t, Difference.COSINE) == pytest.approx(1.0)
    diffs = {"a": 0.5, "b": 0.55, "c": 0.6, "d": 0.52, "x": 3.0}
    robust = threshold_for(diffs, rule=ThresholdRule.ROBUST, fixed=1.0, mad_k=3.0)
    assert 0.6 < robust < 3.0
    assert threshold_for(diffs, rule=ThresholdRule.FIXED, fixed=1.0, mad_k=3.0) == 1.0


def _group(n_honest: int, n_bad: int, kind: AttackKind, seed: int = 0) -> tuple[dict, set]:
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=2000)
    updates = {
        f"h{i}": (direction + 0.5 * rng.normal(size=2000)).astype(np.float32)
        for i in range(n_honest)
    }
    bad_ids = {f"m{i}" for i in range(n_bad)}
    updates.update(
        {p: (direction + 0.5 * rng.normal(size=2000)).astype(np.float32) for p in bad_ids}
    )
    attack = UpdateAttack(
        AttackConfig(enabled=True, kind=kind, participants=tuple(bad_ids)),
        participants=sorted(updates),
    )
    return attack.poison(model_id="m", updates=updates, group_size=len(updates)), bad_ids


@pytest.mark.parametrize(
    "kind", [AttackKind.SIGN_FLIP, AttackKind.SCALING, AttackKind.GAUSSIAN_NOISE, AttackKind.IPM]
)
@pytest.mark.parametrize("voting", list(VotingRule))
def test_attacks_are_detected_through_sealed_sketches(kind: AttackKind, voting: VotingRule) -> None:
    updates, bad = _group(8, 2, kind)
    check = TrustCheck(
        TrustConfig(enabled=True, voting=voting, sketch_dim=128), seed=1, model_sizes={"m": 2000}
    )
    sealed = {p: check.seal(participant=p, update=u, session="it1/m") for p, u in updates.items()}
    flagged = check.vet_for(session="it1/m", iteration=1, model_id="m")(sealed)
    assert bad <= set(flagged)  # every attacker caught
    assert not (set(flagged) - bad)  # no honest participant flagged
    assert not check.is_excluded("m0", 2)  # one strike: the update is out, m0 is not marked
    sealed = {p: check.seal(participant=p, update=u, session="it2/m") for p, u in updates.items()}
    assert bad <= set(check.vet_for(session="it2/m", iteration=2, model_id="m")(sealed))
    assert check.is_excluded("m0", 3) and not check.is_excluded("h0", 3)  # second strike


@pytest.mark.parametrize(("n_honest", "n_bad"), [(2, 1), (4, 1), (8, 2), (12, 3), (16, 4)])
def test_alie_is_screened_as_too_central_or_duplicate(n_honest: int, n_bad: int) -> None:
    """A Little Is Enough, performed: the attackers' shared update (benign mean + z x
    spread) is caught before the vote, and never elected the trusted participant."""
    assert alie_z(n_honest + n_bad, n_bad) > 0
    updates, bad = _group(n_honest, n_bad, AttackKind.ALIE, seed=n_honest)
    check = TrustCheck(TrustConfig(enabled=True, sketch_dim=256), seed=2, model_sizes={"m": 2000})
    sealed = {p: check.seal(participant=p, update=u, session="s") for p, u in updates.items()}
    flagged = check.vet_for(session="s", iteration=1, model_id="m")(sealed)
    assert set(flagged) == bad
    reasons = " ".join(flagged.values())
    assert ("near-duplicate" in reasons) == (n_bad > 1)
    assert "too central" in reasons or n_bad > 1
    verdict = check.auditor.verdicts[-1][0]
    assert verdict.trusted not in bad


def test_screening_leaves_honest_groups_alone() -> None:
    """FPR of the two screens on honest groups of every size (5 groups each)."""
    for n in range(3, 21):
        for seed in range(5):
            rng = np.random.default_rng(100 * n + seed)
            direction = rng.normal(size=256)
            vectors = {f"h{i}": direction + 0.5 * rng.normal(size=256) for i in range(n)}
            assert near_duplicates(vectors, ratio=0.1) == {}
            assert too_central(vectors, ratio=0.5) == {}
            assert misaligned(vectors, floor=-0.3) == {}


@pytest.mark.parametrize("seed", range(5))
def test_sign_flip_among_dissimilar_honest_updates_is_screened_as_misaligned(seed: int) -> None:
    """Non-IID-like group, performed: honest updates share only a weak common direction
    (pairwise cosine ~0.3), so distances barely separate a flipped one; its cosine with
    the others' median is clearly negative."""
    rng = np.random.default_rng(seed)
    common = rng.normal(size=256)
    honest = {f"h{i}": common + 1.5 * rng.normal(size=256) for i in range(8)}
    flipped = {f"m{i}": -(common + 1.5 * rng.normal(size=256)) for i in range(2)}
    flagged = misaligned({**honest, **flipped}, floor=-0.3)
    assert set(flagged) == set(flipped)
    assert all("misaligned" in r for r in flagged.values())
    assert misaligned({**honest, **flipped}, floor=-1.0) == {}  # off


@pytest.mark.parametrize("kind", [AttackKind.SCALING, AttackKind.GAUSSIAN_NOISE])
@pytest.mark.parametrize(("n_honest", "n_bad"), [(3, 1), (3, 2), (4, 2), (8, 2)])
def test_huge_outliers_do_not_make_honest_updates_look_like_duplicates(
    kind: AttackKind, n_honest: int, n_bad: int
) -> None:
    """Regression: a scale taken from all pairwise distances was inflated by scaled or
    noise updates (most pairs involve an attacker in a small group), and honest pairs
    then looked like near-duplicates."""
    updates, bad = _group(n_honest, n_bad, kind, seed=10 * n_honest + n_bad)
    attack = UpdateAttack(
        AttackConfig(enabled=True, kind=kind, participants=tuple(bad), strength=20.0),
        participants=sorted(updates),
    )
    poisoned = attack.poison(model_id="m", updates=updates, group_size=len(updates))
    vectors = {p: u.astype(np.float64) for p, u in poisoned.items()}
    assert not set(near_duplicates(vectors, ratio=0.1)) - bad
    assert not set(too_central(vectors, ratio=0.5)) - bad


def test_screens_are_off_at_zero_and_for_tiny_groups() -> None:
    v = {"a": np.ones(4), "b": np.ones(4), "c": np.zeros(4)}
    assert near_duplicates(v, ratio=0.0) == {} and too_central(v, ratio=0.0) == {}
    assert near_duplicates({"a": np.ones(4), "b": np.ones(4)}, ratio=0.1) == {}
    assert set(near_duplicates(v, ratio=0.1)) == {"a", "b"}


def test_garbage_summaries_flag_their_sender_and_the_run_goes_on() -> None:
    auditor = Auditor(TrustConfig(enabled=True, sketch_dim=8))
    key = auditor.public_key()
    good = {
        p: seal_summary(
            summarize(np.full(50, 1.0 + i / 100, dtype=np.float32), dim=8, seed=bytes(32)),
            auditor_public=key,
            session="s",
            participant=p,
        )
        for i, p in enumerate(["a", "b", "c"])
    }
    nan = summarize(np.full(50, np.nan, dtype=np.float32), dim=8, seed=bytes(32))
    sealed = {
        **good,
        "garbage": b"\x00" * 70,
        "wrongdim": seal_summary(
            summarize(np.ones(50, dtype=np.float32), dim=4, seed=bytes(32)),
            auditor_public=key,
            session="s",
            participant="wrongdim",
        ),
        "nan": seal_summary(nan, auditor_public=key, session="s", participant="nan"),
    }
    verdict, sig = auditor.vet("s", sealed, dim=8)
    assert set(verdict.flagged) >= {"garbage", "wrongdim", "nan"}
    assert "summary rejected" in verdict.flagged["garbage"]
    assert "dimension" in verdict.flagged["wrongdim"]
    assert "NaN" in verdict.flagged["nan"]
    assert verdict.trusted in {"a", "b", "c"}
    verdict.verify(auditor.identity_public(), sig)


def test_forged_verdict_is_refused() -> None:
    auditor_key, forger = IdentityKey.generate(), IdentityKey.generate()
    v = Verdict("s", "a", {"b": "too far"})
    with pytest.raises(InvalidSignature):
        v.verify(auditor_key.public_bytes(), v.sign(forger))
    sig = v.sign(auditor_key)
    with pytest.raises(InvalidSignature):  # the same signature on another session's verdict
        Verdict("s2", "a", {"b": "too far"}).verify(auditor_key.public_bytes(), sig)


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (ExclusionPolicy.NONE, [False, False, False, False]),
        (ExclusionPolicy.ROUNDS, [False, True, True, False]),
        (ExclusionPolicy.PERMANENT, [False, True, True, True]),
    ],
)
def test_registry_policies(policy: ExclusionPolicy, expected: list[bool]) -> None:
    reg = UntrustedRegistry(policy, rounds=2, strikes=1)
    assert reg.flag("p", iteration=3, model_id="m", reason="r")
    assert [reg.is_excluded("p", it) for it in (3, 4, 5, 6)] == expected
    assert not reg.is_excluded("q", 4)
    assert reg.untrusted() == ["p"]


def test_registry_marks_only_after_the_strikes_within_the_window() -> None:
    reg = UntrustedRegistry(ExclusionPolicy.ROUNDS, rounds=3, strikes=2, strike_window=3)
    assert not reg.flag("p", iteration=1, model_id="m", reason="r")
    assert not reg.flag("p", iteration=1, model_id="m2", reason="r")  # same iteration: 1 strike
    assert not reg.is_excluded("p", 2)  # the flagged update was left out; p is not marked
    assert not reg.flag("p", iteration=4, model_id="m", reason="r")  # iteration 1 fell out
    assert reg.flag("p", iteration=5, model_id="m", reason="r")
    assert reg.is_excluded("p", 6)
    assert reg.untrusted() == ["p"]
    assert reg.flagged() == ["p"]
    assert reg.marks[-1]["strikes"] == 2


def test_trust_config_problems() -> None:
    problems = TrustConfig(threshold=0, mad_k=-1, sketch_dim=-1, exclude_rounds=0).problems()
    assert len(problems) == 4
    assert TrustConfig(strikes=0).problems() == [
        "strikes must be >= 1, got 0",
    ]
    assert TrustConfig(strikes=3, strike_window=2).problems() == [
        "strike_window (2) must be >= strikes (3)"
    ]


def test_label_flip_poisons_only_the_malicious_participants_data() -> None:
    from securepool.config import DataSection
    from securepool.data import partition

    data = partition(DataSection(participants=5), seed=0)
    attack = UpdateAttack(
        AttackConfig(enabled=True, kind=AttackKind.LABEL_FLIP, participants=("p01",)),
        participants=sorted(data.participants),
    )
    poisoned = attack.poison_data(data)
    assert (poisoned.participants["p01"].y_train == 9 - data.participants["p01"].y_train).all()
    assert poisoned.participants["p02"] is data.participants["p02"]
    updates = {"p01": np.ones(3, dtype=np.float32)}
    assert attack.poison(model_id="m", updates=updates, group_size=3)["p01"] is updates["p01"]


def test_backdoor_adds_triggered_records_and_boosts_the_update() -> None:
    from securepool.attacks import BACKDOOR_TARGET, TRIGGER_PIXELS
    from securepool.config import DataSection
    from securepool.data import partition

    data = partition(DataSection(participants=5), seed=0)
    attack = UpdateAttack(
        AttackConfig(enabled=True, kind=AttackKind.BACKDOOR, participants=("p01",)),
        participants=sorted(data.participants),
    )
    poisoned = attack.poison_data(data).participants["p01"]
    n = data.participants["p01"].n_train
    assert poisoned.n_train == n + n // 2
    extra_x, extra_y = poisoned.x_train[n:], poisoned.y_train[n:]
    assert (extra_y == BACKDOOR_TARGET).all()
    assert (extra_x[:, list(TRIGGER_PIXELS)] == 1.0).all()
    updates = {"p01": np.ones(3, dtype=np.float32), "p02": np.ones(3, dtype=np.float32)}
    out = attack.poison(model_id="m", updates=updates, group_size=4)
    assert (out["p01"] == 4.0).all() and (out["p02"] == 1.0).all()
