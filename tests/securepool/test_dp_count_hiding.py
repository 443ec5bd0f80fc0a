"""With DP on, a participant's record count stays hidden, and no release escapes epsilon.

The epsilon each participant's ledger reports bounds adding or removing one of its
records (securepool.privacy.accounting.NEIGHBOURING_RELATION). That protects a record
only if nothing the participant sends depends on its count except through the noised
gradients. Tested from the observer's side: two runs in which one participant holds n
and n + 1 records (everything else the same, identity keys included) are compared part
by part as the link carries them; its update is the only thing that differs. Then the
releases DP does not cover: federated evaluation counts, the validation vote and
record-count weights are refused by the config, and the first two by the node itself
when a coordinator asks anyway.
"""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from binding_helpers import Part, Tap, pool, run_config, tapped
from split_helpers import config_text

from crypto.errors import ConfigError
from crypto.signing import IdentityKey
from securepool.config import RunConfig, parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.data import LocalData, federation
from securepool.models import Architecture, build_model, flatten
from securepool.node.app import ParticipantNode
from securepool.node.auditor import AUDITOR_ID
from securepool.node.wire import NodeStage, Reply, encode_globals
from securepool.privacy.accounting import epsilon_of
from securepool.privacy.config import PrivacyConfig
from securepool.privacy.trainer import ParticipantDP
from securepool.training import TrainSettings

DP = "[privacy]\nenabled = true\nnoise_multiplier = 1.0\nsample_rate = 0.2\n"
WATCHED = "p01"


def dp_config(mode: str, *, extra: str = DP) -> RunConfig:
    """Five participants, one logreg, one iteration, evaluation on the holdout."""
    text = config_text(n=5, mode=mode, iterations=1, models=1, max_models=1)
    text = text.replace('mode = "federated"', 'mode = "holdout"') + extra
    return parse_config(tomllib.loads(text))


def observed_run(cfg: RunConfig, *, keep: int) -> tuple[Tap, PoolCoordinator]:
    """One iteration of the real coordinator and nodes over a tap, ``WATCHED`` holding
    the first ``keep`` of its records; fixed identity keys, so that runs differ only by
    those records and by each node's own randomness."""
    data = federation(cfg)
    mine = data.participants[WATCHED]
    assert mine.n_train > keep
    data.participants[WATCHED] = LocalData(
        mine.x_train[:keep], mine.y_train[:keep], mine.x_test, mine.y_test
    )
    ids = [*sorted(data.participants), AUDITOR_ID]
    keys = {pid: IdentityKey.from_private_bytes(bytes([i + 1]) * 32) for i, pid in enumerate(ids)}
    registry = {pid: k.public_bytes() for pid, k in keys.items()}
    apps: dict[str, Any] = {
        pid: ParticipantNode(
            pid,
            cfg=cfg,
            data=local,
            identity=keys[pid],
            registry=registry,
            n_features=data.n_features,
            n_classes=data.n_classes,
        )
        for pid, local in sorted(data.participants.items())
    }
    made, build = tapped()
    coordinator = PoolCoordinator(
        cfg,
        driver_factory=lambda: build(apps),
        registry=registry,
        n_features=data.n_features,
        n_classes=data.n_classes,
        holdout=(data.x_holdout, data.y_holdout),
    )
    coordinator.run()
    return made[-1], coordinator


def watched(tap: Tap) -> list[Part]:
    return [p for p in tap.log if p.node == WATCHED]


