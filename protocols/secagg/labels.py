"""Labels and signs of the pairwise masks, shared by clients, unmasking and binding."""

from __future__ import annotations

from crypto.encoding import bind

DOMAIN = b"securepool/secagg/v2/"
SELF_MASK_LABEL = b"secagg/selfmask"
PAIR_MASK_LABEL = b"secagg/pairmask"


def mask_label(session: str, u: str, v: str) -> bytes:
    """HKDF label of the pairwise mask seed of u and v (order-independent)."""
    lo, hi = sorted((u, v))
    return bind(DOMAIN + b"pairmask", session, lo, hi)


def pair_sign(u: str, v: str) -> int:
    """+1 if u adds the mask it shares with v, -1 if it subtracts it."""
    return 1 if u < v else -1


#: the model digest field of an advert made in advance (protocols.secagg.prekeys): the
#: digest is signed in ShareKeys instead
NO_DIGEST = bytes(32)


def prekey_label(round_: int) -> str:
    """The label adverts made in advance for beacon round ``round_`` are signed under
    (never a session name: a pool session is ``it<round>/<model>``)."""
    if not isinstance(round_, int) or isinstance(round_, bool) or round_ < 1:
        raise ValueError(f"a beacon round must be an integer >= 1, got {round_!r}")
    return f"keys-r{round_}"
