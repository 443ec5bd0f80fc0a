"""The coordinator's side of SecAgg+, as an explicit state machine.

``receive(message)`` files one client message into the current stage (typed errors for
a wrong session, a wrong stage, a replay or a malformed message; nothing changes), and
``close_*`` ends a stage and returns the messages to send. The server never holds a
participant's secret: it relays ciphertexts, sums masked vectors, and rebuilds only the
secrets the unmasking step needs (see :mod:`protocols.secagg.unmasking`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from enum import Enum
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError, StageError, ThresholdNotMet
from crypto.fixedpoint import FixedPointSpec, check_headroom, spec_for
from crypto.signing import verify_signature
from protocols.secagg.client import LABEL_ADVERTISE, advertise_payload, x_coordinates
from protocols.secagg.graph import choose_degree_threshold, neighbours, safe_floor
from protocols.secagg.messages import (
    AdvertiseKeys,
    ConsistencySignature,
    KeyDirectory,
    MaskedInput,
    ShareDelivery,
    ShareKeys,
    SurvivorList,
    UnmaskRequest,
    UnmaskResponse,
    decode_message,
    encode_message,
)
from protocols.secagg.settings import MaskSettings
from protocols.secagg.unmasking import unmask_sum


class ServerStage(Enum):
    KEYS = 0
    SHARES = 1
    INPUTS = 2
    SIGNATURES = 3
    UNMASK = 4
    DONE = 5


_EXPECTED = {
    ServerStage.KEYS: AdvertiseKeys,
    ServerStage.SHARES: ShareKeys,
    ServerStage.INPUTS: MaskedInput,
    ServerStage.SIGNATURES: ConsistencySignature,
    ServerStage.UNMASK: UnmaskResponse,
}


class SecAggServer:
    """One session's coordinator."""

    def __init__(
        self,
        *,
        session: str,
        settings: MaskSettings,
        directory: Mapping[str, bytes],
        length: int,
        min_contributors: int,
    ) -> None:
        self.session = session
        self.stage = ServerStage.KEYS
        self.settings = settings
        self._directory = dict(directory)
        self.length = length
        self.min_contributors = min_contributors
        self._inbox: dict[str, object] = {}
        self.advertised: dict[str, AdvertiseKeys] = {}
        self.shared: frozenset[str] = frozenset()
        self.inputs: dict[str, NDArray[np.unsignedinteger]] = {}
        self.summaries: dict[str, bytes] = {}
        self.survivors: frozenset[str] = frozenset()
        self.signers: dict[str, bytes] = {}
        self.excluded: dict[str, str] = {}
        self.degree = 0
        self.threshold = 0
        self.spec: FixedPointSpec | None = None
        self._nbrs: dict[str, frozenset[str]] = {}
        self._graph_seed = os.urandom(32)
        self._shares_in: dict[str, ShareKeys] = {}
        self._responses: dict[str, UnmaskResponse] = {}

    # --- receiving -------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """File one client message; refuse anything out of place without changing state."""
        expected = _EXPECTED.get(self.stage)
        if expected is None:
            raise StageError("session finished: no more messages accepted")
        msg: Any = decode_message(data)
        if msg.session != self.session:
            raise StageError(f"message of session {msg.session!r}, not {self.session!r}")
        if not isinstance(msg, expected):
            raise StageError(f"{type(msg).__name__} not expected in stage {self.stage.name}")
        sender = str(cast(Any, msg).sender)
        if sender in self._inbox:
            raise StageError(f"{sender} already sent {type(msg).__name__} (replay)")
        if sender not in self._directory:
            raise MessageError(f"unknown sender {sender!r}")
        if isinstance(msg, AdvertiseKeys):
            if len(msg.c_pk) != 32 or len(msg.s_pk) != 32:
                raise MessageError(f"{sender}: public keys must be 32 bytes")
            verify_signature(
                self._directory[sender],
                advertise_payload(self.session, sender, msg.c_pk, msg.s_pk),
                msg.signature,
                label=LABEL_ADVERTISE,
            )
        elif sender not in self.advertised:
            raise StageError(f"{sender} did not take part in the key advertisement")
        if isinstance(msg, MaskedInput):
            if msg.vector.size != self.length + 1 or self.spec is None:
                raise MessageError(f"{sender}: masked vector has {msg.vector.size} words")
            if msg.vector.dtype != np.dtype(self.spec.dtype):
                raise MessageError(f"{sender}: masked vector dtype {msg.vector.dtype}")
        self._inbox[sender] = msg

    def _take(self) -> dict[str, object]:
        inbox, self._inbox = self._inbox, {}
        return inbox

    # --- closing stages ----------------------------------------------------------------

    def close_keys(self) -> bytes:
        """End stage 0; return the key directory (one message, broadcast)."""
        self._require(ServerStage.KEYS)
        self.advertised = {k: v for k, v in self._take().items() if isinstance(v, AdvertiseKeys)}
        n = len(self.advertised)
        self._enough(n, "advertised keys")
        s = self.settings
        if s.degree:
            k = min(s.degree, n - 1)
            t = safe_floor(k)
        else:
            k, t = choose_degree_threshold(
                n,
                dropout=s.expected_dropout,
                corrupt=s.corrupt_fraction,
                correctness_bits=s.correctness_bits,
                security_bits=s.security_bits,
            )
        clip = s.max_weight * max(s.clip, 1.0)
        if s.scale:
            spec = FixedPointSpec(bits=s.bits, scale=s.scale, clip=clip)
            check_headroom(spec, n_summands=n)
        else:
            spec = spec_for(bits=s.bits, clip=clip, n_summands=n)
        self.degree, self.threshold, self.spec = k, t, spec
        ids = sorted(self.advertised)
        self._nbrs = neighbours(ids, k, seed=self._graph_seed)
        self.stage = ServerStage.SHARES
        keys = {
            p: (a.c_pk.hex(), a.s_pk.hex(), a.signature.hex()) for p, a in self.advertised.items()
        }
        return encode_message(
            KeyDirectory(self.session, keys, k, t, self._graph_seed, spec.scale, self.length)
        )

    def close_shares(self) -> dict[str, bytes]:
        """End stage 1; return each key-sharing client's delivery of ciphertexts."""
        self._require(ServerStage.SHARES)
        got = {k: v for k, v in self._take().items() if isinstance(v, ShareKeys)}
        for sender, msg in list(got.items()):
            if set(msg.ciphertexts) != set(self._nbrs[sender]):
                self.excluded[sender] = "shares not addressed to exactly its neighbours"
                del got[sender]
        self._enough(len(got), "clients that shared keys")
        self.shared = frozenset(got)
        self._shares_in = got
        deliveries: dict[str, bytes] = {}
        for v in sorted(self.shared):
            cts = {u: got[u].ciphertexts[v] for u in sorted(self._nbrs[v] & self.shared)}
            deliveries[v] = encode_message(ShareDelivery(self.session, cts))
        self.stage = ServerStage.INPUTS
        return deliveries

    def close_inputs(
        self, vet: Callable[[Mapping[str, bytes]], Mapping[str, str]] | None = None
    ) -> bytes:
        """End stage 2; ask the trust check, then announce the survivor list."""
        self._require(ServerStage.INPUTS)
        got = {k: v for k, v in self._take().items() if isinstance(v, MaskedInput)}
        self.inputs = {k: v.vector for k, v in got.items()}
        self.summaries = {k: v.sealed_summary for k, v in got.items() if v.sealed_summary}
        flagged = dict(vet(self.summaries)) if vet is not None else {}
        for pid, reason in flagged.items():
            if pid in self.inputs:
                self.excluded[pid] = f"untrusted: {reason}"
        self.survivors = frozenset(self.inputs) - frozenset(flagged)
        self._enough(len(self.survivors), "surviving masked inputs")
        self.stage = ServerStage.SIGNATURES
        return encode_message(SurvivorList(self.session, tuple(sorted(self.survivors))))

    def close_signatures(self) -> bytes:
        """End stage 3; send the unmask request with every consistency signature."""
        self._require(ServerStage.SIGNATURES)
        got = {k: v for k, v in self._take().items() if isinstance(v, ConsistencySignature)}
        self.signers = {k: v.signature for k, v in got.items() if k in self.survivors}
        if len(self.signers) < self.threshold:
            raise ThresholdNotMet(
                f"{len(self.signers)} consistency signatures, threshold {self.threshold}",
                survivors=len(self.signers),
                threshold=self.threshold,
            )
        dropped = tuple(sorted(self.shared - self.survivors))
        self.stage = ServerStage.UNMASK
        return encode_message(
            UnmaskRequest(self.session, tuple(sorted(self.survivors)), dropped, dict(self.signers))
        )

    def close_unmask(self) -> NDArray[np.unsignedinteger]:
        """End stage 4: the unmasking step. Returns sum of survivors' encoded inputs."""
        self._require(ServerStage.UNMASK)
        got = {k: v for k, v in self._take().items() if isinstance(v, UnmaskResponse)}
        b_shares: dict[str, dict[str, bytes]] = {}
        s_shares: dict[str, dict[str, bytes]] = {}
        for holder, resp in got.items():
            for owner, share in resp.b_shares.items():
                if owner in self.survivors and owner in self._nbrs[holder]:
                    b_shares.setdefault(owner, {})[holder] = share
            for owner, share in resp.s_shares.items():
                if owner in self.shared - self.survivors and owner in self._nbrs[holder]:
                    s_shares.setdefault(owner, {})[holder] = share
        if self.spec is None:
            raise StageError("no fixed-point spec: key stage never closed")
        total = unmask_sum(
            session=self.session,
            masked=self.inputs,
            survivors=self.survivors,
            shared=self.shared,
            nbrs=self._nbrs,
            s_public={p: a.s_pk for p, a in self.advertised.items()},
            b_shares=b_shares,
            s_shares=s_shares,
            xs=x_coordinates(sorted(self.advertised)),
            threshold=self.threshold,
            dtype=self.spec.dtype,
        )
        self.stage = ServerStage.DONE
        return total

    # --- helpers ---------------------------------------------------------------------

    def _require(self, stage: ServerStage) -> None:
        if self.stage is not stage:
            raise StageError(f"cannot close {stage.name} in stage {self.stage.name}")

    def _enough(self, count: int, what: str) -> None:
        need = max(self.min_contributors, self.threshold, 2)
        if count < need:
            raise ThresholdNotMet(
                f"session {self.session}: {count} {what}, need {need}",
                survivors=count,
                threshold=need,
            )


__all__ = ["SecAggServer", "ServerStage"]
