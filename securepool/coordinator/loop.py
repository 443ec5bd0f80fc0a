"""PoolCoordinator: the patent's S401-S406 loop over a Driver, holding no participant secret.

The coordinator holds the pool (every global model), the schedule, the beacon, the
protocol *servers* of its aggregation mode and the checkpoint state. Everything it
learns from participants arrives as bytes through :meth:`Driver.exchange`; it never
holds records, identity or protocol secret keys, or (in ``mask`` and ``he`` mode) an
individual update. What differs between aggregation modes is one strategy object
(:mod:`securepool.coordinator.modes`: plaintext, mask, he) and the trust check is one
layer the modes call (:mod:`securepool.coordinator.trust`); this module keeps the
schedule, connecting, the beacon (and its riding on the modes' stages), the exchange
helpers, the train stage, evaluation and checkpoints. One iteration:

====================  ============================================================
stage (one batch)     to whom / what
====================  ============================================================
``beacon/start``      every eligible node: BeaconStart -> signed Commit
``beacon/commits``    every committer: CommitList -> Reveal
``train``             every revealer: the Outcome (+ its group's global model) ->
                      the mode's first message: SecAgg+ AdvertiseKeys (mask), the
                      update (plaintext), the upload (he); local training happens
                      inside this stage
``secagg/keys``       KeyDirectory -> ShareKeys               (mask, every group)
``secagg/shares``     ShareDelivery -> MaskedInput            (mask)
``secagg/survivors``  SurvivorList -> ConsistencySignature    (mask)
``mask/judge``        auditor: judge requests -> signed verdicts (mask + trust)
``secagg/unmask``     UnmaskRequest -> UnmaskResponse         (mask)
``plain/ballot``      every member whose update arrived: its group's updates ->
                      its ballot sealed to the auditor (plaintext + validation vote)
``plain/judge``       auditor: summaries of the updates received and ballots ->
                      signed verdicts                         (plaintext + trust)
``he/fold``           auditor: fold requests -> signed verdicts (he + trust)
``he/decrypt``        auditor: every group's sum of ciphertexts -> releases (he)
``evaluate``          federated evaluation only: every global -> error counts
====================  ============================================================

Every stage of every group of an iteration is ONE ``exchange`` batch, so an iteration
costs these round trips whatever the number of groups. The next iteration's beacon
rides on two of the mode's stages (``beacon/start`` with the first, ``beacon/commits``
with the second: one :data:`~securepool.node.wire.NodeStage.BUNDLE` message per node):
mask ``secagg/survivors`` and ``secagg/unmask``, he ``train`` and ``he/decrypt``;
plaintext has none. The next beacon's ``BeaconStart`` then names the pool digest of the
start of the current iteration (fixed, like any pool digest, before the commitments).
So from the second iteration on an iteration costs, besides ``evaluate``:

* plaintext: ``beacon/start``, ``beacon/commits``, ``train`` (3), + ``plain/ballot``
  under the validation vote, + ``plain/judge`` with the trust check;
* mask: ``train``, ``secagg/keys``, ``secagg/shares``, ``secagg/survivors``,
  ``secagg/unmask`` (5), + ``mask/judge`` with the trust check;
* he: ``train``, ``he/decrypt`` (2), + ``he/fold`` with the trust check;

and the first iteration (or one whose ridden beacon got no reveal) two more, its own
``beacon/start`` and ``beacon/commits``.

Beacon rounds are numbered apart from pool iterations (``round``: strictly increasing
over the run and across ``--resume``; a node refuses any round not above its last), so
a beacon that did not complete, or a coordinator restarted mid-iteration, simply uses a
fresh round number. The session of a group is ``it<round>/<model>``.

A node that does not answer (or answers garbage, or too much) is excluded from its
group only, exactly like a dropout; SecAgg+ dropout recovery completes the group if
enough remain, else the group keeps its last global model (``ThresholdNotMet``).
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from crypto.errors import SecurePoolError, ThresholdNotMet
from protocols.beacon import BeaconCoordinator, group_joint_seed
from securepool.assignment import groups_for, pool_digest
from securepool.config import EvaluationMode, RunConfig, federated_scaling
from securepool.coordinator.agreement import RoundAgreement, round_models
from securepool.coordinator.modes import AggregationStrategy, Group, build_mode
from securepool.coordinator.modes.he import HEMode
from securepool.coordinator.privacy import ReportedPrivacy
from securepool.coordinator.records import GroupOutcome, IterationRecord, LoopState
from securepool.coordinator.scaling import agree_scaling
from securepool.coordinator.trust import TrustRelay
from securepool.defence.tuning import CleanTuning
from securepool.evaluation import TestResult, all_within_range, count_errors
from securepool.models import Layout, build_spec_model, flatten, layout_of, load_flat
from securepool.node.agreement import session_name
from securepool.node.auditor import AUDITOR_ID as AUDITOR
from securepool.node.wire import (
    NodeStage,
    Reply,
    TrainRequest,
    encode_bundle,
    encode_globals,
    pack_list,
    unpack_list,
)
from securepool.preprocessing import Standardisation
from securepool.runtime.driver import Driver, Patience
from securepool.schedule import run_schedule

#: progress inside an iteration: (stage, nodes heard from, nodes asked), called when a
#: stage is sent (0), as each node's reply (or failure) arrives, and once all are in
#: (then: the nodes that gave a reply)
Progress = Callable[[str, int, int], None]

MAX_COUNT = 10**9
#: the auditor's replies: its HE offer with the fold's Galois keys, every group's release
AUDITOR_REPLY_LIMIT = 256 * 1024 * 1024
#: how far past the checkpoint a node's reported last beacon round may be to be believed
MAX_ROUND_GAP = 1000

#: one node's parts of one round trip: (stage, payload) in order
Parts = dict[str, list[tuple[NodeStage, bytes]]]


class PoolCoordinator:
    """The coordinator's S401-S406 loop over a :class:`Driver` (see the module doc).

    ``registry`` is the PKI (participant id -> Ed25519 public key), obtained out of band;
    ``holdout`` is the coordinator's own test set for ``evaluation.mode = "holdout"``
    (None: federated evaluation, the participants report error counts).
    ``driver_factory`` is called once, at the first :meth:`run`, so building a
    coordinator starts nothing.
    """

    def __init__(
        self,
        cfg: RunConfig,
        *,
        driver_factory: Callable[[], Driver],
        registry: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        n_features: int,
        n_classes: int,
        holdout: tuple[torch.Tensor, torch.Tensor] | None = None,
        timeout: float = 600.0,
    ) -> None:
        self.cfg = cfg
        self.timeout = timeout
        #: how long a stage waits for the last nodes once half have answered
        self.patience = Patience(cfg.run.stage_patience, cfg.run.stage_patience_floor)
        self.n_features, self.n_classes = n_features, n_classes
        self.trainer = ReportedPrivacy(enabled=cfg.privacy.enabled)
        self._driver_factory = driver_factory
        self._registry_source = registry
        self.registry: dict[str, bytes] = {}
        self.driver: Driver | None = None
        self.participants: tuple[str, ...] = ()
        self.unreachable: dict[str, str] = {}
        self.holdout = holdout
        #: the defence's clean tuning / input pruning (``[defence]``): it takes its share
        #: of the held-out set, and only the rest tests the models (S401/S405, P5)
        self.tuning: CleanTuning | None = None
        if cfg.defence.enabled and holdout is not None:
            self.tuning, self.holdout = CleanTuning.split(cfg.defence, holdout, seed=cfg.run.seed)
        #: the runner's hooks: a wrapper of the driver (transcripts), progress inside an
        #: iteration (stage, nodes answered, nodes asked)
        self.wrap_driver: Callable[[Driver], Driver] | None = None
        self.progress: Progress | None = None
        self.beacon_log: dict[int, dict[str, Any]] = {}
        self.round = 0  # the last beacon round used (see the module docstring)
        self._next_beacon: BeaconCoordinator | None = None  # started during this iteration
        #: beacon round -> participant -> its advance key advert (mask mode), asked with
        #: the round's reveals and used by that round's train stage
        self.adverts: dict[int, dict[str, bytes]] = {}
        #: this iteration's (statement, quorum certificate), relayed on the mode's
        #: ``quorum_stages``; None: no quorum (every group of the iteration aborts)
        self._certified: tuple[bytes, bytes] | None = None
        self._node_rounds: dict[str, int] = {}
        self.models: dict[str, nn.Module] = {}
        self.layouts: dict[str, Layout] = {}
        initial: dict[str, Any] = {}
        for spec in cfg.pool.models:
            model = build_spec_model(spec, n_features=n_features, n_classes=n_classes)
            self.models[spec.id], self.layouts[spec.id] = model, layout_of(model)
            initial[spec.id] = flatten(model)
        self.state = LoopState(iteration=0, globals=initial, test={}, converged=False)
        #: data.scaling = "federated": the standardisation the statistics round agreed
        self.scaling: Standardisation | None = None
        self.reply_limit = 1024 * 1024 + 64 * max(lay.size for lay in self.layouts.values())
        sizes = {mid: lay.size for mid, lay in self.layouts.items()}
        #: the trust check: the auditor node judges, this layer relays and applies
        self.trust_relay = TrustRelay(cfg, self, model_sizes=sizes) if cfg.trust.enabled else None
        #: the trust check's ledger (flags and marks), checkpointed with the pool
        self.trust = None if self.trust_relay is None else self.trust_relay.ledger
        #: what differs between aggregation modes (securepool.coordinator.modes)
        self.mode: AggregationStrategy = build_mode(
            cfg, self, trust=self.trust_relay, model_sizes=sizes
        )

    @property
    def trust_offer(self) -> bytes:
        """The auditor's signed opening key the TrainRequests carry (mask mode, and
        plaintext mode under the validation vote)."""
        return b"" if self.trust_relay is None else self.trust_relay.offer

    @trust_offer.setter
    def trust_offer(self, offer: bytes) -> None:
        if self.trust_relay is None:
            raise SecurePoolError("the trust check is off: there is no opening key to relay")
        self.trust_relay.offer = offer

    @property
    def he_offer(self) -> bytes:
        """HE mode: the auditor's signed context offer (with the fold's Galois keys)."""
        return self.mode.offer if isinstance(self.mode, HEMode) else b""

    # --- connecting ------------------------------------------------------------------

    def connect(self) -> None:
        """Start the runtime and greet every node: a node whose key is not the PKI's,
        or that does not answer, takes no part in the run. The mode's auditor offer
        (HE context, trust check's opening key) is fetched in the same round trip."""
        if self.driver is not None:
            return
        self.driver = self._driver_factory()
        if self.wrap_driver is not None:
            self.driver = self.wrap_driver(self.driver)
        src = self._registry_source
        self.registry = dict(src() if callable(src) else src)
        nodes = [n for n in self.driver.nodes() if n != AUDITOR]
        batch: Parts = {n: [(NodeStage.HELLO, b"")] for n in nodes}
        offer = self.mode.offer_stage
        if offer is not None:
            if AUDITOR not in self.driver.nodes():
                raise SecurePoolError(
                    "HE mode and the trust check need the auditor node, and the runtime has none"
                )
            batch[AUDITOR] = [(offer, b"")]
        parts = self._exchange_parts(batch)
        replies = {n: parts.get(n, [None])[0] for n in nodes}
        if offer is not None:
            self.mode.accept_offer(parts.get(AUDITOR, [None])[0])
        ok = []
        for node in nodes:
            reply, why = self.open_reply(replies.get(node))
            if reply is None:
                self.unreachable[node] = why
            elif self.registry.get(node) != reply.body:
                self.unreachable[node] = "its key is not the one the PKI holds for it"
            else:
                ok.append(node)
                last = reply.meta.get("beacon_round")
                if type(last) is int and last >= 0:
                    self._node_rounds[node] = last
        self.participants = tuple(sorted(ok))
        # a node refuses rounds not above its last: start above what the nodes report
        # (after a restart mid-iteration), ignoring implausible claims of a liar
        plausible = [r for r in self._node_rounds.values() if r <= self.round + MAX_ROUND_GAP]
        self.round = max([self.round, *plausible])

    def auditor_offer(self, raw: bytes | None, what: str) -> tuple[bytes, bytes]:
        """(the auditor's offer body, its PKI key), or SecurePoolError naming ``what``."""
        reply, why = self.open_reply(raw, auditor=True)
        if reply is None:
            raise SecurePoolError(f"the auditor gave no {what}: {why}")
        auditor = self.registry.get(AUDITOR)
        if auditor is None:
            raise SecurePoolError(f"{what}: the PKI holds no key for the auditor")
        return reply.body, auditor

    def close(self) -> None:
        """Stop the runtime (the node processes, where it has any)."""
        if self.driver is not None:
            self.driver.close()

    # --- exchanges -------------------------------------------------------------------

    def _exchange(
        self, stage: NodeStage, batch: Mapping[str, bytes], *, label: str = ""
    ) -> dict[str, bytes | None]:
        """One round trip; ``label``: what the progress display calls it (a bundle is
        shown as the stage it carries)."""
        if self.driver is None:
            raise SecurePoolError("coordinator not connected")
        if not batch:
            return {}
        progress = self.progress
        if progress is None:
            return self.driver.exchange(
                stage.value, batch, timeout=self.timeout, patience=self.patience
            )
        asked, heard, name = len(batch), [0], label or stage.value

        def on_reply(node: str) -> None:
            heard[0] += 1
            progress(name, heard[0], asked)

        progress(name, 0, asked)
        replies = self.driver.exchange(
            stage.value, batch, timeout=self.timeout, on_reply=on_reply, patience=self.patience
        )
        progress(name, sum(1 for r in replies.values() if r is not None), asked)
        return replies

    def _exchange_parts(
        self, batch: Mapping[str, Sequence[tuple[NodeStage, bytes]]]
    ) -> dict[str, list[bytes | None]]:
        """Several stages per node in one round trip: a node with one part gets it as
        its own stage, one with more gets a bundle. Each node's list of replies is in
        its parts' order; a failed or malformed bundle is None for all of its parts."""
        stages = {tuple(st for st, _ in parts) for parts in batch.values() if parts}
        if len(stages) == 1 and len(next(iter(stages))) == 1:
            (only,) = next(iter(stages))
            plain = self._exchange(only, {p: parts[0][1] for p, parts in batch.items() if parts})
            return {p: [plain.get(p)] for p in plain}
        payloads = {
            p: encode_bundle([(st.value, body) for st, body in parts])
            for p, parts in batch.items()
            if parts
        }
        # shown as the stage it is for: the first part after the certificate, most often
        leads = Counter(
            next((st for st, _ in parts if st is not NodeStage.BEACON_QUORUM), parts[0][0])
            for parts in batch.values()
            if parts
        )
        label = leads.most_common(1)[0][0].value if leads else ""
        replies = self._exchange(NodeStage.BUNDLE, payloads, label=label)
        out: dict[str, list[bytes | None]] = {}
        for pid, raw in replies.items():
            n = len(batch[pid])
            reply, why = self.open_reply(raw, auditor=pid == AUDITOR)
            parts: list[bytes | None] = [None] * n
            if reply is not None:
                try:
                    parts = list(unpack_list(reply.body, what="bundle replies", expected=n))
                except SecurePoolError as exc:
                    why = f"malformed reply: {exc}"
                    reply = None
            if reply is None and raw is not None:
                # an unusable bundle: every part of it says why (not "no reply")
                failed = Reply(False, meta={"error": "bundle", "reason": why}).to_bytes()
                parts = [failed] * n
            out[pid] = parts
        return out

    def _with_beacon(self, stage: NodeStage, batch: Parts) -> dict[str, list[bytes | None]]:
        """One round trip of ``batch``, with the next beacon's stage added where the
        mode's :attr:`beacon_stages` say (and the advance key adverts with its reveals);
        the beacon's replies are filed here and each node's list of replies is returned
        (the beacon's parts, if any, last)."""
        beacon_stage = self._piggyback_beacon(stage, batch)
        replies = self._exchange_parts(batch)
        beacon = self._next_beacon
        if beacon_stage is not None and beacon is not None:
            self._file_beacon_parts(beacon, beacon_stage, batch, replies)
        return replies

    def _file_beacon_parts(
        self,
        beacon: BeaconCoordinator,
        stage: NodeStage,
        batch: Parts,
        replies: Mapping[str, list[bytes | None]],
    ) -> None:
        """File each node's reply to the beacon ``stage`` part and, with the reveals,
        its advance key advert (:attr:`AggregationStrategy.prekey_stage`)."""
        prekey = self.mode.prekey_stage
        for pid, raws in sorted(replies.items()):
            stages = [st for st, _ in batch.get(pid, [])]
            if stage in stages:
                self._file_beacon(beacon, stage, pid, raws[stages.index(stage)])
            if prekey is not None and prekey in stages:
                reply, _why = self.open_reply(raws[stages.index(prekey)])
                if reply is not None:
                    self.adverts.setdefault(self.round, {})[pid] = reply.body

    def _quorum_parts(self, stage: NodeStage, *, auditor: bool) -> list[tuple[NodeStage, bytes]]:
        """The round's quorum certificate as a part leading ``stage``'s request where
        the mode's ``quorum_stages`` say (the auditor also gets the statement)."""
        if self._certified is None or stage not in self.mode.quorum_stages:
            return []
        statement, cert = self._certified
        return [(NodeStage.BEACON_QUORUM, pack_list([statement, cert]) if auditor else cert)]

    def send(self, stage: NodeStage, batch: Mapping[str, bytes]) -> dict[str, bytes | None]:
        """One batch of a mode's ``stage`` in one round trip (the next beacon rides on
        it where the mode says, the quorum certificate leads it where the mode says);
        each node's raw reply (None: no reply, or a failed bundle)."""
        lead = self._quorum_parts(stage, auditor=False)
        parts: Parts = {pid: [*lead, (stage, msg)] for pid, msg in batch.items()}
        replies = self._with_beacon(stage, parts)
        k = len(lead)
        return {pid: (replies.get(pid) or [None] * (k + 1))[k] for pid in batch}

    def ask_auditor(self, stage: NodeStage, requests: Sequence[bytes]) -> list[bytes]:
        """Every request of one auditor stage in one message (with the next beacon's
        stage to the participants where the mode rides it there); the auditor's answer
        to each, in order: empty for a refusal or no reply, which callers treat as none."""
        batch: Parts = {}
        lead = self._quorum_parts(stage, auditor=True)
        if requests:
            batch[AUDITOR] = [*lead, (stage, pack_list(list(requests)))]
        replies = self._with_beacon(stage, batch)
        if not requests:
            return []
        k = len(lead)
        raw = (replies.get(AUDITOR) or [None] * (k + 1))[k]
        reply, why = self.open_reply(raw, auditor=True)
        items: list[bytes] = []
        if reply is not None:
            with contextlib.suppress(SecurePoolError):
                items = unpack_list(reply.body, what="auditor answers", expected=len(requests))
        out = []
        for i in range(len(requests)):
            one, _why = self.open_reply(items[i], auditor=True) if items else (None, why)
            out.append(b"" if one is None else one.body)
        return out

    def open_reply(self, raw: bytes | None, *, auditor: bool = False) -> tuple[Reply | None, str]:
        """A node's reply, or None and why it is not usable (the node is then excluded).
        The auditor's replies may be larger (its offer carries the fold's Galois keys)."""
        if raw is None:
            return None, "no reply in time (dropout)"
        limit = AUDITOR_REPLY_LIMIT if auditor else self.reply_limit
        if len(raw) > limit:
            return None, f"reply of {len(raw)} bytes over the limit of {limit}"
        try:
            reply = Reply.from_bytes(raw)
        except SecurePoolError as exc:
            return None, f"malformed reply: {exc}"
        if not reply.ok:
            return None, (
                f"refused: {str(reply.meta.get('error'))[:80]}: "
                f"{str(reply.meta.get('reason'))[:500]}"
            )
        return reply, ""

    # --- S401 / S405, S402 / S406 ----------------------------------------------------

    def s401_evaluate(self) -> dict[str, TestResult]:
        if self.cfg.evaluation.mode is EvaluationMode.HOLDOUT and self.holdout is not None:
            results = {}
            for mid, model in self.models.items():
                load_flat(model, self.state.globals[mid], self.layouts[mid])
                results[mid] = count_errors(model, *self.holdout)
        else:
            results = self._federated_evaluation()
        self.state.test = results
        return results

    def _federated_evaluation(self) -> dict[str, TestResult]:
        self.connect()
        payload = encode_globals(self.state.globals)
        replies = self._exchange(NodeStage.EVALUATE, {p: payload for p in self.participants})
        totals = {mid: TestResult(0, 0) for mid in self.models}
        for pid in sorted(replies):
            reply, _ = self.open_reply(replies[pid])
            counts = reply.meta.get("counts") if reply is not None else None
            parsed = _counts(counts, set(self.models))
            if parsed is None:
                continue  # no answer or nonsense counts: this participant is left out
            for mid, r in parsed.items():
                totals[mid] = totals[mid] + r
        return totals

    def s402_converged(self) -> bool:
        errors = {m: r.error_rate for m, r in self.state.test.items()}
        return all_within_range(errors, self.cfg.convergence.error_range)

    # --- S403 ------------------------------------------------------------------------

    def assign_groups(
        self, joint_seed: bytes, members: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        """P1/P2: the models and groups the joint seed draws among ``members``."""
        return groups_for(self.cfg, joint_seed, members)

    def _start_beacon(self, iteration: int) -> tuple[BeaconCoordinator, bytes]:
        """A beacon of a fresh round for every participant invited to pool iteration
        ``iteration`` (its BeaconStart bytes)."""
        self.round += 1
        beacon = BeaconCoordinator(self.registry)
        start = beacon.start(
            iteration=self.round,
            pool_digest=pool_digest(self.round, self.state.globals),
            invited=self._invited(iteration),
        )
        return beacon, start

    def _invited(self, iteration: int) -> tuple[str, ...]:
        """Every reachable participant the trust check's marks do not keep out of pool
        iteration ``iteration`` (a mark set after that iteration's beacon started keeps
        the participant out by the dropout path instead: see :meth:`_train_stage`)."""
        if self.trust is None:
            return self.participants
        trust = self.trust
        return tuple(p for p in self.participants if not trust.is_excluded(p, iteration))

    def _file_beacon(self, beacon: BeaconCoordinator, stage: NodeStage, pid: str, raw: Any) -> None:
        reply, _ = self.open_reply(raw)
        if reply is None:
            return
        if stage is NodeStage.BEACON_START:
            beacon.receive_commit(pid, reply.body)
        else:
            beacon.receive_reveal(pid, reply.body)

    def _piggyback_beacon(self, stage: NodeStage, batch: Parts) -> NodeStage | None:
        """Add the next iteration's beacon/start or beacon/commits to every participant's
        parts when ``stage`` is one of the mode's :attr:`beacon_stages`; the beacon
        stage added, or None."""
        if self.state.iteration + 1 >= self.cfg.convergence.max_iterations:
            return None  # the last iteration: no next one to draw a beacon for
        first, second = self.mode.beacon_stages or (None, None)
        if stage is first:
            nxt = self.state.iteration + 2  # during iteration state.iteration + 1
            self._next_beacon, start = self._start_beacon(nxt)
            for pid in self._invited(nxt):
                batch.setdefault(pid, []).append((NodeStage.BEACON_START, start))
            return NodeStage.BEACON_START
        if stage is second and self._next_beacon is not None:
            self._commits_parts(self._next_beacon, batch)
            return NodeStage.BEACON_COMMITS
        return None

    def _commits_parts(self, beacon: BeaconCoordinator, batch: Parts) -> None:
        """Every committed node's beacon/commits part, and the mode's request for its
        key advert of this round right after it (mask mode: the directory then rides on
        the train stage)."""
        commits = beacon.commit_list()
        prekey = self.mode.prekey_stage
        ask = self.round.to_bytes(4, "big")
        for pid in beacon.committed:
            parts = batch.setdefault(pid, [])
            parts.append((NodeStage.BEACON_COMMITS, commits))
            if prekey is not None:
                parts.append((prekey, ask))

    def _beacon(self) -> tuple[bytes, Any]:
        """The beacon of this iteration: the one started during the last iteration if
        it has reveals, else a fresh round now (two round trips)."""
        beacon, self._next_beacon = self._next_beacon, None
        iteration = self.state.iteration + 1
        if beacon is not None and self.trust is not None:
            trust = self.trust
            if any(trust.is_excluded(p, iteration) for p in beacon.committed):
                # drawn before a mark the last iteration set: its groups would count the
                # marked among their members (SecAgg+ thresholds over them) and lose
                # honest members for it; a fresh round leaves them out (two round trips,
                # only in an iteration after a new mark)
                beacon = None
        if beacon is None or not beacon.revealed:
            beacon, start = self._start_beacon(iteration)
            invited = self._invited(iteration)
            replies = self._exchange(NodeStage.BEACON_START, {p: start for p in invited})
            for pid, raw in sorted(replies.items()):
                self._file_beacon(beacon, NodeStage.BEACON_START, pid, raw)
            batch: Parts = {}
            self._commits_parts(beacon, batch)
            parts = self._exchange_parts(batch)
            self._file_beacon_parts(beacon, NodeStage.BEACON_COMMITS, batch, parts)
        return beacon.finish(assign=self.assign_groups)

    # --- S404 ------------------------------------------------------------------------

    def _train_stage(self, iteration: int, outcome: bytes, result: Any) -> list[Group]:
        """Every revealer gets the beacon's outcome (a group member also its group's
        global model and the mode's offers), trains and answers with the mode's first
        message, which the mode files."""
        groups: list[Group] = []
        member_of: dict[str, Group] = {}
        now = time.perf_counter()
        for mid in self.models:
            if mid in result.groups:
                g = Group(
                    mid,
                    tuple(result.groups[mid]),
                    session_name(result.iteration, mid),
                    iteration,
                    self.state.globals[mid],
                    group_joint_seed(result.joint_seed, model_id=mid),
                    now,
                )
                groups.append(g)
                member_of.update({p: g for p in g.members})
        # marked untrusted after this iteration's beacon had started: its group goes on
        # without it, by the dropout path
        kept_out = set()
        if self.trust is not None:
            kept_out = {p for p in result.participants if self.trust.is_excluded(p, iteration)}
        for pid in sorted(kept_out & set(member_of)):
            member_of[pid].excluded[pid] = "untrusted: marked by the trust check"
        he_offer, trust_offer = self.mode.train_offers()
        models = round_models({g.model_id: g.params for g in groups})
        agreement = RoundAgreement(self.cfg, self.registry, result, models)
        batch: Parts = {
            pid: [
                (
                    NodeStage.TRAIN,
                    TrainRequest(
                        outcome,
                        member_of[pid].model_id if pid in member_of else "",
                        member_of[pid].params if pid in member_of else np.zeros(0, np.float32),
                        he_offer,
                        trust_offer,
                        iteration,
                        models,
                    ).to_bytes(),
                )
            ]
            for pid in result.participants
            if pid not in kept_out
        }
        self.mode.begin(groups)
        # mask mode: each member's key directory, from the adverts of this round
        extra = self.mode.train_parts(groups, self.adverts.pop(result.iteration, {}))
        for rnd in [r for r in self.adverts if r < result.iteration]:
            del self.adverts[rnd]  # adverts of rounds that never trained
        for pid, part in extra.items():
            if pid in batch:
                batch[pid].append(part)
        replies = self._with_beacon(NodeStage.TRAIN, batch)
        for pid, raws in sorted(replies.items()):
            if pid not in result.participants or pid in kept_out:
                continue
            reply, why = self.open_reply(raws[0])
            # a node that did not train (its budget) refuses, and still reports its spend
            self.trainer.record(pid, _privacy_meta(raws[0], self.reply_limit))
            agreement.file(pid, raws[0], limit=self.reply_limit)
            mine = member_of.get(pid)
            if mine is None:
                continue
            if reply is None:
                mine.excluded[pid] = why
            else:
                self.mode.file_train(mine, pid, reply.body)
            if pid in extra and pid not in mine.excluded:  # its reply to the part
                self.mode.file_train_part(mine, pid, raws[1])
        cert, why_not = agreement.certificate()
        self._certified = None if cert is None else (agreement.statement.to_bytes(), cert)
        if cert is None:
            for g in groups:
                g.aborted = f"aborted: {why_not}"
        return groups

    def _finish_group(self, g: Group) -> GroupOutcome:
        """The group's outcome; its model's new global if the mode's aggregate holds
        enough weight (S404's FedAvg: the weighted mean update added to the global),
        then tuned and/or pruned on the coordinator's clean records when ``[defence]``
        says so."""

        def outcome(status: str, contributors: tuple[str, ...] = ()) -> GroupOutcome:
            return GroupOutcome(
                g.model_id,
                g.members,
                status,
                contributors=contributors,
                excluded=dict(sorted(g.excluded.items())),
                seconds=time.perf_counter() - g.started,
                note=g.note,
            )

        if g.aborted is not None:
            return outcome(g.aborted)
        try:
            weighted, weight, contributors = self.mode.finish(g)
        except ThresholdNotMet as exc:
            return outcome(f"aborted: {exc}")
        except SecurePoolError as exc:  # e.g. a total weight equal weighting refuses
            return outcome(f"aborted: {type(exc).__name__}: {exc}")
        if not weight > 0:
            return outcome("aborted: the aggregate has no weight")
        mean = weighted / weight
        new = (g.params + mean).astype(np.float32)
        if self.tuning is not None:  # the defence: clean tuning / input pruning
            new = self.tuning.apply(
                self.models[g.model_id],
                self.layouts[g.model_id],
                new,
                iteration=g.iteration,
                model_index=list(self.models).index(g.model_id),
            )
        self.state.globals[g.model_id] = new
        return outcome("aggregated", contributors)

    # --- the loop --------------------------------------------------------------------

    def step(self) -> IterationRecord:
        """One iteration: S403 (the beacon, the groups), S404 (train and the mode's
        stages), S405 (evaluate), S406 (converged?)."""
        start = time.perf_counter()
        iteration = self.state.iteration + 1
        outcome, result = self._beacon()
        self.beacon_log[iteration] = {
            "round": result.iteration,
            "joint_seed": result.joint_seed.hex(),
            "withheld": dict(result.withheld),
        }
        groups = self._train_stage(iteration, outcome, result)
        self.mode.after_train(groups)
        outcomes = [self._finish_group(g) for g in groups]
        self.s401_evaluate()  # S405
        converged = self.s402_converged()  # S406
        self.state.iteration, self.state.converged = iteration, converged
        return IterationRecord(
            iteration=iteration,
            selected=tuple(g.model_id for g in groups),
            groups=outcomes,
            test_errors={m: r.error_rate for m, r in self.state.test.items()},
            converged=converged,
            seconds=time.perf_counter() - start,
            epsilon=self.trainer.privacy_spent(),
            joint_seed=result.joint_seed.hex(),
            withheld=dict(result.withheld),
        )

    def run(self, *, on_iteration: Callable[[IterationRecord], None] = lambda r: None) -> LoopState:
        """The statistics round once (``data.scaling = "federated"``), S401/S402 once,
        then S403–S406 until converged or the cap is hit."""
        self.connect()
        if federated_scaling(self.cfg) and self.scaling is None:
            self._set_scaling(agree_scaling(self))
        return run_schedule(self, on_iteration=on_iteration)

    def _set_scaling(self, scaling: Standardisation) -> None:
        """The federation's standardisation: kept for the manifest and the checkpoint,
        and applied to the coordinator's own held-out records (once)."""
        if self.scaling is not None:
            raise SecurePoolError("the federation's scaling is agreed once per run")
        self.scaling = scaling
        if self.holdout is not None:
            x, y = self.holdout
            self.holdout = (torch.from_numpy(scaling.apply(x.numpy())), y)
        if self.tuning is not None:
            self.tuning.x = torch.from_numpy(scaling.apply(self.tuning.x.numpy()))

    # --- checkpoints -----------------------------------------------------------------

    def component_states(self) -> dict[str, Any]:
        """What a checkpoint keeps besides the pool: the reported privacy spend, the
        trust ledger, the beacon log and the last beacon round."""
        return {
            "trainer": self.trainer.state_dict(),
            "trust": None if self.trust is None else self.trust.state_dict(),
            "beacon": {str(it): rec for it, rec in sorted(self.beacon_log.items())},
            "round": self.round,
            "scaling": None if self.scaling is None else self.scaling.to_json(),
        }

    def load_component_states(self, states: Mapping[str, Any]) -> None:
        """Restore :meth:`component_states` of a checkpoint (``--resume``)."""
        self.trainer.load_state_dict(states.get("trainer") or {})
        if self.trust is not None:
            self.trust.load_state_dict(states.get("trust") or {})
        self.beacon_log = {int(it): dict(rec) for it, rec in (states.get("beacon") or {}).items()}
        # a pipelined beacon of the next iteration (or a crash mid-iteration) used rounds
        # past the checkpoint's: connect() moves past the rounds the nodes report
        self.round = max(self.round, int(states.get("round") or 0))
        if states.get("scaling") is not None and self.scaling is None:
            self._set_scaling(Standardisation.from_json(states["scaling"]))


def _privacy_meta(raw: bytes | None, limit: int) -> object:
    """The privacy report in a node's train reply, accepted or refused (None if none)."""
    if raw is None or len(raw) > limit:
        return None
    try:
        return Reply.from_bytes(raw).meta.get("privacy")
    except SecurePoolError:
        return None


def _counts(counts: object, models: set[str]) -> dict[str, TestResult] | None:
    """A node's reported error counts, or None if they are not sane integers."""
    if not isinstance(counts, dict) or set(counts) != models:
        return None
    out = {}
    for mid, pair in counts.items():
        if (
            not isinstance(pair, list)
            or len(pair) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in pair)
            or not 0 <= pair[0] <= pair[1] <= MAX_COUNT
        ):
            return None
        out[mid] = TestResult(pair[0], pair[1])
    return out
