"""The random-model shared-pool loop of the patent: P1–P4 and S401–S406.

One :class:`RandomPoolLoop` is the coordinator's side of a run:

* ``s401_evaluate``     — test every global model (also S405 after each iteration);
* ``s402_converged``    — are all test errors inside the preset range at once (also S406)?
* ``s403_assign``       — select models and assign participants at random (P1/P2) from
  the participants' joint randomness (:mod:`protocols.beacon`); each participant
  recomputes the assignment and refuses a steered one;
* ``s404_aggregate``    — per-model secure (or baseline) aggregation of the updates (P3);
* ``run``               — repeat S403–S406 until converged or ``max_iterations`` is hit,
  which is reported honestly as *not converged*.

P5 (acceptance and elimination) runs afterwards in :mod:`securepool.acceptance` and the
pool is written by :mod:`securepool.pool_writer`. The assignment's randomness is the
beacon's joint seed, drawn fresh from the participants' OS entropy every iteration, so a
run is not reproducible from the config seed (``assignment.beacon = "seeded-insecure"``
makes it so, for tests and benchmarks only). Local training seeds still come from
(seed, iteration). The checkpoint records every finished iteration's joint seed and
withheld participants; a resumed run continues from the next iteration with a fresh
beacon.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from torch import nn

from crypto.errors import AggregateDiscarded, SecurePoolError, StageError, ThresholdNotMet
from protocols.aggregation import AggregationMode, ClientInput, GroupAggregator, SessionContext
from protocols.beacon import (
    BeaconCoordinator,
    BeaconParticipant,
    BeaconResult,
    VerifiedSignatures,
    group_joint_seed,
    seeded_insecure_nonces,
)
from securepool.assignment import Assignment, groups_for, pool_digest
from securepool.config import BeaconMode, EvaluationMode, RunConfig
from securepool.consistency import session_digest
from securepool.data import FederatedData
from securepool.evaluation import TestResult, all_within_range, count_errors
from securepool.hooks import AttackHooks, TrustHooks
from securepool.models import Layout, build_model, flatten, layout_of, load_flat
from securepool.participant import Participant
from securepool.schedule import run_schedule
from securepool.training import LocalTrainer


@dataclass
class GroupOutcome:
    model_id: str
    members: tuple[str, ...]
    status: str  # "aggregated" | "aborted: ..." | "skipped: ..."
    contributors: tuple[str, ...] = ()
    excluded: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class IterationRecord:
    iteration: int
    selected: tuple[str, ...]
    groups: list[GroupOutcome]
    test_errors: dict[str, float]
    converged: bool
    seconds: float
    epsilon: dict[str, float] | None = None  # each participant's own ledger, when DP is on
    joint_seed: str = ""  # hex: the beacon's seed this iteration's assignment came from
    withheld: dict[str, str] = field(default_factory=dict)  # invited, not in the seed

    def to_json(self) -> dict[str, Any]:
        return {
            "iteration": self.iteration,
            "selected": list(self.selected),
            "joint_seed": self.joint_seed,
            "withheld": self.withheld,
            "group_sizes": {g.model_id: len(g.members) for g in self.groups},
            "groups": [
                {
                    "model": g.model_id,
                    "members": list(g.members),
                    "status": g.status,
                    "contributors": len(g.contributors),
                    "excluded": g.excluded,
                    "seconds": round(g.seconds, 4),
                }
                for g in self.groups
            ],
            "test_errors": {k: round(v, 6) for k, v in self.test_errors.items()},
            "converged": self.converged,
            "seconds": round(self.seconds, 4),
            "privacy": None if self.epsilon is None else {"epsilon": self.epsilon},
        }


@dataclass
class LoopState:
    """Everything a checkpoint holds besides the component states."""

    iteration: int
    globals: dict[str, NDArray[np.float32]]
    test: dict[str, TestResult]
    converged: bool
    stop_reason: str | None = None


class RandomPoolLoop:
    """The coordinator's S401–S406 loop over the model pool."""

    def __init__(
        self,
        cfg: RunConfig,
        data: FederatedData,
        *,
        trainer: LocalTrainer,
        aggregator: GroupAggregator,
        trust: TrustHooks | None = None,
        attack: AttackHooks | None = None,
    ) -> None:
        self.cfg = cfg
        self.data = data
        self.trainer = trainer
        self.aggregator = aggregator
        self.trust = trust
        self.attack = attack
        self.participants = {pid: Participant(pid, d) for pid, d in data.participants.items()}
        #: the PKI: every participant's identity public key, known to all roles
        self.registry = {pid: p.identity.public_bytes() for pid, p in self.participants.items()}
        verified = VerifiedSignatures()  # in-process: each signature verified once, not n times
        for pid, p in self.participants.items():
            p.beacon = BeaconParticipant(
                pid,
                identity=p.identity,
                registry=self.registry,
                nonce_source=seeded_insecure_nonces(self.cfg.run.seed, pid)
                if cfg.assignment.beacon is BeaconMode.SEEDED_INSECURE
                else None,
                verified=verified,
            )
        #: iteration -> the beacon's result (joint seed, withheld), also in checkpoints
        self.beacon_log: dict[int, dict[str, Any]] = {}
        self.models: dict[str, nn.Module] = {}
        self.layouts: dict[str, Layout] = {}
        initial: dict[str, NDArray[np.float32]] = {}
        for spec in cfg.pool.models:
            model = build_model(
                spec.arch,
                n_features=data.n_features,
                n_classes=data.n_classes,
                seed=spec.seed,
                hidden=spec.hidden,
            )
            self.models[spec.id] = model
            self.layouts[spec.id] = layout_of(model)
            initial[spec.id] = flatten(model)
        self.state = LoopState(iteration=0, globals=initial, test={}, converged=False)

    # --- S401 / S405 -----------------------------------------------------------------

    def s401_evaluate(self) -> dict[str, TestResult]:
        """Test every global model on the configured test samples."""
        results: dict[str, TestResult] = {}
        for mid, model in self.models.items():
            params = self.state.globals[mid]
            if self.cfg.evaluation.mode is EvaluationMode.HOLDOUT:
                load_flat(model, params, self.layouts[mid])
                results[mid] = count_errors(model, self.data.x_holdout, self.data.y_holdout)
            else:
                total = TestResult(0, 0)
                for p in self.participants.values():
                    total = total + p.local_test(
                        model=model, global_params=params, layout=self.layouts[mid]
                    )
                results[mid] = total
        self.state.test = results
        return results

    # --- S402 / S406 -----------------------------------------------------------------

    def s402_converged(self) -> bool:
        errors = {m: r.error_rate for m, r in self.state.test.items()}
        return all_within_range(errors, self.cfg.convergence.error_range)

    # --- S403 ------------------------------------------------------------------------

    def eligible(self, iteration: int) -> list[str]:
        return [
            pid
            for pid in self.participants
            if self.trust is None or not self.trust.is_excluded(pid, iteration)
        ]

    def assign_groups(
        self, joint_seed: bytes, members: Sequence[str]
    ) -> dict[str, tuple[str, ...]]:
        """The deterministic S403 function of (joint seed, revealers) everyone computes."""
        return groups_for(self.cfg, joint_seed, members)

    def announce(self, outcome: bytes) -> bytes:
        """How the coordinator's outcome reaches the participants (a test seam: an
        attacking coordinator rewrites it here)."""
        return outcome

    def run_beacon(self, iteration: int) -> BeaconResult:
        """Commit, reveal, outcome with every eligible participant; each one checks the
        announced groups (SecurityViolation if they are not the joint seed's)."""
        invited = self.eligible(iteration)
        coordinator = BeaconCoordinator(self.registry)
        start = coordinator.start(
            iteration=iteration,
            pool_digest=pool_digest(iteration, self.state.globals),
            invited=invited,
        )
        for pid in invited:
            coordinator.receive_commit(pid, self._beacon(pid).on_start(start))
        commits = coordinator.commit_list()
        for pid in coordinator.committed:
            coordinator.receive_reveal(pid, self._beacon(pid).on_commits(commits))
        outcome, result = coordinator.finish(assign=self.assign_groups)
        outcome = self.announce(outcome)
        for pid in result.participants:
            self._beacon(pid).on_outcome(outcome, assign=self.assign_groups)
        self.beacon_log[iteration] = {
            "joint_seed": result.joint_seed.hex(),
            "withheld": dict(result.withheld),
        }
        return result

    def _beacon(self, pid: str) -> BeaconParticipant:
        beacon = self.participants[pid].beacon
        if beacon is None:
            raise StageError(f"participant {pid} has no beacon client")
        return beacon

    def s403_assign(self, iteration: int) -> Assignment:
        """P1/P2: models and groups from the beacon's joint seed (in pool order)."""
        groups = self.run_beacon(iteration).groups
        return Assignment({m: groups[m] for m in self.models if m in groups})

    # --- S404 ------------------------------------------------------------------------

    def validation_ballots(
        self,
        model_id: str,
        session: str,
        params: NDArray[np.float32],
        inputs: Mapping[str, ClientInput],
    ) -> dict[str, bytes] | None:
        """P6 validation vote (plaintext mode only): each member scores its peers' models
        on its own records and seals its ballot to the auditor; None when the vote does
        not use ballots."""
        if self.trust is None or not self.trust.wants_ballots:
            return None
        candidates = {pid: inp.update for pid, inp in inputs.items()}
        scores = {
            pid: self.participants[pid].score_candidates(
                model=self.models[model_id],
                global_params=params,
                candidates=candidates,
                layout=self.layouts[model_id],
            )
            for pid in candidates
        }
        if self.attack is not None:
            scores = self.attack.poison_ballots(scores)
        return {
            pid: self.trust.seal_ballot(voter=pid, scores=ballot, session=session)
            for pid, ballot in scores.items()
        }

    def session_context(
        self, iteration: int, model_id: str, session: str, params: NDArray[np.float32]
    ) -> SessionContext:
        """The group's joint seed (from this iteration's beacon) and the digest of what
        its members are sent: global model, layout, training settings, session, seed.

        In-process the members' clients are built from these values; a participant
        node computes the digest itself from what it received (issue 12)."""
        joint = group_joint_seed(
            bytes.fromhex(self.beacon_log[iteration]["joint_seed"]), model_id=model_id
        )
        digest = session_digest(
            session=session,
            model_id=model_id,
            group_seed=joint,
            layout=self.layouts[model_id],
            training=self.cfg.training.settings(),
            params=params,
        )
        return SessionContext(joint_seed=joint, model_digest=digest)

    def s404_aggregate(
        self, iteration: int, model_id: str, members: tuple[str, ...]
    ) -> GroupOutcome:
        """Local training of the group, then the per-model aggregate (P3)."""
        start = time.perf_counter()
        session = f"it{iteration:04d}/{model_id}"
        params = self.state.globals[model_id]
        updates: dict[str, NDArray[np.float32]] = {}
        weights: dict[str, float] = {}
        skipped: dict[str, str] = {}
        for k, pid in enumerate(members):
            outcome = self.participants[pid].train(
                model=self.models[model_id],
                global_params=params,
                layout=self.layouts[model_id],
                trainer=self.trainer,
                settings=self.cfg.training.settings(),
                seed=int(
                    np.random.SeedSequence([self.cfg.run.seed, iteration, k, 0x7A1]).generate_state(
                        1
                    )[0]
                ),
            )
            if outcome.update is None:
                skipped[pid] = outcome.report.skipped or "did not train"
                continue
            updates[pid] = outcome.update
            weights[pid] = float(outcome.report.samples)
        summarized = updates  # what each sealed summary is computed from
        if self.attack is not None:
            trained = updates
            updates = self.attack.poison(
                model_id=model_id, updates=trained, group_size=len(members), session=session
            )
            summarized = self.attack.summary_sources(honest=trained, sent=updates)
        inputs: dict[str, ClientInput] = {}
        for pid, upd in updates.items():
            try:
                inputs[pid] = ClientInput(
                    update=upd,
                    weight=weights[pid],
                    # mask mode binds the trust sketch to the masked input
                    # (protocols.secagg.binding), HE mode judges folds of the ciphertexts
                    # (protocols.he.fold): only plaintext mode seals a summary
                    sealed_summary=(
                        self.trust.seal(participant=pid, update=summarized[pid], session=session)
                        if self.trust is not None
                        and self.aggregator.mode is AggregationMode.PLAINTEXT
                        else None
                    ),
                )
            except SecurePoolError as exc:  # e.g. a diverged update with NaN: left out
                skipped[pid] = f"unusable update: {exc}"
        vet = (
            self.trust.vet_for(
                session=session,
                iteration=iteration,
                model_id=model_id,
                ballots=self.validation_ballots(model_id, session, params, inputs),
            )
            if self.trust is not None
            else None
        )
        try:
            result = self.aggregator.aggregate(
                session=session,
                inputs=inputs,
                vet=vet,
                context=self.session_context(iteration, model_id, session, params),
            )
        except (ThresholdNotMet, AggregateDiscarded) as exc:
            return GroupOutcome(
                model_id,
                members,
                f"aborted: {exc}",
                excluded=skipped,
                seconds=time.perf_counter() - start,
            )
        self.state.globals[model_id] = (params + result.mean()).astype(np.float32)
        return GroupOutcome(
            model_id,
            members,
            "aggregated",
            contributors=tuple(sorted(result.contributors)),
            excluded={**skipped, **dict(result.excluded)},
            seconds=time.perf_counter() - start,
        )

    # --- the loop --------------------------------------------------------------------

    def step(self) -> IterationRecord:
        """One iteration: S403, S404 per selected model, S405, S406."""
        start = time.perf_counter()
        iteration = self.state.iteration + 1
        assignment = self.s403_assign(iteration)
        beacon = self.beacon_log[iteration]
        groups = [self.s404_aggregate(iteration, m, g) for m, g in assignment.groups.items()]
        self.s401_evaluate()  # S405
        converged = self.s402_converged()  # S406
        self.state.iteration = iteration
        self.state.converged = converged
        return IterationRecord(
            iteration=iteration,
            selected=assignment.selected,
            groups=groups,
            test_errors={m: r.error_rate for m, r in self.state.test.items()},
            converged=converged,
            seconds=time.perf_counter() - start,
            epsilon=self.trainer.privacy_spent(),
            joint_seed=beacon["joint_seed"],
            withheld=beacon["withheld"],
        )

    def run(
        self,
        *,
        on_iteration: Callable[[IterationRecord], None] = lambda r: None,
    ) -> LoopState:
        """S401/S402 once, then S403–S406 until converged or the cap is hit."""
        return run_schedule(self, on_iteration=on_iteration)

    # --- checkpoints -----------------------------------------------------------------

    def component_states(self) -> dict[str, Any]:
        return {
            "trainer": self.trainer.state_dict(),
            "trust": self.trust.state_dict() if self.trust is not None else None,
            "beacon": {str(it): rec for it, rec in sorted(self.beacon_log.items())},
        }

    def load_component_states(self, states: Mapping[str, Any]) -> None:
        self.trainer.load_state_dict(states.get("trainer") or {})
        self.beacon_log = {int(it): dict(rec) for it, rec in (states.get("beacon") or {}).items()}
        if self.trust is not None and states.get("trust") is not None:
            self.trust.load_state_dict(states["trust"])


__all__ = ["GroupOutcome", "IterationRecord", "LoopState", "RandomPoolLoop"]
