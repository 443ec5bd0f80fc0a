"""The benches' session driver (securepool/bench/sessions.py) runs real sessions: its
aggregates match the plaintext sums, dropouts, flags and the binding go through the
state machines' own paths, and every role's time is counted."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from crypto.errors import ConfigError
from crypto.signing import IdentityKey
from protocols.aggregation import ClientInput
from protocols.he import HESettings
from protocols.he.keyholder import FoldOpening
from protocols.secagg.binding import BindingKeys, JudgeRequest
from protocols.secagg.client import ClientStage
from protocols.secagg.settings import MaskSettings
from securepool.bench.sessions import HEGroup, masked_session
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig

MASK = MaskSettings(max_weight=128.0)
HE = HESettings(
    poly_modulus_degree=4096, coeff_mod_bit_sizes=(50, 59), scale_bits=39, weight_unit=50.0
)


def _inputs(n: int, d: int, seed: int = 0) -> dict[str, ClientInput]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.02, d)
    return {
        f"p{i:02d}": ClientInput(
            (base + rng.normal(0, 0.01, d)).astype(np.float32), float(rng.integers(20, 90))
        )
        for i in range(n)
    }


def _reference(inputs: dict[str, ClientInput], who: frozenset[str]) -> np.ndarray:
    return np.asarray(sum(inputs[p].weight * inputs[p].update.astype(np.float64) for p in who))


def test_a_masked_session_with_dropouts_sums_the_contributors() -> None:
    inputs = _inputs(10, 50)
    ids = {p: IdentityKey.generate() for p in inputs}
    drops = {"p00": ClientStage.ADVERTISE, "p01": ClientStage.INPUT, "p02": ClientStage.CONSISTENCY}
    run = masked_session(inputs, session="s", settings=MASK, identities=ids, drops=drops)
    # a participant gone after its masked input is still in the sum (dropout recovery)
    assert run.contributors == frozenset(inputs) - {"p00", "p01"}
    assert set(run.excluded) == {"p00", "p01"} and "dropped out" in run.excluded["p01"]
    assert np.abs(run.weighted_sum - _reference(inputs, run.contributors)).max() < 1e-4
    assert run.upload_bytes["p00"] == 0 < run.upload_bytes["p01"] < run.upload_bytes["p03"]
    assert set(run.clock.clients) == set(inputs) - {"p00"} and run.clock.server > 0


def test_a_masked_session_with_the_binding_asks_the_auditor_and_post_checks() -> None:
    inputs = _inputs(6, 40, seed=1)
    ids = {p: IdentityKey.generate() for p in inputs}
    config = TrustConfig(enabled=True)
    auditor = Auditor(config)
    keys = BindingKeys(
        auditor_public=auditor.public_key(),
        auditor_identity=auditor.identity_public(),
        dim=config.sketch_dim,
    )
    asked: list[str] = []

    def judge(request: JudgeRequest) -> tuple[bytes, bytes]:
        asked.append(request.session)
        _verdict, data, signature = auditor.judge_mask(request, dim=config.sketch_dim)
        return data, signature

    run = masked_session(
        inputs, session="bound", settings=MASK, identities=ids, binding=keys, judge=judge
    )
    assert asked == ["bound"] and run.contributors == frozenset(inputs)
    assert np.abs(run.weighted_sum - _reference(inputs, run.contributors)).max() < 1e-4
    assert run.clock.steps["judge"] > 0 and run.clock.steps["post_check"] > 0
    with pytest.raises(ConfigError):
        masked_session(inputs, session="s2", settings=MASK, identities=ids, binding=keys)


def test_an_he_session_releases_the_weighted_sum_and_times_every_role() -> None:
    inputs = _inputs(4, 300, seed=2)
    run = HEGroup(HE).run("he", inputs)
    assert not run.excluded and set(run.release.contributors) == set(inputs)
    ref = _reference(inputs, frozenset(inputs))
    assert np.abs(run.release.weighted_sum - ref).max() < 1e-4 * np.abs(ref).max()
    assert set(run.clock.steps) == {"check", "sum", "decrypt"}
    assert set(run.clock.clients) == set(inputs) and run.fold_request == b""
    assert all(b > 300 for b in run.upload_bytes.values())


def test_an_he_session_with_the_binding_leaves_the_judged_out() -> None:
    settings = replace(HE, fold_dim=256)
    inputs = _inputs(4, 600, seed=3)
    seen: list[FoldOpening] = []

    def judge(opening: FoldOpening) -> dict[str, str]:
        seen.append(opening)
        return {"p03": "flagged by the test"}

    run = HEGroup(settings).run("bound", inputs, judge=judge, joint_seed=b"\x05" * 32)
    assert set(seen[0].summaries) == set(inputs) and run.fold_request
    assert run.excluded == {"p03": "untrusted: flagged by the test"}
    assert set(run.release.contributors) == {"p00", "p01", "p02"}
    assert {"fold", "open", "judge"} <= set(run.clock.steps)
    with pytest.raises(ConfigError):
        HEGroup(settings).run("unjudged", inputs)
