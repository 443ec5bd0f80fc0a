"""The one error tree of SecurePool.

Every exception the project raises on purpose derives from :class:`SecurePoolError`,
so a caller can catch the whole family at once, and each layer adds its own branch:

``SecurePoolError``
 ├── ``CryptoError``            (crypto/)
 │    ├── ``InvalidSignature``  a signature or tag did not verify
 │    ├── ``DecryptionError``   AEAD/HPKE open failed (wrong key, tampered bytes)
 │    ├── ``EncodingError``     fixed-point encode/decode out of range, overflow risk
 │    ├── ``KeyMaterialError``  wrong key type/size, secret material misuse
 │    │    └── ``SecretPicklingError``  a secret was asked to pickle itself (also TypeError)
 │    ├── ``CryptoTypeError``   an argument has the wrong Python type (also TypeError)
 │    ├── ``ShareError``        Shamir shares too few, malformed or inconsistent
 │    └── ``CiphertextError``   an HE ciphertext is corrupt, of the wrong size or context
 ├── ``ProtocolError``          (protocols/)
 │    ├── ``MessageError``      malformed, wrong version, wrong length
 │    ├── ``StageError``        out-of-stage, replayed or wrong-round message
 │    ├── ``ThresholdNotMet``   too few survivors to finish a secure aggregate
 │    └── ``SecurityViolation`` a peer or the server asked for something unsafe
 ├── ``ConfigError``            (securepool/) lists every problem at once
 └── ``PrivacyBudgetError``     (securepool/) a budget is exhausted or invalid

The root lives in the lowest layer so that imports keep pointing down.
"""

from __future__ import annotations

from collections.abc import Iterable


class SecurePoolError(Exception):
    """Base class of every error SecurePool raises on purpose."""


# --- crypto/ --------------------------------------------------------------------------


class CryptoError(SecurePoolError):
    """A cryptographic operation failed or was misused."""


class InvalidSignature(CryptoError):
    """A signature, MAC or authentication tag did not verify."""


class DecryptionError(CryptoError):
    """Authenticated decryption failed: wrong key, wrong context or tampered bytes."""


class EncodingError(CryptoError):
    """A value cannot be encoded without loss or overflow (headroom check failed)."""


class KeyMaterialError(CryptoError):
    """Key material has the wrong type or size, or secret material was misused."""


class SecretPicklingError(KeyMaterialError, TypeError):
    """A secret-key object was asked to pickle (or copy via pickle) itself.

    Also a ``TypeError``, which is what :mod:`pickle` callers expect from an object that
    cannot be pickled.
    """


class CryptoTypeError(CryptoError, TypeError):
    """An argument of a crypto function has the wrong Python type (``str`` for ``bytes``,
    a signed dtype for an unsigned one, ``bool`` for ``int``).

    Also a ``TypeError``, so code written against pyca/cryptography's conventions still
    catches it.
    """


class ShareError(CryptoError):
    """Shamir shares are too few, malformed, mixed from different secrets or inconsistent
    with one polynomial; or a split was asked for an impossible threshold."""


class CiphertextError(CryptoError):
    """An HE ciphertext does not load under this context, has the wrong shape or scale,
    or its bytes are corrupted."""


# --- protocols/ -----------------------------------------------------------------------


class ProtocolError(SecurePoolError):
    """A protocol run cannot continue as asked."""


class MessageError(ProtocolError):
    """A message is malformed: wrong version, wrong length, bad field."""


class StageError(ProtocolError):
    """A message arrived in the wrong stage, for the wrong round, or twice."""


class ThresholdNotMet(ProtocolError):
    """Too few participants survive to complete a secure aggregate.

    The run aborts that aggregate cleanly: the model keeps its last global state.
    """

    def __init__(self, message: str, *, survivors: int, threshold: int) -> None:
        super().__init__(message)
        self.survivors = survivors
        self.threshold = threshold


class SecurityViolation(ProtocolError):
    """A peer or the server asked for something that would break a security property."""


class AggregateDiscarded(ProtocolError):
    """A group's aggregate was computed but must not be used: a check after unmasking
    found that a contributor lied about its input (its input is already in the sum).

    ``flagged`` names the liars with the reason; the caller keeps the model's last state.
    """

    def __init__(self, message: str, *, flagged: dict[str, str]) -> None:
        super().__init__(message)
        self.flagged = dict(flagged)


# --- securepool/ ----------------------------------------------------------------------


class ConfigError(SecurePoolError):
    """A run configuration is invalid. ``problems`` lists every problem found."""

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        super().__init__(
            f"{len(self.problems)} problem(s) in the configuration:\n"
            + "\n".join(f"  - {p}" for p in self.problems)
        )


class PrivacyBudgetError(SecurePoolError):
    """A privacy budget is invalid, or exhausted where spending was required."""
