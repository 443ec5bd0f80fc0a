"""P6 in plaintext mode judges what each participant sent, not what it claims (issue 13,
plaintext part). The attacks are performed through the real PlaintextAggregator: the
attacker's bytes on the wire are a poisoned update, its sealed summary is that of an
honest-looking one (or of the poisoned update plus a kernel perturbation)."""

from __future__ import annotations

import numpy as np
import pytest
from binding_helpers import honest_group, poisoned

from protocols.aggregation import ClientInput
from protocols.plaintext import PlaintextAggregator
from securepool.trust.check import TrustCheck
from securepool.trust.config import TrustConfig

D = 2000
SESSION = "it0001/m"


def _group(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return honest_group(n, D, seed)


def _run(check: TrustCheck, sent: dict[str, np.ndarray], claimed: dict[str, np.ndarray]):
    inputs = {
        pid: ClientInput(
            update=sent[pid],
            weight=10.0,
            sealed_summary=check.seal(participant=pid, update=claimed[pid], session=SESSION),
        )
        for pid in sent
    }
    vet = check.vet_for(session=SESSION, iteration=1, model_id="m")
    return PlaintextAggregator(min_contributors=3).aggregate(
        session=SESSION, inputs=inputs, vet=vet
    )


@pytest.mark.parametrize("sketch_dim", [256, 0])
@pytest.mark.parametrize("poison", ["scale_minus_5", "backdoor_shift"])
def test_a_poisoned_update_behind_an_honest_summary_is_flagged(
    sketch_dim: int, poison: str
) -> None:
    check = TrustCheck(TrustConfig(enabled=True, sketch_dim=sketch_dim), seed=3,
                       model_sizes={"m": D})  # fmt: skip
    honest = _group(8)
    bad = {"p06", "p07"}
    sent = poisoned(honest, bad, poison)
    result = _run(check, sent, claimed=honest)  # the attackers claim honest summaries
    assert bad <= set(result.excluded)
    for pid in bad:
        assert "does not match the update the coordinator received" in result.excluded[pid]
    assert not bad & set(result.contributors)


def test_the_kernel_trick_does_not_hide_a_perturbation() -> None:
    """A perturbation in the public sketch's kernel leaves the sketch unchanged, but not
    the norm; and in plaintext mode the check is against the received update anyway."""
    check = TrustCheck(TrustConfig(enabled=True, sketch_dim=256), seed=3, model_sizes={"m": D})
    honest = _group(6, seed=1)
    sent = dict(honest)
    from protocols.summaries import sketch_projection

    buckets, signs = sketch_projection(D, dim=256, seed=check._projection_seed(SESSION))
    # two coordinates in one bucket, opposite signed contributions: the sketch cancels
    same = np.flatnonzero(buckets == buckets[0])[:2]
    kernel = np.zeros(D, dtype=np.float32)
    kernel[same[0]] = 1.0 * signs[same[0]]
    kernel[same[1]] = -1.0 * signs[same[1]]
    sent["p05"] = (honest["p05"] + kernel).astype(np.float32)
    result = _run(check, sent, claimed=honest)
    assert "does not match" in result.excluded["p05"]


@pytest.mark.parametrize("seed", range(5))
def test_honest_participants_are_never_flagged_by_the_binding_check(seed: int) -> None:
    check = TrustCheck(TrustConfig(enabled=True, sketch_dim=256), seed=seed, model_sizes={"m": D})
    honest = _group(10, seed=seed)
    result = _run(check, honest, claimed=honest)
    assert not any("does not match" in r for r in result.excluded.values())
