"""Input checks shared by the primitives: each names the argument and the problem.

Private to crypto/. Types are checked where they enter, as pyca/cryptography does, but
every failure is a typed SecurePool error: a wrong Python type raises
:class:`CryptoTypeError` (also a ``TypeError``), wrong key material raises
:class:`KeyMaterialError`.
"""

from __future__ import annotations

import operator

import numpy as np

from crypto.errors import CryptoTypeError, KeyMaterialError


def require_bytes(name: str, value: object) -> bytes:
    """``value`` itself if it is ``bytes``; else CryptoTypeError naming ``name``.

    ``bytearray`` and ``memoryview`` are refused on purpose: they are mutable, so a
    value checked here could change before it is used.
    """
    if not isinstance(value, bytes):
        raise CryptoTypeError(f"{name} must be bytes, got {type(value).__name__}")
    return value


def require_key(name: str, value: object, *, size: int) -> bytes:
    """``value`` if it is ``bytes`` of exactly ``size``; else KeyMaterialError."""
    if not isinstance(value, bytes):
        raise KeyMaterialError(f"{name} must be {size} bytes, got {type(value).__name__}")
    if len(value) != size:
        raise KeyMaterialError(f"{name} must be exactly {size} bytes, got {len(value)}")
    return value


def require_int(name: str, value: object) -> int:
    """``value`` as a Python ``int`` if it is an integer (``int`` or a numpy integer,
    never a ``bool`` or a ``float``); else CryptoTypeError."""
    if isinstance(value, bool | np.bool_):
        raise CryptoTypeError(f"{name} must be an int, got {type(value).__name__}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise CryptoTypeError(f"{name} must be an int, got {type(value).__name__}") from None
