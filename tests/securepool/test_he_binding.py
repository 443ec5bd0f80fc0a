"""P6 in HE mode judges a fresh fold of each participant's actual ciphertext (issue 13,
HE part). Every attack goes through the real HEAggregator, HECoordinator and key
holder: the attacker's ciphertext carries a poisoned update, and it hands the loop an
honest-looking sealed summary as cover (HE mode no longer sends it anywhere)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from binding_helpers import honest_group, poisoned

from protocols.aggregation import ClientInput, GroupResult, Router, SessionContext
from protocols.he import HEAggregator, HEKeyHolder, HESettings
from protocols.summaries import sketch_projection, summarize
from protocols.transcript import Transcript
from securepool.trust.auditor import Auditor
from securepool.trust.check import TrustCheck
from securepool.trust.config import ThresholdRule, TrustConfig

SETTINGS = HESettings(
    poly_modulus_degree=4096,
    coeff_mod_bit_sizes=(50, 59),
    scale_bits=39,
    weight_unit=50.0,
    fold_dim=256,
)
D = 3000
SESSION = "it0001/m"
CONTEXT = SessionContext(joint_seed=b"\x07" * 32, model_digest=b"\x01" * 32)


def _group(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    return honest_group(n, D, seed)


def _weights(pids: list[str], seed: int) -> dict[str, float]:
    rng = np.random.default_rng(seed + 1000)
    return {pid: float(rng.integers(20, 90)) for pid in pids}


#: P6 rules that flag no one (screens off, norm rule off, a fixed threshold out of reach)
LENIENT = TrustConfig(
    enabled=True,
    threshold_rule=ThresholdRule.FIXED,
    threshold=1e9,
    norm_ratio=0.0,
    duplicate_ratio=0.0,
    central_ratio=0.0,
    align_floor=-1.0,
)


def _run(
    sent: dict[str, np.ndarray],
    *,
    cover: dict[str, np.ndarray] | None = None,
    seed: int = 0,
    trust: bool = True,
    config: TrustConfig | None = None,
) -> tuple[GroupResult, TrustCheck]:
    """One group through the real roles; ``trust = False``: plain HE (no fold layout)."""
    settings = SETTINGS if trust else replace(SETTINGS, fold_dim=0)
    keyholder = HEKeyHolder(settings)
    agg = HEAggregator(settings, keyholder=keyholder)
    config = config or TrustConfig(enabled=True, sketch_dim=256)
    check = TrustCheck(config, seed=3, model_sizes={"m": D})
    check.attach_keyholder(keyholder)
    weights = _weights(sorted(sent), seed)
    inputs = {
        pid: ClientInput(
            update=sent[pid],
            weight=weights[pid],
            sealed_summary=check.seal(
                participant=pid, update=(cover or sent)[pid], session=SESSION
            ),
        )
        for pid in sent
    }
    vet = check.vet_for(session=SESSION, iteration=1, model_id="m") if trust else None
    result = agg.aggregate(session=SESSION, inputs=inputs, vet=vet, context=CONTEXT)
    return result, check


def test_sealed_summaries_are_not_sent_in_he_mode_with_the_binding() -> None:
    honest = _group(4)
    keyholder = HEKeyHolder(SETTINGS)
    router = Router({"coordinator": Transcript("coordinator")})
    agg = HEAggregator(SETTINGS, keyholder=keyholder, router=router)
    check = TrustCheck(TrustConfig(enabled=True), seed=3, model_sizes={"m": D})
    check.attach_keyholder(keyholder)
    inputs = {p: ClientInput(u, 10.0, sealed_summary=b"cover") for p, u in honest.items()}
    agg.aggregate(
        session=SESSION,
        inputs=inputs,
        vet=check.vet_for(session=SESSION, iteration=1, model_id="m"),
    )
    kinds = {entry.kind for entry in router.transcripts["coordinator"].entries}
    assert "sealed_summary" not in kinds
    assert "he_fold" in kinds


@pytest.mark.parametrize("poison", ["scale_minus_5", "backdoor_shift"])
def test_a_poisoned_ciphertext_behind_an_honest_cover_summary_is_flagged(poison: str) -> None:
    honest = _group(8)
    bad = {"p06", "p07"}
    sent = poisoned(honest, bad, poison)
    result, check = _run(sent, cover=honest)
    assert bad <= set(result.excluded), result.excluded
    assert all(result.excluded[p].startswith("untrusted:") for p in bad)
    assert not bad & set(result.contributors)
    assert set(result.contributors) == set(honest) - bad
    assert {m["participant"] for m in check.registry.flags} >= bad


def _kernel_perturbation(check: TrustCheck, honest: np.ndarray, target_norm: float) -> np.ndarray:
    """A perturbation in the kernel of the OLD public count-sketch of this session: pairs
    of coordinates in one bucket with opposite signed contributions, scaled so that the
    perturbed update's norm reaches ``target_norm``."""
    buckets, signs = sketch_projection(D, dim=256, seed=check._projection_seed(SESSION))
    kernel = np.zeros(D, dtype=np.float64)
    for b in range(256):
        same = np.flatnonzero(buckets == b)[:2]
        if same.size == 2:
            kernel[same[0]] = signs[same[0]]
            kernel[same[1]] = -signs[same[1]]
    # ||honest + c k||^2 = target^2 with honest . k small: solve for c
    h = honest.astype(np.float64)
    a, b2, c0 = kernel @ kernel, 2 * (h @ kernel), h @ h - target_norm**2
    c = (-b2 + np.sqrt(b2 * b2 - 4 * a * c0)) / (2 * a)
    return c * kernel


