"""The coordinator's part of the beacon quorum (see :mod:`protocols.quorum`).

Each train reply carries its node's endorsement of the outcome it accepted (its reply
metadata, ``endorsement``, also when the node refused to train for its budget). The
coordinator files them, and if one statement digest reaches the quorum ``q`` it relays
the certificate: to mask members with their first SecAgg+ stage, to the auditor (with
the statement) before it folds or decrypts in HE mode (the modes'
``quorum_stages``). It checks that the certified statement is the one it announced
itself: an honest coordinator then only ever relays its own outcome. Without a
certificate no group of the iteration aggregates (the nodes and the auditor would
refuse anyway); the reason names how many endorsed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from crypto.errors import SecurePoolError
from crypto.signing import VerifiedSignatures
from protocols.beacon import BeaconResult
from protocols.quorum import QuorumCollector
from securepool.config import RunConfig
from securepool.node.agreement import QuorumRule, model_hash, models_context
from securepool.node.wire import Reply


def round_models(groups: Mapping[str, NDArray[np.float32]]) -> tuple[tuple[str, bytes], ...]:
    """Every group's (model id, model hash) of one round, sorted (TrainRequest's list)."""
    return tuple(sorted((mid, model_hash(params)) for mid, params in groups.items()))


class RoundAgreement:
    """One round's endorsements, and its certificate once a quorum endorsed."""

    def __init__(
        self,
        cfg: RunConfig,
        registry: Mapping[str, bytes],
        result: BeaconResult,
        models: Sequence[tuple[str, bytes]],
        *,
        verified: VerifiedSignatures | None = None,
    ) -> None:
        self.rule = QuorumRule.of(
            registry,
            corrupt_fraction=cfg.aggregation.mask.corrupt_fraction,
            left_out_fraction=cfg.assignment.max_left_out,
        )
        self.statement = result.statement(
            universe=self.rule.universe, context=models_context(models)
        )
        self._collector = QuorumCollector(
            round_=result.iteration,
            registry=registry,
            universe=self.rule.universe,
            quorum=self.rule.quorum,
            verified=verified,
        )

    def file(self, pid: str, raw: bytes | None, *, limit: int) -> None:
        """The endorsement in one node's train reply (accepted or refused), if any."""
        if raw is None or len(raw) > limit:
            return
        try:
            hexed = Reply.from_bytes(raw).meta.get("endorsement")
            if isinstance(hexed, str):
                self._collector.add(pid, bytes.fromhex(hexed))
        except (SecurePoolError, ValueError):
            return

    def certificate(self) -> tuple[bytes | None, str]:
        """(the certificate, "") if a quorum endorsed this coordinator's statement, else
        (None, why not)."""
        rule = self.rule
        if len(self.statement.left_out) > rule.left_out:
            return None, (
                f"no quorum: the beacon left out {len(self.statement.left_out)} of "
                f"{len(rule.universe)} participants, max_left_out allows {rule.left_out}"
            )
        cert = self._collector.certificate()
        if cert is None:
            return None, (
                f"no quorum: {self._collector.endorsed} of {len(rule.universe)} participants "
                f"endorsed one outcome, {rule.quorum} needed"
            )
        digest, data = cert
        if digest != self.statement.digest():
            return None, "no quorum: the participants endorsed another outcome than announced"
        return data, ""
