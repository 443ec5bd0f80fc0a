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

Issue 13, attacks on what the trust check is told rather than on what it measures. The
participant's sealed summary is then computed from a *cover* update, not from the one it
puts into the aggregate (``UpdateAttack.summary_sources``):

* ``scaling_cover``: sends -strength x its honest update (default -5), seals the
  summary of the honest update itself
* ``backdoor_cover``: the ``backdoor`` (trigger records, boost by the group size) behind
  the summary of a synthetic honest-looking update: the benign members' mean plus their
  per-coordinate spread times N(0, 1) noise (as far from the centre as an honest update,
  so no screen sees a copy or an over-central vector); its own unboosted update when the
  group has fewer than two benign members
* ``kernel``: adds a perturbation from the kernel of the session's PUBLIC count-sketch
  projection (securepool.trust.check.public_projection_seed: known before training), so
  the sketch of what it sends equals that of its honest update to float precision; the
  perturbation is the kernel part of a sign flip, -alpha x ker(update), with alpha sized
  so the sent update's norm is ``strength`` x the group's median benign norm (default:
  0.95 x ``trust.norm_ratio``, just inside the norm rule; 3 when the rule is off). It
  seals its honest update's summary (sketch unchanged, norm within the honest spread).
  With ``trust.sketch_dim = 0`` (raw summaries) the projection has no kernel and the
  update is sent unchanged.

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
    SCALING_COVER = "scaling_cover"  # -strength x update, summary of the honest update
    BACKDOOR_COVER = "backdoor_cover"  # backdoor, summary of a synthetic honest-looking one
    KERNEL = "kernel"  # + a perturbation the public sketch cannot see, honest summary


#: attacks whose sealed summary is computed from a cover update, not from what is sent
COVER_KINDS = frozenset({AttackKind.SCALING_COVER, AttackKind.BACKDOOR_COVER, AttackKind.KERNEL})
#: attacks that poison the training data (the backdoor's triggered records, label flips)
DATA_KINDS = frozenset({AttackKind.LABEL_FLIP, AttackKind.BACKDOOR, AttackKind.BACKDOOR_COVER})


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
    AttackKind.SCALING_COVER: 5.0,  # sent: -5 x the honest update
    AttackKind.BACKDOOR_COVER: 0.0,  # 0: boost by the group size
    AttackKind.KERNEL: 0.0,  # 0: sent norm 0.95 x trust.norm_ratio x median benign norm
}


@dataclass(frozen=True)
class PublicSketch:
    """What every participant knows of the trust check's projection before it trains:
    the run seed it is derived from, the sketch size, and the norm rule's ratio."""

    run_seed: int
    dim: int
    norm_ratio: float

    def projection(self, d: int, session: str) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        from protocols.summaries import sketch_projection
        from securepool.trust.check import public_projection_seed

        return sketch_projection(
            d, dim=self.dim, seed=public_projection_seed(self.run_seed, session)
        )


def kernel_part(
    x: NDArray[np.float64], buckets: NDArray[np.int64], signs: NDArray[np.float64], dim: int
) -> NDArray[np.float64]:
    """The component of ``x`` in the kernel of the count-sketch (buckets, signs).

    Each bucket's sketch entry is <s_b, x_b> over its coordinates; the row space is
    spanned by the per-bucket sign vectors, so removing x's projection onto each of them
    leaves a vector whose every bucket sums to 0.
    """
    signed = np.bincount(buckets, weights=signs * x, minlength=dim)
    count = np.maximum(np.bincount(buckets, minlength=dim), 1)
    return np.asarray(x - signs * (signed / count)[buckets], dtype=np.float64)


