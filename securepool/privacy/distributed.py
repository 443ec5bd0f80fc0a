"""Distributed DP-SGD (``privacy.mechanism = "distributed"``): a member's noised share.

Under the local mechanism each participant releases its own noised update, so a group
of G members sums G full noises. Under the distributed one the group takes each DP-SGD
step together (:mod:`protocols.secagg.stepped`): at every step each member

1. Poisson-samples its records with the public ``privacy.sample_rate`` from its own
   CSPRNG, clips every record's gradient to ``max_grad_norm`` and sums them;
2. rounds the sum to the grid ``g`` (:func:`securepool.privacy.noise.grid_for`);
3. adds discrete Gaussian noise of variance ``s^2 / h``, where ``s = sigma C / g`` is the
   local mechanism's noise and ``h`` the honest members a step's sum is guaranteed to
   hold (:func:`protocols.secagg.stepped.noise_floor`: the fewest contributors the
   unmasking accepts minus ceil(corrupt_fraction x G) colluders);

and the group's secure sum adds the shares. Whatever up to C colluders do with their own
shares, the honest ones sum to a variance of at least ``s^2``: the noise the local
mechanism puts on one participant's update now covers the whole group's gradient, and a
record's sensitivity is unchanged (its member's clipped sum moves by at most C). The
accountant therefore records the same (sigma, q, steps) as under the local mechanism.

The sum of h discrete Gaussians is not exactly one discrete Gaussian: Kairouz, Liu and
Steinke (ICML 2021, Prop. 14) bound its Rényi divergence for an integer shift by that of
a discrete Gaussian of the summed variance plus ``tau d`` with
``tau = 10 sum_{k=1}^{h-1} exp(-2 pi^2 s_share^2 k / (k + 1))``. The share's sigma is at
least 64 grid units (the sampler's range), so ``tau <= 10 h exp(-pi^2 64^2)``, below
1e-17000: :func:`log10_tau` reports its bound beside ``sampler_delta``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from numpy.typing import NDArray
from opacus.grad_sample.utils import prepare_module
from torch import nn

from crypto.dgauss import discrete_gaussian
from crypto.entropy import SecureStream
from protocols.secagg.stepped import NoiseFloor
from securepool.privacy.noise import Grid, grid_for


@dataclass(frozen=True)
class ShareSpec:
    """One member's share of a step's noise: the grid, the share's sigma in grid units
    and the effective multiplier of the honest members' sum (what the ledger records)."""

    grid_step: float
    share_sigma: float
    effective_multiplier: float
    floor: NoiseFloor


def share_spec(
    *, noise_multiplier: float, max_grad_norm: float, dimension: int, floor: NoiseFloor
) -> ShareSpec:
    """The grid and share for ``noise_multiplier`` split over ``floor.honest`` members.

    The grid is the local mechanism's rule for sigma / sqrt(h) (so the share stays in the
    sampler's range); the honest sum's sigma is sqrt(h) times the share's, against the
    same sensitivity (C + g sqrt(d)) / g, so its effective multiplier is sqrt(h) times
    that grid's."""
    root = math.sqrt(floor.honest)
    grid: Grid = grid_for(
        noise_multiplier=noise_multiplier / root, max_grad_norm=max_grad_norm, dimension=dimension
    )
    return ShareSpec(
        grid_step=grid.step,
        share_sigma=grid.sigma_int,
        effective_multiplier=grid.effective_multiplier * root,
        floor=floor,
    )


def log10_tau(spec: ShareSpec) -> float:
    """log10 of an upper bound on Kairouz et al.'s ``tau`` for this share (module
    docstring): 10 (h - 1) exp(-pi^2 s^2) bounds the sum since k / (k + 1) >= 1/2;
    minus infinity for a single honest member (one discrete Gaussian: tau = 0)."""
    h = spec.floor.honest
    if h <= 1:
        return -math.inf
    return math.log10(10.0 * (h - 1)) - (math.pi**2) * spec.share_sigma**2 / math.log(10.0)


def clipped_sum(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    sample_rate: float,
    max_grad_norm: float,
    stream: SecureStream,
    grad_sample_mode: str,
) -> NDArray[np.float64]:
    """The sum of the per-record gradients, each clipped to ``max_grad_norm`` in L2
    (Opacus' flat clipping: factor min(1, C / (norm + 1e-6))), over a Poisson sample of
    the records drawn from ``stream``; flat, in ``model.parameters()`` order."""
    params = [p for p in model.parameters()]
    n = int(x.shape[0])
    chosen = torch.from_numpy(stream.bernoulli(sample_rate, n)).nonzero().view(-1)
    out = np.zeros(sum(p.numel() for p in params), dtype=np.float64)
    if chosen.numel() == 0:
        return out
    model.train()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        private = prepare_module(model, grad_sample_mode, batch_first=True, loss_reduction="sum")
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Full backward hook is firing")
            for p in params:
                p.grad = None
            loss = nn.functional.cross_entropy(private(x[chosen]), y[chosen], reduction="sum")
            loss.backward()  # type: ignore[no-untyped-call]
        samples = [
            cast(torch.Tensor, p.grad_sample).reshape(len(chosen), -1).to(torch.float64)  # type: ignore[attr-defined]
            for p in params
        ]
        norms = torch.sqrt(torch.stack([(g * g).sum(dim=1) for g in samples]).sum(dim=0))
        factor = (max_grad_norm / (norms + 1e-6)).clamp(max=1.0)
        start = 0
        for g in samples:
            size = g.shape[1]
            out[start : start + size] = (factor[:, None] * g).sum(dim=0).numpy()
            start += size
    finally:
        for p in params:
            p.grad_sample = None  # type: ignore[attr-defined]
            p.grad = None
        private._close()  # remove Opacus' hooks from the shared pool model
    return out


def noised_share(
    summed: NDArray[np.float64], *, spec: ShareSpec, stream: SecureStream
) -> NDArray[np.int64]:
    """``summed`` rounded to the grid plus this member's discrete Gaussian share."""
    on_grid = np.rint(summed / spec.grid_step).astype(np.int64)
    return on_grid + discrete_gaussian(stream, sigma=spec.share_sigma, size=summed.size)


__all__ = ["ShareSpec", "clipped_sum", "log10_tau", "noised_share", "share_spec"]
