"""Snapshots of a participant's beacon and SecAgg+ state machines (see protocols.snapshot).

What a snapshot never holds, and the caller puts back: the identity key, the PKI, the
nonce source (beacon), the session history and the mask settings (SecAgg+).

Security: the bytes hold the session's secrets; see :mod:`protocols.snapshot`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from crypto.errors import MessageError, SecurityViolation
from crypto.fixedpoint import FixedPointSpec
from crypto.signing import IdentityKey
from protocols.beacon import BeaconParticipant, BeaconStart, Commit, os_nonces
from protocols.beacon import Stage as BeaconStage
from protocols.secagg.binding import BindingKeys, MaskVerdict
from protocols.secagg.client import ClientStage, SecAggClient, SessionHistory
from protocols.secagg.graph import SessionParameters
from protocols.secagg.settings import MaskSettings
from protocols.secagg.stepped import StepRule
from protocols.snapshot import restore, snapshot

_BEACON_OWN = ("identity", "_registry", "_nonce_source", "_verified")
_SECAGG_OWN = ("_identity", "_history", "_settings")
_SECAGG_CLASSES = (SessionParameters, FixedPointSpec, BindingKeys, MaskVerdict, StepRule)


def snapshot_beacon(beacon: BeaconParticipant) -> bytes:
    return snapshot(beacon, omit=_BEACON_OWN, enums=(BeaconStage,), messages=(BeaconStart, Commit))


def restore_beacon(
    data: bytes,
    *,
    identity: IdentityKey,
    registry: Mapping[str, bytes],
    nonce_source: Callable[[int], bytes] | None,
) -> BeaconParticipant:
    return restore(
        BeaconParticipant,
        data,
        inject={
            "identity": identity,
            "_registry": registry,
            "_verified": None,
            "_nonce_source": nonce_source or os_nonces,
        },
        enums=(BeaconStage,),
        messages=(BeaconStart, Commit),
    )


def snapshot_secagg(client: SecAggClient) -> bytes:
    return snapshot(client, omit=_SECAGG_OWN, enums=(ClientStage,), classes=_SECAGG_CLASSES)


def restore_secagg(
    data: bytes,
    *,
    identity: IdentityKey,
    history: SessionHistory,
    settings: MaskSettings,
    cls: type[SecAggClient] = SecAggClient,
) -> SecAggClient:
    """A snapshot of a ``cls`` (SecAggClient, or a subclass that adds snapshot-safe
    attributes of its own) rebuilt with the caller's identity, history and settings."""
    client = restore(
        cls,
        data,
        inject={"_identity": identity, "_history": history, "_settings": settings},
        enums=(ClientStage,),
        classes=_SECAGG_CLASSES,
    )
    try:
        own = client._directory.get(client.pid)
    except (AttributeError, TypeError):
        raise MessageError("snapshot: a SecAgg+ client with no key directory") from None
    if client._identity.public_bytes() != own:
        raise SecurityViolation(f"{client.pid}: the session snapshot is not this node's")
    return client
