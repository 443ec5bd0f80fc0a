"""Plaintext mode's trust check judges a projection drawn after every update is fixed
(issue 22, item 4).

The count-sketch the auditor judges in plaintext mode is seeded by
:func:`securepool.trust.check.plain_projection_seed`: the session, the run seed and the
digest of every update the group's coordinator received. The ``kernel`` attacker
(:class:`securepool.node.attacker.AttackerNode`) still aims at the projection it can
know before training, the public one (:func:`public_projection_seed`): its update keeps
the public sketch of its honest update but carries 3x its norm, against its own
direction. Performed through real attacker nodes, the real coordinator and the auditor
node (``start_job``, in-process), with the norm rule off, so only the sketch can catch
it; and the arithmetic of why, on the very update it sent. Honest runs flag nobody and
every iteration aggregates every member.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from split_helpers import config_text
from test_attacker_nodes import (
    ATTACKERS,
    N,
    Tap,
    close,
    honest,
    job_text,
    run_job,
    tap,  # noqa: F401  (the fixture)
    wire,
)

from crypto.errors import CryptoError
from protocols.summaries import summarize
from securepool.node.agreement import session_name
from securepool.trust.check import plain_projection_seed, public_projection_seed

#: the trust check's defaults, but the norm rule off (only the sketch can flag) and one
#: strike (a flag marks at once)
SKETCH_ONLY = "\n[trust]\nenabled = true\nnorm_ratio = 0.0\nstrikes = 1\n"
#: the misalignment screen off too: only the difference threshold is left
THRESHOLD_ONLY = SKETCH_ONLY + "align_floor = -1.0\n"


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b) / float(np.linalg.norm(a) * np.linalg.norm(b))


@pytest.mark.parametrize(
    ("trust", "rule"),
    [(SKETCH_ONLY, "misaligned"), (THRESHOLD_ONLY, "cosine difference")],
    ids=["defaults", "threshold-only"],
)
def test_the_kernel_attack_is_flagged_by_the_sketch_it_could_not_know(
    tmp_path: Path,
    tap: list[Tap],  # noqa: F811
    trust: str,
    rule: str,
) -> None:
    """p01 and p05 run the kernel attack with the norm rule off (so each sends 3x its
    norm): the sketch flags both in the first iteration (the misalignment screen, or
    with it off the difference threshold), nobody honest is flagged, and both
    iterations aggregate every honest member (the second without the marked two)."""
    text = job_text("kernel", iterations=2) + trust
    summary, records, cfg = run_job(tmp_path, text)
    assert cfg.trust.norm_ratio == 0.0 and cfg.trust.sketch_dim == 256
    first, second = (r.groups[0] for r in records)
    for p in ATTACKERS:
        why = first.excluded[p]
        assert why.startswith(f"untrusted: {rule}"), why
        assert p not in second.members
    for g in (first, second):
        assert g.status == "aggregated"
        assert set(g.contributors) == {f"p{i:02d}" for i in range(N)} - set(ATTACKERS)
    assert summary["untrusted_participants"] == list(ATTACKERS)
    assert {f["participant"] for f in summary["trust"]["flags"]} == set(ATTACKERS)

    # why: on the update p01 sent in iteration 1 and the one it trained
    sent = [s for s in wire(tap, records) if s.iteration == records[0].iteration]
    (s,) = [s for s in sent if s.pid == "p01"]
    u, _w = honest(cfg, s)
    session = session_name(s.iteration, s.model_id)
    public = public_projection_seed(cfg.run.seed, session)
    fresh = plain_projection_seed(
        run_seed=cfg.run.seed, session=session, updates={x.pid: (x.update, x.weight) for x in sent}
    )
    assert fresh != public
    lie, own = summarize(s.update, dim=256, seed=public), summarize(u, dim=256, seed=public)
    # under the public projection the lie's sketch is its honest update's (what the
    # attacker planned, and what the auditor judged before)
    assert np.allclose(lie.sketch, own.sketch, rtol=0, atol=1e-5 * own.norm)
    assert lie.norm == pytest.approx(3.0 * own.norm, rel=1e-4)
    assert _cosine(s.update.astype(np.float64), u.astype(np.float64)) < -0.5
    # under the fresh one it points against the honest update's sketch
    lie, own = summarize(s.update, dim=256, seed=fresh), summarize(u, dim=256, seed=fresh)
    assert _cosine(lie.sketch, own.sketch) < -0.3


def test_an_honest_trust_run_flags_nobody_and_aggregates_everyone(
    tmp_path: Path,
    tap: list[Tap],  # noqa: F811
) -> None:
    """No attacker, the trust check's defaults: every iteration aggregates every
    member, nobody is flagged; the train requests carry no opening key (nothing is
    sealed to the auditor in plaintext mode without the validation vote) and each reply
    is the bare update."""
    text = config_text(n=N, mode="plaintext", iterations=3, models=1)
    text = text.replace('mode = "federated"', 'mode = "holdout"') + "\n[trust]\nenabled = true\n"
    summary, records, cfg = run_job(tmp_path, text)
    assert cfg.trust.enabled and not cfg.attack.enabled
    assert len(records) == 3
    for r in records:
        (g,) = r.groups
        assert g.status == "aggregated" and not g.excluded
        assert set(g.contributors) == set(g.members) == {f"p{i:02d}" for i in range(N)}
    assert summary["untrusted_participants"] == [] and summary["trust"]["flags"] == []
    (driver,) = tap
    for trains in driver.trains:
        for req, _body in trains.values():
            assert req.trust_offer == b""
    for s in wire(tap, records):  # the body decoded as a bare plaintext update
        assert close(s.update, honest(cfg, s)[0])


def _updates(n: int = 4, d: int = 50) -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(3)
    return {f"p{i:02d}": (rng.normal(size=d).astype(np.float32), 1.0) for i in range(n)}


def test_the_seed_depends_on_every_update_and_weight_and_not_on_their_order() -> None:
    ups = _updates()
    base = plain_projection_seed(run_seed=5, session="it0001/lr", updates=ups)
    assert len(base) == 32
    backwards = dict(reversed(list(ups.items())))
    assert plain_projection_seed(run_seed=5, session="it0001/lr", updates=backwards) == base
    for pid, (vec, weight) in ups.items():
        raw = bytearray(vec.tobytes())
        raw[7] ^= 1  # one byte of one update
        flipped = np.frombuffer(bytes(raw), dtype=np.float32)
        for changed in ({**ups, pid: (flipped, weight)}, {**ups, pid: (vec, weight + 1.0)}):
            assert plain_projection_seed(run_seed=5, session="it0001/lr", updates=changed) != base
        fewer = {p: v for p, v in ups.items() if p != pid}  # a member less
        assert plain_projection_seed(run_seed=5, session="it0001/lr", updates=fewer) != base
    renamed = {("q" + p[1:]): v for p, v in ups.items()}  # same updates, other senders
    assert plain_projection_seed(run_seed=5, session="it0001/lr", updates=renamed) != base
    assert plain_projection_seed(run_seed=6, session="it0001/lr", updates=ups) != base
    assert plain_projection_seed(run_seed=5, session="it0002/lr", updates=ups) != base
    assert base != public_projection_seed(5, "it0001/lr")


def test_the_seed_refuses_ids_that_are_not_identifiers() -> None:
    ups = _updates(2)
    with pytest.raises(CryptoError):
        plain_projection_seed(run_seed=5, session="it 1", updates=ups)
    with pytest.raises(CryptoError):
        plain_projection_seed(run_seed=5, session="s", updates={"p 1": ups["p00"]})
