"""Malicious participants for experiments (``[attack]``): a node that lies at the wire.

An attacker is a :class:`~securepool.node.app.ParticipantNode` subclass, built in place
of the honest node for the participants the config names (or draws), in every runtime:
it runs the same protocol code and lies exactly where a real malicious agency would, in
what it trains on and in what it sends. It knows what such an agency knows: its own
records, its own training and the public run config; not its peers' updates.
"""

from __future__ import annotations

import numpy as np

from securepool.config import RunConfig, participant_ids
from securepool.node.app import ParticipantNode


def malicious_ids(cfg: RunConfig) -> frozenset[str]:
    """The participants ``[attack]`` makes malicious: ``participants`` as listed, or
    ``round(fraction x n)`` of them drawn with the attack's ``seed``."""
    a = cfg.attack
    if not a.enabled:
        return frozenset()
    if a.participants:
        return frozenset(a.participants)
    everyone = sorted(participant_ids(cfg.data.participants))
    k = int(round(a.fraction * len(everyone)))
    rng = np.random.default_rng(a.seed)
    return frozenset(rng.choice(everyone, size=k, replace=False).tolist())


def participant_class(cfg: RunConfig, pid: str) -> type[ParticipantNode]:
    """The node class participant ``pid`` runs: an attacker's, or the honest one."""
    if pid in malicious_ids(cfg):
        return AttackerNode
    return ParticipantNode


class AttackerNode(ParticipantNode):
    """Placeholder until the attack kinds are ported (see the module docstring)."""
