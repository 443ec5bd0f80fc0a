"""The unmasking step: from the masked inputs and the revealed shares, the exact sum.

sum_{u in S} y_u = sum_{u in S} x_u + sum_{u in S} PRG(b_u)
                 + sum_{u in S} sum_{v in N(u) ∩ U2} ±PRG(s_uv)

Pairwise masks between two survivors cancel. What remains is removed here: every
survivor's self mask PRG(b_u) (b_u rebuilt from t shares), and, for every participant v
that shared keys but is not a survivor (dropped or flagged), the masks its surviving
neighbours added for it (v's mask key rebuilt from t shares, then agreed with each
neighbour's public key).

Security: the server rebuilds b_u only for survivors and s_v only for non-survivors, so
no participant's input is ever unmasked on its own; clients enforce that split.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from crypto.agreement import AgreementKey
from crypto.errors import CryptoError, ThresholdNotMet
from crypto.prg import expand_mask
from crypto.shamir import shamir_combine
from protocols.secagg.client import mask_label, pair_sign


def _rebuild(
    owner: str,
    shares: Mapping[str, bytes],
    xs: Mapping[str, int],
    threshold: int,
    what: str,
) -> bytes:
    if len(shares) < threshold:
        raise ThresholdNotMet(
            f"{what} of {owner}: {len(shares)} share(s) returned, {threshold} needed",
            survivors=len(shares),
            threshold=threshold,
        )
    try:
        return shamir_combine({xs[h]: s for h, s in shares.items()}, threshold=threshold)
    except CryptoError as exc:
        raise ThresholdNotMet(
            f"{what} of {owner}: shares do not reconstruct ({exc})",
            survivors=len(shares),
            threshold=threshold,
        ) from None


def unmask_sum(
    *,
    session: str,
    masked: Mapping[str, NDArray[np.unsignedinteger]],
    survivors: frozenset[str],
    shared: frozenset[str],
    nbrs: Mapping[str, frozenset[str]],
    s_public: Mapping[str, bytes],
    b_shares: Mapping[str, Mapping[str, bytes]],
    s_shares: Mapping[str, Mapping[str, bytes]],
    xs: Mapping[str, int],
    threshold: int,
    dtype: type[np.uint32] | type[np.uint64],
) -> NDArray[np.unsignedinteger]:
    """Return sum_{u in survivors} x_u mod 2^k.

    ``b_shares[u]`` / ``s_shares[v]`` map a share holder to the share it revealed.
    Raises ThresholdNotMet when a needed secret has fewer than ``threshold`` shares.
    """
    length = next(iter(masked.values())).size
    total = np.zeros(length, dtype=dtype)
    for u in sorted(survivors):
        total += masked[u]
    for u in sorted(survivors):
        b = _rebuild(u, b_shares.get(u, {}), xs, threshold, "self-mask seed")
        total -= expand_mask(b, label=b"secagg/selfmask", length=length, dtype=dtype)
    for v in sorted(shared - survivors):
        live = sorted(nbrs[v] & survivors)
        if not live:
            continue
        key = AgreementKey.from_private_bytes(
            _rebuild(v, s_shares.get(v, {}), xs, threshold, "mask key")
        )
        if key.public_bytes() != s_public[v]:
            raise ThresholdNotMet(
                f"mask key of {v}: rebuilt key does not match its advertised key",
                survivors=len(s_shares.get(v, {})),
                threshold=threshold,
            )
        for u in live:
            seed = key.derive(s_public[u], label=mask_label(session, u, v))
            m = expand_mask(seed, label=b"secagg/pairmask", length=length, dtype=dtype)
            # u added pair_sign(u, v) * m for its dropped neighbour v: take it back out
            if pair_sign(u, v) > 0:
                total -= m
            else:
                total += m
    return total
