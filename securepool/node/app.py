"""ParticipantNode: one agency's side of every stage, as a NodeApp.

The node holds what only it may hold: its records, its identity key, its DP engine and
ledger, its beacon client, and, during an iteration, its SecAgg+ client (with the
plaintext update inside). It receives the beacon's outcome with its group's global model
in one stage (:attr:`NodeStage.TRAIN`), recomputes the assignment itself, trains, and
answers with the first protocol message, so local training costs no extra round trip.

Checks done by the node, whatever the coordinator says: the beacon's commitments and
reveals and the announced groups (:class:`protocols.beacon.BeaconParticipant`); that
the model id it is sent is its own group's and the vector has that model's size; group
size, neighbours, thresholds, model consistency and replayed sessions
(:class:`protocols.secagg.client.SecAggClient`; in HE mode the node signs its model
digest in its receipt and the auditor compares the group's); its own privacy budget
(:class:`securepool.privacy.trainer.ParticipantDP`). A refused message is answered with
a typed refusal (:func:`securepool.node.wire.refusal`) and changes nothing.

State that must survive a restart (the privacy ledger, the last beacon and SecAgg+
iterations, so old iterations cannot be replayed to a restarted node) is written
atomically to ``state_dir/node_state.json`` after every change. The beacon and SecAgg+
state machines of the iteration in progress are snapshotted (:mod:`protocols.snapshot`)
to ``state_dir/session.json`` (owner-only: it holds the session's private keys, nonce
and update) after every stage and deleted when the session ends, so a runtime that
builds a fresh NodeApp for every message (Flower) and a node restarted mid-iteration
both go on where they were. A NodeApp built over the same ``state_dir`` while another
is live must not answer concurrently (one SuperNode per agency runs one message at a
time).

Both files are authenticated (:mod:`securepool.node.state_files`: HMAC-SHA256 under a
key derived from the node's identity key, bound to the node id, the file and a format
version) and read back with typed errors only. A session file that does not verify, or
was written at other counters than the node's (an older session's), is discarded: the
node drops out of that session (a dropout, reported in its HELLO) and goes on. A
``node_state.json`` that does not verify leaves the node without replay counters it can
trust, so it answers no stage but HELLO (each refusal names the file) and never writes
over the file, rather than start again from round 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import MessageError, SecurePoolError, SecurityViolation, StageError
from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.aggregation import AggregationMode, ClientInput, Weighting
from protocols.beacon import BeaconParticipant, group_joint_seed, seeded_insecure_nonces
from protocols.offer_epochs import HE_CONTEXT, TRUST_OFFER, OfferEpochs
from protocols.plaintext import encode_plain_update
from protocols.quorum import Endorsement, verify_certificate
from protocols.secagg.binding import BindingKeys
from protocols.secagg.client import ClientStage, SecAggClient, SessionHistory
from protocols.secagg.prekeys import PreKeys
from protocols.secagg.stepped import SteppedClient, StepRule, noise_floor
from protocols.session_state import restore_beacon, restore_secagg, snapshot_beacon, snapshot_secagg
from protocols.trust_offer import TRUST_SETUP_SESSION, open_trust_offer
from securepool.assignment import groups_for
from securepool.config import BeaconMode, RunConfig, federated_scaling
from securepool.node.agreement import QuorumRule, model_hash, models_context, session_name
from securepool.node.auditor import AUDITOR_ID, HE_SETUP_SESSION
from securepool.node.ballot import (
    BallotContext,
    candidate_losses,
    check_ballot_request,
    params_digest,
)
from securepool.node.scaling import ScalingPart
from securepool.node.state_files import node_file_key, open_node_file, seal_node_file
from securepool.node.wire import (
    BallotRequest,
    NodeStage,
    Reply,
    TrainRequest,
    decode_bundle,
    decode_globals,
    pack_list,
    refusal,
)
from securepool.outputs import private_dir, write_private
from securepool.privacy.config import Mechanism
from securepool.scaling_round import is_scaling_session, members_of, round_settings
from securepool.trust.config import VotingRule

if TYPE_CHECKING:  # torch and the datasets are imported where training happens only
    from securepool.data import LocalData
    from securepool.models import Layout

STATE_FILE = "node_state.json"
SESSION_FILE = "session.json"


def _quorum_from_json(value: Any) -> tuple[tuple[int, bytes] | None, int]:
    """(endorsed (round, digest), certified round) from a session file's ``quorum``."""
    if value is None:
        return None, 0
    if (
        isinstance(value, list)
        and len(value) == 3
        and type(value[0]) is int
        and type(value[2]) is int
        and isinstance(value[1], str)
        and len(value[1]) == 64
    ):
        try:
            return (value[0], bytes.fromhex(value[1])), value[2]
        except ValueError:
            pass
    raise MessageError(f"{SESSION_FILE}: a malformed quorum record")


def training_seed(seed: int, iteration: int, k: int) -> int:
    """The local-training seed of the k-th member of a group in pool iteration ``iteration``."""
    return int(np.random.SeedSequence([seed, iteration, k, 0x7A1]).generate_state(1)[0])