@pytest.mark.parametrize("mode", ["plaintext", "mask"])
def test_one_record_more_changes_nothing_the_link_carries_but_the_update(mode: str) -> None:
    cfg = dp_config(mode)
    # 64 and 65 records, batch_size 32: a schedule of the record count (q = 1/ceil(n/b),
    # as before) would run 4 steps at q 1/2 for one and 6 at q 1/3 for the other
    (tap_n, coord_n), (tap_m, coord_m) = (observed_run(cfg, keep=n) for n in (64, 65))
    sent_n, sent_m = watched(tap_n), watched(tap_m)
    assert [(p.stage, len(p.payload)) for p in sent_n] == [
        (p.stage, len(p.payload)) for p in sent_m
    ]
    stages = [p.stage for p in sent_n]
    assert NodeStage.TRAIN.value in stages
    differ = []
    for a, b in zip(sent_n, sent_m, strict=True):
        assert a.answer is not None and b.answer is not None
        assert len(a.answer) == len(b.answer), a.stage  # every message the same size
        ra, rb = Reply.from_bytes(a.answer), Reply.from_bytes(b.answer)
        assert ra.ok and rb.ok, (ra.meta, rb.meta)
        assert ra.meta == rb.meta, a.stage  # steps, privacy report, endorsement
        if ra.body != rb.body:
            differ.append(a.stage)
    train = Reply.from_bytes(next(p.answer for p in sent_n if p.stage == "train") or b"")
    privacy = train.meta["privacy"]
    assert privacy["sample_rate"] == 0.2 and privacy["steps"] == 5  # public: ceil(1 / 0.2)
    if mode == "plaintext":
        # the node's own randomness is the same for both, its update is not
        assert differ == [NodeStage.TRAIN.value]
    else:
        # SecAgg+ draws fresh keys and masks each session: bodies differ, sizes do not;
        # the train reply itself is empty (its keys went out with the beacon reveal)
        assert NodeStage.SECAGG_SHARES.value in differ and not train.body
    # what the coordinator reports for the run (summary.json's privacy block)
    assert coord_n.trainer.report() == coord_m.trainer.report()
    assert coord_n.trainer.privacy_spent() == coord_m.trainer.privacy_spent()


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return torch.rand(n, 64, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_the_ledger_and_report_are_the_same_for_n_and_n_plus_one_records() -> None:
    cfg = PrivacyConfig(enabled=True, target_epsilon=2.0, sample_rate=0.3, epsilon_max=2.1)
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1)
    reports, ledgers = [], []
    for n in (57, 58):
        x, y = _data(n)
        dp = ParticipantDP("a", cfg, planned_rounds=4)
        model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
        for it in range(6):  # past the planned rounds: the budget stops both alike
            dp.train(model=model, x=x, y=y, settings=settings, seed=it)
        reports.append(dp.report())
        ledgers.append(dp.state_dict())
    assert reports[0] == reports[1]
    assert ledgers[0] == ledgers[1]
    assert reports[0]["steps"] == 4 * 7  # ceil(2 / 0.3) per participation, 4 fitted
    assert reports[0]["rounds_skipped_for_budget"] == 2 and reports[0]["epsilon"] <= 2.1


def test_the_noised_sum_is_divided_by_a_public_constant_not_the_record_count() -> None:
    """Noise-dominated steps (sigma 50, one step, q 0.01): the update's size is the
    noise's, sigma * C / batch_size, for 3 records as for 2,000. Dividing by the expected
    batch q * n, as before, made it 667 times larger for the 3 records."""
    cfg = PrivacyConfig(
        enabled=True, noise_multiplier=50.0, sample_rate=0.01, steps=1, secure_rng=False
    )
    settings = TrainSettings(epochs=1, batch_size=16, lr=1.0)
    norms = []
    for n in (3, 2000):
        x, y = _data(n)
        model = build_model(Architecture.MLP, n_features=64, n_classes=10, seed=0)
        before = flatten(model)
        ParticipantDP("a", cfg, planned_rounds=1).train(
            model=model, x=x, y=y, settings=settings, seed=1
        )
        norms.append(float(np.linalg.norm(flatten(model) - before)))
    d = sum(p.numel() for p in model.parameters())
    expected = 50.0 * 1.0 * np.sqrt(d) / 16  # lr 1, clip 1: the noise's norm
    assert norms[0] == pytest.approx(norms[1], rel=0.05)
    assert norms[0] == pytest.approx(expected, rel=0.05)


def test_the_accountant_is_add_remove_one_under_the_public_schedule() -> None:
    """The ledger a participant keeps (one entry per participation, from the public
    schedule) against dp_accounting's PLD and RDP accountants, each told the relation:
    add or remove one record."""
    dp_accounting = pytest.importorskip("dp_accounting")
    from dp_accounting import pld, rdp

    cfg = PrivacyConfig(enabled=True, target_epsilon=4.0, sample_rate=0.25)
    settings = TrainSettings(epochs=2, batch_size=16, lr=0.1)
    x, y = _data(60)
    dp = ParticipantDP("a", cfg, planned_rounds=10)
    model = build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=0)
    for it in range(10):
        dp.train(model=model, x=x, y=y, settings=settings, seed=it)
    history = dp.ledger.account("a").history
    assert len(history) == 10 and len(set(history)) == 1
    sigma, q, steps = history[0]
    assert q == 0.25 and steps == 8
    ours = dp.epsilon()
    assert ours == epsilon_of(history, delta=1e-5)
    relation = dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)),
        steps * len(history),
    )
    orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
    theirs_rdp = rdp.RdpAccountant(orders, neighboring_relation=relation).compose(event)
    theirs_pld = pld.PLDAccountant(relation).compose(event)
    assert ours == pytest.approx(theirs_rdp.get_epsilon(1e-5), rel=0.01)
    # the PLD is tighter than any RDP conversion: ours is an upper bound, not far above
    assert theirs_pld.get_epsilon(1e-5) <= ours <= 1.3 * theirs_pld.get_epsilon(1e-5)
    assert ours == pytest.approx(4.0, rel=0.02)  # calibrated from public values only


