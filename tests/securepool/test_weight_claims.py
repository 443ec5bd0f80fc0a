"""Weight inflation (issue 22, item 1), mounted by a real attacker node in every mode.

The attacker (:class:`~securepool.node.attacker.AttackerNode`, ``weight_inflation``)
trains on the backdoor's records, sends that update as trained (honest size, truthful
summary) and claims 1024 records. Under ``aggregation.weighting = "records"`` nobody can
check the claim and it owns most of its group's mean. Under ``equal`` (the default)
every update weighs 1 and whoever sees a weight refuses another one:

* plaintext: the coordinator sees each weight: the attacker is excluded by name, the
  group aggregates the rest;
* mask and HE with the trust check: the auditor sees each member's weight (the bound
  report's weight bucket; the fold's weight): the attacker is flagged and left out, the
  group aggregates exactly the rest;
* mask and HE without it: nobody sees a member's weight; the aggregate's total weight is
  not one per contributor, so the group is not aggregated (the lie is caught, its liar
  not named: the trust check is what names it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import Pool, assert_exact, pool, run_config

from protocols.aggregation import Weighting
from securepool.config import RunConfig
from securepool.node.attacker import AttackerNode

ATTACKER = "p02"
ATTACK = f'[attack]\nenabled = true\nkind = "weight_inflation"\nparticipants = ["{ATTACKER}"]\n'


def _run(
    mode: str,
    tmp_path: Path,
    *,
    trust: dict[str, Any] | None,
    records: bool = False,
    claim: float = 1024.0,
) -> Any:
    cfg: RunConfig = run_config(mode, trust=trust, extra=ATTACK + f"strength = {claim}\n")
    if records:
        agg = dataclasses.replace(cfg.aggregation, weighting=Weighting.RECORDS)
        cfg = dataclasses.replace(cfg, aggregation=agg)
    p = pool(cfg, tmp_path, nodes={ATTACKER: AttackerNode})
    (record,) = p.run()
    return p, record


@pytest.mark.parametrize("trust", [None, {}], ids=["trust", "no-trust"])
def test_plaintext_the_coordinator_refuses_a_claimed_weight(
    tmp_path: Path, trust: dict[str, Any] | None
) -> None:
    p, record = _run("plaintext", tmp_path, trust=trust)
    (group,) = record.groups
    assert group.status == "aggregated"
    assert ATTACKER not in group.contributors
    assert "weight refused" in group.excluded[ATTACKER]
    assert "claims weight 1024" in group.excluded[ATTACKER]
    _honest_mean_kept(p, record)


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_with_the_trust_check_the_auditor_flags_the_claim_and_keeps_the_rest(
    tmp_path: Path, mode: str
) -> None:
    """A claim of 4 (inside what the encodings carry: 4 of a group of 6 would own 4/9 of
    its mean) is flagged by the auditor, who reads each member's weight."""
    p, record = _run(mode, tmp_path, trust=None, claim=4.0)
    (group,) = record.groups
    assert group.status == "aggregated" and ATTACKER not in group.contributors
    flags = p.flags()
    assert set(flags) == {ATTACKER}, flags  # no honest participant is flagged
    assert "weight 4: equal weighting weighs every update 1" in flags[ATTACKER]
    _honest_mean_kept(p, record)


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_a_claim_of_1024_never_reaches_the_aggregate_either(tmp_path: Path, mode: str) -> None:
    """1024 is past what the encodings carry: in mask mode its weight word wraps (the
    auditor flags a weight that is not positive), in HE mode its values pass the public
    bound and the coordinator excludes the upload. Either way it is out, named."""
    p, record = _run(mode, tmp_path, trust=None)
    (group,) = record.groups
    assert group.status == "aggregated" and ATTACKER not in group.contributors
    reason = p.flags().get(ATTACKER) or group.excluded.get(ATTACKER, "")
    assert "weight" in reason or "max_abs_value" in reason, (p.flags(), group.excluded)
    _honest_mean_kept(p, record)


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_without_the_trust_check_the_total_weight_gives_the_lie_away(
    tmp_path: Path, mode: str
) -> None:
    p, record = _run(mode, tmp_path, trust={}, claim=4.0)
    (group,) = record.groups
    assert group.status.startswith("aborted") and group.contributors == ()
    if mode == "mask":  # the coordinator's own check (HE: the key holder refuses)
        assert "total weight" in group.status
    # the model keeps the global its members were sent: nothing of the lie is in it
    sent_params = p.nodes["p00"].sent[max(p.nodes["p00"].sent)][0]
    np.testing.assert_array_equal(p.coordinator.state.globals[group.model_id], sent_params)


def test_weighted_by_records_the_claim_owns_the_mean(tmp_path: Path) -> None:
    """The undefended baseline: under ``records`` the claim is accepted as it is."""
    p, record = _run("plaintext", tmp_path, trust={}, records=True)
    (group,) = record.groups
    assert group.status == "aggregated" and ATTACKER in group.contributors
    weights = {
        pid: p.nodes[pid].sent[max(p.nodes[pid].sent)][2]
        for pid in group.contributors
        if pid != ATTACKER
    }
    share = 1024 / (1024 + sum(weights.values()))
    assert share > 0.5  # one participant of six owns most of its group's mean


def _honest_mean_kept(p: Pool, record: Any) -> None:
    """The aggregate is exactly the equal-weight mean of what the others sent."""
    (group,) = record.groups
    assert all(p.nodes[pid].sent[max(p.nodes[pid].sent)][2] == 1.0 for pid in group.contributors)
    assert_exact(p, record)
