"""Shamir secret sharing over GF(p), p = 2^31 - 1, vectorised with numpy.

Why this prime: every field element is < 2^31, so the product of two elements is
< 2^62 and element-wise uint64 arithmetic never overflows before its ``% p``. Matrix
products (sums of t such products) are kept safe by splitting the right-hand factor into
16-bit halves (:func:`_matmul_mod`): each partial sum then stays below 2^64 for up to
2^17 terms, far more than any threshold here. A larger prime would need 128-bit
products (no numpy dtype) or Python integers (one object per element); a Mersenne prime
also keeps rejection sampling of coefficients trivial (only the word 2^31 - 1 itself is
rejected).

A secret of any length (up to 65535 bytes) is cut into 3-byte big-endian chunks, each a
field element < 2^24 < p. One :func:`shamir_split` call shares all elements of all
secrets at all evaluation points with one Vandermonde matrix product:
``shares = V @ C (mod p)``, ``V[j, k] = xs[j]^k``, ``C[0] = secret elements``,
``C[1:] = uniform random coefficients``. :func:`shamir_combine` interpolates at 0 with
Lagrange weights computed as numpy row products (one batch inversion), applies them to
all elements at once, and checks any extra shares with one parity-matrix product.

Share format (all integers big-endian except the elements)::

    version (1) | secret length in bytes (2) | x (4) | elements (4 each, little-endian)
"""

from __future__ import annotations

import itertools
import os
import struct
from collections.abc import Mapping, Sequence
from typing import Final

import numpy as np
from numpy.typing import NDArray

from crypto._validate import require_bytes, require_int
from crypto.errors import ShareError

PRIME: Final = 2**31 - 1
CHUNK_BYTES: Final = 3  # 2^24 < PRIME: every 3-byte chunk is a field element
MAX_SECRET_BYTES: Final = 2**16 - 1
MAX_THRESHOLD: Final = 2**17  # bound of _matmul_mod's overflow argument
VERSION: Final = 1
HEADER: Final = struct.Struct(">BHI")

_P: Final = np.uint64(PRIME)
_FERMAT_FROM: Final = 512  # _inverse: numpy exponentiation beyond this many elements
_U64 = NDArray[np.uint64]


