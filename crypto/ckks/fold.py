"""Homomorphic random folds of chunked CKKS vectors: the SEAL-level pieces.

A *fold* of a chunked ciphertext ``ct_0 .. ct_{k-1}`` (``slots`` values each) down to
``dim`` slots is::

    F = Conj( RotFold_dim( sum_c ct_c * a_c(X) ) )

where each ``a_c`` is a public sparse integer polynomial (``FOLD_TERMS`` signed
monomials), ``RotFold_dim`` adds the ciphertext to its rotations by ``dim``,
``2 dim`` ... ``slots / 2`` (``log2(slots / dim)`` rotations) and ``Conj`` adds its
complex conjugate (``2 Re``: the imaginary parts, a second projection, are cancelled).
Multiplying by an integer polynomial multiplies slot ``j`` by ``r_{c,j} = a_c(zeta_j)``
(a sum of ``FOLD_TERMS`` roots of unity: a random complex multiplier with
``E|Re r|^2 = FOLD_TERMS / 2``) and leaves the encoding scale unchanged, so it needs no
rescaling level: the additive-only parameters of HE mode (one data prime) suffice. The
folded vector is real and periodic with period ``dim``: it carries ``dim`` real values,
whatever ``slots`` is.

The rotations and the conjugation need Galois keys for exactly those automorphisms;
:func:`galois_keys_for` makes them from the secret context (``log2(slots / dim) + 1``
keys; TenSEAL's default set has every power-of-two step in both directions) and
:class:`FoldKeys` loads them on the public side.

Security: the coordinator computes folds with the public context and the Galois keys
only (key-switching keys for automorphisms: public evaluation material, standard RLWE
plus circular-security assumption, as in every CKKS deployment that rotates). The
result is a fresh-shaped ciphertext (same level, same scale) that
:func:`crypto.ckks.vectors.load_chunk` checks like any other chunk.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray
from tenseal import sealapi

from crypto.ckks.coefficients import _BYTES_TAG, _SCALE_TAG, _varint
from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext
from crypto.ckks.params import CKKSParameters
from crypto.ckks.vectors import chunk_codec, load_chunk
from crypto.errors import CiphertextError, EncodingError, KeyMaterialError

#: signed monomials per chunk multiplier: |r| ~ sqrt(64) = 8 stays far below the headroom
FOLD_TERMS: Final = 64
_GEN: Final = 3  # SEAL's slot generator: slot j evaluates at zeta^(3^j mod 2N)


def fold_steps(params: CKKSParameters, dim: int) -> tuple[int, ...]:
    """The rotation steps of a fold to ``dim`` slots: ``slots/2, slots/4, ..., dim``."""
    slots = params.slots
    if dim < 1 or dim & (dim - 1) or dim > slots // 2:
        raise EncodingError(f"fold dimension must be a power of two in 1..{slots // 2}")
    steps: list[int] = []
    step = slots // 2
    while step >= dim:
        steps.append(step)
        step //= 2
    return tuple(steps)


def _galois_elements(params: CKKSParameters, steps: tuple[int, ...]) -> list[int]:
    """The Galois elements of the rotations by ``steps``, then complex conjugation."""
    m = 2 * params.poly_modulus_degree
    return [pow(_GEN, s, m) for s in steps] + [m - 1]


def slot_multipliers(
    params: CKKSParameters, positions: NDArray[np.int64], signs: NDArray[np.float64]
) -> NDArray[np.complex128]:
    """``a(zeta_j)`` for every slot ``j`` of ``a = sum signs[i] X^positions[i]``: the
    complex factor multiplying slot ``j`` by ``a`` does (SEAL's slot order)."""
    n = params.poly_modulus_degree
    coeffs = np.zeros(2 * n, dtype=np.float64)
    np.add.at(coeffs, positions, signs)
    # sum_i a_i exp(i pi k i / n) for k = 0..2n-1, then slot j takes k = 3^j mod 2n
    evaluations = np.fft.ifft(coeffs) * (2 * n)
    exponents = np.empty(params.slots, dtype=np.int64)
    g = 1
    for j in range(params.slots):
        exponents[j] = g
        g = g * _GEN % (2 * n)
    return np.asarray(evaluations[exponents], dtype=np.complex128)


def galois_keys_for(secret: SecretCKKSContext, steps: tuple[int, ...]) -> bytes:
    """Serialised Galois keys for exactly ``steps`` and the conjugation (SEAL's seeded,
    compressed form).

    Security: key-switching keys, public evaluation material; they let their holder
    rotate ciphertexts, never decrypt.
    """
    ctx = secret.tenseal
    keygen = sealapi.KeyGenerator(ctx.seal_context().data, ctx.secret_key().data)
    serializable = keygen.create_galois_keys(_galois_elements(secret.params, steps))
    return _via_file(lambda path: serializable.save(path))


def _via_file(save: Any) -> bytes:
    fd, path = tempfile.mkstemp(prefix="securepool-galois-")
    os.close(fd)
    try:
        save(path)
        with open(path, "rb") as fh:
            return fh.read()
    finally:
        os.unlink(path)


class FoldKeys:
    """Galois keys for one fold dimension, loaded and checked against a public context.

    Security: raises :class:`KeyMaterialError` for bytes SEAL does not load under this
    context's parameters, or keys that lack one of the needed steps.
    """

    __slots__ = ("_keys", "dim", "public", "steps")

    def __init__(self, public: PublicCKKSContext, data: bytes, *, dim: int) -> None:
        self.public = public
        self.dim = dim
        self.steps = fold_steps(public.params, dim)
        keys = sealapi.GaloisKeys()
        fd, path = tempfile.mkstemp(prefix="securepool-galois-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            keys.load(public.tenseal.seal_context().data, path)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise KeyMaterialError(f"Galois keys do not load under this context: {exc}") from exc
        finally:
            os.unlink(path)
        for elt in _galois_elements(public.params, self.steps):
            if not keys.has_key(elt):
                raise KeyMaterialError(f"Galois keys lack the rotation of element {elt}")
        self._keys = keys


class FoldPlaintexts:
    """The encoded multipliers ``a_c`` of one fold (one plaintext per chunk)."""

    def __init__(self, public: PublicCKKSContext, multipliers: NDArray[np.complex128]) -> None:
        params = public.params
        if multipliers.ndim != 2 or multipliers.shape[1] != params.slots:
            raise EncodingError(f"multipliers must have shape (k, {params.slots})")
        ctx = public.tenseal
        seal_ctx = ctx.seal_context().data
        encoder = sealapi.CKKSEncoder(seal_ctx)
        parms_id = seal_ctx.first_parms_id()
        self._plain: list[Any] = []
        for row in multipliers:
            plain = sealapi.Plaintext()
            # scale 1: the encoder's rounding returns the integer polynomial a_c itself
            encoder.encode(row.tolist(), parms_id, 1.0, plain)
            self._plain.append(plain)

    def __len__(self) -> int:
        return len(self._plain)


def fold_chunks(
    keys: FoldKeys, plaintexts: FoldPlaintexts, chunks: tuple[bytes, ...] | list[bytes]
) -> bytes:
    """The fold of one chunked ciphertext, as one chunk's wire bytes.

    Security: public operations only (plaintext products, additions, rotations). Every
    input chunk is checked by :func:`load_chunk` first (CiphertextError otherwise).
    """
    public = keys.public
    if len(chunks) != len(plaintexts):
        raise CiphertextError(f"{len(chunks)} chunks for a fold of {len(plaintexts)}")
    seal_ctx = public.tenseal.seal_context().data
    evaluator = sealapi.Evaluator(seal_ctx)
    acc: Any = None
    for blob, plain in zip(chunks, plaintexts._plain, strict=True):
        ct = load_chunk(public, blob).ciphertext()[0]
        prod = sealapi.Ciphertext(seal_ctx)
        try:
            evaluator.multiply_plain(ct, plain, prod)
        except (ValueError, RuntimeError) as exc:  # e.g. an all-zero (transparent) product
            raise CiphertextError(f"fold product failed: {exc}") from exc
        if acc is None:
            acc = prod
        else:
            evaluator.add_inplace(acc, prod)
    for step in keys.steps:
        rotated = sealapi.Ciphertext(seal_ctx)
        evaluator.rotate_vector(acc, step, keys._keys, rotated)
        evaluator.add_inplace(acc, rotated)
    conjugate = sealapi.Ciphertext(seal_ctx)
    evaluator.complex_conjugate(acc, keys._keys, conjugate)
    evaluator.add_inplace(acc, conjugate)  # 2 Re: the imaginary parts never reach the auditor
    return frame_ciphertext(public, acc)


def frame_ciphertext(public: PublicCKKSContext, ct: Any) -> bytes:
    """A SEAL ciphertext of this context as one chunk's TenSEAL wire bytes."""
    seal = _via_file(lambda path: ct.save(path))
    codec = chunk_codec(public)
    params = public.params
    return b"".join(
        [
            codec.shape_field,
            bytes([_BYTES_TAG]),
            _varint(len(seal)),
            seal,
            bytes([_SCALE_TAG]),
            np.float64(params.scale).astype("<f8").tobytes(),
        ]
    )


def decrypt_complex(secret: SecretCKKSContext, blob: bytes) -> NDArray[np.complex128]:
    """Decrypt one chunk to its ``slots`` complex values.

    Security: decrypts whatever it is given; the caller (the key holder) decides first
    what it is willing to see (protocols.he.fold checks the result is a fold).
    """
    vec = load_chunk(secret, blob)
    ctx = secret.tenseal
    seal_ctx = ctx.seal_context().data
    decryptor = sealapi.Decryptor(seal_ctx, ctx.secret_key().data)
    plain = sealapi.Plaintext()
    decryptor.decrypt(vec.ciphertext()[0], plain)
    values = sealapi.CKKSEncoder(seal_ctx).decode_complex(plain)
    return np.asarray(values, dtype=np.complex128)


def all_rotation_keys_bytes(secret: SecretCKKSContext) -> int:
    """Size of TenSEAL's default Galois key set (every power-of-two step): for reports."""
    ctx = secret.tenseal.copy()
    ctx.generate_galois_keys()
    return len(ctx.serialize(save_public_key=False, save_secret_key=False, save_galois_keys=True))


__all__ = [
    "FOLD_TERMS",
    "FoldKeys",
    "FoldPlaintexts",
    "all_rotation_keys_bytes",
    "decrypt_complex",
    "fold_chunks",
    "fold_steps",
    "frame_ciphertext",
    "galois_keys_for",
    "slot_multipliers",
]
