"""The HE binding's fold, from the auditor's side of the wire: what it opens from an
honest coordinator's request, and every lie a coordinator could tell it, crafted into
the real key holder (HEKeyHolder.open_folds / decrypt_aggregate)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from he_session import HESession

from crypto.ckks.fold import FoldKeys, fold_chunks, fold_steps, galois_keys_for
from crypto.errors import ConfigError, SecurityViolation
from protocols.aggregation import ClientInput
from protocols.he import HEKeyHolder, HESettings
from protocols.he.coordinator import Contribution, upload_chunks
from protocols.he.fold import FoldProjection, fold_seed
from protocols.he.layout import SlotLayout
from protocols.he.messages import ContextOffer, FoldRequest

SETTINGS = HESettings(
    poly_modulus_degree=4096,
    coeff_mod_bit_sizes=(50, 59),
    scale_bits=39,
    weight_unit=50.0,
    fold_dim=256,
)
D = 3000
SESSION = "it0002/m"
JOINT = b"\x09" * 32


def _setup(n: int = 4, seed: int = 0):  # type: ignore[no-untyped-def]
    keyholder = HEKeyHolder(SETTINGS)
    agg = HESession(SETTINGS, keyholder=keyholder)
    rng = np.random.default_rng(seed)
    updates = {f"p{i}": (rng.normal(0, 0.02, D)).astype(np.float32) for i in range(n)}
    weights = {pid: float(rng.integers(20, 90)) for pid in updates}
    inputs = {pid: ClientInput(upd, weights[pid]) for pid, upd in updates.items()}
    contributions = agg.contribute(SESSION, inputs)
    return keyholder, agg, updates, weights, contributions


def _honest_request(agg: HESession, contributions: dict[str, Contribution]) -> FoldRequest:
    raw, excluded = agg.coordinator.build_fold_request(
        session=SESSION, contributions=contributions, joint_seed=JOINT
    )
    assert not excluded
    return FoldRequest.from_bytes(raw)


def test_the_auditor_opens_one_weight_normalised_sketch_per_participant() -> None:
    keyholder, agg, updates, weights, contributions = _setup(4)
    opening = keyholder.open_folds(_honest_request(agg, contributions).to_bytes())
    assert set(opening.summaries) == set(updates) and not opening.flagged
    for pid, summary in opening.summaries.items():
        layout = SlotLayout(d=D, slots=2048, tag_slots=SETTINGS.tag_slots, fold_dim=256)
        assert summary.sketch.shape == (layout.update_columns,)
        # a random projection: the norm of the update itself (not of the weighted one)
        assert summary.norm == pytest.approx(float(np.linalg.norm(updates[pid])), rel=0.35)
    # and the same projection for everyone: sketches of two updates differ like them
    a, b = opening.summaries["p0"].sketch, opening.summaries["p1"].sketch
    true = float(np.linalg.norm(updates["p0"] - updates["p1"]))
    assert float(np.linalg.norm(a - b)) == pytest.approx(true, rel=0.35)
    assert weights  # weights were random: normalisation is what made the norms match


def test_a_fold_request_with_a_wrong_seed_is_refused() -> None:
    keyholder, agg, _u, _w, contributions = _setup()
    req = _honest_request(agg, contributions)
    # a seed of the coordinator's choosing (e.g. one it knows the kernel of)
    with pytest.raises(SecurityViolation, match="fold seed"):
        keyholder.open_folds(replace(req, seed=b"\x00" * 32).to_bytes())


def test_a_seed_that_leaves_out_an_upload_is_refused() -> None:
    keyholder, agg, _u, _w, contributions = _setup()
    req = _honest_request(agg, contributions)
    digests = {p: c.digest for p, c in contributions.items() if p != "p3"}
    partial = fold_seed(SESSION, JOINT, digests)
    with pytest.raises(SecurityViolation, match="fold seed"):
        keyholder.open_folds(replace(req, seed=partial).to_bytes())


def test_an_unfolded_ciphertext_is_refused() -> None:
    keyholder, agg, _u, _w, contributions = _setup()
    req = _honest_request(agg, contributions)
    c = contributions["p1"]
    raw_chunk = upload_chunks(c.upload, c.digest, c.n_chunks)[0]  # p1's update itself
    folds = (req.folds[0], raw_chunk, *req.folds[2:])
    with pytest.raises(SecurityViolation, match="not a fold"):
        keyholder.open_folds(replace(req, folds=folds).to_bytes())


def test_a_half_folded_ciphertext_is_refused() -> None:
    """Folded to 512 slots instead of 256: twice the values the auditor may see."""
    keyholder, agg, _u, _w, contributions = _setup()
    req = _honest_request(agg, contributions)
    public = agg.coordinator.public
    wide = FoldKeys(
        public, galois_keys_for(keyholder._secret, fold_steps(public.params, 512)), dim=512
    )
    layout = SlotLayout(d=D, slots=2048, tag_slots=SETTINGS.tag_slots, fold_dim=256)
    plaintexts = FoldProjection.derive(req.seed, layout, public.params).plaintexts(public)
    c = contributions["p0"]
    half = fold_chunks(wide, plaintexts, upload_chunks(c.upload, c.digest, c.n_chunks))
    with pytest.raises(SecurityViolation, match="not a fold"):
        keyholder.open_folds(replace(req, folds=(half, *req.folds[1:])).to_bytes())


@pytest.mark.parametrize("lie", ["swap", "copy", "sum"])
def test_a_fold_of_another_participants_ciphertext_is_refused(lie: str) -> None:
    keyholder, agg, _u, _w, contributions = _setup()
    req = _honest_request(agg, contributions)
    f = list(req.folds)  # in participant order p0..p3
    if lie == "swap":  # p0 judged by p1's ciphertext and vice versa
        f[0], f[1] = f[1], f[0]
    elif lie == "copy":  # an attacker p3 hidden behind honest p2's ciphertext
        f[3] = f[2]
    else:  # p0's fold replaced by the fold of p0 + p1 (a combination)
        public = agg.coordinator.public
        layout = SlotLayout(d=D, slots=2048, tag_slots=SETTINGS.tag_slots, fold_dim=256)
        projection = FoldProjection.derive(req.seed, layout, public.params)
        from crypto.ckks.coefficients import CoefficientSum

        acc = CoefficientSum(agg.coordinator.codec, n_chunks=layout.n_chunks)
        scratch = acc.scratch()
        for pid in ("p0", "p1"):
            c = contributions[pid]
            acc.read_all(upload_chunks(c.upload, c.digest, c.n_chunks), scratch)
            acc.add_checked(scratch)
        keys = agg.coordinator._fold_keys
        assert keys is not None
        f[0] = fold_chunks(keys, projection.plaintexts(public), tuple(acc.to_bytes()))
    with pytest.raises(SecurityViolation, match="contribution tags"):
        keyholder.open_folds(replace(req, folds=tuple(f)).to_bytes())


def test_a_session_is_judged_once_and_its_aggregate_holds_only_the_cleared() -> None:
    keyholder, agg, _u, _w, contributions = _setup()
    raw = _honest_request(agg, contributions).to_bytes()
    keyholder.open_folds(raw)
    with pytest.raises(SecurityViolation, match="already judged"):
        keyholder.open_folds(raw)  # a second projection of the same uploads: refused
    keyholder.restrict(SESSION, frozenset({"p0", "p1", "p2"}))  # the verdict flagged p3
    with pytest.raises(SecurityViolation, match="cleared set"):
        keyholder.restrict(SESSION, frozenset({"p0", "p1", "p2", "p3"}))
    request, _ = agg.coordinator.build_request(session=SESSION, contributions=contributions)
    with pytest.raises(SecurityViolation, match="did not clear"):
        keyholder.decrypt_aggregate(request)  # the coordinator adds p3 back: refused


def test_the_offer_carries_galois_keys_for_the_fold_steps_only() -> None:
    keyholder = HEKeyHolder(SETTINGS)
    offer = ContextOffer.from_bytes(keyholder.context_offer(session="he-setup"))
    assert offer.galois_keys
    steps = fold_steps(keyholder._secret.params, SETTINGS.fold_dim)
    assert steps == (1024, 512, 256)
    public = keyholder._secret.public()
    FoldKeys(public, offer.galois_keys, dim=256)  # loads, with every step present
    with pytest.raises(Exception, match="lack"):
        FoldKeys(public, offer.galois_keys, dim=128)  # a step it was never given


def test_fold_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as err:
        replace(SETTINGS, fold_dim=100).check()
    assert "fold_dim" in str(err.value)
    with pytest.raises(ConfigError):
        replace(SETTINGS, fold_dim=4096).check()  # more than slots / 2


def test_an_aggregate_without_a_verdict_is_refused_under_the_binding() -> None:
    """A coordinator that skips the trust check (no fold request) gets no aggregate."""
    keyholder, agg, _u, _w, contributions = _setup()
    request, _ = agg.coordinator.build_request(session=SESSION, contributions=contributions)
    with pytest.raises(SecurityViolation, match="no trust verdict"):
        keyholder.decrypt_aggregate(request)
