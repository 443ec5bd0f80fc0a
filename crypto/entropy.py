"""A participant's private random stream: AES-256-CTR keyed from OS entropy.

:class:`SecureStream` is where a participant's privacy-relevant randomness comes from
(the DP noise and the Poisson sampling of its batches). Its key is 32 bytes of
``os.urandom`` drawn when the stream is made, so nothing another role knows (the run
seed, the config, the iteration number) determines it. The keystream is written by
OpenSSL straight into numpy arrays, as :mod:`crypto.prg` does for masks.

:meth:`SecureStream.insecure_from_seed` exists for experiments that must be replayed
bit for bit: its output is a function of a seed the caller chooses, so anyone who knows
the seed knows the noise. Callers must label such runs loudly.
"""

from __future__ import annotations

import os
from typing import Final

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from numpy.typing import NDArray

from crypto._validate import require_bytes, require_int
from crypto.encoding import bind
from crypto.errors import CryptoError
from crypto.kdf import hkdf_sha256
from crypto.secret import SecretHolder

KEY_SIZE: Final = 32
_CHUNK: Final = 1 << 16
_ZEROS: Final = memoryview(bytes(_CHUNK))
_SLACK: Final = 15
_DOMAIN: Final = b"securepool/entropy/insecure-seed/v1"


class SecureStream(SecretHolder):
    """An endless AES-256-CTR keystream; a secret (hidden in repr, never pickled).

    Security: with the default ``key=None`` the key is ``os.urandom(32)``; the words
    are then computationally indistinguishable from uniform for anyone, the process
    that owns the stream excepted. The stream is not thread-safe and never rewinds: two
    draws never share keystream bytes.
    """

    __slots__ = ("_encryptor", "_reproducible", "_words")

    def __init__(self, *, key: bytes | None = None) -> None:
        if key is None:
            key = os.urandom(KEY_SIZE)
            self._reproducible = False
        else:
            key = require_bytes("key", key)
            if len(key) != KEY_SIZE:
                raise CryptoError(f"stream key must be {KEY_SIZE} bytes, got {len(key)}")
            self._reproducible = True
        self._encryptor = Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
        self._words = 0

    @classmethod
    def insecure_from_seed(cls, seed: bytes, *, label: bytes) -> SecureStream:
        """A stream that is a function of ``seed`` and ``label`` (experiments only).

        Security: NONE against whoever knows or can guess ``seed``: they can recompute
        every word. Use only where bit-for-bit replay matters more than privacy, and
        label the result (``dp_noise_reproducible: true``).
        """
        seed = require_bytes("seed", seed)
        label = require_bytes("label", label)
        return cls(key=hkdf_sha256(seed, info=bind(_DOMAIN, label), length=KEY_SIZE))

    @property
    def reproducible(self) -> bool:
        """True when the key came from a caller's seed, not from OS entropy.

        Security: a reproducible stream protects nothing against the seed's holders.
        """
        return self._reproducible

    @property
    def words_drawn(self) -> int:
        """How many 64-bit words this stream has produced (for accounting and tests).

        Security: reveals only a count, never keystream.
        """
        return self._words

    def uint64(self, count: int) -> NDArray[np.uint64]:
        """``count`` fresh uniform 64-bit words (little-endian keystream).

        Security: uniform and independent of every earlier and later draw for anyone
        without the key (AES-256 in counter mode as a PRF).
        """
        count = require_int("count", count)
        if count < 0:
            raise CryptoError(f"word count must be >= 0, got {count}")
        nbytes = 8 * count
        raw = np.empty(nbytes + _SLACK, dtype=np.uint8)
        out = memoryview(raw)  # type: ignore[arg-type]
        for start in range(0, nbytes, _CHUNK):
            size = min(_CHUNK, nbytes - start)
            self._encryptor.update_into(_ZEROS[:size], out[start : start + size + _SLACK])
        self._words += count
        words: NDArray[np.uint64] = raw[:nbytes].view(np.dtype("<u8")).astype(np.uint64, copy=False)
        return words

    def bernoulli(self, p: float, size: int) -> NDArray[np.bool_]:
        """``size`` independent draws that are True with probability ``p``.

        Security: each draw is True exactly with probability floor(p * 2^64) / 2^64
        (within 2^-64 of ``p``); ``p`` must be in [0, 1].
        """
        if not 0.0 <= p <= 1.0:
            raise CryptoError(f"probability must be in [0, 1], got {p}")
        if p == 1.0:
            return np.ones(size, dtype=bool)
        threshold = np.uint64(int(p * float(1 << 64)))  # exact: p is a binary fraction
        return self.uint64(size) < threshold
