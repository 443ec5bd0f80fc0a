"""The coordinator's side of SecAgg+, as an explicit state machine.

``receive(message)`` files one client message into the current stage (typed errors for
a wrong session, a wrong stage, a replay or a malformed message; nothing changes), and
``close_*`` ends a stage and returns the messages to send. The server never holds a
participant's secret: it relays ciphertexts, sums masked vectors, and rebuilds only the
secrets the unmasking step needs (see :mod:`protocols.secagg.unmasking`).

A message that does not decode, or an advertisement with a bad signature, a low-order
or duplicated public key, or a share message not addressed to exactly the sender's
neighbours, excludes its sender (``excluded``; ``receive(data, sender=...)`` names the
transport's sender for messages that do not decode) and the session goes on for the
others. The server derives (k, t, T), the graph seed and the fixed-point encoding
exactly as the clients do (:func:`protocols.secagg.graph.session_parameters`,
``graph_seed_from``, :func:`protocols.secagg.settings.encoding_spec`); clients check
them, they never take the server's word.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from enum import Enum
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from crypto.agreement import AgreementKey
from crypto.encoding import require_identifier
from crypto.errors import (
    CryptoError,
    MessageError,
    SecurePoolError,
    SecurityViolation,
    StageError,
    ThresholdNotMet,
)
from crypto.fixedpoint import FixedPointSpec
from crypto.signing import verify_signature
from protocols.secagg.binding import (
    BindingKeys,
    JudgeRequest,
    MaskVerdict,
    PostCheckRequest,
    input_digest,
    projection,
    projection_seed,
)
from protocols.secagg.client import (
    LABEL_ADVERTISE,
    LABEL_DIGEST,
    LABEL_SURVIVORS,
    advertise_payload,
    digest_payload,
    survivors_payload,
    valid_x25519,
    x_coordinates,
)
from protocols.secagg.graph import graph_seed_from, neighbours, session_parameters
from protocols.secagg.labels import NO_DIGEST
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
from protocols.secagg.settings import MaskSettings, encoding_spec
from protocols.secagg.unmasking import Recovered, unmask_and_recover


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
        joint_seed: bytes,
        members: Iterable[str] | None = None,
        binding: BindingKeys | None = None,
        advert_session: str | None = None,
    ) -> None:
        try:
            self.session = require_identifier("session", session)
            self.members = frozenset(
                require_identifier("member", m) for m in (directory if members is None else members)
            )
        except SecurePoolError as exc:
            raise MessageError(str(exc)) from None
        if not self.members <= set(directory):
            raise SecurityViolation("every member needs an identity key in the directory")
        self.stage = ServerStage.KEYS
        #: the label the adverts are signed under: the session, or for keys advertised
        #: in advance (protocols.secagg.prekeys) the beacon round's ``keys-r<k>``
        self._advert_session = advert_session or self.session
        self._prekeyed = self._advert_session != self.session
        self._model_digests: dict[str, tuple[bytes, bytes]] = {}  # prekeyed: from ShareKeys
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
        self.params = session_parameters(
            max(len(self.members), 2),
            dropout=settings.expected_dropout,
            corrupt=settings.corrupt_fraction,
            correctness_bits=settings.correctness_bits,
            security_bits=settings.security_bits,
            degree=settings.degree,
        )
        self.degree = self.params.degree
        self.threshold = self.params.threshold
        self.spec: FixedPointSpec | None = None
        self._nbrs: dict[str, frozenset[str]] = {}
        self._graph_seed = graph_seed_from(joint_seed, session=self.session)
        self._probe = AgreementKey.generate()
        self._seen_keys: dict[bytes, str] = {}
        self._shares_in: dict[str, ShareKeys] = {}
        self._responses: dict[str, UnmaskResponse] = {}
        # the binding of mask mode (protocols.secagg.binding)
        self.binding = binding
        self._joint_seed = joint_seed
        self.digests: dict[str, bytes] = {}
        self._payloads: dict[bytes, bytes] = {}  # survivors_payload per model digest
        self.reports: dict[str, bytes] = {}  # sealed binding reports of the survivors
        self.verdict: MaskVerdict | None = None
        self.contributors: frozenset[str] = frozenset()
        self.recovered: Recovered | None = None

    # --- receiving -------------------------------------------------------------------

    def receive(self, data: bytes, *, sender: str | None = None) -> None:
        """File one client message; refuse anything out of place without changing state.

        ``sender`` is who the transport says sent ``data`` (optional). A message that does
        not decode, or fails a check of its content (signature, keys, addressing), excludes
        that sender from the session (``excluded``); the error is raised all the same.
        Out-of-stage, wrong-session and replayed messages raise StageError and exclude
        nobody (a network may duplicate or delay a message).
        """
        expected = _EXPECTED.get(self.stage)
        if expected is None:
            raise StageError("session finished: no more messages accepted")
        if sender is not None and sender in self.excluded:
            raise StageError(f"{sender} is excluded from this session")
        try:
            msg: Any = decode_message(data)
        except MessageError as exc:
            if sender is not None and sender in self.members:
                self._exclude(sender, f"malformed message: {exc}")
            raise
        session = self._advert_session if isinstance(msg, AdvertiseKeys) else self.session
        if msg.session != session:
            raise StageError(f"message of session {msg.session!r}, not {session!r}")
        if not isinstance(msg, expected):
            raise StageError(f"{type(msg).__name__} not expected in stage {self.stage.name}")
        claimed = str(cast(Any, msg).sender)
        if sender is not None and claimed != sender:
            if sender in self.members:
                self._exclude(sender, f"sent a message in the name of {claimed!r}")
            raise SecurityViolation(f"{sender} sent a message in the name of {claimed!r}")
        if claimed in self.excluded:
            raise StageError(f"{claimed} is excluded from this session")
        if claimed in self._inbox:
            raise StageError(f"{claimed} already sent {type(msg).__name__} (replay)")
        if claimed not in self.members:
            raise MessageError(f"unknown sender {claimed!r}")
        try:
            self._check(claimed, msg)
        except (CryptoError, MessageError, SecurityViolation) as exc:
            if not isinstance(msg, ConsistencySignature | UnmaskResponse):
                self._exclude(claimed, f"{type(exc).__name__}: {exc}")
            raise
        self._inbox[claimed] = msg

    def _check(self, sender: str, msg: Any) -> None:
        if isinstance(msg, AdvertiseKeys):
            verify_signature(
                self._directory[sender],
                advertise_payload(
                    self._advert_session, sender, msg.c_pk, msg.s_pk, msg.model_digest
                ),
                msg.signature,
                label=LABEL_ADVERTISE,
            )
            if self._prekeyed and msg.model_digest != NO_DIGEST:
                raise SecurityViolation(f"{sender}: an advance advert names a model digest")
            for pk in (msg.c_pk, msg.s_pk):
                if not valid_x25519(pk, self._probe):
                    raise SecurityViolation(f"{sender}: invalid X25519 public key (low order)")
                if pk in self._seen_keys or msg.c_pk == msg.s_pk:
                    raise SecurityViolation(
                        f"{sender}: re-advertises a public key of {self._seen_keys.get(pk, sender)}"
                    )
            self._seen_keys[msg.c_pk] = self._seen_keys[msg.s_pk] = sender
            return
        if sender not in self.advertised:
            raise StageError(f"{sender} did not take part in the key advertisement")
        if isinstance(msg, ShareKeys):
            if set(msg.ciphertexts) != set(self._nbrs[sender]):
                raise SecurityViolation(f"{sender}: shares not addressed to exactly its neighbours")
            self._check_digest(sender, msg)
        if isinstance(msg, MaskedInput):
            if msg.vector.size != self.length + 1 or self.spec is None:
                raise MessageError(f"{sender}: masked vector has {msg.vector.size} words")
            if msg.vector.dtype != np.dtype(self.spec.dtype):
                raise MessageError(f"{sender}: masked vector dtype {msg.vector.dtype}")
        if isinstance(msg, ConsistencySignature):
            if sender not in self.survivors:
                raise SecurityViolation(f"{sender} is not a survivor")
            digest = self._model_digest(sender)
            payload = self._payloads.get(digest)
            if payload is None:  # one payload per model digest, not one per signer
                payload = survivors_payload(self.session, digest, self.survivors, self.digests)
                self._payloads[digest] = payload
            verify_signature(self._directory[sender], payload, msg.signature, label=LABEL_SURVIVORS)

    def _check_digest(self, sender: str, msg: ShareKeys) -> None:
        """Keys advertised in advance: the sender's signed model digest (else none)."""
        if not self._prekeyed:
            if msg.model_digest or msg.digest_signature:
                raise MessageError(f"{sender}: a model digest in ShareKeys of advertised keys")
            return
        if len(msg.model_digest) != 32 or len(msg.digest_signature) != 64:
            raise MessageError(f"{sender}: ShareKeys without its signed model digest")
        verify_signature(
            self._directory[sender],
            digest_payload(self.session, sender, msg.model_digest),
            msg.digest_signature,
            label=LABEL_DIGEST,
        )

    def _model_digest(self, pid: str) -> bytes:
        """The model digest ``pid`` signed: in its advert, or in its ShareKeys."""
        if self._prekeyed:
            return self._model_digests[pid][0]
        return self.advertised[pid].model_digest

    def _exclude(self, pid: str, reason: str) -> None:
        self.excluded.setdefault(pid, reason)
        self._inbox.pop(pid, None)

    def _take(self) -> dict[str, object]:
        inbox, self._inbox = self._inbox, {}
        return inbox

    # --- closing stages ----------------------------------------------------------------

    def close_step(self, verdict: tuple[bytes, bytes] | None = None) -> dict[str, bytes]:
        """Close whichever of stages 0-3 the session is in; each recipient's next message
        (the key directory to every advertiser, each sharer's delivery, the survivor list
        to every survivor, the unmask request to every signer). ``verdict``: the
        auditor's, for the unmask request of a session with binding.

        Security: the same checks as the stage's own ``close_*`` method (thresholds,
        consistency, the verdict); stage 4 is :meth:`close_unmask`, which returns the sum.
        """
        if self.stage is ServerStage.KEYS:
            msg = self.close_keys()
            return {pid: msg for pid in sorted(self.advertised)}
        if self.stage is ServerStage.SHARES:
            return self.close_shares()
        if self.stage is ServerStage.INPUTS:
            msg = self.close_inputs(None)
            return {pid: msg for pid in sorted(self.survivors)}
        msg = self.close_signatures(verdict)  # refuses any stage but SIGNATURES
        return {pid: msg for pid in sorted(self.signers)}

    def close_keys(self) -> bytes:
        """End stage 0; return the key directory (one message, broadcast)."""
        self._require(ServerStage.KEYS)
        self.advertised = {k: v for k, v in self._take().items() if isinstance(v, AdvertiseKeys)}
        n = len(self.advertised)
        self._enough(n, "advertised keys")
        k = self.degree
        # the clients derive the same spec from the settings and their whole group
        spec = encoding_spec(self.settings, group_size=len(self.members))
        self.spec = spec
        graph = neighbours(sorted(self.members), k, seed=self._graph_seed)
        present = frozenset(self.advertised)
        self._nbrs = {u: graph[u] & present for u in present}
        self.stage = ServerStage.SHARES
        keys = {
            p: (a.c_pk, a.s_pk, a.model_digest, a.signature) for p, a in self.advertised.items()
        }
        return encode_message(
            KeyDirectory(self.session, keys, self._graph_seed, spec.scale, self.length)
        )

    def close_shares(self) -> dict[str, bytes]:
        """End stage 1; return each key-sharing client's delivery of ciphertexts."""
        self._require(ServerStage.SHARES)
        got = {k: v for k, v in self._take().items() if isinstance(v, ShareKeys)}
        self._enough(len(got), "clients that shared keys")
        self.shared = frozenset(got)
        self._shares_in = got
        if self._prekeyed:
            self._model_digests = {
                u: (m.model_digest, m.digest_signature) for u, m in sorted(got.items())
            }
        deliveries: dict[str, bytes] = {}
        for v in sorted(self.shared):
            cts = {u: got[u].ciphertexts[v] for u in sorted(self._nbrs[v] & self.shared)}
            deliveries[v] = encode_message(
                ShareDelivery(self.session, cts, dict(self._model_digests))
            )
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
        # the digests fix the binding's projection (clients check their own and sign
        # them all); without binding nobody checks them: not computed, not listed
        if self.binding is not None:
            self.digests = {k: input_digest(v) for k, v in self.inputs.items()}
        flagged = dict(vet(self.summaries)) if vet is not None else {}
        for pid, reason in flagged.items():
            if pid in self.inputs:
                self.excluded[pid] = f"untrusted: {reason}"
        self.survivors = frozenset(self.inputs) - frozenset(flagged)
        self._enough(len(self.survivors), "surviving masked inputs")
        if len(self.survivors) < self.params.consistency:
            raise ThresholdNotMet(
                f"{len(self.survivors)} survivors, consistency threshold {self.params.consistency}",
                survivors=len(self.survivors),
                threshold=self.params.consistency,
            )
        self.stage = ServerStage.SIGNATURES
        return encode_message(
            SurvivorList(self.session, tuple(sorted(self.survivors)), dict(self.digests))
        )

    def collect_signatures(self) -> None:
        """Take the consistency signatures (and binding reports) received so far; called
        by :meth:`close_signatures`, or before :meth:`judge_request` with binding."""
        self._require(ServerStage.SIGNATURES)
        got = {k: v for k, v in self._take().items() if isinstance(v, ConsistencySignature)}
        self.signers.update({k: v.signature for k, v in got.items() if k in self.survivors})
        self.reports.update(
            {k: v.sealed_report for k, v in got.items() if k in self.survivors and v.sealed_report}
        )

    def judge_request(self) -> JudgeRequest:
        """What the auditor needs to judge the binding: the sealed reports, R y_i of every
        survivor that reported (the coordinator holds y_i), the input digests and who
        shared keys with whom. Requires ``binding``."""
        if self.binding is None or self.spec is None:
            raise StageError("this session runs without binding")
        self.collect_signatures()
        seed = projection_seed(
            session=self.session, joint_seed=self._joint_seed, digests=self.digests
        )
        proj = projection(seed, length=self.length + 1, dim=self.binding.dim)
        projected = {p: proj.apply(self.inputs[p]) for p in sorted(self.reports)}
        return JudgeRequest(
            session=self.session,
            members=self.members,
            joint_seed=self._joint_seed,
            spec=self.spec,
            length=self.length + 1,
            digests=dict(self.digests),
            survivors=self.survivors,
            projected=projected,
            reports=dict(self.reports),
            # who shared keys with whom: exactly the neighbours each one masked with
            neighbours={p: self._nbrs.get(p, frozenset()) & self.shared for p in self.survivors},
        )

    def close_signatures(self, verdict: tuple[bytes, bytes] | None = None) -> bytes:
        """End stage 3; send the unmask request with every consistency signature and,
        with binding, the auditor's signed ``verdict`` (required then): its flagged and
        excluded members leave the aggregate through the dropout path."""
        self.collect_signatures()
        if self.binding is not None:
            if verdict is None:
                raise StageError("a session with binding needs the auditor's verdict")
            checked = MaskVerdict.verified(
                verdict[0], verdict[1], auditor=self.binding.auditor_identity, session=self.session
            )
            # the clients refuse a verdict of another group instance: so does the server
            checked.require_instance(
                members=self.members, survivors=self.survivors, digests=self.digests
            )
            self.verdict = checked
        left_out = self.verdict.left_out if self.verdict is not None else frozenset()
        self.contributors = self.survivors - left_out
        self._enough(len(self.contributors), "contributors after the auditor's verdict")
        if len(self.contributors) < self.params.consistency:  # clients refuse it too
            raise ThresholdNotMet(
                f"{len(self.contributors)} contributors after the auditor's verdict, "
                f"consistency threshold {self.params.consistency}",
                survivors=len(self.contributors),
                threshold=self.params.consistency,
            )
        need = self.params.consistency
        if len(self.signers) < need:
            raise ThresholdNotMet(
                f"{len(self.signers)} consistency signatures, consistency threshold {need}",
                survivors=len(self.signers),
                threshold=need,
            )
        dropped = tuple(sorted(self.shared - self.survivors))
        self.stage = ServerStage.UNMASK
        data, sig = verdict if verdict is not None else (b"", b"")
        return encode_message(
            UnmaskRequest(
                self.session, tuple(sorted(self.survivors)), dropped, dict(self.signers), data, sig
            )
        )

    def close_unmask(self) -> NDArray[np.unsignedinteger]:
        """End stage 4: the unmasking step. Returns the sum of the contributors' encoded
        inputs (the survivors the verdict did not leave out); ``recovered`` then holds
        the secrets rebuilt, for the binding post-check (:meth:`post_check_request`)."""
        self._require(ServerStage.UNMASK)
        got = {k: v for k, v in self._take().items() if isinstance(v, UnmaskResponse)}
        b_shares: dict[str, dict[str, bytes]] = {}
        s_shares: dict[str, dict[str, bytes]] = {}
        others = self.shared - self.contributors
        for holder, resp in got.items():
            # only shares of the holder's neighbours count, of the right kind per owner
            # (owners taken in the order the message lists them, as one loop would)
            nbrs = self._nbrs[holder]
            for owner in sorted(resp.b_shares.keys() & (self.contributors & nbrs)):
                b_shares.setdefault(owner, {})[holder] = resp.b_shares[owner]
            for owner in sorted(resp.s_shares.keys() & (others & nbrs)):
                s_shares.setdefault(owner, {})[holder] = resp.s_shares[owner]
        if self.spec is None:
            raise StageError("no fixed-point spec: key stage never closed")
        total, self.recovered = unmask_and_recover(
            session=self.session,
            masked=self.inputs,
            survivors=self.contributors,
            shared=self.shared,
            nbrs=self._nbrs,
            s_public={p: a.s_pk for p, a in self.advertised.items()},
            b_shares=b_shares,
            s_shares=s_shares,
            xs=x_coordinates(self.members),
            threshold=self.threshold,
            dtype=self.spec.dtype,
        )
        self.stage = ServerStage.DONE
        return total

    def post_check_request(self) -> PostCheckRequest:
        """What :func:`~protocols.secagg.binding.post_check` runs on after unmasking: the
        auditor's verdict (its commitments), the rebuilt self-mask seeds of the
        contributors and mask keys of the others, every advertised mask key."""
        if self.recovered is None or self.verdict is None or self.binding is None:
            raise StageError("nothing unmasked under an auditor's verdict yet")
        if self.spec is None:
            raise StageError("no fixed-point spec: key stage never closed")
        return PostCheckRequest(
            session=self.session,
            verdict=self.verdict,
            contributors=self.contributors,
            self_seeds=dict(self.recovered.self_seeds),
            mask_keys=dict(self.recovered.mask_keys),
            s_public={p: a.s_pk for p, a in self.advertised.items()},
        )

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
