"""Issue 13's attacks do what they claim: the cover attacks seal the summary of an
honest-looking update while sending a poisoned one, and the kernel attack sends an update
whose public sketch is its honest update's. Performed as the attacker would, through
UpdateAttack (the loop's attack hook), TrustCheck's sealing and the real
PlaintextAggregator, and once through the whole loop built from a config."""

from __future__ import annotations

import numpy as np
import pytest

from protocols.aggregation import ClientInput
from protocols.plaintext import PlaintextAggregator
from protocols.summaries import sketch_projection, summarize
from securepool.attacks import (
    AttackConfig,
    AttackKind,
    PublicSketch,
    UpdateAttack,
    kernel_part,
    kernel_poison,
)
from securepool.config import parse_config
from securepool.data import partition
from securepool.loop import RandomPoolLoop
from securepool.trust.check import TrustCheck, public_projection_seed
from securepool.trust.config import TrustConfig
from securepool.trust.screening import screen
from securepool.wiring import build_components

D = 3000
SESSION = "it0002/m"
RUN_SEED = 5


def _group(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.01, D)
    return {f"p{i:02d}": (base + rng.normal(0, 0.004, D)).astype(np.float32) for i in range(n)}


def _attack(kind: AttackKind, bad: set[str], ids: list[str], dim: int = 256) -> UpdateAttack:
    return UpdateAttack(
        AttackConfig(enabled=True, kind=kind, participants=tuple(sorted(bad))),
        participants=ids,
        sketch=PublicSketch(run_seed=RUN_SEED, dim=dim, norm_ratio=3.0),
    )


def _through_plaintext(
    check: TrustCheck, sent: dict[str, np.ndarray], summarized: dict[str, np.ndarray]
) -> tuple[dict[str, str], tuple[str, ...]]:
    """The attacker's wire: ``sent`` as its update, the summary of ``summarized`` sealed."""
    inputs = {
        p: ClientInput(
            update=sent[p],
            weight=10.0,
            sealed_summary=check.seal(participant=p, update=summarized[p], session=SESSION),
        )
        for p in sent
    }
    vet = check.vet_for(session=SESSION, iteration=2, model_id="m")
    result = PlaintextAggregator(min_contributors=3).aggregate(
        session=SESSION, inputs=inputs, vet=vet
    )
    return dict(result.excluded), tuple(result.contributors)


def _poisoned(kind: AttackKind, bad: set[str], honest: dict[str, np.ndarray]):  # type: ignore[no-untyped-def]
    attack = _attack(kind, bad, sorted(honest))
    sent = attack.poison(model_id="m", updates=honest, group_size=len(honest), session=SESSION)
    return sent, attack.summary_sources(honest=honest, sent=sent)


@pytest.mark.parametrize("seed", range(3))
def test_kernel_part_is_invisible_to_the_sketch_and_orthogonal_to_its_rest(seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=D)
    buckets, signs = sketch_projection(D, dim=256, seed=public_projection_seed(RUN_SEED, "s"))
    k = kernel_part(x, buckets, signs, 256)
    assert np.abs(np.bincount(buckets, weights=signs * k, minlength=256)).max() < 1e-12
    assert abs(float(k @ (x - k))) < 1e-9 * float(x @ x)
    assert float(k @ k) > 0.85 * float(x @ x)  # d = 3000 into 256 buckets: most of it


def test_kernel_attack_keeps_the_public_sketch_and_sends_a_large_flipped_update() -> None:
    honest = _group(8, seed=1)
    bad = {"p06", "p07"}
    sent, summarized = _poisoned(AttackKind.KERNEL, bad, honest)
    seed = public_projection_seed(RUN_SEED, SESSION)
    median = float(np.median([np.linalg.norm(u) for p, u in honest.items() if p not in bad]))
    for p in bad:
        assert summarized[p] is honest[p]  # it seals its honest update's summary
        s_sent = summarize(sent[p], dim=256, seed=seed)
        s_honest = summarize(honest[p], dim=256, seed=seed)
        # the sketch of what it sends is its honest sketch, to float32 rounding
        assert np.allclose(s_sent.sketch, s_honest.sketch, rtol=0, atol=1e-6 * s_honest.norm)
        assert s_sent.norm == pytest.approx(0.95 * 3.0 * median, rel=1e-4)  # inside the norm rule
        cos = float(sent[p] @ honest[p]) / (s_sent.norm * s_honest.norm)
        assert cos < -0.5  # points against what it trained
    for p in set(honest) - bad:
        assert sent[p] is honest[p] and summarized[p] is honest[p]


def test_kernel_poison_below_the_row_space_still_flips_the_kernel() -> None:
    x = _group(1)["p00"]
    buckets, signs = sketch_projection(D, dim=256, seed=bytes(32))
    out = kernel_poison(x, buckets=buckets, signs=signs, dim=256, target_norm=0.0)
    k = kernel_part(x.astype(np.float64), buckets, signs, 256)
    assert np.allclose(out, x - 2.0 * k, atol=1e-7)


