"""crypto.dgauss: the discrete Gaussian sampler matches N_Z(0, sigma^2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from crypto.dgauss import discrete_gaussian
from crypto.entropy import SecureStream
from crypto.errors import CryptoError


def exact_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    k = np.arange(-int(20 * sigma), int(20 * sigma) + 1)
    w = np.exp(-(k.astype(np.float64) ** 2) / (2 * sigma * sigma))
    total = w.sum()
    return np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma * sigma)) / total


@pytest.mark.parametrize("sigma", [64.0, 100.5])
def test_histogram_matches_the_exact_pmf(sigma: float) -> None:
    """Chi-square goodness of fit on bins of 8 integers; a biased sampler (e.g. the
    block proposal without the acceptance step) fails this by a wide margin."""
    z = discrete_gaussian(
        SecureStream.insecure_from_seed(b"fit", label=b"t"), sigma=sigma, size=400_000
    )
    assert z.dtype == np.int64
    edges = np.arange(-int(3 * sigma), int(3 * sigma) + 8, 8)
    observed = np.histogram(z, bins=edges)[0]
    pmf = exact_pmf(sigma, np.arange(edges[0], edges[-1]))
    expected = np.add.reduceat(pmf, np.arange(0, pmf.size, 8)) * z.size
    inside = observed.sum() / z.size
    assert inside == pytest.approx(expected.sum() / z.size, abs=0.003)
    chi2 = float((((observed - expected) ** 2) / expected).sum())
    dof = observed.size - 1
    assert stats.chi2.sf(chi2, dof) > 1e-4, (chi2, dof)


def test_moments_at_a_large_sigma() -> None:
    sigma = 150_000.0
    z = discrete_gaussian(SecureStream(), sigma=sigma, size=200_000)
    assert abs(z.mean()) < 5 * sigma / math.sqrt(z.size)
    assert z.std() / sigma == pytest.approx(1.0, abs=0.01)
    assert np.abs(z).max() < 14 * sigma


def test_samples_come_only_from_the_stream() -> None:
    draw = lambda: discrete_gaussian(  # noqa: E731
        SecureStream.insecure_from_seed(b"s", label=b"x"), sigma=1000.0, size=1000
    )
    assert np.array_equal(draw(), draw())
    assert not np.array_equal(
        discrete_gaussian(SecureStream(), sigma=1000.0, size=1000),
        discrete_gaussian(SecureStream(), sigma=1000.0, size=1000),
    )


@pytest.mark.parametrize("sigma", [0.5, 63.9, 1e9, float("nan"), float("inf")])
def test_sigma_outside_the_range_is_refused(sigma: float) -> None:
    with pytest.raises(CryptoError, match="sigma"):
        discrete_gaussian(SecureStream(), sigma=sigma, size=3)


def test_bad_size() -> None:
    with pytest.raises(CryptoError):
        discrete_gaussian(SecureStream(), sigma=100.0, size=-1)
    assert discrete_gaussian(SecureStream(), sigma=100.0, size=0).size == 0
