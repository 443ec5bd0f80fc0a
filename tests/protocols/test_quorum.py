"""The beacon quorum (:mod:`protocols.quorum`), tested directly.

The arithmetic (f, q, the omission bound) against its definitions, scipy and exact
integers; the statement's digest and encoding; certificates as a coordinator would forge
them (another digest, round, signer, key; a duplicated signer; too few; a replayed
endorsement), each refused; the property the quorum exists for: with at most f corrupt
participants, no set of honest single endorsements yields valid certificates on two
statements of one round; the coordinator's collector; and every decoder fuzzed.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy.stats import hypergeom

from crypto.errors import CryptoError, MessageError, SecurityViolation
from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.beacon import COMMIT_LABEL, BeaconResult
from protocols.framing import VERSION
from protocols.quorum import (
    ENDORSE_LABEL,
    MAGIC,
    MAX_ROUND,
    Endorsement,
    QuorumCertificate,
    QuorumCollector,
    Statement,
    corrupt_budget,
    log2_choices,
    max_left_out,
    omission_bound,
    quorum_size,
    verify_certificate,
)
from tests.mutations import mutated

IDS = tuple(f"p{i:02d}" for i in range(40))
KEYS = {pid: IdentityKey.generate() for pid in (*IDS, "auditor")}
REGISTRY = {pid: k.public_bytes() for pid, k in KEYS.items()}  # the PKI: the auditor too


def _h(tag: bytes) -> bytes:
    return hashlib.sha256(tag).digest()


def _nonce(pid: str) -> bytes:
    return _h(b"nonce/" + pid.encode())


U = IDS[:10]
BASE = Statement(
    5,
    _h(b"pool"),
    U,
    tuple((p, _nonce(p)) for p in U[:8]),  # p08, p09 left out
    (("m0", ("p00", "p02", "p04")), ("m1", ("p01", "p03", "p05", "p06"))),
    _h(b"models"),
)


def _sign(pid: str, statement: Statement) -> Endorsement:
    return Endorsement.sign(KEYS[pid], participant=pid, statement=statement)


def _cert(round_: int, digest: bytes, sigs: dict[str, bytes]) -> bytes:
    """The certificate a coordinator assembles from ``sigs`` (sorted, as it must be)."""
    return QuorumCertificate(round_, digest, tuple(sorted(sigs.items()))).to_bytes()


def _signatures(statement: Statement, signers: Sequence[str]) -> dict[str, bytes]:
    return {p: _sign(p, statement).signature for p in signers}


def _verify(
    data: bytes,
    statement: Statement,
    *,
    universe: Sequence[str] = U,
    quorum: int | None = None,
    verified: VerifiedSignatures | None = None,
) -> QuorumCertificate:
    """The receiver's check, against its own PKI and the statement it endorsed."""
    n = len(universe)
    q = quorum_size(n, corrupt_budget(n, 0.2)) if quorum is None else quorum
    return verify_certificate(
        data,
        round_=statement.round,
        digest=statement.digest(),
        registry=REGISTRY,
        universe=universe,
        quorum=q,
        verified=verified,
    )


# --- 1. quorum arithmetic ----------------------------------------------------------------


@settings(max_examples=600, deadline=None)
@given(n=st.integers(1, 2000), gamma=st.floats(0, 0.5, exclude_max=True))
def test_two_quorums_always_share_an_honest_signer(n: int, gamma: float) -> None:
    f = corrupt_budget(n, gamma)
    assert isinstance(f, int) and 0 <= f <= n
    assert gamma * n - 1e-9 <= f < gamma * n + 1  # ceil(gamma * N), up to float error
    if f == n:  # only one participant, possibly corrupt: no honest node, no quorum
        assert n == 1 and gamma > 0
        with pytest.raises(CryptoError, match="no honest node"):
            quorum_size(n, f)
        return
    q = quorum_size(n, f)
    assert 2 * q - n > f  # two quorums overlap in more than f signers: one is honest
    assert q <= n  # reachable when everybody endorses
    assert 2 * (q - 1) - n <= f  # and the smallest such q
    # liveness: the honest alone reach q exactly when N >= 3f + 1 (the classic bound)
    assert (n - f >= q) == (n >= 3 * f + 1)


def test_quorum_size_is_minimal_for_every_budget_up_to_2000() -> None:
    """Exhaustively, every N <= 2000 and every f a gamma < 0.5 can give."""
    for n in range(1, 2001):
        for f in range(0, min(n - 1, math.ceil(n / 2)) + 1):
            q = quorum_size(n, f)
            assert 2 * q - n > f >= 2 * (q - 1) - n and q <= n


@pytest.mark.parametrize(
    ("n", "gamma", "f", "q"),
    [(12, 0.2, 3, 8), (20, 0.2, 4, 13), (100, 0.2, 20, 61), (500, 0.2, 100, 301),
     (10, 0.3, 3, 7), (30, 0.1, 3, 17), (7, 0.0, 0, 4), (2, 0.49, 1, 2)],
)  # fmt: skip
def test_the_sizes_the_threat_model_quotes(n: int, gamma: float, f: int, q: int) -> None:
    assert corrupt_budget(n, gamma) == f and quorum_size(n, f) == q


