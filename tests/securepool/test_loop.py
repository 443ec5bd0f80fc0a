from __future__ import annotations

import numpy as np
import pytest

from protocols.plaintext import PlaintextAggregator
from securepool.config import parse_config
from securepool.data import partition
from securepool.loop import RandomPoolLoop
from securepool.training import PlainTrainer


def small_loop(
    evaluation: str = "holdout", beacon: str = "joint", **convergence: object
) -> RandomPoolLoop:
    cfg = parse_config(
        {
            "data": {"participants": 6},
            "assignment": {"beacon": beacon},
            "pool": {"models": [{"id": "lr", "arch": "logreg"}, {"id": "mlp", "arch": "mlp"}]},
            "training": {"epochs": 1, "lr": 0.5},
            "convergence": convergence,
            "evaluation": {"mode": evaluation},
        }
    )
    data = partition(cfg.data, seed=cfg.run.seed)
    return RandomPoolLoop(
        cfg, data, trainer=PlainTrainer(), aggregator=PlaintextAggregator(min_contributors=3)
    )


def test_cap_gives_an_honest_not_converged() -> None:
    loop = small_loop(error_range=[0.0, 0.0001], max_iterations=3)
    seen: list[int] = []
    state = loop.run(on_iteration=lambda r: seen.append(r.iteration))
    assert seen == [1, 2, 3]
    assert state.converged is False
    assert state.stop_reason == "not converged: max_iterations=3 reached"


def test_loop_stops_as_soon_as_all_errors_are_in_range() -> None:
    loop = small_loop(error_range=[0.0, 0.95], max_iterations=50)
    records = []
    state = loop.run(on_iteration=records.append)
    assert state.converged
    # it stopped at the first iteration whose S406 check passed, not later
    if records:
        assert [r.converged for r in records] == [False] * (len(records) - 1) + [True]
    assert all(t.error_rate <= 0.95 for t in state.test.values())


def test_s404_updates_only_the_selected_models_and_training_improves() -> None:
    loop = small_loop(error_range=[0.0, 0.01], max_iterations=1)
    before = {m: v.copy() for m, v in loop.state.globals.items()}
    loop.s401_evaluate()
    err0 = {m: r.error_rate for m, r in loop.state.test.items()}
    record = loop.step()
    for mid, vec in loop.state.globals.items():
        changed = not np.array_equal(vec, before[mid])
        assert changed == (mid in record.selected)
    for mid in record.selected:
        assert record.test_errors[mid] < err0[mid]


def test_same_seed_same_run_only_in_the_labelled_insecure_seeded_mode() -> None:
    a, b = (small_loop(max_iterations=2, beacon="seeded-insecure") for _ in range(2))
    a.run()
    b.run()
    assert a.beacon_log == b.beacon_log
    for mid in a.state.globals:
        np.testing.assert_array_equal(a.state.globals[mid], b.state.globals[mid])


def test_joint_beacon_seeds_come_from_participants_not_the_config_seed() -> None:
    # same config seed, fresh OS entropy per participant: different joint seeds
    a, b = small_loop(max_iterations=1), small_loop(max_iterations=1)
    ra, rb = a.step(), b.step()
    assert len(bytes.fromhex(ra.joint_seed)) == 32
    assert ra.joint_seed != rb.joint_seed
    assert ra.withheld == {} and a.beacon_log[1]["joint_seed"] == ra.joint_seed


def test_a_steered_assignment_is_refused_by_the_participants() -> None:
    from crypto.errors import SecurityViolation
    from protocols.beacon import Outcome

    loop = small_loop(max_iterations=1)

    def steer(outcome: bytes) -> bytes:
        # the coordinator announces p00, p01, p02 together for the first selected model
        out = Outcome.from_bytes(outcome)
        everyone = sorted({p for _, g in out.groups for p in g})
        first = out.groups[0][0]
        forced = ("p00", "p01", "p02")
        rest = tuple(p for p in everyone if p not in forced)
        groups = ((first, forced), *((m, rest) for m, _ in out.groups[1:2]))
        if groups == out.groups:
            groups = ((first, tuple(everyone)),)
        return Outcome(out.iteration, out.reveals, groups).to_bytes()

    loop.announce = steer  # type: ignore[method-assign]
    with pytest.raises(SecurityViolation, match="steered assignment refused"):
        loop.step()


