"""HE mode: per-model aggregation on CKKS ciphertexts with a separate key holder.

* :mod:`.settings`     ``HESettings`` (the ``[aggregation.he]`` table)
* :mod:`.layout`       which slot holds what (weighted update, weight, tags, padding)
* :mod:`.messages`     one frozen dataclass per message, versioned wire format
* :mod:`.participant`  weight, tag, encrypt, sign
* :mod:`.coordinator`  check uploads, add ciphertexts (no key)
* :mod:`.keyholder`    the auditor: decrypts only checked aggregates
* :mod:`.fold`         the binding: one fold of each ciphertext for the trust check

Each node runs an ``HEParticipant`` (securepool/node/app.py), the coordinator the
``HECoordinator`` (securepool/coordinator/loop.py), the auditor node the ``HEKeyHolder``
(securepool/node/auditor.py).
"""

from protocols.he.coordinator import HECoordinator
from protocols.he.keyholder import HEKeyHolder
from protocols.he.participant import HEParticipant
from protocols.he.settings import HESettings

__all__ = ["HECoordinator", "HEKeyHolder", "HEParticipant", "HESettings"]