@pytest.mark.parametrize(
    ("n", "gamma"), [(0, 0.1), (-3, 0.1), (10, 0.5), (10, 0.7), (10, -0.01),
                     (10, math.nan), (10, math.inf)],
)  # fmt: skip
def test_corrupt_budget_out_of_range_is_a_crypto_error(n: int, gamma: float) -> None:
    with pytest.raises(CryptoError):
        corrupt_budget(n, gamma)


@pytest.mark.parametrize(("n", "f"), [(10, 10), (10, 11), (10, -1), (0, 0), (1, 1)])
def test_quorum_size_out_of_range_is_a_crypto_error(n: int, f: int) -> None:
    with pytest.raises(CryptoError):
        quorum_size(n, f)


def test_max_left_out() -> None:
    assert [max_left_out(n, 0.25) for n in (1, 4, 12, 20, 100)] == [0, 1, 3, 5, 25]
    assert max_left_out(10, 0.3) == 3  # 0.3 * 10 = 3.0000000000000004 in floats
    for n, frac in ((10, 1.0), (10, -0.1), (10, math.nan), (0, 0.25), (-4, 0.5)):
        with pytest.raises(CryptoError):
            max_left_out(n, frac)


# --- 2. the statement ----------------------------------------------------------------------


def _with_nonce(pid: str, nonce: bytes) -> tuple[tuple[str, bytes], ...]:
    return tuple((p, nonce if p == pid else n) for p, n in BASE.reveals)


VARIANTS = {
    "round": replace(BASE, round=6),
    "pool digest": replace(BASE, pool_digest=_h(b"another pool")),
    "universe: one more registered": replace(BASE, universe=(*U, "p10")),
    "universe: a left-out one unregistered": replace(BASE, universe=U[:-1]),
    "a reveal's nonce": replace(BASE, reveals=_with_nonce("p03", _h(b"other"))),
    "a reveal's nonce, one bit": replace(
        BASE, reveals=_with_nonce("p07", bytes([_nonce("p07")[0] ^ 1]) + _nonce("p07")[1:])
    ),
    "a reveal left out": replace(BASE, reveals=BASE.reveals[:-1]),
    "a left-out one revealed": replace(BASE, reveals=(*BASE.reveals, ("p08", _nonce("p08")))),
    "a group member": replace(
        BASE, groups=(("m0", ("p00", "p02", "p07")), ("m1", ("p01", "p03", "p05", "p06")))
    ),
    "a member moved across groups": replace(
        BASE, groups=(("m0", ("p00", "p02")), ("m1", ("p01", "p03", "p04", "p05", "p06")))
    ),
    "a member dropped": replace(
        BASE, groups=(("m0", ("p00", "p02", "p04")), ("m1", ("p01", "p03", "p05")))
    ),
    "a model id": replace(BASE, groups=(("m0", ("p00", "p02", "p04")), ("m2", BASE.groups[1][1]))),
    "an empty group added": replace(BASE, groups=(*BASE.groups, ("m2", ()))),
    "context": replace(BASE, context=_h(b"other models")),
}


def test_every_single_field_change_changes_the_digest() -> None:
    digests = {name: st_.digest() for name, st_ in VARIANTS.items()}
    assert BASE.digest() not in digests.values()
    assert len(set(digests.values())) == len(VARIANTS)  # pairwise distinct too
    assert BASE.digest() == replace(BASE).digest() == Statement.from_bytes(BASE.to_bytes()).digest()
    assert len(BASE.digest()) == 32


def test_left_out_is_the_universe_minus_the_revealers() -> None:
    assert BASE.left_out == ("p08", "p09")
    assert BASE.revealers == U[:8]
    assert VARIANTS["a reveal left out"].left_out == ("p07", "p08", "p09")
    assert VARIANTS["universe: one more registered"].left_out == ("p08", "p09", "p10")
    everyone = replace(BASE, reveals=tuple((p, _nonce(p)) for p in U))
    assert everyone.left_out == ()


_IDENT = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,12}", fullmatch=True)
_B32 = st.binary(min_size=32, max_size=32)


@st.composite
def statements(draw: st.DrawFn) -> Statement:
    universe = sorted(draw(st.sets(_IDENT, max_size=12)))
    revealers = sorted(draw(st.sets(st.sampled_from(universe), max_size=12))) if universe else []
    reveals = tuple((p, draw(_B32)) for p in revealers)
    model_ids = sorted(draw(st.sets(_IDENT, max_size=4)))
    groups = tuple(
        (m, tuple(sorted(draw(st.sets(st.sampled_from(revealers)))) if revealers else ()))
        for m in model_ids
    )
    rnd = draw(st.integers(1, MAX_ROUND))
    return Statement(rnd, draw(_B32), tuple(universe), reveals, groups, draw(_B32))


