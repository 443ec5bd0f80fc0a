"""The scaling rules a pool carries (securepool.preprocessing): the federated
standardisation's arithmetic from the statistics' sums, its composition with a fixed rule,
and manifests written before offsets existed."""

from __future__ import annotations

import numpy as np
import pytest

from securepool.preprocessing import (
    MOMENT_CLIP,
    Preprocessing,
    Standardisation,
    magnitude_stats,
    magnitudes,
    moment_stats,
    standardisation,
)


def _agencies() -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    units = np.array([1e3, 1.0, 1e-3, 0.0])  # hundreds, ones, thousandths, all zero
    return [rng.normal(2.0, 0.5, size=(n, 4)) * units for n in (30, 55, 41)]


def test_the_sums_of_three_agencies_give_the_pooled_mean_and_spread() -> None:
    parts, numeric = _agencies(), np.array([True, True, True, True])
    exps = magnitudes(np.sum([magnitude_stats(x, numeric) for x in parts], axis=0))
    assert exps[0] in (10, 11) and exps[2] in (-9, -10) and exps[3] == 0
    total, weight = np.zeros(8), 0.0
    for x in parts:
        stats, clipped = moment_stats(x, exps)
        assert not clipped
        total += x.shape[0] * stats.astype(np.float64)
        weight += x.shape[0]
    got = standardisation(total, weight, exps, numeric)
    pooled = np.concatenate(parts)
    assert np.allclose(got.mean, pooled.mean(axis=0), rtol=1e-5, atol=1e-12)
    assert np.allclose(got.std[:3], pooled.std(axis=0)[:3], rtol=1e-4)
    assert got.std[3] == 1.0  # no spread: left as it is


def test_one_hot_inputs_are_left_as_they_are() -> None:
    x = np.array([[5.0, 1.0, 0.0], [7.0, 0.0, 1.0], [9.0, 1.0, 0.0]])
    numeric = np.array([True, False, False])
    exps = magnitudes(magnitude_stats(x, numeric))
    stats, _ = moment_stats(x, exps)
    got = standardisation(3 * stats.astype(np.float64), 3.0, exps, numeric)
    assert got.mean[1:] == (0.0, 0.0) and got.std[1:] == (1.0, 1.0)
    assert got.mean[0] == pytest.approx(7.0, rel=1e-6)


def test_an_agency_far_from_the_federations_magnitude_is_clipped_and_says_so() -> None:
    x = np.full((4, 2), 2.0**10)
    stats, clipped = moment_stats(x, (0, 10))
    assert clipped == [0] and float(np.max(stats)) == MOMENT_CLIP


def test_a_fixed_rule_then_a_standardisation_is_one_rule() -> None:
    rng = np.random.default_rng(0)
    raw = rng.uniform(0, 50, size=(20, 3))
    fixed = Preprocessing("log1p", (2.0, 3.0, 4.0))
    scaling = Standardisation((0.5, 1.0, -0.2), (0.1, 2.0, 0.7))
    both = fixed.then_standardise(scaling)
    assert np.allclose(both.apply(raw), scaling.apply(fixed.apply(raw)), atol=1e-5)
    assert Preprocessing.from_json(both.to_json()) == both


def test_a_manifest_without_offsets_still_loads() -> None:
    pre = Preprocessing.from_json({"transform": "identity", "divisor": [16.0, 16.0]})
    assert pre.offset == () and np.allclose(pre.apply(np.array([[8.0, 16.0]])), [[0.5, 1.0]])
    with pytest.raises(ValueError):
        Preprocessing.from_json({"transform": "identity", "divisor": [1.0], "shift": [0.0]})
    with pytest.raises(ValueError):
        Standardisation.from_json({"mean": [0.0], "std": [0.0]})
