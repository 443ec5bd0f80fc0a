"""AuditorNode: the auditor's side of every stage, as a NodeApp (HE mode's key holder).

The auditor holds what only it may hold: its identity key, the CKKS secret key and the
sealbox key of HE mode, and the set of sessions it has decrypted. It is reached through
the coordinator like any node; what it receives and sends is signed or checked end to
end (:class:`protocols.he.keyholder.HEKeyHolder`): it signs its context offer, and it
decrypts only a per-group aggregate whose contribution tags match the receipts signed by
at least ``min_group_size`` participants of the PKI, once per session.

Its keys live in its own state directory, owner-only (``ckks.secret``, ``sealbox.key``,
``spent.json``; the identity key from ``securepool keygen``), so an auditor that lives
one message at a time (Flower) and a restarted one keep the same keys, and a session
decrypted once stays refused after a restart. The CKKS key pair is created on the
auditor's first start.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path

from crypto.agreement import AgreementKey
from crypto.ckks.context import SecretCKKSContext
from crypto.errors import SecurePoolError, StageError
from crypto.signing import IdentityKey
from protocols.he.keyholder import HEKeyHolder
from protocols.he.settings import HESettings
from securepool.node.wire import (
    NodeStage,
    Reply,
    decode_bundle,
    pack_list,
    refusal,
    unpack_list,
)
from securepool.outputs import write_private

AUDITOR_ID = "auditor"
#: the session the auditor's context offer is signed for (one offer per deployment)
HE_SETUP_SESSION = "he-setup"
SECRET_FILE = "ckks.secret"
SEALBOX_FILE = "sealbox.key"
SPENT_FILE = "spent.json"


def load_keyholder(
    settings: HESettings,
    *,
    state_dir: Path,
    identity: IdentityKey,
    registry: Mapping[str, bytes],
) -> tuple[HEKeyHolder, set[str]]:
    """The auditor's key holder from its state directory (keys created on first use)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    secret_path, sealbox_path = state_dir / SECRET_FILE, state_dir / SEALBOX_FILE
    if secret_path.exists() and sealbox_path.exists():
        secret = SecretCKKSContext.from_secret_bytes(
            secret_path.read_bytes(), params=settings.params
        )
        sealbox = AgreementKey.from_private_bytes(sealbox_path.read_bytes())
    else:
        secret = SecretCKKSContext.generate(settings.params)
        sealbox = AgreementKey.generate()
        write_private(sealbox_path, sealbox.private_bytes())
        write_private(secret_path, secret.export_secret())
    spent_path = state_dir / SPENT_FILE
    spent = set(json.loads(spent_path.read_text())) if spent_path.exists() else set()
    holder = HEKeyHolder.from_keys(
        settings,
        identity=identity,
        secret=secret,
        sealbox=sealbox,
        registry={p: k for p, k in registry.items() if p != AUDITOR_ID},
        spent=spent,
    )
    return holder, spent


class AuditorNode:
    """The auditor's NodeApp (see the module docstring)."""

    def __init__(
        self,
        *,
        settings: HESettings,
        identity: IdentityKey,
        registry: Mapping[str, bytes] | Callable[[], Mapping[str, bytes]],
        state_dir: Path,
    ) -> None:
        self._settings = settings
        self._identity = identity
        self._registry_source = registry
        self._state_dir = Path(state_dir)
        self._holder: HEKeyHolder | None = None
        self._spent: set[str] = set()

    def _keyholder(self) -> HEKeyHolder:
        if self._holder is None:
            src = self._registry_source
            registry = src() if callable(src) else src
            self._holder, self._spent = load_keyholder(
                self._settings,
                state_dir=self._state_dir,
                identity=self._identity,
                registry=registry,
            )
        return self._holder

    def handle(self, stage: str, payload: bytes) -> bytes:
        """Answer one stage; a refusal is a typed reply, never an exception."""
        try:
            return self._dispatch(stage, payload).to_bytes()
        except SecurePoolError as exc:
            return refusal(exc)

    def _dispatch(self, stage: str, payload: bytes) -> Reply:
        if stage == NodeStage.BUNDLE.value:
            replies = [self.handle(st, part) for st, part in decode_bundle(payload)]
            return Reply(True, pack_list(replies))
        if stage == NodeStage.HELLO.value:
            return Reply(True, self._identity.public_bytes(), {"participant": AUDITOR_ID})
        if stage == NodeStage.HE_OFFER.value:
            return Reply(True, self._keyholder().context_offer(session=HE_SETUP_SESSION))
        if stage == NodeStage.HE_DECRYPT.value:
            return Reply(True, self._decrypt_all(payload))
        raise StageError(f"the auditor does not answer stage {stage!r}")

    def _decrypt_all(self, payload: bytes) -> bytes:
        """Each group's DecryptRequest in turn: its release, or a refusal for it alone."""
        holder = self._keyholder()
        out = []
        for request in unpack_list(payload, what="decrypt requests"):
            try:
                out.append(Reply(True, holder.decrypt_aggregate(request)).to_bytes())
            except SecurePoolError as exc:
                out.append(refusal(exc))
            finally:  # a decrypted (or refused) session is spent, across restarts too
                write_private(
                    self._state_dir / SPENT_FILE, json.dumps(sorted(self._spent)).encode()
                )
        return pack_list(out)
