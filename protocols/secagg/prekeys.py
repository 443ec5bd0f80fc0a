"""SecAgg+ keys advertised one exchange in advance, so that a session's key directory
rides on the exchange that asks for training (one round trip fewer per iteration).

A participant makes a fresh pair of X25519 keys for beacon round ``r`` when it reveals
its beacon nonce for that round (the coordinator asks for both in one exchange) and
signs them, with its identity key, under the label ``keys-r<r>``
(:func:`prekey_label`), not under a session: the round's groups are not drawn yet. When
the round's outcome is known, the coordinator builds each group's key directory from its
members' adverts and sends it with the train request; the member shares its keys with
its neighbours in the same exchange.

What moves, and why it is still checked in time:

* the model digest is no longer in the advert (the model is not chosen yet): the member
  signs it in its ShareKeys, the coordinator forwards every sharer's signed digest with
  the share delivery, and a member sends its masked input only if every one equals its
  own (:class:`~protocols.secagg.client.SecAggClient`). Nothing derived from its data
  has left before that check: ShareKeys holds only shares of fresh keys;
* the quorum certificate on the round's outcome is required before the masked input
  (the node's rule) instead of before ShareKeys: shares of fresh keys given to the
  members of an equivocated outcome protect nothing that is ever sent.

Security: the keys are single-use: bound to one beacon round (a node makes one pair per
round it reveals in and uses it for the one group that round puts it in; its session
history refuses any earlier iteration), signed so that the coordinator cannot substitute
its own, and kept with the node's other session secrets (never in a message).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crypto.agreement import AgreementKey
from crypto.errors import MessageError
from crypto.signing import IdentityKey
from protocols.secagg.client import LABEL_ADVERTISE, advertise_payload
from protocols.secagg.labels import NO_DIGEST, prekey_label
from protocols.secagg.messages import AdvertiseKeys, encode_message


@dataclass
class PreKeys:
    """A participant's key pair for the SecAgg+ session of one beacon round."""

    round: int
    c: AgreementKey
    s: AgreementKey

    @classmethod
    def generate(cls, round_: int) -> PreKeys:
        try:
            prekey_label(round_)
        except ValueError as exc:
            raise MessageError(str(exc)) from None
        return cls(round_, AgreementKey.generate(), AgreementKey.generate())

    def advert(self, pid: str, identity: IdentityKey) -> bytes:
        """The signed AdvertiseKeys of these keys (model digest :data:`NO_DIGEST`)."""
        label = prekey_label(self.round)
        c_pk, s_pk = self.c.public_bytes(), self.s.public_bytes()
        sig = identity.sign(
            advertise_payload(label, pid, c_pk, s_pk, NO_DIGEST), label=LABEL_ADVERTISE
        )
        return encode_message(AdvertiseKeys(label, pid, c_pk, s_pk, NO_DIGEST, sig))

    def to_json(self) -> dict[str, Any]:
        """For the node's session file (authenticated, owner-only): the private keys."""
        return {
            "round": self.round,
            "c": self.c.private_bytes().hex(),
            "s": self.s.private_bytes().hex(),
        }

    @classmethod
    def from_json(cls, doc: Any) -> PreKeys:
        try:
            return cls(
                int(doc["round"]),
                AgreementKey.from_private_bytes(bytes.fromhex(doc["c"])),
                AgreementKey.from_private_bytes(bytes.fromhex(doc["s"])),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MessageError(f"advance keys: a malformed record ({exc})") from None


__all__ = ["NO_DIGEST", "PreKeys", "prekey_label"]
