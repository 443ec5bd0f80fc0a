"""The S401–S406 loop of the one coordinator over the default runtime: PoolCoordinator
over InProcessDriver with one ParticipantNode per participant, every message real bytes.

Attacks are performed at the wire: a coordinator that steers the assignment is refused
by the nodes, a node that sends a NaN update is excluded by the coordinator's decoder."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from split_helpers import stages_of

from protocols.beacon import group_joint_seed
from protocols.plaintext import decode_plain_update, encode_plain_update
from protocols.secagg.messages import ShareKeys, decode_message
from securepool.config import RunConfig, parse_config
from securepool.consistency import session_digest
from securepool.coordinator.launch import InProcessNodes, inprocess_coordinator
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import federation
from securepool.node.agreement import session_name
from securepool.node.wire import NodeStage, Reply, unpack_list
from securepool.runtime.driver import Driver


def small_config(
    evaluation: str = "holdout",
    beacon: str = "joint",
    *,
    mode: str = "plaintext",
    models: int = 2,
    **convergence: object,
) -> RunConfig:
    pool = [{"id": "lr", "arch": "logreg"}, {"id": "mlp", "arch": "mlp", "hidden": 16}]
    return parse_config(
        {
            "data": {"participants": 6},
            "assignment": {"beacon": beacon},
            "pool": {"models": pool[:models]},
            "training": {"epochs": 1, "lr": 0.5},
            "convergence": convergence,
            "evaluation": {"mode": evaluation},
            "aggregation": {"mode": mode},
        }
    )


def small_loop(
    evaluation: str = "holdout", beacon: str = "joint", **kw: Any
) -> tuple[PoolCoordinator, InProcessNodes]:
    """The coordinator and its in-process nodes, as ``securepool run`` builds them."""
    return inprocess_coordinator(small_config(evaluation, beacon, **kw))


class Spy:
    """A Driver wrapper (``PoolCoordinator.wrap_driver``): keeps every reply of one stage
    and makes some nodes silent from a given exchange on."""

    def __init__(self, inner: Driver, *, keep: str = "", silent: frozenset[str] = frozenset()):
        self.inner, self.keep, self.silent = inner, keep, silent
        self.kept: dict[str, bytes | None] = {}
        self.trained = False  # the first train stage has run: the silent go silent

    def nodes(self) -> tuple[str, ...]:
        return self.inner.nodes()

    def exchange(
        self, stage: str, batch: Mapping[str, bytes], *, timeout: float, **kw: Any
    ) -> dict[str, bytes | None]:
        gone = self.silent if self.trained else frozenset()
        out = self.inner.exchange(
            stage, {p: b for p, b in batch.items() if p not in gone}, timeout=timeout, **kw
        )
        out.update({p: None for p in batch if p in gone})
        for p, raw in out.items():  # the kept stage's answer, in a bundle or alone
            stages = stages_of(stage, batch[p])
            if self.keep in stages:
                if stage != NodeStage.BUNDLE.value or raw is None:
                    self.kept[p] = raw
                else:
                    reply = Reply.from_bytes(raw)
                    answers = unpack_list(reply.body, what="bundle") if reply.ok else []
                    self.kept[p] = answers[stages.index(self.keep)] if answers else None
            self.trained = self.trained or NodeStage.TRAIN.value in stages
        return out

    def close(self) -> None:
        self.inner.close()


def test_cap_gives_an_honest_not_converged() -> None:
    loop, _ = small_loop(error_range=[0.0, 0.0001], max_iterations=3)
    seen: list[int] = []
    state = loop.run(on_iteration=lambda r: seen.append(r.iteration))
    assert seen == [1, 2, 3]
    assert state.converged is False
    assert state.stop_reason == "not converged: max_iterations=3 reached"


def test_loop_stops_as_soon_as_all_errors_are_in_range() -> None:
    loop, _ = small_loop(error_range=[0.0, 0.95], max_iterations=50)
    records: list[Any] = []
    state = loop.run(on_iteration=records.append)
    assert state.converged
    # it stopped at the first iteration whose S406 check passed, not later
    if records:
        assert [r.converged for r in records] == [False] * (len(records) - 1) + [True]
    assert all(t.error_rate <= 0.95 for t in state.test.values())


def test_s404_updates_only_the_selected_models_and_training_improves() -> None:
    loop, _ = small_loop(error_range=[0.0, 0.01], max_iterations=1)
    before = {m: v.copy() for m, v in loop.state.globals.items()}
    loop.connect()
    loop.s401_evaluate()
    err0 = {m: r.error_rate for m, r in loop.state.test.items()}
    record = loop.step()
    for mid, vec in loop.state.globals.items():
        changed = not np.array_equal(vec, before[mid])
        assert changed == (mid in record.selected)
    for mid in record.selected:
        assert record.test_errors[mid] < err0[mid]


def test_same_seed_same_run_only_in_the_labelled_insecure_seeded_mode() -> None:
    (a, _), (b, _) = (small_loop(max_iterations=2, beacon="seeded-insecure") for _ in range(2))
    a.run()
    b.run()
    assert a.beacon_log == b.beacon_log
    for mid in a.state.globals:
        np.testing.assert_array_equal(a.state.globals[mid], b.state.globals[mid])


def test_joint_beacon_seeds_come_from_participants_not_the_config_seed() -> None:
    # same config seed, fresh OS entropy per participant node: different joint seeds
    (a, _), (b, _) = small_loop(max_iterations=1), small_loop(max_iterations=1)
    a.connect()
    b.connect()
    ra, rb = a.step(), b.step()
    assert len(bytes.fromhex(ra.joint_seed)) == 32
    assert ra.joint_seed != rb.joint_seed
    assert ra.withheld == {} and a.beacon_log[1]["joint_seed"] == ra.joint_seed


def test_a_steered_assignment_is_refused_by_the_participants() -> None:
    """A coordinator that announces groups other than the joint seed's (p00, p01, p02
    together) gets a refusal from every node: nobody trains, no model changes."""
    loop, _ = small_loop(max_iterations=1)
    honest = loop.assign_groups

    def steer(joint_seed: bytes, members: Any) -> dict[str, tuple[str, ...]]:
        groups = honest(joint_seed, members)
        forced = ("p00", "p01", "p02")
        rest = tuple(p for p in sorted(members) if p not in forced)
        first, *others = sorted(groups)
        steered = {first: forced, **{m: rest for m in others[:1]}}
        if steered == groups:
            steered = {first: tuple(sorted(members))}
        return steered

    loop.assign_groups = steer  # type: ignore[method-assign]
    before = {m: v.copy() for m, v in loop.state.globals.items()}
    loop.connect()
    record = loop.step()
    assert record.groups
    for g in record.groups:
        assert g.status.startswith("aborted") and not g.contributors
        assert set(g.excluded) == set(g.members)
        assert all("steered assignment refused" in why for why in g.excluded.values())
    for mid, vec in loop.state.globals.items():
        np.testing.assert_array_equal(vec, before[mid])


def test_too_few_eligible_stops_honestly() -> None:
    """Four of six nodes go silent after iteration 1: the next beacon has two
    revealers, too few for a group of three, and the run stops saying so."""
    loop, _ = small_loop(error_range=[0.0, 0.0001], max_iterations=5)
    silent = frozenset({"p02", "p03", "p04", "p05"})
    loop.wrap_driver = lambda d: Spy(d, silent=silent)
    state = loop.run()
    assert state.iteration == 1
    assert state.stop_reason is not None and "too few eligible participants" in state.stop_reason


def test_federated_evaluation_counts_every_local_test_record() -> None:
    loop, _ = small_loop("federated", max_iterations=1)
    results = loop.s401_evaluate()
    data = federation(loop.cfg)
    total = sum(int(d.y_test.shape[0]) for d in data.participants.values())
    assert all(r.total == total for r in results.values())


class SendsNaN:
    """p00's node, lying at the wire: its plaintext update is all NaN."""

    def __init__(self, honest: Any) -> None:
        self.honest = honest

    def handle(self, stage: str, payload: bytes) -> bytes:
        raw: bytes = self.honest.handle(stage, payload)
        if stage != NodeStage.TRAIN.value:
            return raw
        reply = Reply.from_bytes(raw)
        vec, weight = decode_plain_update(reply.body)
        poisoned = encode_plain_update(np.full_like(vec, np.nan), weight)
        return Reply(True, poisoned, reply.meta).to_bytes()


