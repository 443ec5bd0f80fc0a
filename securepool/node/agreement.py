"""The beacon quorum as every role of a run computes it (see :mod:`protocols.quorum`).

* the **universe** is every participant of the PKI (the auditor is not one), so the
  coordinator cannot shrink it for a fake view;
* ``f = ceil(aggregation.mask.corrupt_fraction * N)`` (the run's one corruption
  budget, which also sizes the SecAgg+ graph), ``q = floor((N + f) / 2) + 1``;
* ``w = floor(assignment.max_left_out * N)``: an outcome leaving out more registered
  participants is not endorsed;
* the statement's **context** binds the models of the round: the SHA-256 of every
  group's global model, as the :class:`~securepool.node.wire.TrainRequest` lists them.
  Every endorser checks the model it was sent against its entry, so a certificate
  means a quorum was sent the same models (no per-target model).
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind
from crypto.errors import MessageError, SecurityViolation
from crypto.signing import VerifiedSignatures
from protocols.quorum import (
    Statement,
    corrupt_budget,
    log2_choices,
    max_left_out,
    quorum_size,
    verify_certificate,
)

AUDITOR_ID = "auditor"
_MODELS_DOMAIN = b"securepool/beacon/round-models/v1"
_SESSION = re.compile(r"it(\d{4,19})/([A-Za-z0-9_-]{1,64})")


def session_name(iteration: int, model_id: str) -> str:
    """The session string of one model group, named after its beacon round."""
    return f"it{iteration:04d}/{model_id}"


def session_parts(session: str) -> tuple[int, str]:
    """(beacon round, model id) of a :func:`session_name`; MessageError otherwise."""
    m = _SESSION.fullmatch(session)
    if m is None:
        raise MessageError(f"session {session[:80]!r} is not a pool session name")
    return int(m.group(1)), m.group(2)


def universe_of(registry: Mapping[str, bytes]) -> tuple[str, ...]:
    """Every registered participant, sorted (the auditor's key is not a participant's)."""
    return tuple(sorted(p for p in registry if p != AUDITOR_ID))


def model_hash(params: NDArray[np.float32]) -> bytes:
    """SHA-256 of a global model's little-endian float32 bytes."""
    return hashlib.sha256(np.ascontiguousarray(params, dtype="<f4").tobytes()).digest()


def models_context(hashes: Sequence[tuple[str, bytes]]) -> bytes:
    """The statement context of one round: every (model id, model hash), sorted."""
    fields: list[bytes | str | int] = [len(hashes)]
    for mid, h in sorted(hashes):
        fields += [mid, h]
    return hashlib.sha256(bind(_MODELS_DOMAIN, *fields)).digest()


@dataclass(frozen=True)
class QuorumRule:
    """The quorum of one run: universe, corruption budget f, quorum q, omissions w."""

    universe: tuple[str, ...]
    corrupt: int
    quorum: int
    left_out: int

    @classmethod
    def of(
        cls, registry: Mapping[str, bytes], *, corrupt_fraction: float, left_out_fraction: float
    ) -> QuorumRule:
        universe = universe_of(registry)
        f = corrupt_budget(len(universe), corrupt_fraction)
        return cls(
            universe,
            f,
            quorum_size(len(universe), f),
            max_left_out(len(universe), left_out_fraction),
        )

    def check_left_out(self, left_out: Sequence[str], *, who: str) -> None:
        """SecurityViolation if an outcome leaves out more than ``w`` participants."""
        if len(left_out) > self.left_out:
            raise SecurityViolation(
                f"{who}: the outcome leaves out {len(left_out)} of {len(self.universe)} "
                f"participants, more than max_left_out allows ({self.left_out}): not endorsed"
            )


