"""The participant's side of SecAgg+, as an explicit state machine.

``SecAggClient.handle(message) -> reply`` is the step function: it checks that the
message belongs to this session and to the current stage, computes the reply, and only
then moves to the next stage, so a refused message changes nothing.

Security (what a client guarantees whatever the server does):
* it checks every peer's advertised keys against the peer's identity key (PKI);
* it refuses a threshold below the safe floor and a scale that could overflow;
* it signs the survivor list and checks everyone signed the same list;
* it answers exactly one unmask request, and never reveals both the self-mask share
  and the key share of one peer: a peer listed as both surviving and dropped, or a
  second request, is refused with SecurityViolation / StageError.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping
from enum import Enum

import numpy as np
from numpy.typing import NDArray

from crypto.aead import aead_open, aead_seal
from crypto.agreement import AgreementKey
from crypto.errors import (
    CryptoError,
    MessageError,
    SecurityViolation,
    StageError,
)
from crypto.fixedpoint import FixedPointSpec, check_headroom, encode
from crypto.prg import expand_mask
from crypto.shamir import shamir_split
from crypto.signing import IdentityKey, verify_signature
from protocols.secagg.graph import neighbours_of, safe_floor
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

LABEL_ADVERTISE = b"secagg/advertise"
LABEL_SURVIVORS = b"secagg/survivors"


class ClientStage(Enum):
    ADVERTISE = 0  # will send keys
    SHARE = 1  # waiting for the key directory
    INPUT = 2  # waiting for the share delivery
    CONSISTENCY = 3  # waiting for the survivor list
    UNMASK = 4  # waiting for the unmask request
    DONE = 5


def advertise_payload(session: str, sender: str, c_pk: bytes, s_pk: bytes) -> bytes:
    return b"|".join([session.encode(), sender.encode(), c_pk, s_pk])


def survivors_payload(session: str, survivors: tuple[str, ...]) -> bytes:
    return b"\x00".join([session.encode(), *(s.encode() for s in sorted(survivors))])


def mask_label(session: str) -> bytes:
    return b"secagg/pairmask|" + session.encode()


def share_aad(session: str, sender: str, receiver: str) -> bytes:
    return b"secagg/share|" + b"\x00".join(x.encode() for x in (session, sender, receiver))


def x_coordinates(ids: list[str]) -> dict[str, int]:
    return {pid: i + 1 for i, pid in enumerate(sorted(ids))}


def pair_sign(u: str, v: str) -> int:
    return 1 if u < v else -1


def encode_input(
    update: NDArray[np.float32],
    weight: float,
    spec: FixedPointSpec,
    *,
    clip: float,
    max_weight: float,
) -> NDArray[np.unsignedinteger]:
    """The plaintext the client masks: weight x clipped update, then the weight itself.

    Each element is clipped to [-clip, clip] and the weight capped at ``max_weight``, so
    every encoded value lies within ``spec.clip = max_weight * max(clip, 1)``.
    """
    w = min(float(weight), max_weight)
    clipped = np.clip(update.astype(np.float64), -clip, clip)
    values = np.concatenate([w * clipped, [w]])
    return encode(values, spec, seed=os.urandom(32))


class SecAggClient:
    """One participant in one session. Holds its own keys; sees only its messages."""

    def __init__(
        self,
        *,
        pid: str,
        session: str,
        identity: IdentityKey,
        directory: Mapping[str, bytes],
        settings: MaskSettings,
        update: NDArray[np.float32],
        weight: float,
        sealed_summary: bytes = b"",
    ) -> None:
        self.pid = pid
        self.session = session
        self.stage = ClientStage.ADVERTISE
        self._identity = identity
        self._directory = dict(directory)  # identity public keys (PKI)
        self._settings = settings
        self._update = update
        self._weight = weight
        self._summary = sealed_summary
        self._c = AgreementKey.generate()
        self._s = AgreementKey.generate()
        self._b = os.urandom(32)
        # set by the directory
        self._keys: dict[str, tuple[bytes, bytes]] = {}
        self._nbrs: frozenset[str] = frozenset()
        self._all_ids: frozenset[str] = frozenset()
        self._share_keys: dict[str, bytes] = {}
        self._threshold = 0
        self._spec: FixedPointSpec | None = None
        self._length = 0
        # set by the delivery
        self._held: dict[str, tuple[bytes, bytes]] = {}  # peer -> (b share, s share)
        self._masked_with: frozenset[str] = frozenset()
        self._survivors: tuple[str, ...] = ()

    # --- the step function -------------------------------------------------------------

    def start(self) -> bytes:
        """Stage 0: advertise two fresh public keys, signed with the identity key."""
        if self.stage is not ClientStage.ADVERTISE:
            raise StageError(f"{self.pid}: keys already advertised")
        c_pk, s_pk = self._c.public_bytes(), self._s.public_bytes()
        sig = self._identity.sign(
            advertise_payload(self.session, self.pid, c_pk, s_pk), label=LABEL_ADVERTISE
        )
        self.stage = ClientStage.SHARE
        return encode_message(AdvertiseKeys(self.session, self.pid, c_pk, s_pk, sig))

    def handle(self, data: bytes) -> bytes:
        """Consume one server message, return the reply. Refusals change nothing."""
        msg = decode_message(data)
        if msg.session != self.session:
            raise StageError(
                f"{self.pid}: message of session {msg.session!r}, not {self.session!r}"
            )
        expected = {
            ClientStage.SHARE: KeyDirectory,
            ClientStage.INPUT: ShareDelivery,
            ClientStage.CONSISTENCY: SurvivorList,
            ClientStage.UNMASK: UnmaskRequest,
        }.get(self.stage)
        if expected is None or not isinstance(msg, expected):
            raise StageError(
                f"{self.pid}: {type(msg).__name__} not expected in stage {self.stage.name}"
            )
        if isinstance(msg, KeyDirectory):
            return self._on_directory(msg)
        if isinstance(msg, ShareDelivery):
            return self._on_delivery(msg)
        if isinstance(msg, SurvivorList):
            return self._on_survivors(msg)
        if isinstance(msg, UnmaskRequest):
            return self._on_unmask(msg)
        raise StageError(f"{self.pid}: unexpected {type(msg).__name__}")

    # --- stages ----------------------------------------------------------------------

    def _on_directory(self, msg: KeyDirectory) -> bytes:
        if self.pid not in msg.keys:
            raise SecurityViolation(f"{self.pid}: the directory omits this participant")
        unknown = set(msg.keys) - set(self._directory)
        if unknown:
            raise SecurityViolation(
                f"{self.pid}: {sorted(unknown)} have no identity key in the PKI"
            )
        ids = sorted(msg.keys)
        degree = min(msg.degree, len(ids) - 1)
        if msg.threshold < safe_floor(degree) or msg.threshold > degree:
            raise SecurityViolation(
                f"{self.pid}: threshold {msg.threshold} outside [{safe_floor(degree)}, {degree}] "
                f"for degree {degree}"
            )
        if len(msg.graph_seed) != 32 or msg.length < 1:
            raise MessageError(f"{self.pid}: bad graph seed or vector length")
        if msg.length != self._update.size:
            raise MessageError(
                f"{self.pid}: session length {msg.length} != update {self._update.size}"
            )
        nbrs = neighbours_of(self.pid, ids, degree, seed=msg.graph_seed)
        # only the keys this client will use need checking: its own and its neighbours'
        keys: dict[str, tuple[bytes, bytes]] = {}
        for peer in sorted(nbrs | {self.pid}):
            c_hex, s_hex, sig_hex = msg.keys[peer]
            try:
                c_pk, s_pk, sig = bytes.fromhex(c_hex), bytes.fromhex(s_hex), bytes.fromhex(sig_hex)
            except ValueError:
                raise MessageError(f"{self.pid}: keys of {peer!r} are not hex") from None
            verify_signature(
                self._directory[peer],
                advertise_payload(self.session, peer, c_pk, s_pk),
                sig,
                label=LABEL_ADVERTISE,
            )
            keys[peer] = (c_pk, s_pk)
        if keys[self.pid] != (self._c.public_bytes(), self._s.public_bytes()):
            raise SecurityViolation(f"{self.pid}: the directory altered this participant's keys")
        s = self._settings
        spec = FixedPointSpec(bits=s.bits, scale=msg.scale, clip=s.max_weight * max(s.clip, 1.0))
        check_headroom(spec, n_summands=len(ids))
        xs = x_coordinates(ids)
        order = sorted(nbrs)
        shares = shamir_split(
            [self._b, self._s.private_bytes()],
            threshold=msg.threshold,
            xs=[xs[v] for v in order],
        )
        cts = {}
        share_keys = {
            v: self._c.derive(keys[v][0], label=b"secagg/sharekey|" + self.session.encode())
            for v in order
        }
        for v, (b_share, s_share) in zip(order, shares, strict=True):
            key = share_keys[v]
            plain = struct.pack(">H", len(b_share)) + b_share + s_share
            cts[v] = aead_seal(key, plain, aad=share_aad(self.session, self.pid, v))
        self._keys, self._nbrs, self._threshold = keys, nbrs, msg.threshold
        self._share_keys = share_keys
        self._all_ids = frozenset(ids)
        self._spec, self._length = spec, msg.length
        self.stage = ClientStage.INPUT
        return encode_message(ShareKeys(self.session, self.pid, cts))

    def _on_delivery(self, msg: ShareDelivery) -> bytes:
        unknown = set(msg.ciphertexts) - self._nbrs
        if unknown:
            raise SecurityViolation(f"{self.pid}: shares from non-neighbours {sorted(unknown)}")
        held: dict[str, tuple[bytes, bytes]] = {}
        for u, ct in msg.ciphertexts.items():
            key = self._share_keys[u]
            try:
                plain = aead_open(key, ct, aad=share_aad(self.session, u, self.pid))
                (blen,) = struct.unpack_from(">H", plain)
                held[u] = (plain[2 : 2 + blen], plain[2 + blen :])
            except (CryptoError, struct.error):
                continue  # a tampered share: this client cannot help recover u's secrets
        masked_with = frozenset(msg.ciphertexts)  # neighbours that completed key sharing
        if self._spec is None:
            raise StageError(f"{self.pid}: no key directory seen")
        s = self._settings
        y = encode_input(
            self._update, self._weight, self._spec, clip=s.clip, max_weight=s.max_weight
        )
        dtype = self._spec.dtype
        y += expand_mask(self._b, label=b"secagg/selfmask", length=y.size, dtype=dtype)
        label = mask_label(self.session)
        for v in sorted(masked_with):
            seed = self._s.derive(self._keys[v][1], label=label)
            m = expand_mask(seed, label=b"secagg/pairmask", length=y.size, dtype=dtype)
            if pair_sign(self.pid, v) > 0:
                y += m
            else:
                y -= m
        self._held, self._masked_with = held, masked_with
        self.stage = ClientStage.CONSISTENCY
        return encode_message(MaskedInput(self.session, self.pid, self._summary, y))

    def _on_survivors(self, msg: SurvivorList) -> bytes:
        if len(set(msg.survivors)) != len(msg.survivors) or not set(msg.survivors) <= self._all_ids:
            raise SecurityViolation(f"{self.pid}: malformed survivor list")
        sig = self._identity.sign(
            survivors_payload(self.session, msg.survivors), label=LABEL_SURVIVORS
        )
        self._survivors = tuple(sorted(msg.survivors))
        self.stage = ClientStage.UNMASK
        return encode_message(ConsistencySignature(self.session, self.pid, sig))

    def _on_unmask(self, msg: UnmaskRequest) -> bytes:
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        both = survivors & dropped
        if both:
            raise SecurityViolation(
                f"{self.pid}: server lists {sorted(both)} as both surviving and dropped"
            )
        if tuple(sorted(survivors)) != self._survivors:
            raise SecurityViolation(f"{self.pid}: survivor list changed after signing")
        if len(msg.signatures) < self._threshold:
            raise SecurityViolation(
                f"{self.pid}: only {len(msg.signatures)} consistency signatures, "
                f"threshold {self._threshold}"
            )
        payload = survivors_payload(self.session, self._survivors)
        if not set(msg.signatures) <= survivors:
            raise SecurityViolation(f"{self.pid}: consistency signatures from non-survivors")
        # t valid signatures from distinct survivors on this exact list suffice (Bonawitz
        # et al.'s consistency check); checking more adds cost, not security
        for signer in sorted(msg.signatures)[: self._threshold]:
            verify_signature(
                self._directory[signer], payload, msg.signatures[signer], label=LABEL_SURVIVORS
            )
        if not dropped <= self._all_ids:
            raise SecurityViolation(f"{self.pid}: unknown participants listed as dropped")
        b_shares = {v: self._held[v][0] for v in survivors if v in self._held}
        # a key share only for a peer that was in the key-sharing stage and did not survive
        s_shares = {v: self._held[v][1] for v in dropped if v in self._held}
        self.stage = ClientStage.DONE
        return encode_message(UnmaskResponse(self.session, self.pid, b_shares, s_shares))


__all__ = ["ClientStage", "SecAggClient"]