@settings(max_examples=150, deadline=None)
@given(statements())
def test_statements_round_trip_and_left_out_is_a_set_difference(s: Statement) -> None:
    back = Statement.from_bytes(s.to_bytes())
    assert back == s and back.digest() == s.digest() and back.to_bytes() == s.to_bytes()
    assert set(s.left_out) == set(s.universe) - set(s.revealers)
    assert set(s.left_out).isdisjoint(s.revealers) and list(s.left_out) == sorted(s.left_out)
    assert s.group_map() == dict(s.groups)


def _refused(**fields: object) -> None:
    with pytest.raises(MessageError):
        replace(BASE, **fields)


def test_construction_refuses_non_canonical_or_inconsistent_statements() -> None:
    g1 = BASE.groups[1]
    _refused(universe=("p01", "p00", *U[2:]))  # unsorted
    _refused(universe=("p00", "p00", *U[1:]))  # repeated
    _refused(reveals=(BASE.reveals[1], BASE.reveals[0], *BASE.reveals[2:]))  # unsorted
    _refused(reveals=(BASE.reveals[0], *BASE.reveals))  # one participant twice
    _refused(reveals=(*BASE.reveals, ("p99", _nonce("p99"))))  # outside the universe
    _refused(reveals=_with_nonce("p02", bytes(31)))  # a short nonce
    _refused(groups=(("m0", ("p00", "p02", "p08")), g1))  # p08 did not reveal
    _refused(groups=(("m0", ("p02", "p00", "p04")), g1))  # members unsorted
    _refused(groups=(("m0", ("p00", "p00", "p04")), g1))  # a member twice
    _refused(groups=(g1, BASE.groups[0]))  # groups unsorted
    _refused(groups=(BASE.groups[0], ("m0", ("p01",))))  # a model id twice
    _refused(pool_digest=bytes(31))
    _refused(context=bytes(33))
    _refused(round=0)
    _refused(round=MAX_ROUND + 1)


def test_the_decoder_refuses_ids_that_are_not_identifiers() -> None:
    """The constructor checks order, the decoder also spelling: bytes naming an id with
    whitespace (which could alias another in a log line) are a MessageError."""
    odd = Statement(1, bytes(32), ("p 0",), (), (), bytes(32))
    with pytest.raises(MessageError, match="not a valid identifier"):
        Statement.from_bytes(odd.to_bytes())


def test_a_beacon_result_states_its_outcome_over_the_sorted_universe() -> None:
    result = BeaconResult(
        iteration=5,
        joint_seed=bytes(32),
        participants=U[:8],
        withheld={"p08": "no reveal", "p09": "no reveal"},
        groups={"m1": ("p06", "p05", "p03", "p01"), "m0": ("p04", "p02", "p00")},
        pool_digest=_h(b"pool"),
        nonces={p: _nonce(p) for p in U[:8]},
    )
    assert result.statement(universe=list(reversed(U)), context=_h(b"models")) == BASE
    with pytest.raises(MessageError, match="outside the universe"):  # a PKI without p07
        result.statement(universe=[p for p in U if p != "p07"], context=_h(b"models"))


# --- 3. endorsements and certificates, forged as a coordinator would ------------------

N10_Q = quorum_size(10, corrupt_budget(10, 0.2))  # f = 2, q = 7
ALL = _signatures(BASE, U)  # every participant endorses BASE


def test_q_valid_endorsements_make_a_certificate() -> None:
    assert N10_Q == 7
    for signers in (U[:N10_Q], U[3:], U):
        cert = _verify(_cert(5, BASE.digest(), {p: ALL[p] for p in signers}), BASE)
        assert cert.signers == tuple(signers) and cert.round == 5
    one = _sign("p03", BASE)
    assert Endorsement.from_bytes(one.to_bytes()) == one
    assert (one.round, one.participant, one.digest) == (5, "p03", BASE.digest())


def test_q_minus_one_signers_are_refused() -> None:
    with pytest.raises(SecurityViolation, match="6 endorsements, 7 needed"):
        _verify(_cert(5, BASE.digest(), {p: ALL[p] for p in U[: N10_Q - 1]}), BASE)
    with pytest.raises(SecurityViolation, match="0 endorsements"):
        _verify(_cert(5, BASE.digest(), {}), BASE)


def test_a_certificate_on_another_statement_is_refused() -> None:
    """A quorum really endorsed the honest outcome; the target endorsed a fake one
    (another group): the honest quorum's certificate does not certify the target's."""
    fake = VARIANTS["a group member"]
    honest = _cert(5, BASE.digest(), ALL)
    assert _verify(honest, BASE).signers == U
    with pytest.raises(SecurityViolation, match="on another statement"):
        _verify(honest, fake)
    # relabelled as fake's digest: every signature is then on the wrong digest
    with pytest.raises(SecurityViolation, match="signature"):
        _verify(_cert(5, fake.digest(), ALL), fake)


