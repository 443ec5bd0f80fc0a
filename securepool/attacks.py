"""Model-poisoning attacks for experiments (the ``[attack]`` section).

The participants the section names (or draws, see
:func:`securepool.node.attacker.malicious_ids`) run
:class:`securepool.node.attacker.AttackerNode` instead of the honest node, in every
runtime: a node that lies at the wire, where a real malicious agency would, knowing
only what such an agency knows: its own records, its own training, the public run
config (so the run seed and the PUBLIC sketch projection of each session,
:func:`securepool.trust.check.public_projection_seed`), the global model it is sent
and the members of its group. It never sees a peer's update: every benign statistic
an attack needs is estimated from its own honest training (its honest update and,
where a spread is needed, :data:`BOOTSTRAPS` extra honest trainings on bootstrap
resamples of its own records). The weight it sends is the honest one (1 under
equal weighting, its clean record count under ``records``) except under
``weight_inflation``. What it sends instead of its honest update ``u``:

* ``sign_flip``:  -strength x u
* ``scaling``:    strength x u (a boosting attack)
* ``gaussian_noise``: N(0, strength^2) per coordinate instead of the update
* ``alie``: "A Little Is Enough" (Baruch et al. 2019): mean + z x std per coordinate
  of its own sample (u and the bootstrap trainings), z = :func:`alie_z` (group size,
  one attacker: it knows of no other) or ``strength`` if > 0
* ``ipm``: inner-product manipulation (Xie et al. 2019): -strength x u, its estimate
  of the benign mean

* ``label_flip``: data poisoning: it trains honestly on labels y -> (classes - 1 - y)
* ``backdoor``: model replacement (Bagdasaryan et al. 2020): half of its records get a
  2x2 trigger and the target label 0 (added to its records); its update is then
  boosted by its group size (``strength`` overrides), to replace the global model

Issue 13, attacks on what the trust check is told rather than on what it measures: the
summary the check gets comes from a *cover* update, not from the one the node puts into
the aggregate. In mask mode the binding report's sketch is the cover's
(:class:`securepool.node.attacker.CoverClient`); in plaintext mode (the coordinator
summarises the update it received) and HE mode (the auditor folds the ciphertexts
themselves) a participant tells no summary, so the poisoned update is sent and judged,
and the cover is moot.

* ``scaling_cover``: sends -strength x u (default -5), its summary is of u itself
* ``backdoor_cover``: the ``backdoor`` (trigger records, boost by the group size)
  behind the summary of an honest update trained on its clean records (the update the
  honest node would have sent)
* ``kernel``: adds a perturbation from the kernel of the session's PUBLIC count-sketch
  projection (known before training), so the sketch of what it sends under that
  projection equals that of u to float precision; the perturbation is the kernel part
  of a sign flip, -alpha x ker(u), with alpha sized so the sent update's norm is
  ``strength`` x its estimate of the median benign norm, ||u|| (default: 0.95 x
  ``trust.norm_ratio``, just inside the norm rule; 3 when the rule is off). In mask
  mode its binding report is of u. No mode judges the public projection: each draws
  its own after every input is fixed, under which the perturbation shows. With
  ``trust.sketch_dim = 0`` (raw summaries) the projection has no kernel and u is sent
  unchanged.

Issue 22, a lie about the weight rather than the update:

* ``weight_inflation``: trains on the backdoor's records (half of its records again
  with the trigger and the target label), sends that update as trained (honest size,
  truthful summary) and claims a weight of ``strength`` records (default 1024; an honest
  digits participant has about 57). Under ``aggregation.weighting = "records"`` nobody
  can check the claim; under ``equal`` (the default) whoever sees the weight refuses it.

Under the validation vote every attacker also stuffs its ballot: it gives a colluding
peer of its group the best score (:meth:`securepool.node.attacker.AttackerNode.score_candidates`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import Enum
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

if TYPE_CHECKING:  # securepool.data imports the config, which imports this module
    from securepool.data import LocalData


class AttackKind(str, Enum):
    SIGN_FLIP = "sign_flip"
    SCALING = "scaling"
    GAUSSIAN_NOISE = "gaussian_noise"
    ALIE = "alie"
    IPM = "ipm"
    LABEL_FLIP = "label_flip"  # data poisoning: label y becomes (classes - 1 - y)
    BACKDOOR = "backdoor"  # model replacement (Bagdasaryan et al. 2020): trigger + boost
    SCALING_COVER = "scaling_cover"  # -strength x update, summary of the honest update
    BACKDOOR_COVER = "backdoor_cover"  # backdoor, summary of its clean-data update
    KERNEL = "kernel"  # + a perturbation the public sketch cannot see, honest summary
    #: issue 22: the backdoor's records, no boost, an honest-sized update, and a claimed
    #: weight of ``strength`` records (default 1024) to own its group's mean
    WEIGHT_INFLATION = "weight_inflation"
    #: issue 22: an honest input, and a mask-mode binding report that leaves out the
    #: seed towards every neighbour (its masks folded into r): the dispute it used to
    #: open excluded every honest neighbour without blaming it
    SEED_OMISSION = "seed_omission"


#: attacks whose summary (mask mode: binding report) is of a cover, not of what is sent
COVER_KINDS = frozenset({AttackKind.SCALING_COVER, AttackKind.BACKDOOR_COVER, AttackKind.KERNEL})
#: attacks that poison the training data (the backdoor's triggered records, label flips)
DATA_KINDS = frozenset(
    {
        AttackKind.LABEL_FLIP,
        AttackKind.BACKDOOR,
        AttackKind.BACKDOOR_COVER,
        AttackKind.WEIGHT_INFLATION,
    }
)
#: the attacks whose success is a backdoor's (the runner measures it on the holdout)
BACKDOOR_KINDS = frozenset(
    {AttackKind.BACKDOOR, AttackKind.BACKDOOR_COVER, AttackKind.WEIGHT_INFLATION}
)
#: extra honest trainings (on bootstrap resamples of its own records) an attacker runs to
#: estimate the benign spread ALIE needs: few, as a real agency's compute budget allows
BOOTSTRAPS = 3


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
    AttackKind.WEIGHT_INFLATION: 1024.0,  # the claimed weight (records)
    AttackKind.SEED_OMISSION: 0.0,  # no strength: every neighbour's seed is left out
}


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


def poison_local_data(kind: AttackKind, data: LocalData, *, n_classes: int) -> LocalData:
    """A malicious participant's own records as it trains on them: labels flipped
    (``label_flip``), or half of its records again with the trigger and the target
    label added (the backdoors); any other kind's records unchanged."""
    if kind is AttackKind.LABEL_FLIP:
        return dataclasses.replace(data, y_train=(n_classes - 1) - data.y_train)
    if kind not in BACKDOOR_KINDS:
        return data
    import torch

    half = data.x_train[: max(1, data.n_train // 2)]
    target = torch.full((half.shape[0],), BACKDOOR_TARGET, dtype=data.y_train.dtype)
    return dataclasses.replace(
        data,
        x_train=torch.cat([data.x_train, add_trigger(half)]),
        y_train=torch.cat([data.y_train, target]),
    )


def alie_update(sample: list[NDArray[np.float32]], z: float) -> NDArray[np.float32]:
    """ALIE's update from an estimate of the benign updates: mean + z x std per
    coordinate of ``sample``."""
    ref = np.stack(sample).astype(np.float64)
    return np.asarray(ref.mean(axis=0) + z * ref.std(axis=0), dtype=np.float32)


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