# --- releases DP does not cover: refused ----------------------------------------------

ONE = {"pool": {"models": [{"id": "a"}]}}
DP_ON = {"privacy": {"enabled": True, "noise_multiplier": 1.0}}


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({"aggregation": {"weighting": "records"}}, "weighting = 'records' with privacy"),
        ({"evaluation": {"mode": "federated"}}, "set evaluation.mode = 'holdout'"),
        (
            {
                "aggregation": {"mode": "plaintext"},
                "trust": {"enabled": True, "voting": "validation"},
            },
            "trust.voting = 'validation' with privacy",
        ),
    ],
)
def test_releases_dp_does_not_cover_are_refused_with_dp(
    section: dict[str, Any], match: str
) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config({**ONE, **DP_ON, **section})
    parse_config({**ONE, **section})  # without DP: allowed as before


def test_the_flower_default_of_federated_evaluation_is_an_error_with_dp() -> None:
    table = {**ONE, **DP_ON, "run": {"runtime": "flower", "registry": "/tmp/registry"}}
    with pytest.raises(ConfigError) as info:
        parse_config(table)
    (problem,) = [p for p in info.value.problems if "evaluation.mode" in p]
    assert "default under run.runtime = 'flower'" in problem
    assert "set evaluation.mode = 'holdout'" in problem
    cfg = parse_config({**table, "evaluation": {"mode": "holdout"}})
    assert cfg.privacy.enabled


def test_sample_rate_and_steps_are_checked() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({**ONE, "privacy": {"sample_rate": 1.5, "steps": -1}})
    text = "\n".join(info.value.problems)
    assert "sample_rate must be in (0, 1]" in text and "steps must be >= 0" in text
    for rate in (0.0, -0.1):
        with pytest.raises(ConfigError, match="sample_rate must be in"):
            parse_config({**ONE, "privacy": {"sample_rate": rate}})
    assert PrivacyConfig(sample_rate=0.3).local_steps(2) == 7
    assert PrivacyConfig(sample_rate=0.3, steps=3).local_steps(2) == 3
    assert PrivacyConfig(sample_rate=1.0).local_steps(1) == 1


def test_a_dp_node_refuses_to_report_error_counts_to_a_coordinator_that_asks() -> None:
    """The coordinator's side of the wire: an EVALUATE message straight to a DP node."""
    cfg = dp_config("plaintext")
    data = federation(cfg)
    key = IdentityKey.generate()
    params = flatten(build_model(Architecture.LOGREG, n_features=64, n_classes=10, seed=1))
    payload = encode_globals({"lr": params})
    for privacy in (True, False):
        node_cfg = cfg if privacy else dataclasses.replace(cfg, privacy=PrivacyConfig())
        node = ParticipantNode(
            WATCHED,
            cfg=node_cfg,
            data=data.participants[WATCHED],
            identity=key,
            registry={WATCHED: key.public_bytes()},
            n_features=data.n_features,
            n_classes=data.n_classes,
        )
        reply = Reply.from_bytes(node.handle(NodeStage.EVALUATE.value, payload))
        if privacy:
            assert not reply.ok and "counts" not in reply.meta
            assert "federated evaluation refused" in reply.meta["reason"]
        else:
            assert (
                reply.ok
                and reply.meta["counts"]["lr"][1] == data.participants[WATCHED].y_test.shape[0]
            )


def test_dp_nodes_refuse_the_validation_ballot_a_coordinator_asks_for(tmp_path: Path) -> None:
    """A coordinator whose config bypasses the check (DP and the validation vote) asks
    for ballots: every DP node refuses; no score leaves."""
    cfg = run_config(
        "plaintext",
        n=4,
        trust={"enabled": True, "voting": "validation", "sketch_dim": 64},
        extra="",
    )
    cfg = dataclasses.replace(
        cfg, privacy=PrivacyConfig(enabled=True, noise_multiplier=1.0, secure_rng=False)
    )
    made, build = tapped()
    p = pool(cfg, tmp_path, driver=build)
    p.run()
    ballots = made[-1].parts(NodeStage.PLAIN_BALLOT.value)
    assert ballots
    for part in ballots:
        assert part.answer is not None
        reply = Reply.from_bytes(part.answer)
        assert not reply.ok and "validation ballot refused" in reply.meta["reason"]
        assert reply.body == b""
