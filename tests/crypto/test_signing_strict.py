"""Ed25519 verification through libsodium is strict: attacks from the signer's side.

Each test builds, as an attacker would, a signature that satisfies RFC 8032's
cofactorless verification equation [S]B = R + [k]A (k = SHA-512(R || A || M) mod L) or
differs from a valid one only in its encoding, checks that premise with independent
point arithmetic, and shows :func:`crypto.signing.verify_signature` (and the in-process
memo) refuse it with InvalidSignature. OpenSSL (the previous backend) accepts the
small-order forgeries below; libsodium refuses small-order and non-canonical points
and non-canonical S.
"""

from __future__ import annotations

import hashlib

import nacl.bindings as sodium
import pytest

from crypto.errors import InvalidSignature
from crypto.signing import (
    IdentityKey,
    VerifiedSignatures,
    signed_bytes,
    verify_maybe_memo,
    verify_signature,
)

L = 2**252 + 27742317777372353535851937790883648493  # the order of the base point B
P = 2**255 - 19
LABEL = b"securepool/test/strict"
MESSAGE = b"a survivor list the attacker wants to have signed"
RFC_SECRET = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")

IDENTITY = (1).to_bytes(32, "little")  # the neutral element (0, 1): order 1
ORDER_2 = (P - 1).to_bytes(32, "little")  # (0, -1): order 2
IDENTITY_NON_CANONICAL = (P + 1).to_bytes(32, "little")  # y = p + 1 encodes y = 1 again
IDENTITY_MINUS_ZERO = (1 | 1 << 255).to_bytes(32, "little")  # (0, 1) with x's sign bit set


def _le(n: int) -> bytes:
    return n.to_bytes(32, "little")


def _challenge(r: bytes, public: bytes, message: bytes) -> int:
    """k of RFC 8032 over the exact bytes SecurePool signs."""
    framed = signed_bytes(message, label=LABEL)
    return int.from_bytes(hashlib.sha512(r + public + framed).digest(), "little") % L


def _base_times(s: int) -> bytes:
    return sodium.crypto_scalarmult_ed25519_base_noclamp(_le(s))


def _secret_scalar(seed: bytes) -> int:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return int.from_bytes(h, "little")


def _refused(public: bytes, signature: bytes) -> None:
    with pytest.raises(InvalidSignature):
        verify_signature(public, MESSAGE, signature, label=LABEL)
    memo = VerifiedSignatures()
    with pytest.raises(InvalidSignature):
        verify_maybe_memo(memo, public, MESSAGE, signature, label=LABEL)
    with pytest.raises(InvalidSignature):  # a refusal is not remembered as a success
        memo.verify(public, MESSAGE, signature, label=LABEL)


def test_honest_signature_still_verifies_and_matches_rfc8032() -> None:
    """The premise of the others: the same key signs, verifies, and its bytes are the
    deterministic RFC 8032 ones (wire unchanged)."""
    key = IdentityKey.from_private_bytes(RFC_SECRET)
    sig = key.sign(MESSAGE, label=LABEL)
    verify_signature(key.public_bytes(), MESSAGE, sig, label=LABEL)
    r = sig[:32]
    s = int.from_bytes(sig[32:], "little")
    k = _challenge(r, key.public_bytes(), MESSAGE)
    a = _secret_scalar(RFC_SECRET)
    # [S]B = R + [k]A  <=>  [S - k a]B = R
    assert _base_times((s - k * a) % L) == r


def test_malleated_signature_s_plus_l_is_refused() -> None:
    """Attack: re-encode a valid signature's S as S + L (the same scalar mod L, still
    below 2^256): a second valid-looking signature of the same message. Refused: S must
    be canonical."""
    key = IdentityKey.from_private_bytes(RFC_SECRET)
    sig = key.sign(MESSAGE, label=LABEL)
    s = int.from_bytes(sig[32:], "little")
    assert s + L < 2**256
    malleated = sig[:32] + _le(s + L)
    assert malleated != sig
    _refused(key.public_bytes(), malleated)


@pytest.mark.parametrize(
    "public",
    [IDENTITY, IDENTITY_NON_CANONICAL, IDENTITY_MINUS_ZERO, ORDER_2],
    ids=["identity", "identity-y-plus-p", "identity-minus-zero", "order-2"],
)
def test_forgery_under_small_order_public_key_is_refused(public: bytes) -> None:
    """Attack: enrol a small-order point as one's identity key (or find a member that
    did). Then [k]A is a torsion point the forger predicts, and (R = [S]B, S) satisfies
    the verification equation for any message whenever [k]A is the identity: a
    signature anybody can forge, e.g. the coordinator in that member's name. OpenSSL
    accepts these (the two non-canonical encodings of the identity included); every
    one is refused here."""
    order = 2 if public == ORDER_2 else 1
    for s in range(1, 100):  # about 1 try in `order` gives [k]A = identity
        r = _base_times(s)
        if _challenge(r, public, MESSAGE) % order == 0:
            break
    else:  # pragma: no cover - 2^-99
        pytest.fail("no forgery found")
    forged = r + _le(s)
    # premise: [k]A is the identity, so R + [k]A = R = [S]B holds
    assert _challenge(r, public, MESSAGE) % order == 0 and _base_times(s) == r
    _refused(public, forged)


@pytest.mark.parametrize(
    "r", [IDENTITY, IDENTITY_NON_CANONICAL], ids=["small-order", "non-canonical"]
)
def test_a_small_order_or_non_canonical_r_is_refused(r: bytes) -> None:
    """Attack: a key holder publishes a signature whose R is the identity (nonce 0,
    S = k a), satisfying the equation but with a small-order R that a batch or
    cofactored verifier treats differently; and the same with R written non-canonically
    (y = p + 1 for y = 1: another byte string for the same point, S recomputed for the
    challenge over those bytes). Both refused."""
    key = IdentityKey.from_private_bytes(RFC_SECRET)
    a = _secret_scalar(RFC_SECRET)
    k = _challenge(r, key.public_bytes(), MESSAGE)
    s = k * a % L
    # premise: [S]B = [k]A = R + [k]A with R the identity
    assert _base_times(s) == sodium.crypto_scalarmult_ed25519_noclamp(_le(k), key.public_bytes())
    _refused(key.public_bytes(), r + _le(s))
