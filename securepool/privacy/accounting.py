"""Per-participant RDP accounting of the Poisson-sampled Gaussian mechanism.

In the random pool a participant trains only in the iterations it is assigned to, and
possibly on different pool models; every one of those local runs is a sampled Gaussian
mechanism over the same records, so all of them compose. A :class:`PrivacyLedger` keeps,
per participant, the list of (noise multiplier, sample rate, steps) it ran and converts
the composed RDP curve to (epsilon, delta) (Balle et al. 2020 conversion, as Opacus).
The math is Opacus' ``accountants.analysis.rdp``; the ledger is plain JSON.

The neighbouring relation is :data:`NEIGHBOURING_RELATION`: two datasets of one
participant are neighbours when one is the other with one record added or removed. That
bound protects a record only if the participant's record count stays hidden, so the
local schedule (sample rate, steps, noise multiplier, the divisor of the noised sum) is
public (:class:`securepool.privacy.config.PrivacyConfig`) and nothing a participant sends
depends on its count except through the noised gradients. Where the count is known from
elsewhere (a built-in dataset's split follows from the public seed), the relation that
matters is replacing one record, which two add/remove steps bound (group privacy:
``2 * epsilon`` at ``delta * (1 + e^epsilon)``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import NDArray
from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

NEIGHBOURING_RELATION = (
    "add or remove one record of one participant; record counts hidden (public schedule: "
    "privacy.sample_rate, privacy.steps and the noise multiplier from the config alone)"
)

ORDERS: list[float] = [1 + x / 10.0 for x in range(1, 100)] + [float(x) for x in range(12, 64)]


@lru_cache(maxsize=4096)
def _rdp_one_step(q: float, sigma: float) -> NDArray[np.float64]:
    """The RDP curve of one step (compute_rdp is linear in steps): cached, because a
    participant repeats the same (q, sigma) every round and the fractional orders are
    slow to evaluate."""
    curve = np.asarray(compute_rdp(q=q, noise_multiplier=sigma, steps=1, orders=ORDERS))
    curve.setflags(write=False)
    return curve


def epsilon_of(history: list[tuple[float, float, int]], *, delta: float) -> float:
    """Epsilon after composing every (sigma, q, steps) in ``history``."""
    if not history:
        return 0.0
    rdp = np.zeros(len(ORDERS))
    for sigma, q, steps in history:
        rdp = rdp + _rdp_one_step(float(q), float(sigma)) * steps
    eps, _ = get_privacy_spent(orders=ORDERS, rdp=rdp.tolist(), delta=delta)
    return float(eps)


@dataclass
class ParticipantAccount:
    history: list[tuple[float, float, int]] = field(default_factory=list)
    iterations: int = 0
    skipped: int = 0

    @property
    def steps(self) -> int:
        return sum(s for _, _, s in self.history)


@dataclass
class PrivacyLedger:
    delta: float
    accounts: dict[str, ParticipantAccount] = field(default_factory=dict)

    def account(self, pid: str) -> ParticipantAccount:
        return self.accounts.setdefault(pid, ParticipantAccount())

    def epsilon(self, pid: str, *, extra: tuple[float, float, int] | None = None) -> float:
        history = list(self.account(pid).history)
        if extra is not None:
            history.append(extra)
        return epsilon_of(history, delta=self.delta)

    def record(self, pid: str, *, sigma: float, q: float, steps: int) -> None:
        acc = self.account(pid)
        acc.history.append((sigma, q, steps))
        acc.iterations += 1

    def state_dict(self) -> dict[str, Any]:
        return {
            pid: {
                "history": [list(h) for h in a.history],
                "iterations": a.iterations,
                "skipped": a.skipped,
            }
            for pid, a in self.accounts.items()
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accounts = {
            pid: ParticipantAccount(
                history=[(float(s), float(q), int(n)) for s, q, n in a["history"]],
                iterations=int(a["iterations"]),
                skipped=int(a["skipped"]),
            )
            for pid, a in state.items()
        }
