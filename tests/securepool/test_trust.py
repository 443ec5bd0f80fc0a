"""P6 trust check: HPKE sealing, summaries, voting, thresholds, verdicts, attacks.

The attacks on P6's rules are performed on the auditor directly (the updates an
attacker would send, sealed as a participant seals them); the path through the wire
(participant nodes, coordinator, auditor node) is performed in
``test_a_flagged_node_is_marked_only_at_its_second_strike`` here and in
test_summary_binding.py, test_mask_binding.py, test_he_binding.py and
test_split_trust.py."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import numpy as np
import pytest
from binding_helpers import QUIET_P6, Recording, pool, run_config, scale_minus_5

from crypto.errors import DecryptionError, InvalidSignature, KeyMaterialError, MessageError
from crypto.hpke import Kem, SummaryOpeningKey, hpke_seal
from crypto.signing import IdentityKey
from protocols.summaries import open_summary, seal_summary, summarize
from protocols.verdict import Verdict
from securepool.attacks import alie_z
from securepool.trust.auditor import Auditor
from securepool.trust.check import public_projection_seed
from securepool.trust.config import (
    Difference,
    ExclusionPolicy,
    ThresholdRule,
    TrustConfig,
    VotingRule,
)
from securepool.trust.difference import difference, threshold_for
from securepool.trust.ledger import TrustLedger
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


def _poison(
    kind: str,
    own: np.ndarray,
    benign: list[np.ndarray],
    *,
    n: int,
    m: int,
    strength: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """What an attacker sends instead of ``own``; ``alie`` and ``ipm`` are omniscient
    (they see the group's benign updates: the strongest case)."""
    ref = np.stack(benign)
    if kind == "sign_flip":
        out = -(strength or 1.0) * own
    elif kind == "scaling":
        out = (strength or 10.0) * own
    elif kind == "gaussian_noise":
        out = rng.normal(0.0, strength or 1.0, size=own.shape)
    elif kind == "alie":  # A Little Is Enough: mean + z x spread, per coordinate
        out = ref.mean(axis=0) + (strength or alie_z(n, m)) * ref.std(axis=0)
    else:  # ipm, inner-product manipulation: -eps x the benign mean
        out = -(strength or 0.5) * ref.mean(axis=0)
    return np.asarray(out, dtype=np.float32)


def _group(
    n_honest: int, n_bad: int, kind: str, seed: int = 0, strength: float = 0.0
) -> tuple[dict[str, np.ndarray], set[str]]:
    """Honest updates ``h*`` around one direction and the updates attackers ``m*`` send."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=2000)
    updates = {
        f"h{i}": (direction + 0.5 * rng.normal(size=2000)).astype(np.float32)
        for i in range(n_honest)
    }
    bad_ids = {f"m{i}" for i in range(n_bad)}
    own = {p: (direction + 0.5 * rng.normal(size=2000)).astype(np.float32) for p in bad_ids}
    benign = list(updates.values())
    attack_rng = np.random.default_rng(seed + 1)
    for p in sorted(own):
        updates[p] = _poison(
            kind, own[p], benign, n=n_honest + n_bad, m=n_bad, strength=strength, rng=attack_rng
        )
    return updates, bad_ids


def _sealed(
    auditor: Auditor, updates: dict[str, np.ndarray], session: str, dim: int
) -> dict[str, bytes]:
    """Each update's summary under the session's public projection, sealed to the
    auditor as its participant seals it."""
    seed = public_projection_seed(1, session)
    return {
        p: seal_summary(
            summarize(u, dim=dim, seed=seed),
            auditor_public=auditor.public_key(),
            session=session,
            participant=p,
        )
        for p, u in updates.items()
    }


@pytest.mark.parametrize("kind", ["sign_flip", "scaling", "gaussian_noise", "ipm"])
@pytest.mark.parametrize("voting", list(VotingRule))
def test_attacks_are_detected_through_sealed_sketches(kind: str, voting: VotingRule) -> None:
    """The validation vote without ballots falls back to the nearest-neighbour vote."""
    updates, bad = _group(8, 2, kind)
    config = TrustConfig(enabled=True, voting=voting, sketch_dim=128)
    auditor, ledger = Auditor(config), TrustLedger(config)
    for iteration in (1, 2):
        session = f"it{iteration}/m"
        verdict, signature = auditor.vet(session, _sealed(auditor, updates, session, 128), dim=128)
        verdict.verify(auditor.identity_public(), signature)
        ledger.record(session=session, iteration=iteration, model_id="m", flagged=verdict.flagged)
        assert bad <= set(verdict.flagged)  # every attacker caught
        assert not (set(verdict.flagged) - bad)  # no honest participant flagged
        if iteration == 1:  # one strike: the update is out, m0 is not marked
            assert not ledger.is_excluded("m0", 2)
    assert ledger.is_excluded("m0", 3) and not ledger.is_excluded("h0", 3)  # second strike


@pytest.mark.parametrize(("n_honest", "n_bad"), [(2, 1), (4, 1), (8, 2), (12, 3), (16, 4)])
def test_alie_is_screened_as_too_central_or_duplicate(n_honest: int, n_bad: int) -> None:
    """A Little Is Enough, performed: the attackers' shared update (benign mean + z x
    spread) is caught before the vote, and never elected the trusted participant."""
    assert alie_z(n_honest + n_bad, n_bad) > 0
    updates, bad = _group(n_honest, n_bad, "alie", seed=n_honest)
    auditor = Auditor(TrustConfig(enabled=True, sketch_dim=256))
    verdict, _ = auditor.vet("s", _sealed(auditor, updates, "s", 256), dim=256)
    assert set(verdict.flagged) == bad
    reasons = " ".join(verdict.flagged.values())
    assert ("near-duplicate" in reasons) == (n_bad > 1)
    assert "too central" in reasons or n_bad > 1
    assert verdict.trusted not in bad


def test_a_flagged_node_is_marked_only_at_its_second_strike(tmp_path: Path) -> None:
    """Through the wire (plaintext mode: participant nodes, coordinator, auditor node):
    a node that sends -5x its update (and honestly seals its summary) is flagged every
    iteration, marked after its second flag (``strikes = 2``), and then not invited to
    the next iteration's beacon at all."""
    trust = {**QUIET_P6, "strikes": 2}
    attacker = functools.partial(Recording, poison=scale_minus_5)
    p = pool(run_config("plaintext", iterations=3, trust=trust), tmp_path, nodes={"p05": attacker})
    first, second, third = p.run()
    ledger = p.coordinator.trust
    assert ledger is not None
    for record in (first, second):
        (group,) = record.groups
        assert "p05" in group.members and "p05" not in group.contributors
        assert group.excluded["p05"].startswith("untrusted:")
        assert set(group.contributors) == set(group.members) - {"p05"}
    (group,) = third.groups
    assert "p05" not in group.members
    assert [f["iteration"] for f in ledger.report()["flags"]] == [1, 2]
    assert [m["participant"] for m in ledger.report()["marks"]] == ["p05"]
    assert ledger.report()["untrusted"] == ["p05"]


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