def test_a_certificate_for_another_round_is_refused() -> None:
    old = replace(BASE, round=4)
    old_cert = _cert(4, old.digest(), _signatures(old, U))
    assert _verify(old_cert, old).round == 4
    with pytest.raises(SecurityViolation, match="for round 4"):
        _verify(old_cert, BASE)


def test_endorsements_of_another_round_replayed_are_refused() -> None:
    # last round's endorsements, put into a certificate for this round's statement
    old = replace(BASE, round=4)
    with pytest.raises(SecurityViolation, match="signature"):
        _verify(_cert(5, BASE.digest(), _signatures(old, U)), BASE)
    # even signatures on this very digest, made under another round, do not count: the
    # round is inside the signed bytes, not only inside the digest
    elsewhere = {
        p: KEYS[p].sign(Endorsement(4, p, BASE.digest(), b"").signed_part(), label=ENDORSE_LABEL)
        for p in U
    }
    with pytest.raises(SecurityViolation, match="signature"):
        _verify(_cert(5, BASE.digest(), elsewhere), BASE)
    with pytest.raises(SecurityViolation, match="for round 4"):
        _verify(_cert(4, BASE.digest(), elsewhere), BASE)


def test_a_signer_outside_the_universe_is_refused() -> None:
    sigs = {p: ALL[p] for p in U[: N10_Q - 1]}
    # registered, validly signed, but not a participant of this universe: the auditor,
    # or a participant of the PKI that the receiver's universe does not hold
    for outsider in ("auditor", "p10"):
        forged = {**sigs, outsider: _sign(outsider, BASE).signature}
        with pytest.raises(SecurityViolation, match=f"{outsider!r}, not a participant"):
            _verify(_cert(5, BASE.digest(), forged), BASE)
    # in the universe the receiver was given, but without a key in its PKI
    ghost_universe = (*U, "zz-ghost")
    forged = {**sigs, "zz-ghost": bytes(64)}
    with pytest.raises(SecurityViolation, match="'zz-ghost', not a participant"):
        _verify(_cert(5, BASE.digest(), forged), BASE, universe=ghost_universe, quorum=N10_Q)


def test_a_signature_by_another_key_is_refused() -> None:
    base = {p: ALL[p] for p in U[: N10_Q - 1]}
    digest_part = Endorsement(5, "p09", BASE.digest(), b"").signed_part()
    forgeries = {
        # corrupt p08 signs in honest p09's name
        "p08's key for p09": KEYS["p08"].sign(digest_part, label=ENDORSE_LABEL),
        # p08's own valid endorsement, filed as p09's (the id is signed too)
        "p08's endorsement as p09's": ALL["p08"],
        # p09's key, but the signature of another protocol message (another label)
        "p09's key, another label": KEYS["p09"].sign(digest_part, label=COMMIT_LABEL),
        # a bit flipped
        "a flipped bit": bytes([ALL["p09"][0] ^ 1]) + ALL["p09"][1:],
    }
    for sig in forgeries.values():  # each refused on its own
        with pytest.raises(SecurityViolation, match="'p09''s signature"):
            _verify(_cert(5, BASE.digest(), {**base, "p09": sig}), BASE)


def test_a_duplicated_signer_is_malformed() -> None:
    """Hand-encoded: q entries, q - 1 distinct signers. The decoder refuses it, so one
    signer never counts twice."""
    sigs = tuple(sorted((p, ALL[p]) for p in U[: N10_Q - 1]))
    for dup in ((*sigs[:1], *sigs), (*sigs, sigs[-1])):
        data = QuorumCertificate(5, BASE.digest(), dup).to_bytes()
        with pytest.raises(MessageError, match="not sorted or repeated"):
            _verify(data, BASE)
    unsorted = (sigs[1], sigs[0], *sigs[2:], ("p09", ALL["p09"]))
    with pytest.raises(MessageError, match="not sorted or repeated"):
        _verify(QuorumCertificate(5, BASE.digest(), unsorted).to_bytes(), BASE)


def test_malformed_certificates_are_message_errors() -> None:
    good = _cert(5, BASE.digest(), ALL)
    short_sig = QuorumCertificate(5, BASE.digest(), (("p00", ALL["p00"][:63]),)).to_bytes()
    for bad in (good[:-1], good + b"\x00", b"", good[:3] + b"\x02" + good[4:], short_sig):
        with pytest.raises(MessageError):
            _verify(bad, BASE)


def test_a_memo_never_accepts_what_verification_refuses() -> None:
    memo = VerifiedSignatures()
    assert _verify(_cert(5, BASE.digest(), ALL), BASE, verified=memo).signers == U
    forged = {**ALL, "p09": ALL["p08"]}
    with pytest.raises(SecurityViolation, match="'p09''s signature"):
        _verify(_cert(5, BASE.digest(), forged), BASE, verified=memo)
    with pytest.raises(SecurityViolation, match="signature"):
        _verify(_cert(5, VARIANTS["context"].digest(), ALL), VARIANTS["context"], verified=memo)


