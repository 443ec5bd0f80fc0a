"""PoolCoordinator: the patent's S401-S406 loop over a Driver, holding no participant secret.

The coordinator holds the pool (every global model), the schedule, the beacon and
protocol *servers* and the checkpoint state. Everything it learns from participants
arrives as bytes through :meth:`Driver.exchange`; it never holds records, identity or
protocol secret keys, or (in ``mask`` mode) an individual update. One iteration:

====================  ============================================================
stage (one batch)     to whom / what
====================  ============================================================
``beacon/start``      every eligible node: BeaconStart -> signed Commit
``beacon/commits``    every committer: CommitList -> Reveal
``train``             every revealer: the Outcome (+ its group's global model) ->
                      SecAgg+ AdvertiseKeys (mask) or the update (plaintext); local
                      training happens inside this stage
``secagg/keys``       KeyDirectory -> ShareKeys          (mask only, every group)
``secagg/shares``     ShareDelivery -> MaskedInput
``secagg/survivors``  SurvivorList -> ConsistencySignature
``secagg/unmask``     UnmaskRequest -> UnmaskResponse
``evaluate``          federated evaluation only: every global -> error counts
====================  ============================================================

Every stage of every group of an iteration is ONE ``exchange`` batch, so an iteration
costs these round trips whatever the number of groups. In mask mode the next
iteration's beacon rides on this one's last two stages (``beacon/start`` bundled with
``secagg/survivors``, ``beacon/commits`` with ``secagg/unmask``: one
:data:`~securepool.node.wire.NodeStage.BUNDLE` message per node), so from the second
iteration on a mask iteration costs five round trips: ``train``, ``secagg/keys``,
``secagg/shares``, ``secagg/survivors``, ``secagg/unmask``. The next beacon's
``BeaconStart`` then names the pool digest of the start of the current iteration (fixed,
like any pool digest, before the commitments).

Beacon rounds are numbered apart from pool iterations (``round``: strictly increasing
over the run and across ``--resume``; a node refuses any round not above its last), so
a beacon that did not complete, or a coordinator restarted mid-iteration, simply uses a
fresh round number. The SecAgg+ session of a group is ``it<round>/<model>``.

A node that does not answer (or answers garbage, or too much) is excluded from its
group only, exactly like a dropout; SecAgg+ dropout recovery completes the group if
enough remain, else the group keeps its last global model (``ThresholdNotMet``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from crypto.errors import SecurePoolError, ThresholdNotMet
from crypto.fixedpoint import decode
from protocols.aggregation import AggregationMode, group_length
from protocols.beacon import BeaconCoordinator, group_joint_seed
from protocols.he.coordinator import Contribution, HECoordinator
from protocols.he.messages import AggregateRelease, ContextOffer
from protocols.plaintext import decode_plain_update
from protocols.secagg.binding import BindingKeys, MaskVerdict, discarded, post_check
from protocols.secagg.binding_wire import encode_judge_request
from protocols.secagg.server import SecAggServer
from protocols.trust_offer import TRUST_SETUP_SESSION, verify_trust_offer
from securepool.assignment import groups_for, pool_digest
from securepool.config import EvaluationMode, RunConfig
from securepool.coordinator.privacy import ReportedPrivacy
from securepool.evaluation import TestResult, all_within_range, count_errors
from securepool.coordinator.records import GroupOutcome, IterationRecord, LoopState
from securepool.models import Layout, build_model, flatten, layout_of, load_flat
from securepool.node.app import session_name
from securepool.node.auditor import AUDITOR_ID as AUDITOR
from securepool.node.auditor import HE_SETUP_SESSION
from securepool.node.wire import (
    NodeStage,
    PlainJudgeRequest,
    Reply,
    TrainRequest,
    encode_bundle,
    encode_globals,
    pack_list,
    unpack_list,
)
from securepool.runtime.driver import Driver
from securepool.schedule import run_schedule
from securepool.trust.ledger import TrustLedger

#: progress inside an iteration: (stage, nodes that answered, nodes asked), called when a
#: stage is sent (answered 0) and when its replies are in
Progress = Callable[[str, int, int], None]

MAX_COUNT = 10**9
#: the auditor's replies: its HE offer with the fold's Galois keys, every group's release
AUDITOR_REPLY_LIMIT = 256 * 1024 * 1024
#: how far past the checkpoint a node's reported last beacon round may be to be believed
MAX_ROUND_GAP = 1000


@dataclass
class _Group:
    model_id: str
    members: tuple[str, ...]
    session: str
    params: NDArray[np.float32]
    started: float
    server: SecAggServer | None = None
    plain: dict[str, tuple[NDArray[np.float32], float]] = field(default_factory=dict)
    he: dict[str, Contribution] = field(default_factory=dict)
    release: AggregateRelease | None = None
    verdict: tuple[bytes, bytes] | None = None  # mask binding: the auditor's signed verdict
    joint_seed: bytes = b""  # the group's joint seed (the HE fold seed binds it)
    total: Any = None  # mask binding: the unmasked sum, taken before the post-check
    sealed: dict[str, bytes] = field(default_factory=dict)  # plaintext: sealed summaries
    excluded: dict[str, str] = field(default_factory=dict)
    aborted: str | None = None


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
        # the trust check: the auditor node judges, this ledger keeps flags and marks
        self.trust = TrustLedger(cfg.trust) if cfg.trust.enabled else None
        self.trust_offer = b""  # mask mode: the auditor's signed opening key, relayed as is
        self._binding: BindingKeys | None = None
        self.n_features, self.n_classes = n_features, n_classes
        self.trainer = ReportedPrivacy(enabled=cfg.privacy.enabled)
        self._driver_factory = driver_factory
        self._registry_source = registry
        self.registry: dict[str, bytes] = {}
        self.driver: Driver | None = None
        self.participants: tuple[str, ...] = ()
        self.unreachable: dict[str, str] = {}
        self.holdout = holdout
        #: the runner's hooks: a wrapper of the driver (transcripts), progress inside an
        #: iteration (stage, nodes answered, nodes asked)
        self.wrap_driver: Callable[[Driver], Driver] | None = None
        self.progress: Progress | None = None
        self.beacon_log: dict[int, dict[str, Any]] = {}
        self.round = 0  # the last beacon round used (see the module docstring)
        self._next_beacon: BeaconCoordinator | None = None  # started during this iteration
        self._node_rounds: dict[str, int] = {}
        self._he: HECoordinator | None = None  # HE mode: checks uploads, adds ciphertexts
        self.he_offer = b""  # HE mode: the auditor's signed context offer
        self._he_offer_relayed = b""  # the same, signed, without the Galois keys
        self.models: dict[str, nn.Module] = {}
        self.layouts: dict[str, Layout] = {}
        initial: dict[str, NDArray[np.float32]] = {}
        for spec in cfg.pool.models:
            model = build_model(
                spec.arch,
                n_features=n_features,
                n_classes=n_classes,
                seed=spec.seed,
                hidden=spec.hidden,
            )
            self.models[spec.id], self.layouts[spec.id] = model, layout_of(model)
            initial[spec.id] = flatten(model)
        self.state = LoopState(iteration=0, globals=initial, test={}, converged=False)
        self.reply_limit = 1024 * 1024 + 64 * max(lay.size for lay in self.layouts.values())

    # --- connecting ------------------------------------------------------------------

    def connect(self) -> None:
        """Start the runtime and greet every node: a node whose key is not the PKI's,
        or that does not answer, takes no part in the run."""
        if self.driver is not None:
            return
        self.driver = self._driver_factory()
        if self.wrap_driver is not None:
            self.driver = self.wrap_driver(self.driver)
        src = self._registry_source
        self.registry = dict(src() if callable(src) else src)
        nodes = [n for n in self.driver.nodes() if n != AUDITOR]
        he = self.cfg.aggregation.mode is AggregationMode.HE
        mask_trust = self.trust is not None and not he  # mask and plaintext: an opening key
        batch: dict[str, list[tuple[NodeStage, bytes]]] = {
            n: [(NodeStage.HELLO, b"")] for n in nodes
        }
        if he or mask_trust:
            if AUDITOR not in self.driver.nodes():
                raise SecurePoolError(
                    "HE mode and the trust check need the auditor node, and the runtime has none"
                )
            batch[AUDITOR] = [(NodeStage.HE_OFFER if he else NodeStage.TRUST_OFFER, b"")]
        parts = self._exchange_parts(batch)
        replies = {n: parts.get(n, [None])[0] for n in nodes}
        if he:
            self._accept_offer(parts.get(AUDITOR, [None])[0])
        elif mask_trust:
            self._accept_trust_offer(parts.get(AUDITOR, [None])[0])
        ok = []
        for node in nodes:
            reply, why = self._open(replies.get(node))
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

    def _auditor_offer(self, raw: bytes | None, what: str) -> tuple[bytes, bytes]:
        """(the auditor's offer body, its PKI key), or SecurePoolError naming ``what``."""
        reply, why = self._open(raw, auditor=True)
        if reply is None:
            raise SecurePoolError(f"the auditor gave no {what}: {why}")
        auditor = self.registry.get(AUDITOR)
        if auditor is None:
            raise SecurePoolError(f"{what}: the PKI holds no key for the auditor")
        return reply.body, auditor

    def _accept_offer(self, raw: bytes | None) -> None:
        """HE mode: the auditor's context offer, checked against its PKI key."""
        offer, auditor = self._auditor_offer(raw, "HE context offer")
        self._he = HECoordinator(
            self.cfg.he_settings(),
            registry={p: k for p, k in self.registry.items() if p != AUDITOR},
        )
        self._he.accept_context(offer, auditor_public=auditor, session=HE_SETUP_SESSION)
        self.he_offer = offer
        # participants only encrypt: their copy leaves out the fold's Galois keys (MBs)
        self._he_offer_relayed = ContextOffer.from_bytes(offer).without_galois().to_bytes()

    def _accept_trust_offer(self, raw: bytes | None) -> None:
        """Mask mode with the trust check: the auditor's opening key, checked against its
        PKI key here (every participant checks it again before sealing to it)."""
        offer, auditor = self._auditor_offer(raw, "trust check's opening key")
        opening = verify_trust_offer(offer, auditor_public=auditor, session=TRUST_SETUP_SESSION)
        self.trust_offer = offer
        self._binding = BindingKeys(
            auditor_public=opening, auditor_identity=auditor, dim=self.cfg.trust.sketch_dim
        )

    def close(self) -> None:
        if self.driver is not None:
            self.driver.close()

    def _exchange(self, stage: NodeStage, batch: Mapping[str, bytes]) -> dict[str, bytes | None]:
        if self.driver is None:
            raise SecurePoolError("coordinator not connected")
        if not batch:
            return {}
        if self.progress is not None:
            self.progress(stage.value, 0, len(batch))
        replies = self.driver.exchange(stage.value, batch, timeout=self.timeout)
        if self.progress is not None:
            answered = sum(1 for r in replies.values() if r is not None)
            self.progress(stage.value, answered, len(batch))
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
        replies = self._exchange(NodeStage.BUNDLE, payloads)
        out: dict[str, list[bytes | None]] = {}
        for pid, raw in replies.items():
            n = len(batch[pid])
            reply, _why = self._open(raw, auditor=pid == AUDITOR)
            parts: list[bytes | None] = [None] * n
            if reply is not None:
                # a malformed bundle: every part of this node is missing
                with contextlib.suppress(SecurePoolError):
                    parts = list(unpack_list(reply.body, what="bundle replies", expected=n))
            out[pid] = parts
        return out

    def _open(self, raw: bytes | None, *, auditor: bool = False) -> tuple[Reply | None, str]:
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
            reply, _ = self._open(replies[pid])
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
        reply, _ = self._open(raw)
        if reply is None:
            return
        if stage is NodeStage.BEACON_START:
            beacon.receive_commit(pid, reply.body)
        else:
            beacon.receive_reveal(pid, reply.body)

    def _beacon(self) -> tuple[bytes, Any]:
        """The beacon of this iteration: the one started during the last iteration if
        it has reveals, else a fresh round now (two round trips)."""
        beacon, self._next_beacon = self._next_beacon, None
        if beacon is None or not beacon.revealed:
            iteration = self.state.iteration + 1
            beacon, start = self._start_beacon(iteration)
            invited = self._invited(iteration)
            replies = self._exchange(NodeStage.BEACON_START, {p: start for p in invited})
            for pid, raw in sorted(replies.items()):
                self._file_beacon(beacon, NodeStage.BEACON_START, pid, raw)
            commits = beacon.commit_list()
            replies = self._exchange(
                NodeStage.BEACON_COMMITS, {p: commits for p in beacon.committed}
            )
            for pid, raw in sorted(replies.items()):
                self._file_beacon(beacon, NodeStage.BEACON_COMMITS, pid, raw)
        return beacon.finish(assign=self.assign_groups)

    # --- S404 ------------------------------------------------------------------------

    def _train_stage(self, iteration: int, outcome: bytes, result: Any) -> list[_Group]:
        groups: list[_Group] = []
        member_of: dict[str, _Group] = {}
        now = time.perf_counter()
        for mid in self.models:
            if mid in result.groups:
                g = _Group(
                    mid,
                    tuple(result.groups[mid]),
                    session_name(result.iteration, mid),
                    self.state.globals[mid],
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
        batch: dict[str, list[tuple[NodeStage, bytes]]] = {
            pid: [
                (
                    NodeStage.TRAIN,
                    TrainRequest(
                        outcome,
                        member_of[pid].model_id if pid in member_of else "",
                        member_of[pid].params if pid in member_of else np.zeros(0, np.float32),
                        self._he_offer_relayed,
                        self.trust_offer,
                    ).to_bytes(),
                )
            ]
            for pid in result.participants
            if pid not in kept_out
        }
        mode = self.cfg.aggregation.mode
        for g in groups:
            if mode is AggregationMode.MASK:
                g.server = SecAggServer(
                    session=g.session,
                    settings=self.cfg.aggregation.mask,
                    directory={p: self.registry[p] for p in g.members},
                    length=self.layouts[g.model_id].size,
                    min_contributors=self.cfg.assignment.min_group_size,
                    joint_seed=group_joint_seed(result.joint_seed, model_id=g.model_id),
                    members=g.members,
                    binding=self._binding,
                )
            g.joint_seed = group_joint_seed(result.joint_seed, model_id=g.model_id)
        beacon_stage = self._piggyback_beacon(NodeStage.TRAIN, batch)
        replies = self._exchange_parts(batch)
        for pid, raws in sorted(replies.items()):
            if beacon_stage is not None and self._next_beacon is not None:
                self._file_beacon(self._next_beacon, beacon_stage, pid, raws[-1])
            if pid not in result.participants:
                continue
            reply, why = self._open(raws[0])
            if reply is not None:
                self.trainer.record(pid, reply.meta.get("privacy"))
            mine = member_of.get(pid)
            if mine is None:
                continue
            if reply is None:
                mine.excluded[pid] = why
            elif mode is AggregationMode.MASK:
                self._file(mine, pid, reply.body)
            elif mode is AggregationMode.HE:
                self._file_he(mine, pid, reply.body)
            else:
                self._file_plain(mine, pid, reply.body)
        return groups

    def _file_plain(self, g: _Group, pid: str, body: bytes) -> None:
        """Plaintext mode: the update (and, with the trust check, its sealed summary)."""
        try:
            if self.trust is not None:
                body, g.sealed[pid] = unpack_list(body, what="update and summary", expected=2)
            g.plain[pid] = decode_plain_update(body)
        except SecurePoolError as exc:
            g.sealed.pop(pid, None)
            g.excluded[pid] = f"malformed update: {exc}"

    def _plain_judge(self, groups: list[_Group]) -> None:
        """Plaintext mode with the trust check: every group's sealed summaries, with the
        summary of each update received, to the auditor in one batch; its signed verdict
        leaves the flagged out (no verdict: the group is not aggregated)."""
        from protocols.summaries import encode_summary, summarize
        from securepool.trust.check import public_projection_seed

        dim = self.cfg.trust.sketch_dim
        asked: list[_Group] = []
        requests: list[bytes] = []
        for g in groups:
            if not g.plain:
                continue
            seed = public_projection_seed(self.cfg.run.seed, g.session)
            expected = {
                pid: encode_summary(summarize(vec, dim=dim, seed=seed))
                for pid, (vec, _w) in g.plain.items()
            }
            size = dim or self.layouts[g.model_id].size
            requests.append(PlainJudgeRequest(g.session, size, g.sealed, expected).to_bytes())
            asked.append(g)
        self._apply_verdicts(
            NodeStage.PLAIN_JUDGE,
            asked,
            requests,
            inputs=lambda g: g.plain,
            refused="no valid verdict of the auditor",
        )

    def _apply_verdicts(
        self,
        stage: NodeStage,
        asked: list[_Group],
        requests: list[bytes],
        *,
        inputs: Callable[[_Group], dict[str, Any]],
        refused: str,
    ) -> None:
        """Send each asked group's request to the auditor (one message) and act on its
        signed P6 verdict: flagged members leave ``inputs(group)``, flags are recorded;
        a group without a valid verdict is not aggregated (``refused`` says why)."""
        from securepool.trust.he_binding import read_fold_verdict

        for g, answer in self._ask_auditor(stage, asked, requests):
            try:
                verdict = read_fold_verdict(
                    answer, auditor_public=self.registry[AUDITOR], session=g.session
                )
            except (SecurePoolError, KeyError) as exc:
                g.aborted = f"aborted: {refused}: {exc}"
                continue
            for pid, why in verdict.flagged.items():
                if inputs(g).pop(pid, None) is not None:
                    g.excluded[pid] = f"untrusted: {why}"
            if self.trust is not None:
                self.trust.record(
                    session=g.session,
                    iteration=self.state.iteration + 1,
                    model_id=g.model_id,
                    flagged=verdict.flagged,
                    trusted=verdict.trusted,
                    threshold=verdict.threshold,
                )

    def _file_he(self, g: _Group, pid: str, body: bytes) -> None:
        if self._he is None:
            raise SecurePoolError("HE mode without the auditor's context")
        try:
            upload, receipt = unpack_list(body, what="HE upload", expected=2)
            g.he[pid] = self._he.check_upload(
                session=g.session, sender=pid, upload=upload, receipt=receipt
            )
        except SecurePoolError as exc:
            g.excluded[pid] = f"bad upload: {type(exc).__name__}: {exc}"

    def _he_fold(self, groups: list[_Group]) -> None:
        """HE mode with the trust check: every group's fold request to the auditor in one
        batch (with the next beacon's commits); the signed verdict clears the members
        whose ciphertexts may enter that group's aggregate (the auditor enforces it)."""
        he = self._he
        if he is None:
            raise SecurePoolError("HE mode without the auditor's context")
        asked: list[_Group] = []
        requests: list[bytes] = []
        for g in groups:
            try:
                request, more = he.build_fold_request(
                    session=g.session, contributions=g.he, joint_seed=g.joint_seed
                )
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            for pid, reason in more.items():
                g.he.pop(pid, None)
                g.excluded[pid] = reason
            asked.append(g)
            requests.append(request)
        self._apply_verdicts(
            NodeStage.HE_FOLD,
            asked,
            requests,
            inputs=lambda g: g.he,
            refused="the auditor refused the folds",
        )

    def _he_decrypt(self, groups: list[_Group]) -> None:
        """HE mode: every group's sum of ciphertexts to the auditor in one batch."""
        he = self._he
        if he is None:
            raise SecurePoolError("HE mode without the auditor's context")
        asked: list[_Group] = []
        requests: list[bytes] = []
        for g in groups:
            if g.aborted is not None:
                continue
            try:
                request, more = he.build_request(
                    session=g.session, contributions=g.he, threads=self.cfg.he_settings().threads()
                )
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            g.excluded.update(more)
            asked.append(g)
            requests.append(request)
        for g, answer in self._ask_auditor(NodeStage.HE_DECRYPT, asked, requests, beacon=True):
            try:
                if not answer:
                    raise SecurePoolError("no release")
                release = AggregateRelease.from_bytes(answer)
                if release.session != g.session or not set(release.contributors) <= set(g.he):
                    raise SecurePoolError("a release for another session or contributors")
                g.release = release
            except SecurePoolError as exc:
                g.aborted = f"aborted: the auditor refused the aggregate: {exc}"

    def _file(self, g: _Group, pid: str, body: bytes) -> None:
        if g.server is None:
            raise SecurePoolError(f"group {g.session} has no SecAgg+ server")
        try:
            g.server.receive(body, sender=pid)
        except SecurePoolError as exc:
            g.excluded[pid] = f"refused by the coordinator: {exc}"

    def _mask_rounds(self, groups: list[_Group]) -> None:
        """The four SecAgg+ stages after the adverts, each one batch over all groups;
        with the trust check, the auditor's judgement between survivors and unmask."""
        stages: list[tuple[NodeStage, Callable[[_Group], Mapping[str, bytes]]]] = [
            (NodeStage.SECAGG_KEYS, _close_keys),
            (NodeStage.SECAGG_SHARES, _close_shares),
            (NodeStage.SECAGG_SURVIVORS, _close_inputs),
            (NodeStage.SECAGG_UNMASK, _close_signatures),
        ]
        for stage, close in stages:
            if stage is NodeStage.SECAGG_UNMASK and self._binding is not None:
                self._mask_judge(groups)
            batch: dict[str, list[tuple[NodeStage, bytes]]] = {}
            owner: dict[str, _Group] = {}
            for g in groups:
                if g.aborted is not None or g.server is None:
                    continue
                try:
                    out = close(g)
                except ThresholdNotMet as exc:
                    g.aborted = f"aborted: {exc}"
                    continue
                except SecurePoolError as exc:  # e.g. no valid verdict of the auditor
                    g.aborted = f"aborted: {type(exc).__name__}: {exc}"
                    continue
                for pid, reason in g.server.excluded.items():
                    g.excluded.setdefault(pid, reason)
                for pid, msg in out.items():
                    batch[pid], owner[pid] = [(stage, msg)], g
            beacon_stage = self._piggyback_beacon(stage, batch)
            replies = self._exchange_parts(batch)
            for pid, raws in sorted(replies.items()):
                if pid in owner:
                    reply, why = self._open(raws[0])
                    if reply is None:
                        owner[pid].excluded.setdefault(pid, f"{stage.value}: {why}")
                    else:
                        self._file(owner[pid], pid, reply.body)
                if beacon_stage is not None and self._next_beacon is not None:
                    self._file_beacon(self._next_beacon, beacon_stage, pid, raws[-1])

    def _mask_judge(self, groups: list[_Group]) -> None:
        """Mask mode with the trust check: every group's judge request to the auditor in
        one batch (with the next beacon's commits to the participants); each group gets
        the auditor's signed verdict, or aborts (clients unmask for no one without it)."""
        asked: list[_Group] = []
        requests: list[bytes] = []
        for g in groups:
            if g.aborted is not None or g.server is None:
                continue
            try:
                requests.append(encode_judge_request(g.server.judge_request()))
            except SecurePoolError as exc:
                g.aborted = f"aborted: no judge request: {exc}"
                continue
            asked.append(g)
        for g, answer in self._ask_auditor(NodeStage.MASK_JUDGE, asked, requests):
            try:
                data, signature = unpack_list(answer, what="verdict", expected=2)
                verdict = MaskVerdict.verified(
                    data, signature, auditor=self.registry[AUDITOR], session=g.session
                )
            except (SecurePoolError, KeyError) as exc:
                g.aborted = f"aborted: no valid verdict of the auditor: {exc}"
                continue
            g.verdict = (data, signature)
            for pid, why in verdict.flagged.items():
                g.excluded[pid] = f"untrusted: {why}"
            for pid, why in verdict.excluded.items():
                g.excluded.setdefault(pid, why)
            if self.trust is not None:
                self.trust.record(
                    session=g.session,
                    iteration=self.state.iteration + 1,
                    model_id=g.model_id,
                    flagged=verdict.flagged,
                    trusted=verdict.trusted or None,
                    threshold=verdict.threshold,
                )

    def _ask_auditor(
        self, stage: NodeStage, asked: list[_Group], requests: list[bytes], *, beacon: bool = False
    ) -> list[tuple[_Group, bytes]]:
        """One auditor stage for every asked group in one message (``beacon``: with the
        next beacon's stage to the participants in the same round trip): each group
        with the auditor's answer to it, empty for a refusal or no reply."""
        batch: dict[str, list[tuple[NodeStage, bytes]]] = {}
        if requests:
            batch[AUDITOR] = [(stage, pack_list(requests))]
        beacon_stage = self._piggyback_beacon(stage, batch) if beacon else None
        if not batch:
            return []
        replies = self._exchange_parts(batch)
        for pid, raws in sorted(replies.items()):
            if pid != AUDITOR and beacon_stage is not None and self._next_beacon is not None:
                self._file_beacon(self._next_beacon, beacon_stage, pid, raws[-1])
        return list(zip(asked, self._auditor_answers(replies, asked), strict=True))

    def _auditor_answers(
        self, replies: Mapping[str, list[bytes | None]], asked: list[_Group]
    ) -> list[bytes]:
        """The auditor's answer to each asked group, in order; a refusal (or no reply)
        is a group's empty answer, which its caller treats as none."""
        if not asked:
            return []
        reply, why = self._open(replies.get(AUDITOR, [None])[0], auditor=True)
        items: list[bytes] = []
        if reply is not None:
            with contextlib.suppress(SecurePoolError):
                items = unpack_list(reply.body, what="auditor answers", expected=len(asked))
        out = []
        for i in range(len(asked)):
            one, _why = self._open(items[i], auditor=True) if items else (None, why)
            out.append(b"" if one is None else one.body)
        return out

    def _mask_post_check(self, groups: list[_Group]) -> None:
        """After unmasking: each group's post-check against the commitments of the
        auditor's verdict (no message: the coordinator holds what unmasking rebuilt); a
        group whose aggregate holds a liar's input is discarded, liars are flagged."""
        for g in groups:
            if g.aborted is not None or g.server is None or g.verdict is None:
                continue
            try:
                g.total = g.server.close_unmask()
                check = post_check(g.server.post_check_request())
            except ThresholdNotMet as exc:
                g.aborted = f"aborted: {exc}"
                continue
            except SecurePoolError as exc:
                g.aborted = f"aborted: unmasking failed: {exc}"
                continue
            if self.trust is not None and check.flagged:
                self.trust.record(
                    session=g.session,
                    iteration=self.state.iteration + 1,
                    model_id=g.model_id,
                    flagged=check.flagged,
                )
            for pid, why in check.flagged.items():
                g.excluded[pid] = f"untrusted: {why}"
            if check.discard:
                g.aborted = discarded(check)

    def _piggyback_beacon(
        self, stage: NodeStage, batch: dict[str, list[tuple[NodeStage, bytes]]]
    ) -> NodeStage | None:
        """Add the next iteration's beacon/start or beacon/commits to every participant's
        parts (mask: with secagg/survivors and secagg/unmask; HE: with train and the
        auditor's he/decrypt); the beacon stage added, or None."""
        if self.state.iteration + 1 >= self.cfg.convergence.max_iterations:
            return None  # the last iteration: no next one to draw a beacon for
        # the auditor's own stages (mask/judge, he/fold) stay auditor-only round trips
        first, second = {
            AggregationMode.MASK: (NodeStage.SECAGG_SURVIVORS, NodeStage.SECAGG_UNMASK),
            AggregationMode.HE: (NodeStage.TRAIN, NodeStage.HE_DECRYPT),
        }.get(self.cfg.aggregation.mode, (None, None))
        if stage is first:
            nxt = self.state.iteration + 2  # during iteration state.iteration + 1
            self._next_beacon, start = self._start_beacon(nxt)
            for pid in self._invited(nxt):
                batch.setdefault(pid, []).append((NodeStage.BEACON_START, start))
            return NodeStage.BEACON_START
        if stage is second and self._next_beacon is not None:
            commits = self._next_beacon.commit_list()
            for pid in self._next_beacon.committed:
                batch.setdefault(pid, []).append((NodeStage.BEACON_COMMITS, commits))
            return NodeStage.BEACON_COMMITS
        return None

    def _finish_group(self, g: _Group) -> GroupOutcome:
        def outcome(status: str, contributors: tuple[str, ...] = ()) -> GroupOutcome:
            return GroupOutcome(
                g.model_id,
                g.members,
                status,
                contributors=contributors,
                excluded=dict(sorted(g.excluded.items())),
                seconds=time.perf_counter() - g.started,
            )

        if g.aborted is not None:
            return outcome(g.aborted)
        try:
            if g.release is not None:
                weighted = g.release.weighted_sum.astype(np.float64)
                weight = float(g.release.total_weight)
                contributors = tuple(sorted(g.release.contributors))
                for pid in g.members:
                    if pid not in contributors:
                        g.excluded.setdefault(pid, "not in the aggregate")
            elif g.server is not None:
                total = g.server.close_unmask() if g.total is None else g.total
                if g.server.spec is None:
                    raise ThresholdNotMet("no encoding fixed", survivors=0, threshold=1)
                values = decode(total, g.server.spec)
                weighted, weight = values[:-1].astype(np.float64), float(values[-1])
                contributors = tuple(sorted(g.server.contributors))
                g.excluded = {p: r for p, r in g.excluded.items() if p not in contributors}
                for pid in g.members:
                    if pid not in contributors:
                        g.excluded.setdefault(pid, "not in the aggregate")
            else:
                weighted, weight, contributors = self._plain_sum(g)
        except ThresholdNotMet as exc:
            return outcome(f"aborted: {exc}")
        if not weight > 0:
            return outcome("aborted: the aggregate has no weight")
        mean = weighted / weight
        self.state.globals[g.model_id] = (g.params + mean).astype(np.float32)
        return outcome("aggregated", contributors)

    def _plain_sum(self, g: _Group) -> tuple[NDArray[np.float64], float, tuple[str, ...]]:
        size = self.layouts[g.model_id].size
        got = {}
        for pid, (vec, w) in g.plain.items():
            if vec.size != size:
                g.excluded[pid] = f"wrong size: update of length {vec.size}, model has {size}"
            else:
                got[pid] = (vec, w)
        if got:
            _length, wrong = group_length({p: v.size for p, (v, _) in got.items()})
            g.excluded.update(wrong)
        need = self.cfg.assignment.min_group_size
        if len(got) < need:
            raise ThresholdNotMet(
                f"session {g.session}: {len(got)} contributors, need {need}",
                survivors=len(got),
                threshold=need,
            )
        total = np.zeros(size, dtype=np.float64)
        weight = 0.0
        for vec, w in got.values():
            total += w * vec.astype(np.float64)
            weight += w
        return total, weight, tuple(sorted(got))

    # --- the loop --------------------------------------------------------------------

    def step(self) -> IterationRecord:
        start = time.perf_counter()
        iteration = self.state.iteration + 1
        outcome, result = self._beacon()
        self.beacon_log[iteration] = {
            "round": result.iteration,
            "joint_seed": result.joint_seed.hex(),
            "withheld": dict(result.withheld),
        }
        groups = self._train_stage(iteration, outcome, result)
        if self.cfg.aggregation.mode is AggregationMode.MASK:
            self._mask_rounds(groups)
            if self._binding is not None:
                self._mask_post_check(groups)
        elif self.cfg.aggregation.mode is AggregationMode.HE:
            if self.trust is not None:
                self._he_fold(groups)
            self._he_decrypt(groups)
        elif self.trust is not None:
            self._plain_judge(groups)
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
        """S401/S402 once, then S403–S406 until converged or the cap is hit."""
        self.connect()
        return run_schedule(self, on_iteration=on_iteration)

    # --- checkpoints -----------------------------------------------------------------

    def component_states(self) -> dict[str, Any]:
        return {
            "trainer": self.trainer.state_dict(),
            "trust": None if self.trust is None else self.trust.state_dict(),
            "beacon": {str(it): rec for it, rec in sorted(self.beacon_log.items())},
            "round": self.round,
        }

    def load_component_states(self, states: Mapping[str, Any]) -> None:
        self.trainer.load_state_dict(states.get("trainer") or {})
        if self.trust is not None:
            self.trust.load_state_dict(states.get("trust") or {})
        self.beacon_log = {int(it): dict(rec) for it, rec in (states.get("beacon") or {}).items()}
        # a pipelined beacon of the next iteration (or a crash mid-iteration) used rounds
        # past the checkpoint's: connect() moves past the rounds the nodes report
        self.round = max(self.round, int(states.get("round") or 0))


def _server(g: _Group) -> SecAggServer:
    if g.server is None:
        raise SecurePoolError(f"group {g.session} has no SecAgg+ server")
    return g.server


def _close_keys(g: _Group) -> dict[str, bytes]:
    server = _server(g)
    msg = server.close_keys()
    return {pid: msg for pid in sorted(server.advertised)}


def _close_shares(g: _Group) -> Mapping[str, bytes]:
    return _server(g).close_shares()


def _close_inputs(g: _Group) -> dict[str, bytes]:
    server = _server(g)
    msg = server.close_inputs(None)
    return {pid: msg for pid in sorted(server.survivors)}


def _close_signatures(g: _Group) -> dict[str, bytes]:
    server = _server(g)
    msg = server.close_signatures(g.verdict)
    return {pid: msg for pid in sorted(server.signers)}


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