def kernel_poison(
    own: NDArray[np.float32],
    *,
    buckets: NDArray[np.int64],
    signs: NDArray[np.float64],
    dim: int,
    target_norm: float,
) -> NDArray[np.float32]:
    """``own - alpha x ker(own)``: the same sketch as ``own``, norm ``target_norm`` (or a
    plain kernel sign flip, alpha = 2, when the target is below what the row space holds).

    With own = r + k (row space + kernel, orthogonal), ||r + (1 - alpha) k|| = target
    gives alpha = 1 + sqrt((target^2 - ||r||^2) / ||k||^2).
    """
    x = own.astype(np.float64)
    k = kernel_part(x, buckets, signs, dim)
    kk = float(k @ k)
    if kk == 0.0:
        return own.copy()
    rr = float(np.sum((x - k) ** 2))
    alpha = 1.0 + float(np.sqrt(max(target_norm**2 - rr, kk) / kk))
    return np.asarray(x - alpha * k, dtype=np.float32)


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

    def __init__(
        self,
        config: AttackConfig,
        *,
        participants: list[str],
        sketch: PublicSketch | None = None,
    ) -> None:
        if config.kind is AttackKind.KERNEL and sketch is None:
            raise ValueError("the kernel attack needs the public sketch (PublicSketch)")
        self.config = config
        self.sketch = sketch
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
        if kind not in DATA_KINDS:
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
        self,
        *,
        model_id: str,
        updates: Mapping[str, NDArray[np.float32]],
        group_size: int,
        session: str | None = None,
    ) -> dict[str, NDArray[np.float32]]:
        """The updates as sent; ``session`` names the projection the kernel attack targets."""
        kind = self.config.kind
        if kind is AttackKind.LABEL_FLIP:
            return dict(updates)  # already poisoned through the data
        bad = [p for p in updates if p in self.malicious]
        benign = [u for p, u in updates.items() if p not in self.malicious]
        if kind in (AttackKind.BACKDOOR, AttackKind.BACKDOOR_COVER):
            boost = self.config.strength or float(group_size)
            return {
                p: (boost * u).astype(np.float32) if p in self.malicious else u
                for p, u in updates.items()
            }
        out = dict(updates)
        if kind is AttackKind.SCALING_COVER:
            s = self.config.strength or DEFAULT_STRENGTH[kind]
            return {**out, **{p: (-s * updates[p]).astype(np.float32) for p in bad}}
        if kind is AttackKind.KERNEL:
            assert self.sketch is not None  # checked in __init__
            if session is None:
                raise ValueError("the kernel attack needs the session (its projection)")
            if self.sketch.dim == 0 or not bad:
                return out  # raw summaries: no kernel to hide in
            d = next(iter(updates.values())).size
            buckets, signs = self.sketch.projection(d, session)
            ref = benign or [updates[p] for p in bad]
            median = float(np.median([np.linalg.norm(u.astype(np.float64)) for u in ref]))
            mult = self.config.strength or (
                0.95 * self.sketch.norm_ratio if self.sketch.norm_ratio > 0 else 3.0
            )
            for p in bad:
                out[p] = kernel_poison(
                    updates[p],
                    buckets=buckets,
                    signs=signs,
                    dim=self.sketch.dim,
                    target_norm=mult * median,
                )
            return out
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

    def summary_sources(
        self,
        *,
        honest: Mapping[str, NDArray[np.float32]],
        sent: Mapping[str, NDArray[np.float32]],
    ) -> dict[str, NDArray[np.float32]]:
        """The update each participant's sealed summary is computed from, given the
        trained updates (``honest``, before :meth:`poison`) and what :meth:`poison` made of
        them (``sent``): for the cover attacks a malicious participant's cover, for
        everyone else what it sends."""
        if self.config.kind not in COVER_KINDS:
            return dict(sent)
        bad = [p for p in sent if p in self.malicious]
        benign = [u for p, u in honest.items() if p not in self.malicious]
        return {**sent, **self._covers(honest, bad, benign)}

    def _covers(
        self,
        honest: Mapping[str, NDArray[np.float32]],
        bad: list[str],
        benign: list[NDArray[np.float32]],
    ) -> dict[str, NDArray[np.float32]]:
        if self.config.kind is AttackKind.BACKDOOR_COVER and len(benign) >= 2:
            ref = np.stack(benign).astype(np.float64)
            mean, std = ref.mean(axis=0), ref.std(axis=0)
            return {
                p: (mean + std * self._rng.standard_normal(mean.shape)).astype(np.float32)
                for p in bad
            }
        return {p: honest[p] for p in bad}  # its trained (honest, or unboosted) update

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
