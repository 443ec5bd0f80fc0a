"""Seed omission (issue 22, item 2), mounted by real attacker nodes in mask mode.

The attacker (:class:`~securepool.node.attacker.AttackerNode`, ``seed_omission``) sends
an honest input and a binding report that leaves out the seed towards every neighbour,
each mask folded into r so that r still adds up to R y. It used to open a dispute with
every honest neighbour, who left the aggregate unblamed, iteration after iteration. Who
shared keys with whom is the share round's, so the omission is the attacker's own lie:
flagged alone, every honest member stays in the aggregate."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from binding_helpers import QUIET_P6, assert_exact, pool, run_config

from crypto.errors import ConfigError
from protocols.verdict import PROVEN
from securepool.config import parse_config
from securepool.node.attacker import AttackerNode

ATTACKERS = ("p02", "p05")
ATTACK = '[attack]\nenabled = true\nkind = "seed_omission"\nparticipants = ["p02", "p05"]\n'


def test_omitting_attackers_are_flagged_alone_and_every_honest_member_stays(
    tmp_path: Path,
) -> None:
    cfg = run_config("mask", n=8, extra=ATTACK)
    p = pool(cfg, tmp_path, nodes={pid: AttackerNode for pid in ATTACKERS})
    (record,) = p.run()
    (group,) = record.groups
    assert group.status == "aggregated", group.status
    assert set(p.flags()) == set(ATTACKERS)
    for pid in ATTACKERS:
        assert p.flags()[pid].startswith(PROVEN + "report omits the mask seed"), p.flags()
    honest = set(group.members) - set(ATTACKERS)
    assert set(group.contributors) == honest  # no honest member excluded by a dispute
    assert not any("dispute" in why for why in group.excluded.values()), group.excluded
    assert_exact(p, record)


@pytest.mark.parametrize(
    "where", ['[aggregation]\nmode = "plaintext"\n', "[trust]\nenabled = false\n"]
)
def test_seed_omission_is_refused_where_there_is_no_binding_report(where: str) -> None:
    text = '[data]\ndataset = "digits"\n' + where + ATTACK
    with pytest.raises(ConfigError, match="seed_omission"):
        parse_config(tomllib.loads(text))


def test_a_marked_liar_is_not_in_the_next_iteration_s_groups(tmp_path: Path) -> None:
    """Issue 22 item 3: a caught lie costs only the liar. An omitted seed is a proven
    lie (an honest report never omits one), so its liar is marked at once although the
    strike rule asks for two strikes. The omitting attackers were already in the beacon
    drawn for iteration 2 (it rides on iteration 1's last stages); that beacon is
    dropped for a fresh one without them, so iteration 2's group is honest members only
    and its SecAgg+ thresholds count no marked member."""
    cfg = run_config(
        "mask",
        n=8,
        iterations=2,
        trust={**QUIET_P6, "strikes": 2, "strike_window": 5},
        extra=ATTACK,
    )
    p = pool(cfg, tmp_path, nodes={pid: AttackerNode for pid in ATTACKERS})
    first, second = p.run()
    ledger = p.coordinator.trust
    assert ledger is not None
    assert sorted(m["participant"] for m in ledger.registry.marks) == sorted(ATTACKERS)
    (g1,) = first.groups
    (g2,) = second.groups
    assert set(g1.contributors) == set(g1.members) - set(ATTACKERS)
    assert not set(ATTACKERS) & set(g2.members)
    assert g2.status == "aggregated" and set(g2.contributors) == set(g2.members)
    assert_exact(p, second)