def test_one_participants_nan_update_does_not_stop_the_run() -> None:
    loop, nodes = small_loop(models=1, max_iterations=1)
    nodes.apps["p00"] = SendsNaN(nodes.apps["p00"])
    records: list[Any] = []
    loop.run(on_iteration=records.append)
    (group,) = records[0].groups
    assert "p00" in group.members
    assert group.status == "aggregated"
    assert "non-finite" in group.excluded["p00"]
    assert "p00" not in group.contributors
    assert np.all(np.isfinite(loop.state.globals["lr"]))


def test_each_group_session_carries_its_beacon_seed_and_model_digest() -> None:
    """Mask mode: every member's ShareKeys (sent with its train reply) carries, signed,
    the digest of what it was sent: its group's session, the group's seed from the
    joint beacon (not one the coordinator picks), the training settings and the global
    model."""
    loop, _ = small_loop(mode="mask", max_iterations=1)
    spy: list[Spy] = []

    def wrap(driver: Driver) -> Spy:
        spy.append(Spy(driver, keep=NodeStage.SECAGG_KEYS.value))
        return spy[-1]

    loop.wrap_driver = wrap
    sent = {m: v.copy() for m, v in loop.state.globals.items()}
    loop.connect()
    record = loop.step()
    joint = bytes.fromhex(record.joint_seed)
    beacon_round = loop.beacon_log[record.iteration]["round"]
    digests = {}
    for g in record.groups:
        session = session_name(beacon_round, g.model_id)

        def digest(params: np.ndarray, model_id: str = g.model_id, s: str = session) -> bytes:
            return session_digest(
                session=s,
                model_id=model_id,
                group_seed=group_joint_seed(joint, model_id=model_id),
                layout=loop.layouts[model_id],
                training=loop.cfg.training.settings(),
                params=params,
            )

        for pid in g.members:
            raw = spy[0].kept[pid]
            assert raw is not None
            shares = decode_message(Reply.from_bytes(raw).body, ShareKeys)
            assert shares.session == session
            assert shares.model_digest == digest(sent[g.model_id])
        digests[g.model_id] = digest(sent[g.model_id])
        # another model (e.g. one member sent something else) changes the digest
        assert digest(sent[g.model_id] + 1e-3) != digests[g.model_id]
    assert digests and len(set(digests.values())) == len(digests)