# --- the property: no two certified outcomes of one round ------------------------------


def _round_pair(n: int) -> tuple[Statement, Statement]:
    """Two outcomes of round 9 over ``n`` registered participants: A, everyone revealed;
    B, the last one's reveal dropped (a claimed dropout) and the group without it."""
    universe = IDS[:n]
    a = Statement(
        9,
        _h(b"pool"),
        universe,
        tuple((p, _nonce(p)) for p in universe),
        (("m0", universe),),
        _h(b"models"),
    )
    b = replace(a, reveals=a.reveals[:-1], groups=(("m0", universe[:-1]),))
    return a, b


def _equivocate(
    n: int, f: int, corrupt: Sequence[str], on_a: set[str]
) -> tuple[bool, bool, QuorumCollector]:
    """The coordinator's best try for two certificates of one round: every honest
    participant signed exactly one of A and B (A if in ``on_a``), every corrupt one
    signed both. It puts every endorsement it holds on A into A's certificate, every
    one on B into B's, and also tries to pad A's with the B signers'. Returns (A
    certified, B certified, a collector fed every endorsement)."""
    a, b = _round_pair(n)
    universe, q = IDS[:n], quorum_size(n, f)
    honest = [p for p in universe if p not in corrupt]
    signs_a = [*corrupt, *(p for p in honest if p in on_a)]
    signs_b = [*corrupt, *(p for p in honest if p not in on_a)]
    ends_a = {p: _sign(p, a) for p in signs_a}
    ends_b = {p: _sign(p, b) for p in signs_b}

    def certified(st_: Statement, sigs: dict[str, bytes]) -> bool:
        try:
            _verify(_cert(9, st_.digest(), sigs), st_, universe=universe, quorum=q)
        except SecurityViolation:
            return False
        return True

    ok_a = certified(a, {p: e.signature for p, e in ends_a.items()})
    ok_b = certified(b, {p: e.signature for p, e in ends_b.items()})
    padded = {
        **{p: e.signature for p, e in ends_b.items()},
        **{p: e.signature for p, e in ends_a.items()},
    }
    if set(signs_b) - set(signs_a):  # signatures on B never count towards A
        assert not certified(a, padded)
    collector = QuorumCollector(round_=9, registry=REGISTRY, universe=universe, quorum=q)
    for p in universe:  # the corrupt ones send A, then B: the collector keeps one each
        for ends in (ends_a, ends_b):
            if p in ends:
                collector.add(p, ends[p].to_bytes())
    assert collector.rejected == {}
    return ok_a, ok_b, collector


@pytest.mark.parametrize(("n", "gamma"), [(4, 0.2), (10, 0.2), (12, 0.2), (7, 0.49), (20, 0.45)])
def test_no_split_of_honest_endorsements_certifies_two_outcomes(n: int, gamma: float) -> None:
    """Every split of the honest participants between A and B (|A-side| = 0 .. N - f),
    with f corrupt signing both: at most one outcome certified, and one is whenever its
    side plus the f corrupt reach q (so the check is not vacuous)."""
    f = corrupt_budget(n, gamma)
    q = quorum_size(n, f)
    corrupt = IDS[n - f : n]
    honest = IDS[: n - f]
    seen = set()
    for k in range(len(honest) + 1):
        ok_a, ok_b, collector = _equivocate(n, f, corrupt, set(honest[:k]))
        assert not (ok_a and ok_b)
        assert ok_a == (k + f >= q) and ok_b == (len(honest) - k + f >= q)
        seen.add((ok_a, ok_b))
        got = collector.certificate()
        if got is not None:
            a, b = _round_pair(n)
            digest, data = got
            assert digest in (a.digest(), b.digest())
            _verify(data, a if digest == a.digest() else b, universe=IDS[:n], quorum=q)
    assert (True, False) in seen and (False, True) in seen  # each side was reachable