@pytest.mark.parametrize("kind", ["scaling", "gaussian_noise"])
@pytest.mark.parametrize(("n_honest", "n_bad"), [(3, 1), (3, 2), (4, 2), (8, 2)])
def test_huge_outliers_do_not_make_honest_updates_look_like_duplicates(
    kind: str, n_honest: int, n_bad: int
) -> None:
    """Regression: a scale taken from all pairwise distances was inflated by scaled or
    noise updates (most pairs involve an attacker in a small group), and honest pairs
    then looked like near-duplicates."""
    poisoned, bad = _group(n_honest, n_bad, kind, seed=10 * n_honest + n_bad, strength=20.0)
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


def test_a_proven_lie_marks_its_liar_at_once_a_statistical_flag_needs_its_strikes() -> None:
    from protocols.verdict import proven
    from securepool.trust.config import ExclusionPolicy
    from securepool.trust.registry import UntrustedRegistry

    reg = UntrustedRegistry(ExclusionPolicy.ROUNDS, rounds=3, strikes=2, strike_window=5)
    assert not reg.flag("p01", iteration=1, model_id="lr", reason="difference 9.1 > 2.0")
    assert reg.flag("p02", iteration=1, model_id="lr", reason=proven("a claimed weight"))
    assert reg.untrusted() == ["p02"] and reg.is_excluded("p02", 2)
    assert not reg.is_excluded("p01", 2)
    assert reg.flag("p01", iteration=2, model_id="lr", reason="difference 8.0 > 2.0")
    # policy "rounds" lets a statistical mark back in after 3 rounds, a proven liar never
    assert not reg.is_excluded("p01", 6) and reg.is_excluded("p02", 20)
