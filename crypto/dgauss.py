"""The discrete Gaussian N_Z(0, sigma^2) on the integers, sampled from a SecureStream.

Why discrete (Mironov, CCS 2012; Canonne, Kamath, Steinke, NeurIPS 2020): a Gaussian
sampled in floating point has gaps in its support, so ``x + noise`` can reveal ``x``.
DP-SGD here adds integer noise to a gradient sum rounded to a power-of-two grid
(:mod:`securepool.privacy.noise`): the released value is an integer multiple of the
grid, exactly representable, and its distribution is that of an integer shift of
N_Z(0, sigma^2), whose Rényi divergences are at most those of the continuous
Gaussian with the same shift (CKS 2020, Prop. 5 and Thm. 15).

The sampler is exact up to stated floating-point error, vectorised in numpy:

* the range [-B*W/2, B*W/2) (at least +-14 sigma: the mass outside is below 2^-140)
  is cut into B = 256 blocks of W = 2^w integers;
* a block is drawn with probability proportional to W * exp(-x*^2 / 2 sigma^2), x* the
  block's integer nearest 0, by comparing one uniform 64-bit word with cumulative
  thresholds computed in 60-digit decimal arithmetic and rounded to 2^-64;
* an integer of the block is drawn uniformly (the top w bits of a second word) and
  accepted with probability exp(-(x^2 - x*^2) / 2 sigma^2), by comparing the top 53 bits
  of a third word with that float64 probability; rejected draws are redrawn.

The accepted value has probability exactly proportional to exp(-x^2 / 2 sigma^2) but for
rounding: block thresholds to 2^-64 each (256 * 2^-64 in total variation), and the
acceptance test, whose probability is off by at most 2^-53 (the 53-bit uniform) plus
one float64 ulp of exp (2^-52): at most 1.5 * 2^-52 per proposal, for an acceptance rate
above 0.95. The tail beyond +-14 sigma weighs below 2^-140. Per sample the total
variation distance from N_Z(0, sigma^2) is thus below 2^-50 < :data:`TV_PER_SAMPLE` =
2^-49; a caller that draws N samples adds at most N * 2^-49 to delta. About 1.05
proposals (three 64-bit words each) are used per sample.
"""

from __future__ import annotations

import math
from decimal import Decimal, localcontext
from functools import lru_cache
from typing import Final

import numpy as np
from numpy.typing import NDArray

from crypto._validate import require_int
from crypto.entropy import SecureStream
from crypto.errors import CryptoError

BLOCKS: Final = 256
TAIL_SIGMAS: Final = 14
MIN_SIGMA: Final = 64.0
MAX_SIGMA: Final = 1e8  # (2 * 14 sigma)^2 must fit an int64
TV_PER_SAMPLE: Final = 2.0**-49


@lru_cache(maxsize=64)
def _table(sigma: float) -> tuple[NDArray[np.uint64], NDArray[np.int64], NDArray[np.int64], int]:
    """(cumulative thresholds, block starts, block points nearest 0, log2 width)."""
    span = 2 * TAIL_SIGMAS * sigma
    log_w = math.ceil(math.log2(span / BLOCKS))  # >= 3 for sigma >= 64
    width = 1 << log_w
    starts = (np.arange(BLOCKS, dtype=np.int64) - BLOCKS // 2) * width
    ends = starts + width - 1
    nearest = np.where(starts > 0, starts, np.where(ends < 0, ends, 0)).astype(np.int64)
    with localcontext() as ctx:
        ctx.prec = 60
        two_var = 2 * Decimal(sigma) * Decimal(sigma)
        weights = [(-(Decimal(int(x)) ** 2) / two_var).exp() for x in nearest]
        total = sum(weights, Decimal(0))
        scale = Decimal(1 << 64)
        cumulative = Decimal(0)
        thresholds = []
        for w in weights[:-1]:
            cumulative += w
            thresholds.append(min(int(cumulative / total * scale), (1 << 64) - 1))
    return np.array(thresholds, dtype=np.uint64), starts, nearest, log_w


def discrete_gaussian(stream: SecureStream, *, sigma: float, size: int) -> NDArray[np.int64]:
    """``size`` independent samples of N_Z(0, sigma^2) from ``stream``.

    Security: the samples are a function of the stream's words only; with a
    SecureStream keyed from OS entropy nobody but its owner can predict them. Each
    sample is within total variation :data:`TV_PER_SAMPLE` of the discrete Gaussian
    (module docstring), and every output is an exact integer: no floating-point gaps.
    ``sigma`` must be in [64, 1e8] (CryptoError otherwise): below 64 the block layout
    would need a different acceptance bound; callers scale their grid to stay inside.
    """
    size = require_int("size", size)
    if size < 0:
        raise CryptoError(f"sample count must be >= 0, got {size}")
    if not MIN_SIGMA <= sigma <= MAX_SIGMA:  # also refuses NaN
        raise CryptoError(f"discrete Gaussian sigma must be in [{MIN_SIGMA}, {MAX_SIGMA}]")
    thresholds, starts, nearest, log_w = _table(float(sigma))
    inv_two_var = 1.0 / (2.0 * float(sigma) * float(sigma))
    out = np.empty(size, dtype=np.int64)
    filled = 0
    while filled < size:
        need = size - filled
        m = need + need // 16 + 8
        words = stream.uint64(3 * m)
        block = np.searchsorted(thresholds, words[:m], side="right")
        offset = (words[m : 2 * m] >> np.uint64(64 - log_w)).astype(np.int64)
        x = starts[block] + offset
        near = nearest[block]
        excess = ((x - near) * (x + near)).astype(np.float64)  # exact int64, then rounded
        accept_p = np.exp(-excess * inv_two_var)
        u53 = (words[2 * m :] >> np.uint64(11)).astype(np.float64) * 2.0**-53
        kept = x[u53 < accept_p][:need]
        out[filled : filled + kept.size] = kept
        filled += kept.size
    return out
