"""A participant's part in the statistics round (``data.scaling = "federated"``).

:class:`ScalingPart` is what a :class:`~securepool.node.app.ParticipantNode` delegates the
``scaling/*`` stages to: it computes this agency's statistics on its own training records
(before any scaling), opens the round's SecAgg+ client over them with the group taken from
the node's own PKI (:mod:`securepool.scaling_round`), and keeps the agreed
standardisation once the coordinator sends it. What must survive a restart (the rounds
answered, the standardisation) is in the node's durable state (:meth:`to_json`).

Checks done here, whatever the coordinator says: the run asks for federated scaling; each
round is answered once, ever (recorded before the advert leaves); the group is every
participant of the PKI; the standardisation has one finite mean and a positive spread
per input and is accepted once (a different one later is refused).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from crypto.errors import MessageError, SecurityViolation, StageError
from crypto.signing import IdentityKey, VerifiedSignatures
from protocols.secagg.client import SecAggClient, SessionHistory
from securepool.config import RunConfig, federated_scaling
from securepool.node.auditor import AUDITOR_ID
from securepool.preprocessing import Standardisation, magnitude_stats, moment_stats
from securepool.scaling_round import (
    JOINT_SEED,
    MAX_RECORDS,
    ROUNDS,
    ScalingRequest,
    members_of,
    round_settings,
    session_of,
)

if TYPE_CHECKING:  # torch and the datasets are imported where records are read only
    from securepool.data import LocalData

log = logging.getLogger("securepool.node")


class ScalingPart:
    """One node's statistics rounds and the standardisation it trains under."""

    def __init__(self, pid: str, cfg: RunConfig, *, n_features: int) -> None:
        self.pid = pid
        self.cfg = cfg
        self.n_features = n_features
        self.answered: set[str] = set()  # the rounds this node has sent an advert in
        self.result: Standardisation | None = None

    # --- durable state ----------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "answered": sorted(self.answered),
            "standardisation": None if self.result is None else self.result.to_json(),
        }

    def load_json(self, obj: Any) -> None:
        """From the durable state; MessageError when malformed."""
        if obj is None:
            return
        if (
            not isinstance(obj, dict)
            or set(obj) != {"answered", "standardisation"}
            or not isinstance(obj["answered"], list)
            or not set(obj["answered"]) <= set(ROUNDS)
        ):
            raise MessageError(f"{self.pid}: node state with a malformed scaling record")
        result = None
        if obj["standardisation"] is not None:
            try:
                result = Standardisation.from_json(obj["standardisation"])
            except ValueError as exc:
                raise MessageError(f"{self.pid}: node state: {exc}") from None
        self.answered, self.result = set(obj["answered"]), result

    # --- the rounds ---------------------------------------------------------------------

    def start(
        self,
        payload: bytes,
        *,
        data: LocalData,
        identity: IdentityKey,
        registry: Mapping[str, bytes],
        history: SessionHistory,
        verified: VerifiedSignatures | None,
    ) -> SecAggClient:
        """This node's SecAgg+ client of the requested round (the caller records
        :attr:`answered` durably before sending its advert); refusals are typed."""
        if not federated_scaling(self.cfg):
            raise SecurityViolation(
                f"{self.pid}: a statistics round, but this run's data.scaling is not "
                "federated: its records' statistics do not leave"
            )
        req = ScalingRequest.from_bytes(payload)
        if req.round in self.answered or self.result is not None:
            raise SecurityViolation(
                f"{self.pid}: statistics round {req.round!r} was answered before: a second "
                "sum over other survivors would isolate one agency's statistics"
            )
        if req.round == "moments" and "magnitude" not in self.answered:
            raise StageError(f"{self.pid}: the moments round before the magnitude round")
        if req.round == "moments" and len(req.exponents) != self.n_features:
            raise MessageError(
                f"{self.pid}: {len(req.exponents)} magnitudes for {self.n_features} inputs"
            )
        from securepool.data import numeric_inputs

        members = members_of(registry, auditor=AUDITOR_ID)
        x = data.x_train.numpy()
        numeric = numeric_inputs(self.cfg.data, n_features=self.n_features)
        if req.round == "magnitude":
            stats, weight = magnitude_stats(x, numeric), 1.0
        else:
            if x.shape[0] > MAX_RECORDS:
                raise StageError(
                    f"{self.pid}: {x.shape[0]} training records, the statistics' sum "
                    f"weighs at most {MAX_RECORDS} per agency"
                )
            stats, clipped = moment_stats(x, req.exponents)
            weight = float(x.shape[0])
            if clipped:
                log.warning(
                    "%s: statistics of inputs %s clipped: this agency's values are far "
                    "above the federation's typical magnitude (other units?)",
                    self.pid,
                    clipped[:10],
                )
        client = SecAggClient(
            pid=self.pid,
            session=session_of(req.round),
            identity=identity,
            directory={m: registry[m] for m in members},
            settings=round_settings(self.cfg, members=len(members)),
            update=np.asarray(stats, dtype=np.float32),
            weight=weight,
            members=members,
            joint_seed=JOINT_SEED,
            model_digest=req.digest(members),
            min_group_size=self.cfg.assignment.min_group_size,
            history=history,
            verified=verified,
        )
        self.answered.add(req.round)  # once, ever: the node saves it before replying
        return client

    def accept(self, payload: bytes) -> None:
        """The agreed standardisation: once, after both rounds, of this node's inputs."""
        if set(self.answered) != set(ROUNDS):
            raise StageError(f"{self.pid}: a standardisation before both statistics rounds")
        try:
            result = Standardisation.from_json(json.loads(payload.decode()))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise MessageError(f"{self.pid}: standardisation refused: {exc}") from None
        if result.n_features != self.n_features:
            raise MessageError(
                f"{self.pid}: a standardisation of {result.n_features} inputs, the model "
                f"has {self.n_features}"
            )
        if self.result is not None and self.result != result:
            raise SecurityViolation(
                f"{self.pid}: a second, different standardisation (it trains under the first)"
            )
        self.result = result

    def scaled(self, data: LocalData) -> LocalData:
        """``data`` under the agreed standardisation (as it is before one is agreed)."""
        if self.result is None:
            return data
        import torch

        from securepool.data import LocalData

        return LocalData(
            torch.from_numpy(self.result.apply(data.x_train.numpy())),
            data.y_train,
            torch.from_numpy(self.result.apply(data.x_test.numpy())),
            data.y_test,
        )
