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
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crypto.agreement import AgreementKey
from crypto.errors import CryptoError, ThresholdNotMet
from crypto.prg import expand_mask
from crypto.shamir import shamir_combine_many
from protocols.secagg.labels import PAIR_MASK_LABEL, SELF_MASK_LABEL, mask_label, pair_sign


def _rebuild_all(
    wanted: Mapping[str, Mapping[str, Mapping[str, bytes]]],
    xs: Mapping[str, int],
    threshold: int,
) -> dict[str, dict[str, bytes | ThresholdNotMet]]:
    """For each kind of secret (``what`` -> owner -> holder -> share), each owner's
    secret rebuilt from its shares (one batched interpolation for all owners of all
    kinds), or the ThresholdNotMet that says why it could not be."""
    out: dict[str, dict[str, bytes | ThresholdNotMet]] = {what: {} for what in wanted}
    owners: list[tuple[str, str]] = []
    for what, by_owner in wanted.items():
        for owner, shares in by_owner.items():
            if len(shares) >= threshold:
                owners.append((what, owner))
            else:
                out[what][owner] = ThresholdNotMet(
                    f"{what} of {owner}: {len(shares)} share(s) returned, {threshold} needed",
                    survivors=len(shares),
                    threshold=threshold,
                )
    groups = [{xs[h]: s for h, s in wanted[what][o].items()} for what, o in owners]
    results = shamir_combine_many(groups, threshold=threshold)
    for (what, owner), result in zip(owners, results, strict=True):
        if isinstance(result, CryptoError):
            out[what][owner] = ThresholdNotMet(
                f"{what} of {owner}: shares do not reconstruct ({result})",
                survivors=len(wanted[what][owner]),
                threshold=threshold,
            )
        else:
            out[what][owner] = result
    return out


def _secret(rebuilt: Mapping[str, bytes | ThresholdNotMet], owner: str) -> bytes:
    result = rebuilt[owner]
    if isinstance(result, ThresholdNotMet):
        raise result
    return result


@dataclass(frozen=True)
class Recovered:
    """The secrets the unmasking step rebuilt: each survivor's self-mask seed and the
    X25519 mask key of each non-survivor that could be rebuilt (t shares, matching its
    advertised public key). The binding's post-check reads them."""

    self_seeds: Mapping[str, bytes]
    mask_keys: Mapping[str, bytes]


def unmask_and_recover(
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
) -> tuple[NDArray[np.unsignedinteger], Recovered]:
    """Return sum_{u in survivors} x_u mod 2^k, and the secrets it rebuilt (see
    :class:`Recovered`).

    ``b_shares[u]`` / ``s_shares[v]`` map a share holder to the share it revealed.
    Raises ThresholdNotMet when a needed secret has fewer than ``threshold`` shares.

    Security: rebuilds (when t shares came back)
    the mask key of non-survivors without surviving neighbours, which the sum does not
    need but the binding post-check may (their key shares were revealed anyway).
    """
    length = next(iter(masked.values())).size
    total = np.zeros(length, dtype=dtype)
    for u in sorted(survivors):
        total += masked[u]
    # every secret interpolated in one batch; errors raised in the same order as
    # rebuilding one by one would (survivors first, then the others, sorted)
    rebuilt = _rebuild_all(
        {
            "self-mask seed": {u: b_shares.get(u, {}) for u in sorted(survivors)},
            "mask key": {v: s_shares.get(v, {}) for v in sorted(shared - survivors)},
        },
        xs,
        threshold,
    )
    self_seeds, mask_keys = rebuilt["self-mask seed"], rebuilt["mask key"]
    seeds: dict[str, bytes] = {}
    for u in sorted(survivors):
        b = _secret(self_seeds, u)
        seeds[u] = b
        total -= expand_mask(b, label=SELF_MASK_LABEL, length=length, dtype=dtype)
    keys: dict[str, bytes] = {}
    for v in sorted(shared - survivors):
        live = sorted(nbrs[v] & survivors)
        if not live:
            try:
                raw = _secret(mask_keys, v)
                if AgreementKey.from_private_bytes(raw).public_bytes() == s_public[v]:
                    keys[v] = raw
            except (ThresholdNotMet, CryptoError):
                pass  # not needed for the sum
            continue
        raw = _secret(mask_keys, v)
        key = AgreementKey.from_private_bytes(raw)
        if key.public_bytes() != s_public[v]:
            raise ThresholdNotMet(
                f"mask key of {v}: rebuilt key does not match its advertised key",
                survivors=len(s_shares.get(v, {})),
                threshold=threshold,
            )
        keys[v] = raw
        for u in live:
            seed = key.derive(s_public[u], label=mask_label(session, u, v))
            m = expand_mask(seed, label=PAIR_MASK_LABEL, length=length, dtype=dtype)
            # u added pair_sign(u, v) * m for its dropped neighbour v: take it back out
            if pair_sign(u, v) > 0:
                total -= m
            else:
                total += m
    return total, Recovered(seeds, keys)