def test_kernel_attack_has_no_kernel_to_hide_in_with_raw_summaries() -> None:
    honest = _group(5)
    attack = _attack(AttackKind.KERNEL, {"p01"}, sorted(honest), dim=0)
    sent = attack.poison(model_id="m", updates=honest, group_size=5, session=SESSION)
    assert all(sent[p] is honest[p] for p in honest)


def test_kernel_attack_needs_the_public_sketch_and_the_session() -> None:
    with pytest.raises(ValueError, match="public sketch"):
        UpdateAttack(AttackConfig(enabled=True, kind=AttackKind.KERNEL), participants=["a"])
    honest = _group(4)
    with pytest.raises(ValueError, match="session"):
        _attack(AttackKind.KERNEL, {"p00"}, sorted(honest)).poison(
            model_id="m", updates=honest, group_size=4
        )


def test_scaling_cover_sends_minus_five_behind_its_honest_summary() -> None:
    honest = _group(6)
    sent, summarized = _poisoned(AttackKind.SCALING_COVER, {"p02"}, honest)
    assert np.allclose(sent["p02"], -5.0 * honest["p02"])
    assert summarized["p02"] is honest["p02"]


def test_backdoor_cover_boosts_and_hides_behind_a_synthetic_honest_looking_update() -> None:
    honest = _group(10, seed=4)
    bad = {"p08", "p09"}
    sent, summarized = _poisoned(AttackKind.BACKDOOR_COVER, bad, honest)
    for p in bad:
        assert np.allclose(sent[p], 10.0 * honest[p])  # model replacement: x group size
        assert summarized[p] is not honest[p]
    # the covers pass every screen (no copy, not too central, aligned) with the honest ones
    seed = public_projection_seed(RUN_SEED, SESSION)
    sketches = {p: summarize(u, dim=256, seed=seed).sketch for p, u in summarized.items()}
    cfg = TrustConfig()
    assert (
        screen(
            sketches,
            duplicate_ratio=cfg.duplicate_ratio,
            central_ratio=cfg.central_ratio,
            align_floor=cfg.align_floor,
        )
        == {}
    )


@pytest.mark.parametrize(
    "kind", [AttackKind.SCALING_COVER, AttackKind.BACKDOOR_COVER, AttackKind.KERNEL]
)
def test_plaintext_binding_flags_every_cover_attacker_and_no_honest_one(kind: AttackKind) -> None:
    honest = _group(10, seed=2)
    bad = {"p03", "p07"}
    sent, summarized = _poisoned(kind, bad, honest)
    check = TrustCheck(TrustConfig(enabled=True), seed=RUN_SEED, model_sizes={"m": D})
    excluded, contributors = _through_plaintext(check, sent, summarized)
    for p in bad:
        assert "does not match the update the coordinator received" in excluded[p]
    assert not bad & set(contributors)
    assert not any("does not match" in excluded.get(p, "") for p in set(honest) - bad)


def _run(kind: str, mode: str = "plaintext") -> RandomPoolLoop:
    cfg = parse_config(
        {
            "run": {"seed": RUN_SEED},
            "data": {"participants": 8},
            "pool": {"models": [{"id": "lr", "arch": "logreg"}]},
            "assignment": {"min_group_size": 3, "min_models": 1, "max_models": 1},
            "training": {"epochs": 1, "lr": 0.5},
            "convergence": {"max_iterations": 2, "error_range": [0.0, 0.0001]},
            "aggregation": {"mode": mode},
            "trust": {"enabled": True},
            "attack": {"enabled": True, "kind": kind, "participants": ["p01", "p05"]},
        }
    )
    data = partition(cfg.data, seed=cfg.run.seed)
    parts = build_components(cfg, data)
    assert parts.attack is not None
    return RandomPoolLoop(
        cfg,
        parts.attack.poison_data(data),
        trainer=parts.trainer,
        aggregator=parts.aggregator,
        trust=parts.trust,
        attack=parts.attack,
    )


@pytest.mark.parametrize("kind", ["kernel", "scaling_cover"])
def test_the_whole_loop_in_plaintext_mode_flags_the_attackers_by_the_binding(kind: str) -> None:
    """Config -> wiring -> loop: the attack hook's covers are what gets sealed, the
    coordinator's received updates are what the auditor binds them to."""
    loop = _run(kind)
    records = [loop.step(), loop.step()]
    seen = 0
    for record in records:
        for group in record.groups:
            for p in {"p01", "p05"} & set(group.members):
                assert "does not match" in group.excluded[p]
                seen += 1
            honest = set(group.members) - {"p01", "p05"}
            assert not any("does not match" in group.excluded.get(p, "") for p in honest)
    assert seen >= 2  # the attackers took part
