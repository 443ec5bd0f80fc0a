"""The statistics round of ``data.scaling = "federated"``: what nodes and coordinator agree on.

Before the first iteration every participant sends two vectors of statistics of its own
training records through one SecAgg+ session each (the coordinator learns only their
sums, :mod:`securepool.preprocessing` says what they are):

1. ``magnitude``: log2 of each input's root mean square and whether it has one (weight 1
   per participant), so the federation agrees on each input's order of magnitude 2^e;
2. ``moments``: the mean and mean square of x / 2^e per input, weighted by the
   participant's record count, whose sum gives the federation's mean and spread.

The coordinator then sends every node the resulting standardisation
(:data:`~securepool.node.wire.NodeStage.SCALING_RESULT`), which the node applies to its
records before it trains, and writes it into the pool's manifest.

Each session's group is the whole PKI (every participant, taken by each node from its own
registry, never from the coordinator) on the complete graph, so the coordinator cannot
choose who is summed with whom; a node answers each of the two rounds once (recorded in
its durable state before its advert leaves), so the coordinator cannot difference two
sums over different survivors; the SecAgg+ thresholds and the consistency round are the
iteration's. The request (round and magnitudes) is bound into every advert as the
session's digest, so all members summed the same quantities or the session fails.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from crypto.errors import MessageError
from protocols.secagg.settings import MaskSettings
from securepool.config import RunConfig
from securepool.preprocessing import MAGNITUDE_RANGE, MOMENT_CLIP

#: the two rounds, in order
ROUNDS = ("magnitude", "moments")
#: records one participant may weigh in the moments' sum (the encoding's weight cap)
MAX_RECORDS = 2**20
#: the joint seed of the rounds' sessions: public and fixed (the complete graph leaves
#: it nothing to choose)
JOINT_SEED = hashlib.sha256(b"securepool/scaling-round/v1").digest()
#: a session name marks a statistics session (the node keeps them apart from iterations)
SESSION_PREFIX = "scaling-"


def session_of(round_name: str) -> str:
    return SESSION_PREFIX + round_name


def is_scaling_session(session: str) -> bool:
    return session.startswith(SESSION_PREFIX)


def round_settings(cfg: RunConfig, *, members: int) -> MaskSettings:
    """The SecAgg+ settings of a statistics session of ``members`` participants: 64-bit
    words, the statistics' own clip and weight cap, the complete graph, the run's
    corruption and dropout assumptions."""
    mask = cfg.mask_settings()
    return MaskSettings(
        bits=64,
        clip=MOMENT_CLIP,
        max_weight=float(MAX_RECORDS),
        scale=0.0,
        expected_dropout=mask.expected_dropout,
        corrupt_fraction=mask.corrupt_fraction,
        correctness_bits=mask.correctness_bits,
        security_bits=mask.security_bits,
        degree=max(1, members - 1),
    )


@dataclass(frozen=True)
class ScalingRequest:
    """What the coordinator asks in one round: its name, and for ``moments`` the
    agreed magnitude (exponent) of every input."""

    round: str
    exponents: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.round not in ROUNDS:
            raise MessageError(f"statistics round {self.round!r} is not one of {ROUNDS}")
        if (self.round == "moments") != bool(self.exponents):
            raise MessageError("the moments round, and only it, carries the magnitudes")
        if any(
            type(e) is not int or not -MAGNITUDE_RANGE <= e <= MAGNITUDE_RANGE
            for e in self.exponents
        ):
            raise MessageError(
                f"magnitudes must be integers in [-{MAGNITUDE_RANGE}, {MAGNITUDE_RANGE}]"
            )

    def to_bytes(self) -> bytes:
        return json.dumps({"round": self.round, "exponents": list(self.exponents)}).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> ScalingRequest:
        try:
            obj: Any = json.loads(data.decode())
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise MessageError("statistics request: not JSON") from None
        if not isinstance(obj, dict) or set(obj) != {"round", "exponents"}:
            raise MessageError("statistics request: must be {round, exponents}")
        if not isinstance(obj["round"], str) or not isinstance(obj["exponents"], list):
            raise MessageError("statistics request: round must be a string, exponents a list")
        return cls(obj["round"], tuple(obj["exponents"]))

    def digest(self, members: Iterable[str]) -> bytes:
        """What every member's advert signs: the request and the group, so members
        that were asked for different quantities fail the session's consistency."""
        body = {"request": json.loads(self.to_bytes()), "members": sorted(members)}
        return hashlib.sha256(
            b"securepool/scaling-round/digest/v1" + json.dumps(body, sort_keys=True).encode()
        ).digest()

    def length(self, n_features: int) -> int:
        """The statistics vector's length (the weight is appended by SecAgg+)."""
        return 2 * n_features


def members_of(registry: Sequence[str] | Iterable[str], *, auditor: str) -> tuple[str, ...]:
    """Every participant of the PKI (the auditor is not one)."""
    return tuple(sorted(p for p in registry if p != auditor))
