"""Model-poisoning attacks for experiments (the ``[attack]`` section).

Chosen participants replace their honest update before it enters the aggregation:

* ``sign_flip``:  -strength x update
* ``scaling``:    strength x update (a boosting attack)
* ``gaussian_noise``: N(0, strength^2) per coordinate instead of the update
* ``alie``: "A Little Is Enough" (Baruch et al. 2019): mean + z x std of the group's
  benign updates per coordinate, z from the paper's formula (or ``strength`` if > 0)
* ``ipm``: inner-product manipulation (Xie et al. 2019): -strength x mean of benign

* ``label_flip``: data poisoning: the malicious participants train honestly on labels
  y -> (classes - 1 - y)
* ``backdoor``: model replacement (Bagdasaryan et al. 2020): half of each malicious
  participant's records get a 2x2 trigger and the target label 0; its update is then
  boosted by the group size (``strength`` overrides), to replace the global model

The attacker is omniscient (sees the benign updates of its group), the strongest case.
Under the validation vote the malicious participants also stuff their ballots: each
scores a malicious peer best.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # securepool.data imports the config, which imports this module
    from securepool.data import FederatedData


class AttackKind(str, Enum):
    SIGN_FLIP = "sign_flip"
    SCALING = "scaling"
    GAUSSIAN_NOISE = "gaussian_noise"
    ALIE = "alie"
    IPM = "ipm"
    LABEL_FLIP = "label_flip"  # data poisoning: label y becomes (classes - 1 - y)
    BACKDOOR = "backdoor"  # model replacement (Bagdasaryan et al. 2020): trigger + boost


@dataclass(frozen=True)
class AttackConfig:
    enabled: bool = False
    kind: AttackKind = AttackKind.SIGN_FLIP
    fraction: float = 0.2  # of all participants, chosen with `seed`
    participants: tuple[str, ...] = ()  # explicit ids instead of a fraction
    strength: float = 0.0  # 0: the attack's default
    seed: int = 0

    def problems(self) -> list[str]:
        from securepool.config_loader import check_float

        out = check_float("fraction", self.fraction, ge=0, lt=1)
        out += check_float("strength", self.strength, ge=0)
        if self.seed < 0:
            out.append(f"seed must be >= 0, got {self.seed}")
        dupes = sorted({p for p in self.participants if self.participants.count(p) > 1})
        if dupes:
            out.append(f"participants listed twice: {', '.join(dupes)}")
        return out


DEFAULT_STRENGTH = {
    AttackKind.SIGN_FLIP: 1.0,
    AttackKind.SCALING: 10.0,
    AttackKind.GAUSSIAN_NOISE: 1.0,
    AttackKind.ALIE: 0.0,  # 0: z from the paper
    AttackKind.IPM: 0.5,
    AttackKind.LABEL_FLIP: 1.0,
    AttackKind.BACKDOOR: 0.0,  # 0: boost by the group size (model replacement)
}

#: The backdoor trigger: the top-left 2x2 pixels of an 8x8 digit set to full intensity.
TRIGGER_PIXELS = (0, 1, 8, 9)
BACKDOOR_TARGET = 0


def add_trigger(x: NDArray[np.float32] | Any) -> Any:
    """Stamp the trigger on a batch of flattened 8x8 images (numpy or torch)."""
    out = x.clone() if hasattr(x, "clone") else x.copy()
    out[:, list(TRIGGER_PIXELS)] = 1.0
    return out


def backdoor_success(model: Any, x: Any, y: Any) -> float:
    """Share of non-target test images that the trigger turns into the target class."""
    import torch

    keep = y != BACKDOOR_TARGET
    if int(keep.sum()) == 0:
        return 0.0
    model.eval()
    with torch.no_grad():
        pred = model(add_trigger(x[keep])).argmax(dim=1)
    return float((pred == BACKDOOR_TARGET).float().mean())


def alie_z(n: int, m: int) -> float:
    """Baruch et al.: s = floor(n/2 + 1) - m supporters needed; z = Phi^-1((n - s) / n)."""
    s = n // 2 + 1 - m
    p = min(max((n - s) / n, 1e-6), 1 - 1e-6)
    return NormalDist().inv_cdf(p)


def poison(
    kind: AttackKind,
    *,
    own: NDArray[np.float32],
    benign: list[NDArray[np.float32]],
    n: int,
    m: int,
    strength: float,
    rng: np.random.Generator,
) -> NDArray[np.float32]:
    s = strength or DEFAULT_STRENGTH[kind]
    ref = np.stack(benign) if benign else own[None, :]
    if kind is AttackKind.SIGN_FLIP:
        out = -s * own
    elif kind is AttackKind.SCALING:
        out = s * own
    elif kind is AttackKind.GAUSSIAN_NOISE:
        out = rng.normal(0.0, s, size=own.shape)
    elif kind is AttackKind.ALIE:
        z = strength or alie_z(n, m)
        out = ref.mean(axis=0) + z * ref.std(axis=0)
    else:
        out = -s * ref.mean(axis=0)
    return np.asarray(out, dtype=np.float32)


class UpdateAttack:
    """The loop's AttackHooks: poisons the malicious participants' updates."""

    def __init__(self, config: AttackConfig, *, participants: list[str]) -> None:
        self.config = config
        if config.participants:
            chosen = set(config.participants)
        else:
            rng = np.random.default_rng(config.seed)
            k = int(round(config.fraction * len(participants)))
            chosen = set(rng.choice(participants, size=k, replace=False).tolist())
        self.malicious = frozenset(chosen)
        self._rng = np.random.default_rng(config.seed + 1)

    def poison_data(self, data: FederatedData) -> FederatedData:
        """Label flipping and the backdoor's triggered records happen in the data."""
        kind = self.config.kind
        if kind not in (AttackKind.LABEL_FLIP, AttackKind.BACKDOOR):
            return data
        out = {}
        for pid, d in data.participants.items():
            if pid not in self.malicious:
                out[pid] = d
            elif kind is AttackKind.LABEL_FLIP:
                out[pid] = dataclasses.replace(d, y_train=(data.n_classes - 1) - d.y_train)
            else:
                import torch

                half = d.x_train[: max(1, d.n_train // 2)]
                target = torch.full((half.shape[0],), BACKDOOR_TARGET, dtype=d.y_train.dtype)
                out[pid] = dataclasses.replace(
                    d,
                    x_train=torch.cat([d.x_train, add_trigger(half)]),
                    y_train=torch.cat([d.y_train, target]),
                )
        return dataclasses.replace(data, participants=out)

    def poison(
        self, *, model_id: str, updates: Mapping[str, NDArray[np.float32]], group_size: int
    ) -> dict[str, NDArray[np.float32]]:
        if self.config.kind is AttackKind.LABEL_FLIP:
            return dict(updates)  # already poisoned through the data
        if self.config.kind is AttackKind.BACKDOOR:
            boost = self.config.strength or float(group_size)
            return {
                p: (boost * u).astype(np.float32) if p in self.malicious else u
                for p, u in updates.items()
            }
        bad = [p for p in updates if p in self.malicious]
        benign = [u for p, u in updates.items() if p not in self.malicious]
        out = dict(updates)
        for p in bad:
            out[p] = poison(
                self.config.kind,
                own=updates[p],
                benign=benign,
                n=group_size,
                m=len(bad),
                strength=self.config.strength,
                rng=self._rng,
            )
        return out

    def poison_ballots(
        self, ballots: Mapping[str, Mapping[str, float]]
    ) -> dict[str, dict[str, float]]:
        """Validation vote: every malicious voter gives its best score to a malicious
        peer of the group (the first by name), the collusion a vote invites."""
        out = {v: dict(b) for v, b in ballots.items()}
        for voter, ballot in out.items():
            if voter not in self.malicious:
                continue
            peers = sorted(c for c in ballot if c in self.malicious and c != voter)
            if peers:
                ballot[peers[0]] = min(ballot.values()) - 1.0
        return out