def test_the_budget_is_tight_with_more_colluders_two_outcomes_are_certified() -> None:
    """With 2q - N colluders (beyond the budget f) an even honest split certifies both:
    q is exactly as large as it must be."""
    n, f = 10, corrupt_budget(10, 0.2)
    q = quorum_size(n, f)
    extra = 2 * q - n  # 4 > f = 2
    corrupt = IDS[n - extra : n]
    honest = IDS[: n - extra]
    ok_a, ok_b, _ = _equivocate(n, f, corrupt, set(honest[: len(honest) // 2]))
    assert ok_a and ok_b


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(2, 30),
    gamma=st.floats(0, 0.5, exclude_max=True),
    order=st.permutations(range(30)),
    split=st.lists(st.booleans(), min_size=30, max_size=30),
)
def test_random_splits_never_certify_two_outcomes(
    n: int, gamma: float, order: list[int], split: list[bool]
) -> None:
    f = corrupt_budget(n, gamma)
    assume(f < n)
    ranked = [IDS[i] for i in order if i < n]
    corrupt = ranked[:f]
    on_a = {p for p, side in zip(ranked[f:], split, strict=False) if side}
    ok_a, ok_b, collector = _equivocate(n, f, corrupt, on_a)
    assert not (ok_a and ok_b)
    q = quorum_size(n, f)
    assert ok_a == (len(on_a) + f >= q) and ok_b == (n - f - len(on_a) + f >= q)
    # the collector keeps one endorsement per sender (a corrupt one's last: B)
    assert collector.endorsed == max(len(on_a), n - len(on_a))


# --- 4. the coordinator's collector ------------------------------------------------------


def _collector(round_: int = 5) -> QuorumCollector:
    return QuorumCollector(round_=round_, registry=REGISTRY, universe=U, quorum=N10_Q)


def test_bad_endorsements_are_named_never_raised_nor_counted() -> None:
    good = {p: _sign(p, BASE).to_bytes() for p in U}
    flipped = bytearray(good["p02"])
    flipped[-1] ^= 1
    bad = {
        "p00": good["p09"],  # p09's endorsement, sent by p00
        "p01": _sign("p01", replace(BASE, round=4)).to_bytes(),  # another round
        "p02": bytes(flipped),  # a bad signature
        "p03": Endorsement.sign(KEYS["p04"], participant="p03", statement=BASE).to_bytes(),
        "p04": b"",
        "p05": b"garbage",
        "p06": MAGIC + bytes([VERSION, Endorsement.KIND]) + b"\xff" * 40,
        "p07": good["p07"][:-1],
        "auditor": _sign("auditor", BASE).to_bytes(),  # registered, not a participant
        "p10": _sign("p10", BASE).to_bytes(),  # registered, outside this universe
        "stranger": Endorsement.sign(  # a valid signature, by a key outside the PKI
            IdentityKey.generate(), participant="stranger", statement=BASE
        ).to_bytes(),
    }
    col = _collector()
    for sender, raw in bad.items():
        col.add(sender, raw)  # never raises
    assert set(col.rejected) == set(bad)
    assert all(col.rejected[s] for s in bad)  # each with a reason
    assert col.endorsed == 0 and col.certificate() is None
    for p in U:
        col.add(p, good[p])
    assert col.endorsed == 10 and col.certificate() is not None


def test_a_second_endorsement_replaces_the_first() -> None:
    other = VARIANTS["a group member"]
    col = _collector()
    for p in U[:N10_Q]:
        col.add(p, _sign(p, BASE).to_bytes())
        col.add(p, _sign(p, BASE).to_bytes())  # the same twice: still one
    assert col.endorsed == N10_Q
    got = col.certificate()
    assert got is not None and got[0] == BASE.digest()
    assert _verify(got[1], BASE).signers == U[:N10_Q]
    col.add("p00", _sign("p00", other).to_bytes())  # p00 now endorses another outcome
    assert col.endorsed == N10_Q - 1 and col.certificate() is None
    col.add("p00", b"garbage")  # a bad resend is dropped and unsays nothing
    assert col.endorsed == N10_Q - 1 and "p00" in col.rejected
    col.add("p00", _sign("p00", BASE).to_bytes())  # and back
    got = col.certificate()
    assert got is not None and got[0] == BASE.digest()
    assert _verify(got[1], BASE).signers == U[:N10_Q]


def test_certificate_is_none_without_a_quorum() -> None:
    col = _collector()
    assert col.certificate() is None and col.endorsed == 0
    other = VARIANTS["context"]
    for i, p in enumerate(U):  # 5 and 5: neither reaches 7
        col.add(p, _sign(p, BASE if i % 2 else other).to_bytes())
    assert col.endorsed == 5 and col.certificate() is None
    col.add("p00", _sign("p00", BASE).to_bytes())
    col.add("p02", _sign("p02", BASE).to_bytes())
    got = col.certificate()
    assert got is not None and got[0] == BASE.digest()
    assert _verify(got[1], BASE).signers == ("p00", "p01", "p02", "p03", "p05", "p07", "p09")


# --- 5. the omission bound -----------------------------------------------------------------


@pytest.mark.parametrize(("n", "f", "w"), [(12, 3, 3), (20, 4, 5), (100, 20, 25), (500, 100, 125)])
def test_log2_choices_counts_outcomes_exactly(n: int, f: int, w: int) -> None:
    exact = 2**f * sum(math.comb(n, j) for j in range(w + 1))
    assert log2_choices(n, f, w) == pytest.approx(math.log2(exact), rel=1e-12)
    if n == 12:  # by enumeration: every omission set, every withholding of colluders
        sets = sum(1 for j in range(w + 1) for _ in itertools.combinations(range(n), j))
        assert 2**f * sets == 2392 == exact


def _scipy_bound(n: int, f: int, w: int, g: int, groups: int, h: int) -> float:
    tail = hypergeom(M=n - w, n=min(f, n - w), N=g).sf(g - h)  # P[corrupt >= g - h + 1]
    return min(1.0, 2 ** log2_choices(n, f, w) * groups * tail)


@pytest.mark.parametrize(
    ("n", "f", "w", "g", "groups", "h"),
    [(1000, 100, 50, 93, 2, 1), (1000, 100, 50, 96, 2, 1), (1000, 100, 50, 99, 2, 1),
     (1000, 100, 50, 96, 2, 3), (1000, 100, 50, 108, 2, 10), (60, 18, 6, 18, 2, 1),
     (100, 10, 5, 10, 3, 1), (100, 10, 5, 11, 3, 2), (20, 4, 5, 6, 3, 3), (12, 3, 3, 3, 3, 3),
     (100, 20, 25, 33, 3, 3)],
)  # fmt: skip
def test_omission_bound_matches_scipy(n: int, f: int, w: int, g: int, groups: int, h: int) -> None:
    got = omission_bound(
        universe=n, corrupt=f, left_out=w, group_size=g, groups=groups, min_honest=h
    )
    want = _scipy_bound(n, f, w, g, groups, h)
    assert got == pytest.approx(want, rel=1e-9, abs=0)
    assert 0.0 <= got <= 1.0


def test_the_threat_model_examples() -> None:
    """threat_model.md, at gamma = 0.2, w = 0.25 N, min_group_size 3: exactly 0 when
    every group has more than f + 2 members, vacuous (1) for small groups."""

    def bound(n: int, g: int, groups: int) -> float:
        f, w = corrupt_budget(n, 0.2), max_left_out(n, 0.25)
        return omission_bound(
            universe=n, corrupt=f, left_out=w, group_size=g, groups=groups, min_honest=3
        )

    assert bound(100, 33, 3) == 0.0 and bound(500, 166, 3) == 0.0
    assert bound(100, 22, 3) > 0.0  # f + 2 = 22 members: a group can be left 2 honest
    assert bound(20, 6, 3) == 1.0 and bound(20, 3, 3) == 1.0 and bound(12, 3, 4) == 1.0


def test_a_tail_below_the_smallest_float_is_not_zero() -> None:
    """Regression: N = 2000, gamma = 0.2, w = 0.2 N and a group of 400 that the 400
    colluders could fill. Each outcome makes it all-corrupt with probability
    1 / C(1600, 400) ~ 2^-1298 (under the smallest float), but the coordinator picks
    among ~2^1844 outcomes: the union bound is vacuous. The tail as a float division
    was 0.0, and the bound claimed 0 (no choice could do it)."""
    n = 2000
    f, w = corrupt_budget(n, 0.2), max_left_out(n, 0.2)
    assert (f, w) == (400, 400)
    log2_exact = log2_choices(n, f, w) - math.log2(math.comb(n - w, 400))
    assert log2_exact > 500
    got = omission_bound(universe=n, corrupt=f, left_out=w, group_size=400, groups=1, min_honest=1)
    assert got == 1.0


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(2, 400),
    data=st.data(),
)
def test_omission_bound_is_monotone_and_zero_exactly_when_no_group_can_fall_short(
    n: int, data: st.DataObject
) -> None:
    f = data.draw(st.integers(0, n - 1), label="f")
    w1 = data.draw(st.integers(0, n - 1), label="w1")
    w2 = data.draw(st.integers(w1, n - 1), label="w2")
    g = data.draw(st.integers(1, n - w2), label="group size")
    h = data.draw(st.integers(1, g), label="min honest")
    groups = data.draw(st.integers(1, 8), label="groups")

    def bound(f_: int, w: int, groups_: int = groups) -> float:
        return omission_bound(
            universe=n, corrupt=f_, left_out=w, group_size=g, groups=groups_, min_honest=h
        )

    b1, b2 = bound(f, w1), bound(f, w2)
    assert 0.0 <= b1 <= b2 <= 1.0  # leaving out more never helps the participants
    assert (b1 == 0.0) == (g - h + 1 > min(f, n - w1))  # 0 only if no group can fall short
    assert b1 <= bound(min(f + 1, n), w1)  # nor more colluders
    assert b1 <= bound(f, w1, groups + 1)  # nor more groups
    if 0.0 < b1 < 1.0:  # exact integers agree
        m = n - w1
        k = min(f, m)
        fav = sum(
            math.comb(k, x) * math.comb(m - k, g - x) for x in range(g - h + 1, min(k, g) + 1)
        )
        want = log2_choices(n, f, w1) + math.log2(groups) + math.log2(fav)
        want -= math.log2(math.comb(m, g))
        assert math.log2(b1) == pytest.approx(want, rel=1e-9, abs=1e-9)


def test_more_colluders_than_revealers_is_vacuous_not_an_untyped_error() -> None:
    # f = 8 colluders, 5 of 10 left out: every one of the 5 revealers may be corrupt
    assert omission_bound(universe=10, corrupt=8, left_out=5, group_size=3, groups=1,
                          min_honest=1) == 1.0  # fmt: skip


_GOOD = {"universe": 20, "corrupt": 4, "left_out": 5, "group_size": 6, "groups": 3, "min_honest": 3}


@pytest.mark.parametrize(
    "change",
    [{"group_size": 0}, {"group_size": 16}, {"min_honest": 0}, {"min_honest": 7},
     {"groups": 0}, {"left_out": 20}, {"left_out": 25}, {"left_out": -1}, {"corrupt": -1},
     {"corrupt": 21}, {"universe": 0}, {"universe": -5}],
)  # fmt: skip
def test_omission_bound_bad_arguments_are_crypto_errors(change: dict[str, int]) -> None:
    with pytest.raises(CryptoError):
        omission_bound(**{**_GOOD, **change})


@pytest.mark.parametrize(
    ("n", "f", "w"), [(10, 2, -1), (10, -1, 2), (10, 11, 2), (10, 2, 11), (0, 0, 0), (-3, 0, 0)]
)
def test_log2_choices_bad_arguments_are_crypto_errors(n: int, f: int, w: int) -> None:
    with pytest.raises(CryptoError):
        log2_choices(n, f, w)


# --- 6. the decoders, fuzzed ---------------------------------------------------------------

DECODERS: list[Callable[[bytes], Statement | Endorsement | QuorumCertificate]] = [
    Statement.from_bytes,
    Endorsement.from_bytes,
    QuorumCertificate.from_bytes,
]
EXAMPLES: list[tuple[int, bytes]] = [
    (0, BASE.to_bytes()),
    (0, Statement(1, bytes(32), (), (), (), bytes(32)).to_bytes()),
    (0, VARIANTS["an empty group added"].to_bytes()),
    (1, _sign("p03", BASE).to_bytes()),
    (2, _cert(5, BASE.digest(), ALL)),
    (2, _cert(5, BASE.digest(), {})),
]


def _only_message_errors(which: int, data: bytes) -> None:
    """Decoding raises MessageError or gives a message whose encoding is ``data``
    itself (one message, one byte string)."""
    try:
        msg = DECODERS[which](data)
    except MessageError:
        return
    assert msg.to_bytes() == data


def test_the_examples_decode_to_themselves() -> None:
    for which, data in EXAMPLES:
        _only_message_errors(which, data)
        assert DECODERS[which](data).to_bytes() == data
        for other in {0, 1, 2} - {which}:  # a message of one kind is no other kind
            with pytest.raises(MessageError, match="kind"):
                DECODERS[other](data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(which=st.integers(0, 2), data=st.binary(max_size=600))
def test_random_bytes_raise_only_message_errors(which: int, data: bytes) -> None:
    _only_message_errors(which, data)


@settings(max_examples=300, deadline=None)
@given(which=st.integers(0, 2), body=st.binary(max_size=600))
def test_random_bodies_behind_a_valid_prefix_raise_only_message_errors(
    which: int, body: bytes
) -> None:
    _only_message_errors(which, MAGIC + bytes([VERSION, which + 1]) + body)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), example=st.sampled_from(EXAMPLES))
