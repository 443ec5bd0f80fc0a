"""Public and secret CKKS contexts as two distinct types.

TenSEAL keeps one mutable ``Context`` that is public or secret depending on an in-place
call. Here the key holder's context is a :class:`SecretCKKSContext`, which can only hand
out a :class:`PublicCKKSContext` (public key only: no secret, relinearisation or Galois
keys) or its serialised bytes. The secret type hides itself in ``repr`` and refuses to be
pickled, so it cannot slip into a message, a log line or a worker process.
"""

from __future__ import annotations

import hashlib
from typing import Any, NoReturn

import tenseal as ts

from crypto.ckks.params import CKKSParameters
from crypto.errors import KeyMaterialError
from crypto.secret import SecretHolder


def _probe(ctx: Any, params: CKKSParameters) -> None:
    """Raise unless a fresh ciphertext under ``ctx`` has the shape ``params`` promise."""
    ct = ts.ckks_vector(ctx, [0.0], scale=params.scale).ciphertext()[0]
    if ct.poly_modulus_degree() != params.poly_modulus_degree:
        raise KeyMaterialError(
            f"context has N = {ct.poly_modulus_degree()}, expected {params.poly_modulus_degree}"
        )
    if ct.coeff_modulus_size() != len(params.coeff_mod_bit_sizes) - 1:
        raise KeyMaterialError(
            f"context has {ct.coeff_modulus_size()} data primes, "
            f"expected {len(params.coeff_mod_bit_sizes) - 1}"
        )


class PublicCKKSContext:
    """A CKKS context that can encrypt and add, never decrypt.

    Security: holds the public key only. Anything encrypted under it can be read only by
    the holder of the matching :class:`SecretCKKSContext`.
    """

    __slots__ = ("_ctx", "_serialized", "fingerprint", "params")

    def __init__(self, *, ctx: Any, serialized: bytes, params: CKKSParameters) -> None:
        self._ctx = ctx
        self._serialized = serialized
        self.params = params
        self.fingerprint = context_fingerprint(serialized)

    @classmethod
    def from_bytes(cls, data: bytes, *, params: CKKSParameters) -> PublicCKKSContext:
        """Load a shipped public context.

        Security: raises :class:`KeyMaterialError` if the bytes carry a secret key (a
        public context that can decrypt is refused, not silently accepted), do not parse,
        or do not match ``params``.
        """
        try:
            ctx = ts.context_from(bytes(data))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise KeyMaterialError(f"public CKKS context does not parse: {exc}") from exc
        if ctx.has_secret_key() or ctx.is_private():
            raise KeyMaterialError("a shipped CKKS context must not carry the secret key")
        if not ctx.has_public_key():
            raise KeyMaterialError("shipped CKKS context has no public key")
        _probe(ctx, params)
        return cls(ctx=ctx, serialized=bytes(data), params=params)

    def to_bytes(self) -> bytes:
        return self._serialized

    @property
    def tenseal(self) -> Any:
        """The underlying TenSEAL context (public: encrypt and add only)."""
        return self._ctx

    def __repr__(self) -> str:
        return f"PublicCKKSContext({self.params.label()}, fingerprint={self.fingerprint[:8].hex()})"


class SecretCKKSContext(SecretHolder):
    """The key holder's CKKS context: the only object that can decrypt.

    Security: never serialised with its secret key, never pickled, never printed. Only
    :meth:`public` / :meth:`public_bytes` leave the key holder.
    """

    __slots__ = ("_ctx", "_public", "params")

    def __init__(self, *, ctx: Any, params: CKKSParameters) -> None:
        self._ctx = ctx
        self.params = params
        public_bytes = ctx.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        self._public = PublicCKKSContext.from_bytes(public_bytes, params=params)

    @classmethod
    def generate(
        cls, params: CKKSParameters, *, n_threads: int | None = None
    ) -> SecretCKKSContext:
        """Create a fresh key pair.

        Security: SEAL draws the secret key from the OS CSPRNG and enforces the 128-bit
        HE-standard bound; no relinearisation or Galois keys ever leave this object.
        """
        kwargs: dict[str, Any] = {"coeff_mod_bit_sizes": list(params.coeff_mod_bit_sizes)}
        if n_threads is not None:
            kwargs["n_threads"] = n_threads
        try:
            ctx = ts.context(ts.SCHEME_TYPE.CKKS, params.poly_modulus_degree, **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise KeyMaterialError(f"TenSEAL refused {params.label()}: {exc}") from exc
        ctx.global_scale = params.scale
        return cls(ctx=ctx, params=params)

    def export_secret(self) -> bytes:
        """The whole context WITH its secret key. DANGER: this exports the secret.

        Security: exists only so that an auditor node that lives one message at a time
        (Flower starts a process per message) can keep its key in its own owner-only
        file (:func:`from_secret_bytes`). Any other use (sending, logging) is a bug.
        """
        data: bytes = self._ctx.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=True,
            save_relin_keys=True,
        )
        return data

    @classmethod
    def from_secret_bytes(cls, data: bytes, *, params: CKKSParameters) -> SecretCKKSContext:
        """Load what :meth:`export_secret` wrote; KeyMaterialError if it holds no secret
        key or other parameters than ``params``."""
        try:
            ctx = ts.context_from(data)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise KeyMaterialError(f"not a serialised CKKS context: {exc}") from None
        if not ctx.has_secret_key():
            raise KeyMaterialError("the serialised CKKS context holds no secret key")
        ctx.global_scale = params.scale
        out = cls(ctx=ctx, params=params)
        _probe(out.public().tenseal, params)
        return out

    def public(self) -> PublicCKKSContext:
        return self._public

    def public_bytes(self) -> bytes:
        """The serialised public context: public key only (tested: no secret key)."""
        return self._public.to_bytes()

    @property
    def fingerprint(self) -> bytes:
        return self._public.fingerprint

    @property
    def tenseal(self) -> Any:
        """The underlying TenSEAL context. Hazmat: it holds the secret key."""
        return self._ctx

    def __repr__(self) -> str:
        return f"SecretCKKSContext({self.params.label()}, secret key hidden)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise KeyMaterialError("a secret CKKS context refuses to be pickled or copied")

    def __reduce_ex__(self, protocol: object) -> NoReturn:
        raise KeyMaterialError("a secret CKKS context refuses to be pickled or copied")

    def __getstate__(self) -> NoReturn:
        raise KeyMaterialError("a secret CKKS context refuses to be pickled or copied")


def context_fingerprint(public_bytes: bytes) -> bytes:
    """SHA-256 of a serialised public context, bound into every upload and receipt."""
    return hashlib.sha256(b"securepool/he/context/v1\x00" + public_bytes).digest()