def test_too_few_eligible_stops_honestly() -> None:
    loop = small_loop(error_range=[0.0, 0.0001], max_iterations=5)

    class ExcludeAll:
        wants_ballots = False

        def is_excluded(self, pid: str, iteration: int) -> bool:
            return iteration >= 2

        def seal(self, **kw: object) -> bytes:
            return b""

        def vet_for(self, **kw: object):  # type: ignore[no-untyped-def]
            return lambda s, observed=None: {}

        def report(self) -> dict[str, object]:
            return {}

        def state_dict(self) -> dict[str, object]:
            return {}

        def load_state_dict(self, state: dict[str, object]) -> None:
            pass

    loop.trust = ExcludeAll()  # type: ignore[assignment]
    state = loop.run()
    assert state.iteration == 1
    assert state.stop_reason is not None and "too few eligible participants" in state.stop_reason


def test_federated_evaluation_counts_every_local_test_record() -> None:
    loop = small_loop("federated", max_iterations=1)
    results = loop.s401_evaluate()
    total = sum(int(p.data.y_test.shape[0]) for p in loop.participants.values())
    assert all(r.total == total for r in results.values())


def test_one_participants_nan_update_does_not_stop_the_run() -> None:
    loop = small_loop(max_iterations=1)

    class NaNForP00:
        def poison(self, *, model_id, updates, group_size, session):  # type: ignore[no-untyped-def]
            out = dict(updates)
            for pid in out:
                if pid == "p00":
                    out[pid] = np.full_like(out[pid], np.nan)
            return out

        def summary_sources(self, *, honest, sent):  # type: ignore[no-untyped-def]
            return dict(sent)

        def poison_data(self, data):  # type: ignore[no-untyped-def]
            return data

    loop.attack = NaNForP00()  # type: ignore[assignment]
    loop.cfg = parse_config(
        {
            "data": {"participants": 6},
            "pool": {"models": [{"id": "lr", "arch": "logreg"}]},
            "convergence": {"max_iterations": 1},
        }
    )
    loop.models = {"lr": loop.models["lr"]}
    loop.layouts = {"lr": loop.layouts["lr"]}
    loop.state.globals = {"lr": loop.state.globals["lr"]}
    record = loop.step()
    (group,) = record.groups
    assert group.status == "aggregated"
    assert "p00" in group.excluded and "NaN" in group.excluded["p00"]
    assert np.all(np.isfinite(loop.state.globals["lr"]))


def test_each_group_session_carries_its_beacon_seed_and_model_digest() -> None:
    """The SecAgg+ clients get the group's seed from the joint beacon (not one the
    coordinator picks) and a digest binding the model they were sent and that seed."""
    from protocols.aggregation import SessionContext
    from protocols.beacon import group_joint_seed

    loop = small_loop(max_iterations=1)
    seen: dict[str, SessionContext] = {}
    inner = loop.aggregator.aggregate

    def spy(**kwargs):  # type: ignore[no-untyped-def]
        seen[kwargs["session"]] = kwargs["context"]
        return inner(**kwargs)

    loop.aggregator.aggregate = spy  # type: ignore[method-assign]
    record = loop.step()
    assert seen and len(seen) == len(record.groups)
    for g in record.groups:
        ctx = seen[f"it{record.iteration:04d}/{g.model_id}"]
        expected = group_joint_seed(bytes.fromhex(record.joint_seed), model_id=g.model_id)
        assert ctx.joint_seed == expected and len(ctx.model_digest) == 32
    assert len({c.model_digest for c in seen.values()}) == len(seen)
    # another model (e.g. one member sent something else) changes the digest
    mid = record.groups[0].model_id
    session = f"it{record.iteration:04d}/{mid}"
    params = loop.state.globals[mid]
    a = loop.session_context(record.iteration, mid, session, params).model_digest
    b = loop.session_context(record.iteration, mid, session, params + 1e-3).model_digest
    assert a != b