def test_mutated_valid_encodings_raise_only_message_errors(
    data: st.DataObject, example: tuple[int, bytes]
) -> None:
    which, raw = example
    _only_message_errors(which, data.draw(mutated(raw)))


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("value", ["BQ\x01\x01", None, 7, [1, 2]])
def test_non_bytes_are_message_errors(decoder: Callable[[bytes], object], value: object) -> None:
    with pytest.raises(MessageError):
        decoder(value)  # type: ignore[arg-type]


def test_huge_claimed_counts_fail_fast() -> None:
    """A count of 2^32 - 1 ids, or 65536 ids with no bytes behind them: refused at once."""
    head = MAGIC + bytes([VERSION, Statement.KIND]) + struct.pack(">Q", 1)
    head += struct.pack(">I", 32) + bytes(32)
    cert_head = MAGIC + bytes([VERSION, QuorumCertificate.KIND]) + struct.pack(">Q", 1)
    cert_head += struct.pack(">I", 32) + bytes(32)
    start = time.perf_counter()
    for decoder, bad in (
        (Statement.from_bytes, head + b"\xff\xff\xff\xff"),
        (Statement.from_bytes, head + struct.pack(">I", 1 << 16)),
        (QuorumCertificate.from_bytes, cert_head + b"\xff\xff\xff\xff"),
        (QuorumCertificate.from_bytes, cert_head + struct.pack(">I", 1 << 16)),
        (Endorsement.from_bytes, MAGIC + bytes([VERSION, 2]) + bytes(8) + b"\xff" * 4),
    ):
        with pytest.raises(MessageError):
            decoder(bad)
    assert time.perf_counter() - start < 0.5
