"""P6 in plaintext mode judges what each participant sent, not what it claims (issue 13,
plaintext part). Performed through the real coordinator, participant nodes and auditor
node: the attacker's update on the wire is poisoned, the summary it seals to the
auditor is that of its honest update (or the poisoned update hides in the kernel of
the public sketch).

Also covered by tests/securepool/test_split_trust.py
(``test_plaintext_mode_binds_each_sealed_summary_to_the_update_received``): a -4x update
behind an honest summary, sketch_dim = 256, and honest nodes never flagged by the
binding (every group member but the two attackers contributes, here too)."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import POISONS, QUIET_P6, Recording, assert_exact, kernel_poison, pool
from binding_helpers import run_config as make_config
from numpy.typing import NDArray

from protocols.summaries import summarize
from securepool.trust.check import public_projection_seed

BINDING = "summary does not match the update the coordinator received"


class SealsCover(Recording):
    """Sends its poisoned update with the sealed summary of its honest one in place of
    the poisoned update's (it seals to the auditor's verified key, as an honest node)."""

    def _sealed_summary(self, offer: bytes, session: str, update: NDArray[np.float32]) -> bytes:
        assert self.honest is not None
        return super()._sealed_summary(offer, session, self.honest)


def _config(sketch_dim: int = 256, n: int = 6) -> Any:
    return make_config("plaintext", n=n, trust={**QUIET_P6, "sketch_dim": sketch_dim})


@pytest.mark.parametrize(
    ("sketch_dim", "poison"),
    [(256, "backdoor_shift"), (0, "scale_minus_5"), (0, "backdoor_shift")],
)
def test_a_poisoned_update_behind_an_honest_summary_is_flagged(
    tmp_path: Path, sketch_dim: int, poison: str
) -> None:
    """sketch_dim = 0: the raw update is the summary (the P6 baseline)."""
    bad = {"p04", "p05"}
    liar = functools.partial(SealsCover, poison=POISONS[poison])
    p = pool(_config(sketch_dim), tmp_path, nodes={pid: liar for pid in bad})
    (record,) = p.run()
    (group,) = record.groups
    for pid in bad:
        assert group.excluded[pid] == f"untrusted: {BINDING}"
    assert set(group.contributors) == set(group.members) - bad  # no honest node flagged
    assert p.flags() == {pid: BINDING for pid in bad}
    assert_exact(p, record)


def test_the_kernel_trick_does_not_hide_a_perturbation(tmp_path: Path) -> None:
    """A perturbation in the public sketch's kernel leaves the sketch unchanged, but not
    the norm; and in plaintext mode the check is against the received update anyway."""
    cfg = _config()
    liar = functools.partial(SealsCover, poison=kernel_poison(cfg, norm_ratio=2.0))
    p = pool(cfg, tmp_path, nodes={"p05": liar})
    (record,) = p.run()
    node = p.nodes["p05"]
    _params, sent, _w = node.sent[max(node.sent)]
    seed = public_projection_seed(cfg.run.seed, "it0001/lr")
    np.testing.assert_allclose(  # the attack as intended: the public sketch is blind to it
        summarize(sent, dim=256, seed=seed).sketch,
        summarize(node.honest, dim=256, seed=seed).sketch,
        atol=1e-5,
    )
    assert not np.allclose(sent, node.honest, atol=1e-3)
    (group,) = record.groups
    assert group.excluded["p05"] == f"untrusted: {BINDING}"
    assert set(group.contributors) == set(group.members) - {"p05"}
    assert_exact(p, record)