class CertifiedOutcomes:
    """The key holder's record of certified statements (the auditor, HE mode): it folds
    and decrypts a group only if the group's round has a statement under a quorum
    certificate and every contributor is a member of that statement's group."""

    def __init__(self, keep: int = 4) -> None:
        self._by_round: dict[int, Statement] = {}
        self._keep = keep

    def accept(
        self,
        statement: bytes,
        certificate: bytes,
        *,
        registry: Mapping[str, bytes],
        corrupt_fraction: float,
        verified: VerifiedSignatures | None = None,
    ) -> Statement:
        """Check ``certificate`` on ``statement`` against this party's own PKI; the
        statement, now certified. SecurityViolation or MessageError otherwise."""
        st = Statement.from_bytes(statement)
        universe = universe_of(registry)
        if st.universe != universe:
            raise SecurityViolation("a statement over another set of participants than the PKI")
        f = corrupt_budget(len(universe), corrupt_fraction)
        verify_certificate(
            certificate,
            round_=st.round,
            digest=st.digest(),
            registry=registry,
            universe=universe,
            quorum=quorum_size(len(universe), f),
            verified=verified,
        )
        self._by_round[st.round] = st
        for old in sorted(self._by_round)[: -self._keep]:
            del self._by_round[old]
        return st

    def check_group(self, session: str, contributors: Sequence[str]) -> None:
        """SecurityViolation unless ``session``'s round is certified and every one of
        ``contributors`` is in its group for that model."""
        rnd, model_id = session_parts(session)
        st = self._by_round.get(rnd)
        if st is None:
            raise SecurityViolation(
                f"no quorum certificate for round {rnd}: {session!r} is not folded or decrypted"
            )
        group = set(st.group_map().get(model_id, ()))
        strangers = sorted(set(contributors) - group)
        if strangers:
            raise SecurityViolation(
                f"{session!r}: {strangers} are not in the certified group of {model_id!r}"
            )


def _log2_binom_pmf(n: int, x: int, p: float) -> float:
    if p >= 1.0:
        return 0.0 if x == n else -math.inf
    return (
        (math.lgamma(n + 1) - math.lgamma(x + 1) - math.lgamma(n - x + 1)) / math.log(2)
        + x * math.log2(p)
        + (n - x) * math.log2(1 - p)
    )


def _log2_sum(terms: Sequence[float]) -> float:
    top = max(terms, default=-math.inf)
    if top == -math.inf:
        return top
    return top + math.log2(sum(2.0 ** (t - top) for t in terms))


def assignment_bound(
    *,
    universe: int,
    corrupt: int,
    left_out: int,
    min_group_size: int,
    models: int,
    min_models: int = 1,
    max_models: int = 0,
) -> tuple[float, float]:
    """(log2 of the single-seed probability, the bound): P[some group of
    :func:`securepool.assignment.assign` holds fewer than ``min_group_size`` honest
    members] under one uniform seed, and that times the coordinator's choices
    (:func:`protocols.quorum.log2_choices`), capped at 1.

    Unlike :func:`protocols.quorum.omission_bound` (one fixed group size) this follows
    the assignment's own draw with every participant active: ``k`` groups (the worst
    ``k`` the seed can draw), each of ``min_group_size`` plus a Binomial(rest, 1/k)
    share of the ``rest = m - k * min_group_size`` others, ``m = N - w`` revealers with
    all ``f`` colluders among them, members a uniform subset given the size; a union
    bound over the ``k`` groups. Security: a bound on what grinding through omissions
    and withholding can reach in one round; a coordinator can also abort rounds and
    retry (each a visible aborted round), which this does not count.
    """
    m = universe - left_out
    kept = min(corrupt, m)
    upper = min(max_models or models, models, m // min_group_size)
    if upper < min_models:
        raise SecurityViolation("assignment bound: too few revealers for one group")
    log2_single = -math.inf
    for k in range(min_models, upper + 1):
        rest = m - k * min_group_size
        terms = []
        for x in range(rest + 1):
            g = min_group_size + x
            favourable = sum(
                math.comb(kept, c) * math.comb(m - kept, g - c)
                for c in range(g - min_group_size + 1, min(kept, g) + 1)
            )
            if favourable:
                log2_tail = math.log2(favourable) - math.log2(math.comb(m, g))
                terms.append(_log2_binom_pmf(rest, x, 1 / k) + log2_tail)
        log2_single = max(log2_single, math.log2(k) + _log2_sum(terms))
    log2_single = min(log2_single, 0.0)
    log2_bound = log2_choices(universe, corrupt, left_out) + log2_single
    return log2_single, (1.0 if log2_bound >= 0 else 2.0**log2_bound)