def test_a_kernel_perturbation_of_the_old_projection_is_flagged_under_the_fresh_fold() -> None:
    honest = _group(8, seed=1)
    probe = TrustCheck(TrustConfig(enabled=True, sketch_dim=256), seed=3, model_sizes={"m": D})
    median_norm = float(np.median([np.linalg.norm(u) for u in honest.values()]))
    edge = 0.95 * probe.config.norm_ratio * median_norm  # just under the norm rule
    attacker = "p07"
    perturbed = honest[attacker] + _kernel_perturbation(probe, honest[attacker], edge)
    sent = {**honest, attacker: perturbed.astype(np.float32)}
    seed = probe._projection_seed(SESSION)
    # under the old public projection the perturbation is invisible: the sketch of what
    # was sent is the honest sketch, and the norm passes the norm rule
    old = {p: summarize(u, dim=256, seed=seed) for p, u in sent.items()}
    assert np.allclose(
        old[attacker].sketch, summarize(honest[attacker], dim=256, seed=seed).sketch, atol=1e-6
    )
    verdict, _ = Auditor(probe.config).vet_opened(SESSION, old)
    assert attacker not in verdict.flagged
    # under the fresh fold of the actual ciphertext it is not
    result, _ = _run(sent, cover=honest)
    assert attacker in result.excluded, result.excluded
    assert attacker not in result.contributors


@pytest.mark.parametrize("seed", range(4))
def test_an_honest_group_passes_the_binding_and_the_aggregate_is_unchanged(seed: int) -> None:
    honest = _group(6, seed=seed)
    bound, _ = _run(honest, seed=seed)
    plain, _ = _run(honest, seed=seed, trust=False)
    # the binding (seed, fold, tags, weight) refuses no one, and P6 on the folds of an
    # honest group flags no one either
    assert bound.excluded == {}
    assert bound.contributors == plain.contributors == frozenset(honest)
    # the same aggregate as HE without the trust check, within CKKS error
    assert bound.total_weight == pytest.approx(plain.total_weight, rel=1e-7)
    mean, ref = bound.mean(), plain.mean()
    assert np.max(np.abs(mean - ref)) <= 1e-6 * np.max(np.abs(ref))
    weights = _weights(sorted(honest), seed)
    ref_sum = sum(weights[p] * honest[p].astype(np.float64) for p in honest)
    ref_mean = ref_sum / sum(weights.values())
    assert np.max(np.abs(mean - ref_mean)) <= 1e-6 * np.max(np.abs(ref_mean))


def test_imaginary_junk_in_the_weight_slot_cannot_buy_a_poisoned_update_in() -> None:
    """The fold's real part sees Re(r) w - Im(r) y for a weight slot w + iy: an attacker
    can make its weight estimate (and so its sketch's scale) random. Whatever P6 then
    says, the aggregate it would enter has imaginary parts and is refused (the group
    keeps its model), so the junk buys a denial of service at most, never poisoning."""
    from tenseal import sealapi

    import protocols.he.participant as participant_module
    from crypto.ckks.fold import frame_ciphertext
    from crypto.errors import ThresholdNotMet

    honest = _group(6, seed=4)
    sent = {**honest, "p05": (-5.0 * honest["p05"]).astype(np.float32)}
    real_encrypt = participant_module.encrypt_chunks
    calls = {"n": 0, "slot": SETTINGS.fold_dim - SETTINGS.tag_slots - 1}  # the weight slot

    def encrypt_with_junk(public, rows):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] != 6:  # p05 encrypts last
            return real_encrypt(public, rows)
        ctx = public.tenseal
        seal_ctx = ctx.seal_context().data
        encoder = sealapi.CKKSEncoder(seal_ctx)
        encryptor = sealapi.Encryptor(seal_ctx, ctx.public_key().data)
        out = []
        for k, row in enumerate(rows):
            values = row.astype(np.complex128)
            if k == 0:
                values[calls["slot"]] += 6.0j
            plain = sealapi.Plaintext()
            encoder.encode(values.tolist(), public.params.scale, plain)
            ct = sealapi.Ciphertext(seal_ctx)
            encryptor.encrypt(plain, ct)
            out.append(frame_ciphertext(public, ct))
        return out

    participant_module.encrypt_chunks = encrypt_with_junk
    try:
        try:
            result, _ = _run(sent, cover=honest, seed=4)
        except ThresholdNotMet as exc:  # P6 let it through: the aggregate was refused
            assert "imaginary" in str(exc)
        else:  # or P6 flagged it
            assert "p05" in result.excluded and "p05" not in result.contributors
        assert calls["n"] == 6
        # the aggregate check on its own: junk in an update slot (the weight estimate
        # stays right), P6 rules that clear everyone: the aggregate is still refused
        calls["n"], calls["slot"] = 0, 0
        with pytest.raises(ThresholdNotMet, match="imaginary"):
            _run(sent, seed=4, config=LENIENT)
        assert calls["n"] == 6
    finally:
        participant_module.encrypt_chunks = real_encrypt