class ParticipantNode:
    """One participant's NodeApp (see the module docstring)."""

    def __init__(
        self,
        pid: str,
        *,
        cfg: RunConfig,
        data: LocalData | Callable[[], LocalData],
        identity: IdentityKey,
        registry: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        n_features: int,
        n_classes: int,
        state_dir: Path | None = None,
        durable: Mapping[str, Any] | None = None,
        verified: VerifiedSignatures | None = None,
        sessions_on_disk: bool = True,
    ) -> None:
        self.pid = pid
        #: False in a long-lived node service (securepool.node.service): the session of
        #: the iteration in progress lives in memory only (a restart is a dropout from
        #: it); the durable state (ledger, replay counters) is still written
        self._sessions_on_disk = sessions_on_disk
        self.cfg = cfg
        # records, models and the DP engine are built on first use: the stages that do not
        # train (beacon, SecAgg+ rounds) import neither torch nor the dataset
        self._data_source = data
        self._data_cache: LocalData | None = None
        self._shape = (n_features, n_classes)
        self._model_cache: dict[str, tuple[Any, Layout]] | None = None
        self._dp_engine: Any = None
        self._privacy_state: Any = None
        self._identity = identity
        #: the in-process runtime's memo of verified signatures (crypto.signing), shared by
        #: the nodes of one process; None: this node verifies every signature itself
        self._verified = verified
        self._registry_source = registry
        self._registry: Mapping[str, bytes] | None = None
        self._state_dir = None if state_dir is None else Path(state_dir)
        self._beacon: BeaconParticipant | None = None
        self._beacon_last = 0
        self._history = SessionHistory()
        self._client: SecAggClient | None = None
        #: mask mode: the key pair this node advertised with its last beacon reveal, for
        #: that round's SecAgg+ session (protocols.secagg.prekeys); used once
        self._prekeys: PreKeys | None = None
        #: (beacon round, statement digest) this node endorsed at its last train, and
        #: the round whose quorum certificate it holds (protocols.quorum): its SecAgg+
        #: messages leave only under a certificate on the statement it endorsed
        self._endorsed: tuple[int, bytes] | None = None
        self._certified = 0
        self._ballot: BallotContext | None = None  # the validation vote, until it votes
        self._session_error: str | None = None
        #: set when node_state.json does not verify: this node then answers no round
        self._state_error: str | None = None
        self._file_key = node_file_key(identity)  # authenticates its state files
        #: the newest auditor offers it accepted (epochs): older ones are refused
        self._offers = OfferEpochs()
        #: data.scaling = "federated": the statistics rounds and the agreed scaling
        self._scaling = ScalingPart(pid, cfg, n_features=n_features)
        self._scaled_cache: LocalData | None = None
        self._load_state()
        if durable is not None:  # an in-memory node resumed from its exported state
            self._apply_state(durable)
        self._load_session()

    # --- built on first use ----------------------------------------------------------

    @property
    def _raw_data(self) -> LocalData:
        """The records as read (the statistics round's input)."""
        if self._data_cache is None:
            src = self._data_source
            self._data_cache = src() if callable(src) else src
        return self._data_cache

    @property
    def _data(self) -> LocalData:
        """The records the models see: under the agreed scaling, if the run has one."""
        if self._scaled_cache is None:
            self._scaled_cache = self._scaling.scaled(self._raw_data)
        return self._scaled_cache

    def _models(self) -> dict[str, tuple[Any, Layout]]:
        """Every pool model (torch module, layout), built on first use."""
        if self._model_cache is None:
            from securepool.models import build_spec_model, layout_of

            n_features, n_classes = self._shape
            self._model_cache = {}
            for m in self.cfg.pool.models:
                model = build_spec_model(m, n_features=n_features, n_classes=n_classes)
                self._model_cache[m.id] = (model, layout_of(model))
        return self._model_cache

    @property
    def _dp(self) -> Any:
        """This participant's DP engine and ledger (None without DP), built on first use."""
        if not self.cfg.privacy.enabled:
            return None
        if self._dp_engine is None:
            from securepool.privacy.trainer import ParticipantDP

            self._dp_engine = ParticipantDP(
                self.pid, self.cfg.privacy, planned_rounds=self.cfg.convergence.max_iterations
            )
            if self._privacy_state is not None:
                self._dp_engine.load_state_dict(self._privacy_state)
        return self._dp_engine

    # --- persistence -----------------------------------------------------------------

    def _load_state(self) -> None:
        path = None if self._state_dir is None else self._state_dir / STATE_FILE
        if path is None or not path.is_file():
            return
        try:
            data = path.read_bytes()
            self._apply_state(
                open_node_file(data, key=self._file_key, kind=STATE_FILE, node=self.pid)
            )
        except SecurePoolError as exc:
            # counters it cannot trust: it may have answered any round since, so it
            # answers none (and keeps the file as it is for its operator)
            self._state_error = f"{self.pid}: {path} refused, so no round is answered: {exc}"

    def _apply_state(self, state: Mapping[str, Any]) -> None:
        """Counters and ledger from a state file or an exported state; MessageError or
        SecurityViolation if they are not this node's, of the right types."""
        if not isinstance(state, Mapping):
            raise MessageError(f"{self.pid}: node state is not an object")
        if state.get("participant", self.pid) != self.pid:
            raise SecurityViolation(f"{self.pid}: node state of {state.get('participant')!r}")
        beacon_last = state.get("beacon_last_iteration", 0)
        secagg_last = state.get("secagg_last_iteration", -1)
        privacy = state.get("privacy")
        offers = OfferEpochs.from_json(state.get("auditor_offers", {}))
        if (
            type(beacon_last) is not int
            or type(secagg_last) is not int
            or beacon_last < 0
            or secagg_last < -1
            or not (privacy is None or isinstance(privacy, dict))
        ):
            raise MessageError(f"{self.pid}: node state with malformed counters or ledger")
        self._beacon_last = beacon_last
        self._history.last_iteration = secagg_last
        self._privacy_state = privacy
        self._offers = offers
        self._scaling.load_json(state.get("scaling"))
        self._scaled_cache = None
        self._dp_engine = None  # rebuilt from the restored ledger on first use

    def durable_state(self) -> dict[str, Any]:
        """What must survive a restart: the privacy ledger, the last beacon and
        SecAgg+ iterations (so old iterations cannot be replayed) and the newest auditor
        offers accepted (so retired keys' offers cannot be). A node with a state
        directory writes it there after every change; an in-memory node (the in-process
        runtime) is asked for it at every checkpoint and rebuilt with ``durable=``."""
        return {
            "participant": self.pid,
            "beacon_last_iteration": self._beacon_last,
            "secagg_last_iteration": self._history.last_iteration,
            "auditor_offers": self._offers.to_json(),
            "scaling": self._scaling.to_json(),
            "privacy": self._privacy_state
            if self._dp_engine is None
            else self._dp_engine.state_dict(),
        }

    def _save_state(self) -> None:
        if self._state_dir is None or self._state_error is not None:
            return
        private_dir(self._state_dir)
        write_private(
            self._state_dir / STATE_FILE,
            seal_node_file(
                self.durable_state(), key=self._file_key, kind=STATE_FILE, node=self.pid
            ),
        )

    def _counters(self) -> list[int]:
        """The replay counters a session file is bound to (see :meth:`_read_session`)."""
        return [self._beacon_last, self._history.last_iteration]

    def _load_session(self) -> None:
        """The beacon / SecAgg+ state machines a previous NodeApp left mid-iteration."""
        path = None if self._state_dir is None else self._state_dir / SESSION_FILE
        if path is None or not path.is_file() or self._state_error is not None:
            return
        if not self._sessions_on_disk:  # a session file left by a per-message runtime
            path.unlink(missing_ok=True)
            return
        try:
            machines, quorum, self._prekeys = self._read_session(path.read_bytes())
            self._beacon, self._client, self._ballot = machines
            self._endorsed, self._certified = quorum
        except SecurePoolError as exc:
            # an edited, torn, foreign or stale file: this iteration is lost (a dropout)
            self._beacon, self._client, self._ballot = None, None, None
            self._endorsed, self._certified = None, 0
            if self._state_error is None:
                path.unlink(missing_ok=True)
            self._session_error = f"session state discarded: {exc}"

    def _read_session(
        self, data: bytes
    ) -> tuple[
        tuple[BeaconParticipant | None, SecAggClient | None, BallotContext | None],
        tuple[tuple[int, bytes] | None, int],
        PreKeys | None,
    ]:
        """The state machines ``data`` (a session file) holds, the endorsed round and
        digest with the certified round, and the key pair advertised in advance (mask
        mode); typed errors only.

        The file must verify under this node's key and have been written at the node's
        current counters: an older session's file (lower counters) is refused; one
        written at higher counters means node_state.json was rolled back or deleted,
        so the node stops trusting its counters (:attr:`_state_error`)."""
        doc = open_node_file(data, key=self._file_key, kind=SESSION_FILE, node=self.pid)
        saved, now = doc.get("counters"), self._counters()
        if saved != now:
            if (
                isinstance(saved, list)
                and len(saved) == 2
                and all(type(c) is int for c in saved)
                and any(c > n for c, n in zip(saved, now, strict=True))
            ):
                self._state_error = (
                    f"{self.pid}: {SESSION_FILE} was written at counters {saved}, past "
                    f"{STATE_FILE}'s {now} (rolled back or deleted), so no round is answered"
                )
            raise StageError(
                f"{SESSION_FILE} was written at beacon/SecAgg+ counters {saved}, the node "
                f"is at {now} (an older session's file)"
            )
        parts = {k: doc.get(k) for k in ("beacon", "secagg")}
        if not all(v is None or isinstance(v, str) for v in parts.values()):
            raise MessageError(f"{SESSION_FILE}: a snapshot that is not a string")
        beacon = client = ballot = None
        if parts["beacon"] is not None:
            beacon = restore_beacon(
                parts["beacon"].encode(),
                identity=self._identity,
                registry=self._registry_now(),
                nonce_source=self._nonce_source(),
            )
        if parts["secagg"] is not None:
            scaling = doc.get("scaling") is True  # a statistics round's session
            client = restore_secagg(
                parts["secagg"].encode(),
                identity=self._identity,
                history=self._history,
                settings=round_settings(self.cfg, members=len(self._scaling_members()))
                if scaling
                else self.cfg.mask_settings(),
                cls=SecAggClient
                if scaling
                else (SteppedClient if self._stepped else self._secagg_class()),
            )
            if is_scaling_session(client.session) != scaling:
                raise MessageError(f"{SESSION_FILE}: a session of the wrong kind")
        if doc.get("ballot") is not None:
            ballot = BallotContext.from_json(doc["ballot"])
        prekeys = doc.get("prekeys")
        return (
            (beacon, client, ballot),
            _quorum_from_json(doc.get("quorum")),
            None if prekeys is None else PreKeys.from_json(prekeys),
        )

    def _save_session(self) -> None:
        if self._state_dir is None or self._state_error is not None:
            return
        if not self._sessions_on_disk:
            return
        path = self._state_dir / SESSION_FILE
        idle = (
            self._beacon is None
            and self._client is None
            and self._ballot is None
            and self._prekeys is None
        )
        if idle and self._endorsed is None:
            path.unlink(missing_ok=True)
            return
        private_dir(self._state_dir)
        doc = {
            "beacon": None if self._beacon is None else snapshot_beacon(self._beacon).decode(),
            "secagg": None if self._client is None else snapshot_secagg(self._client).decode(),
            "scaling": self._client is not None and is_scaling_session(self._client.session),
            "ballot": None if self._ballot is None else self._ballot.to_json(),
            "prekeys": None if self._prekeys is None else self._prekeys.to_json(),
            "quorum": None
            if self._endorsed is None
            else [self._endorsed[0], self._endorsed[1].hex(), self._certified],
            "counters": self._counters(),
        }
        write_private(
            path, seal_node_file(doc, key=self._file_key, kind=SESSION_FILE, node=self.pid)
        )

    # --- the NodeApp -----------------------------------------------------------------

    def handle(self, stage: str, payload: bytes) -> bytes:
        """Answer one stage; a refusal is a typed reply, never an exception."""
        try:
            return self._dispatch(NodeStage(stage), payload).to_bytes()
        except ValueError as exc:  # an unknown stage name
            return refusal(StageError(f"{self.pid}: unknown stage {stage!r}: {exc}"))
        except SecurePoolError as exc:
            return refusal(exc)
        finally:
            self._save_session()

    def _bundle(self, payload: bytes) -> bytes:
        """Each stage of a bundle in order; a refusal of one is that stage's reply only."""
        replies = []
        for stage, part in decode_bundle(payload):
            try:
                replies.append(self._dispatch(NodeStage(stage), part).to_bytes())
            except ValueError as exc:
                replies.append(refusal(StageError(f"{self.pid}: unknown stage {stage!r}: {exc}")))
            except SecurePoolError as exc:
                replies.append(refusal(exc))
        return pack_list(replies)

    def _dispatch(self, stage: NodeStage, payload: bytes) -> Reply:
        if stage is NodeStage.BUNDLE:
            return Reply(True, self._bundle(payload))
        if stage is NodeStage.HELLO:
            meta: dict[str, Any] = {"participant": self.pid, "beacon_round": self._beacon_last}
            if self._session_error is not None:
                meta["session_state"] = self._session_error
            if self._state_error is not None:
                meta["node_state"] = self._state_error
            return Reply(True, self._identity.public_bytes(), meta)
        if self._state_error is not None:
            raise SecurityViolation(self._state_error)
        if stage is NodeStage.BEACON_START:
            commit = self._beacon_client().on_start(payload)
            # recorded at once: a node must never commit twice to one round (a second
            # nonce would let the coordinator choose between two reveals)
            self._beacon_last = self._beacon_client().last_iteration
            self._save_state()
            return Reply(True, commit)
        if stage is NodeStage.BEACON_COMMITS:
            reveal = self._beacon_client().on_commits(payload)
            self._beacon_last = self._beacon_client().last_iteration
            self._save_state()
            return Reply(True, reveal)
        if stage is NodeStage.TRAIN:
            return self._train(TrainRequest.from_bytes(payload))
        if stage is NodeStage.BEACON_QUORUM:
            return self._accept_certificate(payload)
        if stage is NodeStage.EVALUATE:
            return self._evaluate(payload)
        if stage is NodeStage.PLAIN_BALLOT:
            return self._cast_ballot(BallotRequest.from_bytes(payload))
        if stage in (NodeStage.SCALING_START, NodeStage.SCALING_SECAGG, NodeStage.SCALING_RESULT):
            return self._scaling_stage(stage, payload)
        if stage is NodeStage.SECAGG_PREKEYS:
            return self._make_prekeys(payload)
        if self._client is None:
            raise StageError(f"{self.pid}: {stage.value} with no SecAgg+ session open")
        if is_scaling_session(self._client.session):
            raise StageError(f"{self.pid}: {stage.value} during the statistics round")
        # ShareKeys (shares of fresh keys) may leave with the train reply; the masked
        # input and everything after it only under the certificate
        uncertified = self._endorsed is None or self._certified != self._endorsed[0]
        if uncertified and stage is not NodeStage.SECAGG_KEYS:
            self._client = None  # no quorum on the outcome it trained for: out
            raise SecurityViolation(
                f"{self.pid}: {stage.value} without a quorum certificate on the outcome it "
                "endorsed (equivocation or too few endorsements): nothing leaves"
            )
        try:
            if stage is NodeStage.DP_STEP:
                reply = Reply(True, self._distributed_step(payload))
            else:
                reply = Reply(True, self._client.handle(payload))
        except SecurePoolError:
            self._client = None  # a refusal ends this node's part in the session
            raise
        more = isinstance(self._client, SteppedClient) and self._client.phase == "model"
        if stage in (NodeStage.SECAGG_UNMASK, NodeStage.DP_STEP) and not more:
            self._client = None  # the session is over for this node
            self._endorsed, self._certified = None, 0
        return reply

    # --- stages ----------------------------------------------------------------------

    def _scaling_members(self) -> tuple[str, ...]:
        return members_of(self._registry_now(), auditor=AUDITOR_ID)

    def _scaling_stage(self, stage: NodeStage, payload: bytes) -> Reply:
        """The statistics round (:mod:`securepool.node.scaling`): its own SecAgg+
        session in the client slot, never mixed with an iteration's."""
        if stage is NodeStage.SCALING_RESULT:
            self._scaling.accept(payload)
            self._scaled_cache = None
            self._save_state()
            return Reply(True)
        if stage is NodeStage.SCALING_START:
            if self._client is not None:
                raise StageError(f"{self.pid}: a statistics round while a session is open")
            started = self._scaling.start(
                payload,
                data=self._raw_data,
                identity=self._identity,
                registry=self._registry_now(),
                history=self._history,
                verified=self._verified,
            )
            advert = started.start()
            self._save_state()  # the round answered: recorded before the advert leaves
            self._client = started
            return Reply(True, advert)
        client = self._client
        if client is None or not is_scaling_session(client.session):
            raise StageError(f"{self.pid}: {stage.value} with no statistics session open")
        try:
            reply = Reply(True, client.handle(payload))
        except SecurePoolError:
            self._client = None  # a refusal ends this node's part in the session
            raise
        if client.stage is ClientStage.DONE:
            self._client = None
        return reply

    def _registry_now(self) -> Mapping[str, bytes]:
        if self._registry is None:
            src = self._registry_source
            self._registry = dict(src() if callable(src) else src)
            if self._registry.get(self.pid) != self._identity.public_bytes():
                raise SecurityViolation(f"{self.pid}: the PKI does not hold this node's key")
        return self._registry

    def _nonce_source(self) -> Callable[[int], bytes] | None:
        if self.cfg.assignment.beacon is BeaconMode.SEEDED_INSECURE:
            return seeded_insecure_nonces(self.cfg.run.seed, self.pid)
        return None

    def _beacon_client(self) -> BeaconParticipant:
        if self._beacon is None:
            self._beacon = BeaconParticipant(
                self.pid,
                identity=self._identity,
                registry=self._registry_now(),
                nonce_source=self._nonce_source(),
                verified=self._verified,
            )
            self._beacon.last_iteration = self._beacon_last
        return self._beacon

    def _assign(self, joint_seed: bytes, members: Any) -> dict[str, tuple[str, ...]]:
        return groups_for(self.cfg, joint_seed, members)

    def _quorum_rule(self) -> QuorumRule:
        return QuorumRule.of(
            self._registry_now(),
            corrupt_fraction=self.cfg.aggregation.mask.corrupt_fraction,
            left_out_fraction=self.cfg.assignment.max_left_out,
        )

    def _endorse(self, result: Any, req: TrainRequest, *, keep: bool) -> str:
        """Sign the statement of the outcome just accepted (hex of the Endorsement).

        Security: one per beacon round (the beacon state machine takes one outcome per
        round, and its state is saved before the reply leaves); refused if the outcome
        leaves out more than ``max_left_out`` or the round's model list does not name
        exactly the announced groups. ``keep``: remember the round and digest for the
        certificate its later messages wait for (a mask member)."""
        rule = self._quorum_rule()
        if sorted(m for m, _ in req.model_hashes) != sorted(result.groups):
            raise SecurityViolation(
                f"{self.pid}: the round's model list names {[m for m, _ in req.model_hashes]}, "
                f"the outcome's groups are {sorted(result.groups)}"
            )
        statement = result.statement(
            universe=rule.universe, context=models_context(req.model_hashes)
        )
        rule.check_left_out(statement.left_out, who=self.pid)
        endorsement = Endorsement.sign(self._identity, participant=self.pid, statement=statement)
        if keep:
            self._endorsed, self._certified = (statement.round, endorsement.digest), 0
        return endorsement.to_bytes().hex()

    def _accept_certificate(self, payload: bytes) -> Reply:
        """The quorum certificate of the round this node endorsed, checked by this node."""
        if self._endorsed is None:
            raise StageError(f"{self.pid}: a quorum certificate with no endorsed outcome")
        rnd, digest = self._endorsed
        rule = self._quorum_rule()
        verify_certificate(
            payload,
            round_=rnd,
            digest=digest,
            registry=self._registry_now(),
            universe=rule.universe,
            quorum=rule.quorum,
            verified=self._verified,
        )
        self._certified = rnd
        return Reply(True)

    def _train(self, req: TrainRequest) -> Reply:
        if federated_scaling(self.cfg) and self._scaling.result is None:
            raise StageError(
                f"{self.pid}: data.scaling = 'federated' and no standardisation agreed: "
                "it trains only on the federation's scaling"
            )
        self._client = None
        self._ballot = None  # a vote is cast in the session just trained in, or never
        self._endorsed, self._certified = None, 0
        result = self._beacon_client().on_outcome(req.outcome, assign=self._assign)
        self._beacon = None  # the beacon of this iteration is over (its last is in state)
        mine = [(m, g) for m, g in result.groups.items() if self.pid in g]
        if not mine:
            if req.model_id:
                raise SecurityViolation(
                    f"{self.pid}: sent model {req.model_id!r} but the joint seed puts it "
                    "in no group this iteration"
                )
            endorsement = self._endorse(result, req, keep=False)
            return Reply(True, meta={"selected": False, "endorsement": endorsement})
        model_id, members = mine[0]
        if req.model_id != model_id:
            raise SecurityViolation(
                f"{self.pid}: sent model {req.model_id!r}, its group is {model_id!r}"
            )
        _model, layout = self._models()[model_id]
        if req.params.shape != (layout.size,) or not np.all(np.isfinite(req.params)):
            raise SecurityViolation(
                f"{self.pid}: global model {model_id!r} of {req.params.size} values, "
                f"the model has {layout.size} (or non-finite)"
            )
        if dict(req.model_hashes).get(model_id) != model_hash(req.params):
            raise SecurityViolation(
                f"{self.pid}: the global model {model_id!r} it was sent is not the one the "
                "round's model list names (a model for this node alone)"
            )
        # a mask member keeps what it endorsed: its SecAgg+ messages wait for the
        # certificate on it (in plaintext and HE mode nothing of this node waits)
        mask = self.cfg.aggregation.mode is AggregationMode.MASK
        endorsement = self._endorse(result, req, keep=mask)
        iteration = result.iteration
        session = session_name(iteration, model_id)
        if not 0 <= req.iteration <= self.cfg.convergence.max_iterations:
            raise MessageError(
                f"{self.pid}: pool iteration {req.iteration} outside 0.."
                f"{self.cfg.convergence.max_iterations}"
            )
        # the mini-batch order is seeded by the pool iteration (the beacon round when
        # none is given): a resumed run, whose rounds move on, trains like one that was not
        # interrupted; the coordinator could pick this seed, as it picks the global model
        pool_iteration = req.iteration or iteration
        if self._stepped:  # the group trains step by step under secure sums
            group_seed, model_digest = self._group_binding(
                result.joint_seed, session, model_id, layout, req.params
            )
            return self._distributed_start(
                req,
                session=session,
                iteration=iteration,
                pool_iteration=pool_iteration,
                model_id=model_id,
                members=members,
                group_seed=group_seed,
                model_digest=model_digest,
                meta={"selected": True, "endorsement": endorsement},
            )
        trained, weight, meta = self._local_update(model_id, req.params, pool_iteration, members)
        meta = {**meta, "endorsement": endorsement}
        if trained is None:  # e.g. its privacy budget: a refusal that still says so
            self._save_state()
            reason = f"{self.pid}: did not train: {meta.get('skipped')}"
            return Reply(False, meta={"error": "StageError", "reason": reason, **meta})
        update, summary_of = self._outgoing(
            trained,
            session=session,
            model_id=model_id,
            params=req.params,
            iteration=iteration,
            members=members,
        )
        ClientInput(update=update, weight=weight)  # refuses NaN / non-positive weight
        if self.cfg.aggregation.mode is AggregationMode.PLAINTEXT:
            self._history.claim(session, iteration=iteration)
            self._save_state()
            # its update alone: with the trust check the coordinator summarises what it
            # received, under a projection drawn after every update is fixed
            body = encode_plain_update(update, weight)
            if self.cfg.trust.enabled and self.cfg.trust.voting is VotingRule.VALIDATION:
                self._ballot = self._ballot_context(req, session, model_id, members)
            return Reply(True, body, meta)
        group_seed, model_digest = self._group_binding(
            result.joint_seed, session, model_id, layout, req.params
        )
        if self.cfg.aggregation.mode is AggregationMode.HE:
            upload = self._he_upload(
                req.he_offer, session, iteration, update, weight, model_digest=model_digest
            )
            return Reply(True, upload, meta)
        binding = self._binding_keys(req.trust_offer) if self.cfg.trust.enabled else None
        client = self._secagg_client(
            summary_of,
            update=update,
            weight=weight,
            binding=binding,
            **self._session_kwargs(session, iteration, members, group_seed, model_digest),
        )
        self._client = client
        self._save_state()
        # its keys went out with its beacon reveal: the directory rides on this exchange
        return Reply(True, b"", meta)

    # --- privacy.mechanism = "distributed" (protocols.secagg.stepped) -------------------

    @property
    def _stepped(self) -> bool:
        return self.cfg.privacy.enabled and self.cfg.privacy.mechanism is Mechanism.DISTRIBUTED

    def _share_spec(self, group_size: int, dimension: int) -> Any:
        """This member's noise share in a group of ``group_size`` (the same every step)."""
        floor = noise_floor(
            group_size, self.cfg.mask_settings(), min_group_size=self.cfg.assignment.min_group_size
        )
        return self._dp.share_spec(
            settings=self.cfg.training.settings(), dimension=dimension, floor=floor
        )

    def _step_seed(self, members: tuple[str, ...], pool_iteration: int, step: int) -> int:
        """The seed of a step's Poisson sample and noise when ``secure_rng = false``."""
        return training_seed(
            self.cfg.run.seed, pool_iteration, members.index(self.pid) + (step << 20)
        )

    def _distributed_start(
        self,
        req: TrainRequest,
        *,
        session: str,
        iteration: int,
        pool_iteration: int,
        model_id: str,
        members: tuple[str, ...],
        group_seed: bytes,
        model_digest: bytes,
        meta: dict[str, Any],
    ) -> Reply:
        """Step 0 of the group's DP-SGD steps: this member's noised share on the global
        model is its input to an ordinary SecAgg+ session, whose client stays open for
        the later steps (:class:`~protocols.secagg.stepped.SteppedClient`)."""
        from securepool.models import load_flat

        model, layout = self._models()[model_id]
        train = self.cfg.training.settings()
        spec = self._share_spec(len(members), layout.size)
        skipped = self._dp.begin_distributed(spec, settings=train)
        meta = {**meta, "privacy": self._dp.report()}
        if skipped is not None:
            self._save_state()
            reason = f"{self.pid}: did not train: {skipped}"
            return Reply(False, meta={"error": "StageError", "reason": reason, **meta})
        self._save_state()  # the steps are in the ledger before any of them leaves
        load_flat(model, req.params, layout)
        d = self._data
        share = self._dp.distributed_share(
            model=model,
            x=d.x_train,
            y=d.y_train,
            spec=spec,
            seed=self._step_seed(tuple(sorted(members)), pool_iteration, 0),
        )
        client = SteppedClient(
            steps=self.cfg.privacy.local_steps(train.epochs),
            params=req.params,
            rule=StepRule(
                lr=train.lr,
                momentum=train.momentum,
                grid=spec.grid_step,
                batch_size=float(train.batch_size),
            ),
            update=share,
            **self._session_kwargs(session, iteration, members, group_seed, model_digest),
        )
        client.context = {"model": model_id, "pool_iteration": pool_iteration}
        self._client = client
        self._save_state()
        return Reply(True, b"", {**meta, "steps": client.steps})

    def _distributed_step(self, payload: bytes) -> bytes:
        """A later step: check every contributor signed the model this node computed,
        then its noised share on that model, masked."""
        from securepool.models import load_flat

        client = self._client
        if not isinstance(client, SteppedClient):
            raise StageError(f"{self.pid}: {NodeStage.DP_STEP.value} with no step session open")
        model_id, pool_iteration = (
            str(client.context["model"]),
            int(client.context["pool_iteration"]),
        )
        members = tuple(sorted(client.members))
        params = client.on_go(payload)
        model, layout = self._models()[model_id]
        spec = self._share_spec(len(members), layout.size)
        load_flat(model, params, layout)
        d = self._data
        share = self._dp.distributed_share(
            model=model,
            x=d.x_train,
            y=d.y_train,
            spec=spec,
            seed=self._step_seed(members, pool_iteration, client.step),
        )
        return client.masked_input(share)

    def _group_binding(
        self,
        joint_seed: bytes,
        session: str,
        model_id: str,
        layout: Layout,
        params: NDArray[np.float32],
    ) -> tuple[bytes, bytes]:
        """(the group's joint seed, the digest every member must agree on: model
        consistency), computed by this node from what it was sent; the digest is signed in
        its SecAgg+ ShareKeys, or in its HE receipt."""
        group_seed = group_joint_seed(joint_seed, model_id=model_id)
        digest = self._session_digest(
            session=session,
            model_id=model_id,
            group_seed=group_seed,
            layout=layout,
            training=self.cfg.training.settings(),
            params=params,
        )
        return group_seed, digest

    def _session_kwargs(
        self,
        session: str,
        iteration: int,
        members: tuple[str, ...],
        group_seed: bytes,
        model_digest: bytes,
    ) -> dict[str, Any]:
        """What every SecAgg+ client of a pool iteration is built with: this node's
        identity and view of the group, the agreed settings, its replay history and the
        key pair it advertised for the round (used once)."""
        registry = self._registry_now()
        return {
            "pid": self.pid,
            "session": session,
            "identity": self._identity,
            "directory": {m: registry[m] for m in members if m in registry},
            "settings": self.cfg.mask_settings(),
            "members": members,
            "joint_seed": group_seed,
            "model_digest": model_digest,
            "min_group_size": self.cfg.assignment.min_group_size,
            "history": self._history,
            "iteration": iteration,
            "verified": self._verified,
            "prekeys": self._take_prekeys(iteration),
        }

    def _make_prekeys(self, payload: bytes) -> Reply:
        """Mask mode, with its beacon reveal of round r: a fresh key pair for round r's
        SecAgg+ session, signed (the same pair if asked again in that round)."""
        if self.cfg.aggregation.mode is not AggregationMode.MASK:
            raise StageError(f"{self.pid}: advance keys are a mask-mode stage")
        if len(payload) != 4:
            raise MessageError(f"{self.pid}: an advance-key request of {len(payload)} bytes")
        round_ = int.from_bytes(payload, "big")
        if round_ != self._beacon_last or round_ < 1:
            raise StageError(
                f"{self.pid}: keys for round {round_} asked, its beacon is at round "
                f"{self._beacon_last}"
            )
        if self._prekeys is None or self._prekeys.round != round_:
            self._prekeys = PreKeys.generate(round_)
        return Reply(True, self._prekeys.advert(self.pid, self._identity))

    def _take_prekeys(self, round_: int) -> PreKeys:
        """The key pair advertised for round ``round_`` (then forgotten: used once)."""
        keys, self._prekeys = self._prekeys, None
        if keys is None or keys.round != round_:
            raise StageError(
                f"{self.pid}: no keys advertised for round {round_} (a node that missed "
                "the beacon reveal's key request sits this round out)"
            )
        return keys

    def _outgoing(
        self,
        trained: NDArray[np.float32],
        *,
        session: str,
        model_id: str,
        params: NDArray[np.float32],
        iteration: int,
        members: tuple[str, ...],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(the update this node sends, the update its binding report describes in mask
        mode) for its ``trained`` one. An honest node sends what it trained and reports
        that; an attacker (:class:`securepool.node.attacker.AttackerNode`) lies here."""
        return trained, trained

    def _claimed_weight(self) -> float:
        """The weight this node claims under equal weighting: 1 (an attacker claims
        more, :class:`securepool.node.attacker.AttackerNode`)."""
        return 1.0

    def _secagg_class(self) -> type[SecAggClient]:
        """The SecAgg+ client class this node's sessions run (and are restored as from
        its session file)."""
        return SecAggClient

    def _secagg_client(self, summary_of: NDArray[np.float32], **kw: Any) -> SecAggClient:
        """This session's SecAgg+ client over ``kw``; an honest node's binding report
        describes its own masked input, which ``summary_of`` is (see :meth:`_outgoing`)."""
        return SecAggClient(**kw)

    def _binding_keys(self, offer: bytes) -> BindingKeys:
        """Mask mode with the trust check: where to seal the binding report (the
        auditor's opening key, from its offer checked against its PKI key) and whose
        verdict to require before unmasking."""
        auditor = self._registry_now().get(AUDITOR_ID)
        if auditor is None:
            raise SecurityViolation(f"{self.pid}: the PKI holds no key for the auditor")
        verified = open_trust_offer(offer, auditor_public=auditor, session=TRUST_SETUP_SESSION)
        opening = verified.opening_public
        self._admit_offer(TRUST_OFFER, auditor, verified.epoch, opening)
        return BindingKeys(
            auditor_public=opening, auditor_identity=auditor, dim=self.cfg.trust.sketch_dim
        )

    def _admit_offer(self, kind: str, auditor: bytes, epoch: int, key: bytes) -> None:
        """Refuse an auditor offer older than the newest this node accepted (or another
        key under that epoch), before anything is sealed or encrypted to its key; a
        newer one is recorded in the durable state at once."""
        if self._offers.admit(kind, auditor_public=auditor, epoch=epoch, key=key):
            self._save_state()

    @staticmethod
    def _session_digest(**kw: Any) -> bytes:
        from securepool.consistency import session_digest

        return session_digest(**kw)

    def _he_upload(
        self,
        offer: bytes,
        session: str,
        iteration: int,
        update: NDArray[np.float32],
        weight: float,
        *,
        model_digest: bytes,
    ) -> bytes:
        """Encrypt under the auditor's context, checked against the auditor's PKI key:
        (upload, signed receipt naming ``model_digest``, this node's session digest, which
        the auditor requires to be the same in every receipt of an aggregate)."""
        from protocols.he.participant import HEParticipant

        auditor = self._registry_now().get(AUDITOR_ID)
        if auditor is None:
            raise SecurityViolation(f"{self.pid}: the PKI holds no key for the auditor")
        he = HEParticipant(self.pid, self.cfg.he_settings(), identity=self._identity)
        context = he.accept_context(offer, auditor_public=auditor, session=HE_SETUP_SESSION)
        self._admit_offer(HE_CONTEXT, auditor, context.epoch, context.key_material())
        self._history.claim(session, iteration=iteration)
        self._save_state()
        upload, receipt = he.upload(
            session=session, update=update, weight=weight, model_digest=model_digest
        )
        return pack_list([upload, receipt])

    def _local_update(
        self,
        model_id: str,
        params: NDArray[np.float32],
        iteration: int,
        members: tuple[str, ...],
    ) -> tuple[NDArray[np.float32] | None, float, dict[str, Any]]:
        from securepool.models import flatten, load_flat

        model, layout = self._models()[model_id]
        load_flat(model, params, layout)
        seed = training_seed(self.cfg.run.seed, iteration, members.index(self.pid))
        settings = self.cfg.training.settings()
        d = self._data
        if self._dp is not None:
            report = self._dp.train(
                model=model, x=d.x_train, y=d.y_train, settings=settings, seed=seed
            )
        else:
            from securepool.training import PlainTrainer

            report = PlainTrainer().train(
                participant=self.pid,
                model=model,
                x=d.x_train,
                y=d.y_train,
                settings=settings,
                seed=seed,
            )
        meta: dict[str, Any] = {"selected": True, "steps": report.steps}
        if self._dp is not None:
            meta["privacy"] = self._dp.report()
        if report.skipped is not None:
            meta["skipped"] = report.skipped
            return None, 0.0, meta
        delta = (flatten(model) - params).astype(np.float32)
        if self.cfg.aggregation.weighting is Weighting.EQUAL:
            return delta, self._claimed_weight(), meta  # the record count stays here
        return delta, float(report.samples), meta

    def _evaluate(self, payload: bytes) -> Reply:
        """Federated S401/S405: test every global model on the local split; only the
        counts leave. Refused with DP on: exact error counts on this node's records (and
        their total) are a release no epsilon covers."""
        from securepool.evaluation import count_errors
        from securepool.models import load_flat

        if self.cfg.privacy.enabled:
            raise SecurityViolation(
                f"{self.pid}: federated evaluation refused: with DP on, exact error counts "
                "on this node's records are not covered by its epsilon (evaluation is on "
                "the coordinator's holdout only)"
            )

        counts: dict[str, list[int]] = {}
        models = self._models()
        for mid, params in decode_globals(payload).items():
            if mid not in models or params.shape != (models[mid][1].size,):
                raise SecurityViolation(f"{self.pid}: unknown or misshapen model {mid!r}")
            model, layout = models[mid]
            load_flat(model, params, layout)
            r = count_errors(model, self._data.x_test, self._data.y_test)
            counts[mid] = [r.errors, r.total]
        return Reply(True, meta={"counts": counts})

    # --- the validation vote (plaintext mode, trust.voting = "validation") -----------

    def _ballot_context(
        self, req: TrainRequest, session: str, model_id: str, members: tuple[str, ...]
    ) -> BallotContext:
        """What this member keeps to vote in the session it just sent its update to
        (the opening key: the auditor's, verified against its PKI key, as for a binding
        report)."""
        keys = self._binding_keys(req.trust_offer)
        return BallotContext(
            session, model_id, tuple(members), params_digest(req.params), keys.auditor_public
        )

    def _cast_ballot(self, req: BallotRequest) -> Reply:
        """``plain/ballot``: score the group's updates on this node's records and answer
        with the ballot sealed to the auditor (:mod:`securepool.node.ballot` says what
        is checked first). One ballot per session: a second request is refused."""
        from protocols.ballots import seal_ballot

        if self.cfg.privacy.enabled:  # the config refuses this pair; so does the node
            self._ballot = None
            raise SecurityViolation(
                f"{self.pid}: validation ballot refused: with DP on, losses on this node's "
                "records are not covered by its epsilon"
            )
        ctx = self._ballot
        if ctx is None:
            raise StageError(f"{self.pid}: plain/ballot with no session to vote in")
        _model, layout = self._models()[ctx.model_id]
        candidates = check_ballot_request(ctx, req, voter=self.pid, size=layout.size)
        self._ballot = None
        scores = self.score_candidates(ctx.model_id, req.params, candidates)
        sealed = seal_ballot(
            scores, auditor_public=ctx.opening_key, session=ctx.session, voter=self.pid
        )
        return Reply(True, sealed)

    def score_candidates(
        self,
        model_id: str,
        params: NDArray[np.float32],
        candidates: Mapping[str, NDArray[np.float32]],
    ) -> dict[str, float]:
        """This node's ballot: the loss of each peer's model (``params`` + its update)
        on this node's own training records, lower is better (what an attacker node
        lies about when it stuffs its ballot)."""
        model, layout = self._models()[model_id]
        d = self._data
        return candidate_losses(model, layout, params, candidates, x=d.x_train, y=d.y_train)
