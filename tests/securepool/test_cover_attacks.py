"""Issue 13's attacks do what they claim, performed by attacker nodes through the real
coordinator: the kernel attack's arithmetic (its perturbation is invisible to the public
count-sketch), the kernel attack with nothing to hide in (raw summaries), the cover of
``backdoor_cover`` (the update the honest node would have sent), a cover attacker that
lives one message at a time as Flower runs it (its cover survives its session file),
and HE mode, where there is no summary to lie in. Every kind's lie at the wire and the
cover kinds' flags in plaintext and mask mode: test_attacker_nodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_attacker_nodes import (
    ATTACKERS,
    Tap,
    close,
    honest,
    job_text,
    run_job,
    tap,  # noqa: F401  (the fixture)
    wire,
)
from test_split_trust import PerMessage, cfg_of, run

from crypto.signing import IdentityKey
from protocols.summaries import sketch_projection
from securepool.attacks import kernel_part, kernel_poison
from securepool.coordinator.launch import node_specs
from securepool.data import federation
from securepool.node.agreement import session_name
from securepool.node.attacker import AttackerNode
from securepool.trust.check import public_projection_seed

D = 3000


def _vector(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 0.01, D) + rng.normal(0, 0.004, D)).astype(np.float32)


@pytest.mark.parametrize("seed", range(3))
def test_kernel_part_is_invisible_to_the_sketch_and_orthogonal_to_its_rest(seed: int) -> None:
    x = np.random.default_rng(seed).normal(size=D)
    buckets, signs = sketch_projection(D, dim=256, seed=public_projection_seed(5, "s"))
    k = kernel_part(x, buckets, signs, 256)
    assert np.abs(np.bincount(buckets, weights=signs * k, minlength=256)).max() < 1e-12
    assert abs(float(k @ (x - k))) < 1e-9 * float(x @ x)
    assert float(k @ k) > 0.85 * float(x @ x)  # d = 3000 into 256 buckets: most of it


def test_kernel_poison_below_the_row_space_still_flips_the_kernel() -> None:
    x = _vector()
    buckets, signs = sketch_projection(D, dim=256, seed=bytes(32))
    out = kernel_poison(x, buckets=buckets, signs=signs, dim=256, target_norm=0.0)
    k = kernel_part(x.astype(np.float64), buckets, signs, 256)
    assert np.allclose(out, x - 2.0 * k, atol=1e-7)


def test_kernel_attack_has_no_kernel_to_hide_in_with_raw_summaries(
    tmp_path: Path,
    tap: list[Tap],  # noqa: F811
) -> None:
    """``trust.sketch_dim = 0``: the summary is the update itself, so the attacker sends
    its honest update, and the binding has nothing to flag."""
    text = job_text("kernel", trust=True).replace("sketch_dim = 256", "sketch_dim = 0")
    summary, records, cfg = run_job(tmp_path, text)
    assert cfg.trust.sketch_dim == 0
    assert summary["attack"]["malicious"] == list(ATTACKERS)
    sent = wire(tap, records)
    assert {s.pid for s in sent} >= set(ATTACKERS)
    for s in sent:
        assert close(s.update, honest(cfg, s)[0])
    assert summary["untrusted_participants"] == [] and summary["excluded"] == {}


def test_backdoor_cover_is_the_update_the_honest_node_would_have_sent(
    tmp_path: Path,
    tap: list[Tap],  # noqa: F811
) -> None:
    """Its boosted trigger update goes on the wire; its cover (what it would tell the
    trust check in mask mode) is the honest update of its clean records (same global
    model, same training seed)."""
    summary, records, cfg = run_job(tmp_path, job_text("backdoor_cover", trust=True))
    assert summary["attack"]["malicious"] == list(ATTACKERS)
    (s,) = [s for s in wire(tap, records) if s.pid == "p01" and s.iteration == 1]
    node = AttackerNode(
        "p01",
        cfg=cfg,
        data=federation(cfg).participants["p01"],
        identity=IdentityKey.generate(),
        registry={},
        n_features=64,
        n_classes=10,
    )
    trained, _, _ = node._local_update(s.model_id, s.params, s.iteration, s.members)
    assert trained is not None
    sent, cover = node._outgoing(
        trained,
        session=session_name(s.iteration, s.model_id),
        model_id=s.model_id,
        params=s.params,
        iteration=s.iteration,
        members=s.members,
    )
    assert close(sent, s.update)  # what it sends is what reached the coordinator
    assert close(cover, honest(cfg, s)[0]) and not close(cover, trained)
    # in plaintext mode the cover is told to nobody: what it sent is summarised and flagged
    assert records[0].groups[0].excluded["p01"].startswith("untrusted: ")


def test_a_cover_attacker_rebuilt_for_every_message_keeps_its_cover(tmp_path: Path) -> None:
    """As Flower runs a ClientApp: the attacker node is built from its state directory
    for every message, so its CoverClient (with the cover) goes through its session
    file between the masked input and the binding report; the report is still the
    cover's, and the binding flags it (a lost cover would be a dropout, not a flag)."""
    text = job_text("scaling_cover", mode="mask", trust=True, attack='participants = ["p02"]')
    cfg = cfg_of(text)
    specs = {s.node_id: s for s in node_specs(cfg, text, tmp_path, n_features=64, n_classes=10)}
    seen: list[str] = []

    class Watch(PerMessage):
        def handle(self, stage: str, payload: bytes) -> bytes:
            reply = super().handle(stage, payload)
            path = tmp_path / "p02" / "session.json"
            if path.is_file():
                seen.append(path.read_text())
            return reply

    coord, records, _ = run(text, tmp_path, swap={"p02": lambda _n: Watch(specs["p02"])})
    first, second = (r.groups[0] for r in records)
    assert first.excluded["p02"] == "untrusted: proven lie: report does not match its masked input"
    assert "p02" not in second.members  # marked: the next beacon is drawn without it
    assert set(first.excluded) == {"p02"} and first.status == "aggregated"
    assert any("securepool.node.attacker:CoverClient" in doc for doc in seen)
    assert coord.trust is not None and coord.trust.report()["untrusted"] == ["p02"]


def test_in_he_mode_the_cover_is_moot_and_the_poison_is_sent(tmp_path: Path) -> None:
    """HE mode has no summary to lie in (the auditor folds the ciphertexts themselves):
    the scaling_cover attacker sends -5 x its update, and the fold's norm rule sees it."""
    summary, records, _ = run_job(tmp_path, job_text("scaling_cover", mode="he", trust=True))
    first = records[0].groups[0]
    for p in ATTACKERS:
        assert first.excluded[p].startswith("untrusted: norm ")
    assert summary["untrusted_participants"] == list(ATTACKERS)
    assert set(summary["excluded"]) == set(ATTACKERS)