def shamir_split(
    secrets: Sequence[bytes], *, threshold: int, xs: Sequence[int]
) -> list[list[bytes]]:
    """Share every secret at every point of ``xs``: ``shares[j][s]`` is the share of
    ``secrets[s]`` at ``xs[j]``.

    Secrets may differ in length (0..65535 bytes each); each is shared with its own
    independent random polynomial of degree ``threshold - 1`` per 3-byte chunk.

    Security: any ``threshold`` shares of a secret reconstruct it; any ``threshold - 1``
    or fewer are jointly uniform and independent of the secret (information-theoretic
    hiding: for every candidate secret exactly one polynomial fits them). That holds
    only because the coefficients are uniform: they come from ``os.urandom`` by
    rejection sampling, never from a seeded or numpy RNG. ``threshold = 1`` hides
    nothing (every share is the secret). The shares reveal the secret's length. Raises
    ShareError unless ``1 <= threshold <= len(xs)`` and the ``xs`` are distinct in
    ``1..PRIME-1`` (x = 0 would hand out the secret itself); CryptoTypeError for
    non-bytes secrets or non-int points.
    """
    points = _check_points(xs)
    t = _check_threshold(threshold)
    if t > len(points):
        raise ShareError(f"threshold {t} exceeds the number of points ({len(points)})")
    blobs = [require_bytes(f"secrets[{s}]", secret) for s, secret in enumerate(secrets)]
    for s, secret in enumerate(blobs):
        if len(secret) > MAX_SECRET_BYTES:
            raise ShareError(f"secrets[{s}] has {len(secret)} bytes, at most 65535 allowed")
    counts = [-(-len(secret) // CHUNK_BYTES) for secret in blobs]
    offsets = np.cumsum([0, *counts]).tolist()
    elements = np.concatenate([_to_elements(secret) for secret in blobs] or [_empty()])
    coefficients = np.empty((t, elements.size), dtype=np.uint64)
    coefficients[0] = elements
    coefficients[1:] = _random_field((t - 1, elements.size))
    vandermonde = _powers(np.asarray(points, dtype=np.uint64), t)
    words = _matmul_mod(vandermonde, coefficients).astype("<u4")
    return [
        [
            HEADER.pack(VERSION, len(secret), xj) + words[j, offsets[s] : offsets[s + 1]].tobytes()
            for s, secret in enumerate(blobs)
        ]
        for j, xj in enumerate(points)
    ]


def shamir_combine(shares: Mapping[int, bytes], *, threshold: int) -> bytes:
    """Reconstruct ONE secret from ``{x: share}`` by Lagrange interpolation at 0.

    The ``threshold`` shares with the smallest x give the secret; every further share
    is checked to lie on the same polynomial (a generalised Reed-Solomon parity check),
    so a corrupted or substituted share is detected, never silently used.

    Security: never guesses. Raises ShareError for fewer than ``threshold`` shares, a
    share whose embedded x differs from its key, a wrong version or length, an element
    outside the field, shares of different secrets mixed, extra shares inconsistent
    with the others, or a result outside the chunk range (which only inconsistent
    shares can produce). With exactly ``threshold`` shares a corruption cannot be
    detected (any ``threshold`` points fit some polynomial): authenticate shares in
    transit (SecAgg seals them with AEAD). Not constant-time: the shares are secret
    only until they are combined.
    """
    t = _check_threshold(threshold)
    if len(shares) < t:
        raise ShareError(f"{len(shares)} share(s) given, {t} needed")
    length, x, y = _parse_all(shares)
    if x.size > t:
        _check_consistent(x, y, threshold=t)
    secret = _matmul_mod(_lagrange_at_zero(x[:t])[None, :], y[:t])[0]
    return _from_elements(secret, length)


def shamir_combine_many(
    groups: Sequence[Mapping[int, bytes]], *, threshold: int
) -> list[bytes | ShareError]:
    """:func:`shamir_combine` of every group of shares, in one batch: entry ``i`` is
    the secret of ``groups[i]`` or the ShareError :func:`shamir_combine` raises for it.

    Groups of the same secret length are interpolated and checked together, whatever
    their number of shares (one numpy pass per step for all of them instead of one
    per group), which is where the SecAgg+ unmasking step spends its time: one secret
    per survivor and dropout. Each group's ``threshold`` shares with the smallest x fix
    its polynomial; the secret is its value at 0 and every further share must equal
    its value there (:func:`_interpolate_batch`), which holds exactly when all the
    group's shares lie on one polynomial of degree < ``threshold``.

    Security: the same outcome as calling :func:`shamir_combine` on each group (the
    same secret, or a ShareError for the same reasons: too few shares, a malformed or
    out-of-field share, mixed secrets, extra shares off the polynomial, a result
    outside the chunk range); one group's bad shares never affect another group's
    result. Raises ShareError (for the call) only for an invalid ``threshold``.
    """
    t = _check_threshold(threshold)
    out: list[bytes | ShareError] = [ShareError("not combined")] * len(groups)
    batches: dict[int, list[tuple[int, _U64, _U64]]] = {}
    enough = [i for i, shares in enumerate(groups) if len(shares) >= t]
    for i, shares in enumerate(groups):
        if len(shares) < t:
            out[i] = ShareError(f"{len(shares)} share(s) given, {t} needed")
    parsed = _parse_many([groups[i] for i in enough])
    for i, fast in zip(enough, parsed, strict=True):
        try:  # where the vectorised parse declined, the per-share one decides (and says why)
            length, x, y = fast if fast is not None else _parse_all(groups[i])
        except ShareError as exc:
            out[i] = exc
            continue
        batches.setdefault(length, []).append((i, x, y))
    for length, items in batches.items():
        xs, ys = [item[1] for item in items], [item[2] for item in items]
        ok, secrets = _interpolate_batch(xs, ys, t)
        in_range = ~np.any(secrets >= 1 << (8 * CHUNK_BYTES), axis=1)
        raw = _chunk_bytes(secrets)  # (groups, 3 * elements)
        for k, (i, x, _y) in enumerate(items):
            if not ok[k]:
                out[i] = ShareError(
                    f"the {x.size} shares do not lie on one polynomial of degree < {t}: "
                    "at least one share is corrupted or belongs to another secret"
                )
            elif not in_range[k]:
                out[i] = ShareError(_OUT_OF_RANGE)
            else:
                out[i] = raw[k, :length].tobytes()
    return out


def _interpolate_batch(
    xs: Sequence[_U64], ys: Sequence[_U64], t: int
) -> tuple[NDArray[np.bool_], _U64]:
    """For groups of points (``xs[g]`` sorted, distinct, non-zero, at least ``t``;
    ``ys[g]`` of shape (points, elements), one element count for all): whether each
    group lies on one polynomial of degree < t, and that polynomial's value at 0.

    The first t points of a group fix its polynomial f (Lagrange); f is evaluated at 0
    and at every further point z in one product: f(z) = sum_j w_j(z) y_j with
    w_j(z) = prod_{k != j} (z - x_k) / prod_{k != j} (x_j - x_k). The numerators come
    from prefix and suffix products over k (2t numpy passes over all groups at once),
    the denominators' inverses from one batch inversion per group (Montgomery's trick,
    vectorised over the groups). A group lies on one polynomial of degree < t exactly
    when f(z) equals the given value at each further point (f is the only candidate).
    Groups with fewer further points are padded with evaluations at 0, ignored.
    """
    g, most = len(xs), max(x.size for x in xs)
    elements = ys[0].shape[1]
    counts = np.fromiter((v.size for v in xs), dtype=np.int64, count=g)
    # every group's points in one padded array: row = group, column = rank of the point
    rows = np.repeat(np.arange(g), counts)
    columns = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    x = np.zeros((g, most), dtype=np.uint64)
    y = np.zeros((g, most, elements), dtype=np.uint64)
    x[rows, columns] = np.concatenate(xs)
    y[rows, columns] = np.concatenate(ys)
    base = np.ascontiguousarray(x[:, :t].T)  # (t, groups)
    # evaluation points: 0, then each group's further points (0 where a group has none)
    z = np.zeros((g, 1 + most - t), dtype=np.uint64)
    z[:, 1:] = x[:, t:]
    shifted = z + _P  # z - x_k = shifted - x_k, in (0, 2p): its product with a value < p fits
    prefix = np.empty((t + 1, *z.shape), dtype=np.uint64)
    prefix[0] = 1
    for k in range(t):
        prefix[k + 1] = prefix[k] * (shifted - base[k][:, None]) % _P
    # prod_{k != j} (z - x_k) = prefix_j * suffix_{j+1}, stored (groups, points, t)
    numerators = np.empty((*z.shape, t), dtype=np.uint64)
    suffix = np.ones(z.shape, dtype=np.uint64)
    for k in range(t - 1, -1, -1):
        numerators[:, :, k] = prefix[k] * suffix % _P
        suffix = suffix * (shifted - base[k][:, None]) % _P
    # prod_{k != j} (x_j - x_k) for each base point j, one k at a time over all groups
    lifted = base + _P
    denominators = np.ones_like(base)
    for k in range(t):
        step = lifted - base[k]
        step[k] = 1
        denominators = denominators * step % _P
    inverse = _inverse_columns(denominators)  # (t, groups)
    scaled = y[:, :t] * inverse.T[:, :, None] % _P  # y_j / prod_{k != j} (x_j - x_k)
    values = _matmul_mod(numerators, scaled)  # (groups, points, elements)
    further = np.arange(most - t)[None, :] < (counts - t)[:, None]  # (groups, most - t)
    wrong = np.any(values[:, 1:] != y[:, t:], axis=2) & further
    ok: NDArray[np.bool_] = ~np.any(wrong, axis=1)
    secrets: _U64 = values[:, 0]
    return ok, secrets


# --- field arithmetic ------------------------------------------------------------------


def _matmul_mod(a: _U64, b: _U64) -> _U64:
    """``a @ b mod p`` for entries < p without uint64 overflow.

    Each product a[i,k] * b[k,j] < 2^62, so a plain sum of t of them would overflow
    for t >= 4. With b = hi * 2^16 + lo (lo < 2^16, hi < 2^15) the partial sums
    a @ lo < t * 2^47 and a @ hi < t * 2^46 stay below 2^64 for t <= 2^17; each is
    reduced before recombining, and (a@hi mod p) * 2^16 + (a@lo mod p) < 2^48.
    """
    lo = b & np.uint64(0xFFFF)
    hi = b >> np.uint64(16)
    high: _U64 = (a @ hi) % _P
    low: _U64 = (a @ lo) % _P
    out: _U64 = ((high << np.uint64(16)) + low) % _P
    return out


def _row_products(m: _U64) -> _U64:
    """The product mod p of each row of ``m`` (over its last axis, any leading axes): a
    pairwise tree, log2(columns) passes."""
    columns = m.shape[-1]
    width = 1 << max(columns - 1, 0).bit_length()
    if width != columns:
        pad = np.ones((*m.shape[:-1], width - columns), np.uint64)
        m = np.concatenate([m, pad], axis=-1)
    while m.shape[-1] > 1:
        m = m[..., 0::2] * m[..., 1::2] % _P
    out: _U64 = m[..., 0]
    return out


def _powers(x: _U64, count: int) -> _U64:
    """V[..., i, k] = x[..., i]^k mod p for k < count, by doubling: log2(count) numpy
    passes (any leading axes)."""
    v = np.empty((*x.shape, count), dtype=np.uint64)
    if count:
        v[..., 0] = 1
    filled, power = 1, x % _P  # invariant: power = x^filled
    while filled < count:
        step = min(filled, count - filled)  # x^(filled + j) = x^j * x^filled
        v[..., filled : filled + step] = v[..., :step] * power[..., None] % _P
        filled += step
        power = power * power % _P  # stale only when the loop is about to end
    return v


def _inverse(a: _U64) -> _U64:
    """Element-wise inverse mod p of non-zero elements (Montgomery's batch trick: one
    modular exponentiation and 3(len - 1) multiplications, in Python integers, which
    beats ~60 numpy passes of Fermat exponentiation for the short vectors used here)."""
    if a.size > _FERMAT_FROM:  # long (batched) vectors: a^(p-2) in 60 numpy passes
        result = np.ones_like(a)
        base = a % _P
        for bit in bin(PRIME - 2)[:1:-1]:  # exponent bits, least significant first
            if bit == "1":
                result = result * base % _P
            base = base * base % _P
        return result
    values = [int(v) for v in a.tolist()]
    prefix = [1] * (len(values) + 1)
    for i, v in enumerate(values):
        prefix[i + 1] = prefix[i] * v % PRIME
    running = pow(prefix[-1], -1, PRIME)
    out = [0] * len(values)
    for i in range(len(values) - 1, -1, -1):
        out[i] = running * prefix[i] % PRIME
        running = running * values[i] % PRIME
    return np.asarray(out, dtype=np.uint64)


def _inverse_columns(a: _U64) -> _U64:
    """Element-wise inverse mod p of a (rows, columns) array of non-zero elements:
    Montgomery's trick down each column (prefix products, one inversion per column by
    :func:`_inverse`, then back up), vectorised over the columns: 3 (rows - 1) numpy
    multiplications of one row each, however many columns."""
    rows = a.shape[0]
    prefix = np.empty((rows + 1, *a.shape[1:]), dtype=np.uint64)
    prefix[0] = 1
    for r in range(rows):
        prefix[r + 1] = prefix[r] * a[r] % _P
    running = _inverse(prefix[rows])
    out = np.empty_like(a)
    for r in range(rows - 1, -1, -1):
        out[r] = running * prefix[r] % _P
        running = running * a[r] % _P
    return out


def _differences(x: _U64) -> _U64:
    """D[..., j, k] = x_j - x_k mod p, with 1 on the diagonal (so row products skip
    k = j); any leading axes."""
    d: _U64 = (x[..., :, None] + _P - x[..., None, :]) % _P
    d[..., np.arange(x.shape[-1]), np.arange(x.shape[-1])] = 1
    return d


def _lagrange_at_zero(x: _U64) -> _U64:
    """lambda_j = prod_{k != j} x_k / (x_k - x_j): f(0) = sum_j lambda_j f(x_j), for the
    points on the last axis of ``x`` (any leading axes)."""
    size = x.shape[-1]
    numerators = np.broadcast_to(x[..., None, :], (*x.shape, size)).copy()
    numerators[..., np.arange(size), np.arange(size)] = 1
    # prod_{k != j} (x_k - x_j) = (-1)^(t-1) prod_{k != j} (x_j - x_k)
    denominators = _row_products(_differences(x))
    if size % 2 == 0:
        denominators = (_P - denominators) % _P
    inverse = _inverse(denominators.reshape(-1)).reshape(denominators.shape)
    out: _U64 = _row_products(numerators) * inverse % _P
    return out


def _check_consistent(x: _U64, y: _U64, *, threshold: int) -> None:
    """Raise ShareError unless all points (x_i, y_i) lie on one polynomial of degree
    < threshold.

    Generalised Reed-Solomon parity check: with v_i = 1 / prod_{k != i} (x_i - x_k),
    sum_i v_i g(x_i) = 0 for every polynomial g of degree <= n - 2. Taking
    g = x^r f for r < n - threshold gives n - threshold independent checks, which hold
    exactly when the values come from one f of degree < threshold.
    """
    n = x.size
    if _inconsistent(x[None], y[None], threshold=threshold)[0]:
        raise ShareError(
            f"the {n} shares do not lie on one polynomial of degree < {threshold}: "
            "at least one share is corrupted or belongs to another secret"
        )


def _inconsistent(x: _U64, y: _U64, *, threshold: int) -> NDArray[np.bool_]:
    """For each batch entry g: whether the points (x[g, i], y[g, i]) do NOT lie on one
    polynomial of degree < threshold (the parity check of :func:`_check_consistent`);
    x is (groups, n), y is (groups, n, elements)."""
    n = x.shape[-1]
    products = _row_products(_differences(x))
    v = _inverse(products.reshape(-1)).reshape(products.shape)  # (groups, n)
    # H[g, r, i] = v_gi x_gi^r
    parity = np.swapaxes(_powers(x, n - threshold) * v[..., None] % _P, -1, -2)
    out: NDArray[np.bool_] = np.any(_matmul_mod(parity, y), axis=(-2, -1))
    return out


def _random_field(shape: tuple[int, int]) -> _U64:
    """Uniform field elements from os.urandom: 31-bit words, rejecting 2^31 - 1."""
    count = shape[0] * shape[1]
    out = np.empty(0, dtype=np.uint64)
    while out.size < count:
        missing = count - out.size
        words = np.frombuffer(os.urandom(4 * (missing + 4)), dtype="<u4") & np.uint32(PRIME)
        out = np.concatenate([out, words[words != PRIME].astype(np.uint64)])
    return out[:count].reshape(shape)


# --- encoding --------------------------------------------------------------------------


def _empty() -> _U64:
    return np.empty(0, dtype=np.uint64)


def _to_elements(secret: bytes) -> _U64:
    padded = secret + bytes(-len(secret) % CHUNK_BYTES)
    raw = np.frombuffer(padded, dtype=np.uint8).reshape(-1, CHUNK_BYTES).astype(np.uint64)
    out: _U64 = (raw[:, 0] << np.uint64(16)) | (raw[:, 1] << np.uint64(8)) | raw[:, 2]
    return out


_OUT_OF_RANGE: Final = "shares are inconsistent: the reconstruction left the secret's range"


def _chunk_bytes(elements: _U64) -> NDArray[np.uint8]:
    """The 3 big-endian bytes of each element (< 2^24), along the last axis."""
    chunks = np.stack(
        [(elements >> np.uint64(16)) & 0xFF, (elements >> np.uint64(8)) & 0xFF, elements & 0xFF],
        axis=-1,
    )
    out: NDArray[np.uint8] = chunks.astype(np.uint8).reshape(*elements.shape[:-1], -1)
    return out


def _from_elements(elements: _U64, length: int) -> bytes:
    if np.any(elements >= 1 << (8 * CHUNK_BYTES)):
        raise ShareError(_OUT_OF_RANGE)
    return _chunk_bytes(elements).tobytes()[:length]


def _check_threshold(threshold: object) -> int:
    t = require_int("threshold", threshold)
    if not 1 <= t <= MAX_THRESHOLD:
        raise ShareError(f"threshold must be in 1..{MAX_THRESHOLD}, got {t}")
    return t


def _check_points(xs: Sequence[int]) -> list[int]:
    points = [require_int(f"xs[{j}]", x) for j, x in enumerate(xs)]
    if not points:
        raise ShareError("at least one evaluation point is needed")
    bad = [x for x in points if not 0 < x < PRIME]
    if bad:
        raise ShareError(f"evaluation points must be in 1..{PRIME - 1}, got {bad[:3]}")
    if len(set(points)) != len(points):
        raise ShareError("evaluation points must be distinct")
    return points


def _parse_many(groups: Sequence[Mapping[int, bytes]]) -> list[tuple[int, _U64, _U64] | None]:
    """:func:`_parse_all` of each group, vectorised over every share of every group
    whose shares all have one size: None for a group it cannot vouch for (mixed sizes,
    a key that is not a plain int in 1..p-1, a share that is not bytes, any field
    :func:`_parse_all` would refuse), which the caller then parses share by share."""
    out: list[tuple[int, _U64, _U64] | None] = [None] * len(groups)
    by_size: dict[int, list[tuple[int, list[int], list[bytes]]]] = {}
    for g, shares in enumerate(groups):
        keys = list(shares)
        if not keys or set(map(type, keys)) != {int}:
            continue
        keys.sort()
        if keys[0] <= 0 or keys[-1] >= PRIME:
            continue
        chosen = list(map(shares.__getitem__, keys))
        if set(map(type, chosen)) != {bytes}:
            continue
        sizes = set(map(len, chosen))
        if len(sizes) == 1:
            by_size.setdefault(sizes.pop(), []).append((g, keys, chosen))
    for size, rows in by_size.items():
        if size > HEADER.size and (size - HEADER.size) % 4 == 0:
            _parse_rows(rows, size, out)
    return out


def _parse_rows(
    rows: list[tuple[int, list[int], list[bytes]]],
    size: int,
    out: list[tuple[int, _U64, _U64] | None],
) -> None:
    """The vectorised part of :func:`_parse_many` for groups of shares of ``size``
    bytes (keys sorted, in 1..p-1): fills ``out[g]`` for each group whose every share
    passes the checks of :func:`_parse_all`."""
    counts = np.fromiter((len(r[1]) for r in rows), dtype=np.int64, count=len(rows))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    keys = np.array(list(itertools.chain.from_iterable(r[1] for r in rows)), dtype=np.uint64)
    joined = b"".join(itertools.chain.from_iterable(r[2] for r in rows))
    table = np.frombuffer(joined, dtype=np.uint8).reshape(keys.size, size)
    head = table[:, : HEADER.size].astype(np.uint64)
    versions = head[:, 0]
    lengths = (head[:, 1] << np.uint64(8)) | head[:, 2]
    embedded = (head[:, 3] << np.uint64(24)) | (head[:, 4] << np.uint64(16))
    embedded |= (head[:, 5] << np.uint64(8)) | head[:, 6]
    values = np.ascontiguousarray(table[:, HEADER.size :]).view("<u4").astype(np.uint64)
    expected = HEADER.size + 4 * ((lengths + np.uint64(CHUNK_BYTES - 1)) // np.uint64(CHUNK_BYTES))
    good = (versions == VERSION) & (expected == size) & np.all(values < PRIME, axis=1)
    good &= embedded == keys
    good &= lengths == np.repeat(lengths[starts], counts)  # one secret length per group
    whole = np.logical_and.reduceat(good, starts)
    for (g, _keys, _blobs), ok, start, count in zip(
        rows, whole.tolist(), starts.tolist(), counts.tolist(), strict=True
    ):
        if ok:  # else _parse_all names the fault
            span = slice(start, start + count)
            out[g] = (int(lengths[start]), keys[span], values[span])


def _parse_all(shares: Mapping[int, bytes]) -> tuple[int, _U64, _U64]:
    """(secret length, xs sorted, elements (shares x elements)), every field checked."""
    items: list[tuple[int, bytes]] = []
    lengths: set[int] = set()
    for key, share in shares.items():
        x = require_int("share key x", key)
        if not 0 < x < PRIME:
            raise ShareError(f"share key x must be in 1..{PRIME - 1}, got {x}")
        blob = require_bytes(f"share for x={x}", share)
        if len(blob) < HEADER.size:
            raise ShareError(f"share for x={x} has {len(blob)} bytes, shorter than its header")
        version, length, embedded = HEADER.unpack_from(blob)
        if version != VERSION:
            raise ShareError(f"share for x={x} has version {version}, expected {VERSION}")
        if embedded != x:
            raise ShareError(f"share given for x={x} was made for x={embedded}")
        expected = HEADER.size + 4 * -(-length // CHUNK_BYTES)
        if len(blob) != expected:
            raise ShareError(f"share for x={x} has {len(blob)} bytes, expected {expected}")
        lengths.add(length)
        items.append((x, blob))
    if len(lengths) != 1:
        raise ShareError(f"shares of different secrets mixed (lengths {sorted(lengths)})")
    items.sort(key=lambda item: item[0])
    body = b"".join(blob[HEADER.size :] for _, blob in items)
    values = np.frombuffer(body, dtype="<u4").astype(np.uint64).reshape(len(items), -1)
    if np.any(values >= PRIME):
        bad = sorted({items[i][0] for i in np.nonzero(values >= PRIME)[0].tolist()})
        raise ShareError(f"share(s) for x={bad} hold an element outside the field")
    points = np.asarray([xj for xj, _ in items], dtype=np.uint64)
    return lengths.pop(), points, values
