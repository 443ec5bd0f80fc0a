"""DP-SGD noise a coordinator cannot replay: discrete Gaussian on a grid, from OS entropy.

Opacus draws its noise from ``torch.normal`` (secure mode needs torchcsprng, which is
not installable here) and in floating point, which Mironov's attack (CCS 2012) exploits.
:class:`GridNoiseOptimizer` replaces Opacus' ``add_noise`` step: every step it

1. rounds the clipped gradient sum to the grid ``g`` (a power of two), coordinate by
   coordinate: ``k = rint(sum / g)`` (integers);
2. adds integer noise ``z ~ N_Z(0, s^2)`` with ``s = sigma * C / g``, drawn by
   :func:`crypto.dgauss.discrete_gaussian` from the participant's own
   :class:`crypto.entropy.SecureStream`;
3. releases ``(k + z) * g``, exactly representable; everything after it (the division
   by the public ``training.batch_size``, the SGD update, float32 storage) is post-processing.

Sensitivity: adding or removing one record moves the clipped sum by at most C in L2 and
each coordinate's rounding by at most g, so the integer sums differ by at most
(C + g sqrt(d)) / g in L2. :func:`grid_for` picks g <= C * 2^-10 / sqrt(d), so the noise
is at least ``sigma / (1 + 2^-10)`` times the sensitivity: that *effective* multiplier is
what the ledger records. The discrete Gaussian's Rényi divergences for integer shifts are
at most the continuous Gaussian's (Canonne, Kamath, Steinke 2020), and the RDP of the
sampled mechanism is computed as for the continuous one, as in Kairouz et al. (ICML 2021).
The sampler's own error (at most 2^-49 in total variation per coordinate) is reported
as ``sampler_delta`` beside delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from opacus.optimizers import DPOptimizer
from opacus.optimizers.optimizer import _check_processed_flag, _mark_as_processed

from crypto.dgauss import MAX_SIGMA, MIN_SIGMA, TV_PER_SAMPLE, discrete_gaussian
from crypto.entropy import SecureStream

INFLATION: float = 2.0**-10  # rounding may add at most this fraction to the sensitivity


@dataclass(frozen=True)
class Grid:
    """The rounding grid of one model and what it costs in noise."""

    step: float  # g, a power of two
    sigma_int: float  # the discrete Gaussian's sigma in grid units
    effective_multiplier: float  # noise std / worst-case sensitivity


def grid_for(*, noise_multiplier: float, max_grad_norm: float, dimension: int) -> Grid:
    """The largest power-of-two grid whose rounding adds at most 2^-10 to the sensitivity,
    made finer if needed so the integer sigma stays inside the sampler's range."""
    sigma, clip, d = noise_multiplier, max_grad_norm, max(1, dimension)
    exponent = math.floor(math.log2(clip * INFLATION / math.sqrt(d)))
    while sigma * clip / 2.0**exponent > MAX_SIGMA:  # only for a huge sigma * sqrt(d)
        exponent += 1
    while sigma * clip / 2.0**exponent < MIN_SIGMA:
        exponent -= 1
    step = 2.0**exponent
    inflation = step * math.sqrt(d) / clip
    return Grid(
        step=step,
        sigma_int=sigma * clip / step,
        effective_multiplier=sigma / (1.0 + inflation),
    )


class GridNoiseOptimizer(DPOptimizer):  # type: ignore[misc]
    """Opacus' DPOptimizer with its noise step replaced (module docstring).

    Security: the noise depends only on ``stream``; with a SecureStream keyed from OS
    entropy, no other role can reproduce it from the config, the seed or the metrics.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, *, stream: SecureStream, grid: Grid, **kwargs: Any
    ) -> None:
        super().__init__(optimizer, **kwargs)
        self.stream = stream
        self.grid = grid
        self.noise_samples = 0

    def add_noise(self) -> None:
        params = list(self.params)
        for p in params:
            _check_processed_flag(p.summed_grad)
        sizes = [p.summed_grad.numel() for p in params]
        noise = discrete_gaussian(self.stream, sigma=self.grid.sigma_int, size=sum(sizes))
        self.noise_samples += noise.size
        step = self.grid.step
        start = 0
        for p, size in zip(params, sizes, strict=True):
            summed = p.summed_grad.detach().to(torch.float64).reshape(-1).numpy()
            on_grid = np.rint(summed / step).astype(np.int64) + noise[start : start + size]
            start += size
            released = torch.from_numpy(on_grid.astype(np.float64) * step)
            p.grad = released.to(p.dtype).view_as(p)
            _mark_as_processed(p.summed_grad)


def sampler_delta(noise_samples: int) -> float:
    """What the sampler's own error adds to delta after ``noise_samples`` draws."""
    return noise_samples * TV_PER_SAMPLE
