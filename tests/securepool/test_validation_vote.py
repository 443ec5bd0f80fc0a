"""P6 validation vote: participants score their peers' models on their own records."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from crypto.errors import ConfigError, DecryptionError, MessageError
from crypto.hpke import SummaryOpeningKey
from protocols.ballots import decode_ballot, encode_ballot, open_ballot, seal_ballot
from protocols.summaries import seal_summary, summarize
from securepool.attacks import AttackConfig, AttackKind, UpdateAttack
from securepool.config import parse_config
from securepool.runner import start_job
from securepool.trust.auditor import Auditor
from securepool.trust.config import TrustConfig, VotingRule
from securepool.trust.voting import validation_vote


def test_plurality_of_best_scores_wins() -> None:
    ballots = {
        "a": {"b": 0.2, "c": 0.5, "a": 0.0},  # own entry ignored -> votes b
        "b": {"a": 0.4, "c": 0.3},  # votes c
        "c": {"a": 0.9, "b": 0.1},  # votes b
        "outsider": {"c": 0.0},  # not a candidate: no vote
    }
    assert validation_vote(ballots, ["a", "b", "c"]) == "b"
    assert validation_vote({}, ["a", "b"]) is None


def test_ties_go_to_the_lowest_median_loss_then_the_name() -> None:
    ballots = {"a": {"b": 0.2, "c": 0.9}, "b": {"a": 0.3, "c": 0.1}, "c": {"a": 0.1, "b": 0.4}}
    # one vote each for b, c, a; medians: a 0.2, b 0.3, c 0.5
    assert validation_vote(ballots, ["a", "b", "c"]) == "a"
    same = {"a": {"b": 0.1}, "b": {"a": 0.1}}
    assert validation_vote(same, ["a", "b"]) == "a"


def _sealed(auditor: Auditor, updates: dict[str, np.ndarray]) -> dict[str, bytes]:
    key = auditor.public_key()
    return {
        p: seal_summary(
            summarize(u.astype(np.float32), dim=64, seed=bytes(32)),
            auditor_public=key,
            session="s",
            participant=p,
        )
        for p, u in updates.items()
    }


def _seal_ballots(auditor: Auditor, ballots: dict[str, dict[str, float]]) -> dict[str, bytes]:
    key = auditor.public_key()
    return {v: seal_ballot(b, auditor_public=key, session="s", voter=v) for v, b in ballots.items()}


def test_ballot_wire_format_round_trips_and_refuses_bad_input() -> None:
    scores = {"a": 0.25, "b-2": 1.5}
    assert decode_ballot(encode_ballot(scores)) == scores
    good = encode_ballot(scores)
    with pytest.raises(MessageError, match="not a valid identifier"):  # ids have one spelling
        decode_ballot(encode_ballot({"bé": 1.5}))
    with pytest.raises(MessageError, match="version"):
        decode_ballot(b"\x02" + good[1:])
    with pytest.raises(MessageError, match="truncated"):
        decode_ballot(good[:-1])
    with pytest.raises(MessageError, match="trailing"):
        decode_ballot(good + b"\x00")
    with pytest.raises(MessageError, match="NaN or infinite"):
        decode_ballot(encode_ballot({"a": float("inf")}))
    with pytest.raises(MessageError, match="twice"):
        entry = encode_ballot({"a": 0.25})[3:]
        decode_ballot(b"\x01\x00\x02" + entry + entry)
    with pytest.raises(MessageError, match="header"):
        decode_ballot(b"\x01")


def test_sealed_ballot_opens_only_for_its_session_and_voter() -> None:
    key = SummaryOpeningKey()
    sealed = seal_ballot({"a": 0.5}, auditor_public=key.public_bytes(), session="s", voter="v")
    assert open_ballot(key, sealed, session="s", voter="v") == {"a": 0.5}
    for session, voter in (("s2", "v"), ("s", "w")):  # replayed or re-attributed: refused
        with pytest.raises(DecryptionError):
            open_ballot(key, sealed, session=session, voter=voter)
    with pytest.raises(DecryptionError):
        open_ballot(key, sealed[:-1] + bytes([sealed[-1] ^ 1]), session="s", voter="v")


def test_stuffed_ballots_of_a_minority_do_not_elect_an_attacker() -> None:
    """The attack, performed: two colluders score each other best; the honest majority's
    votes still elect an honest participant, and the colluders' sign-flipped updates are
    flagged."""
    rng = np.random.default_rng(0)
    direction = rng.normal(size=500)
    honest = {f"h{i}": direction + 0.3 * rng.normal(size=500) for i in range(6)}
    bad = {"m0": -(direction + 0.3 * rng.normal(size=500)), "m1": -direction}
    updates = {**honest, **bad}
    # honest voters: models close to the shared direction score best
    ballots = {
        v: {c: float(np.linalg.norm(u - direction)) for c, u in updates.items() if c != v}
        for v in updates
    }
    attack = UpdateAttack(
        AttackConfig(enabled=True, kind=AttackKind.SIGN_FLIP, participants=("m0", "m1")),
        participants=sorted(updates),
    )
    stuffed = attack.poison_ballots(ballots)
    assert min(stuffed["m0"], key=stuffed["m0"].__getitem__) == "m1"
    auditor = Auditor(TrustConfig(enabled=True, voting=VotingRule.VALIDATION, sketch_dim=64))
    sealed = _seal_ballots(auditor, stuffed)
    verdict, _ = auditor.vet("s", _sealed(auditor, updates), dim=64, ballots=sealed)
    assert verdict.trusted in honest
    assert set(verdict.flagged) == {"m0", "m1"}


def test_a_colluding_majority_wins_the_vote() -> None:
    """The limit threat_model.md states, performed: when colluders are a majority of a
    group, their stuffed ballots elect one of their own (any plurality rule has this)."""
    losses = {"h0": 0.1, "h1": 0.1, "m0": 5.0, "m1": 5.0, "m2": 5.0}
    honest = {v: {c: losses[c] for c in losses if c != v} for v in ("h0", "h1")}
    stuffed = {v: {c: 0.0 if c == "m0" else 9.0 for c in losses if c != v} for v in ("m1", "m2")}
    stuffed["m0"] = {c: 0.0 if c == "m1" else 9.0 for c in losses if c != "m0"}
    assert validation_vote({**honest, **stuffed}, losses) in {"m0", "m1"}


def test_a_bad_ballot_flags_its_voter_and_the_vote_goes_on() -> None:
    rng = np.random.default_rng(1)
    updates = {f"h{i}": 1.0 + 0.1 * rng.normal(size=200) for i in range(4)}
    ballots = {v: {c: 0.5 for c in updates if c != v} for v in updates}
    ballots["h3"] = {"h0": float("nan")}
    auditor = Auditor(TrustConfig(enabled=True, voting=VotingRule.VALIDATION, sketch_dim=64))
    sealed = _seal_ballots(auditor, ballots)
    sealed["h2"] = b"\x00" * 80  # does not open
    verdict, _ = auditor.vet("s", _sealed(auditor, updates), dim=64, ballots=sealed)
    assert "NaN or infinite" in verdict.flagged["h3"]
    assert verdict.flagged["h2"].startswith("ballot rejected")
    assert verdict.trusted in {"h0", "h1"}


@pytest.mark.parametrize("mode", ["mask", "he"])
def test_validation_vote_is_refused_outside_plaintext_mode(mode: str) -> None:
    with pytest.raises(ConfigError, match=r"voting = 'validation'.*plaintext"):
        parse_config(
            {"aggregation": {"mode": mode}, "trust": {"enabled": True, "voting": "validation"}}
        )


def test_validation_vote_end_to_end_marks_the_sign_flippers(tmp_path: Path) -> None:
    """A plaintext run, 10 participants, 2 sign-flippers stuffing their ballots."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        """
[data]
participants = 10
[pool]
models = [{ id = "lr", arch = "logreg" }]
[assignment]
min_group_size = 5
[training]
epochs = 1
lr = 0.5
[convergence]
max_iterations = 3
error_range = [0.0, 0.0001]
[acceptance]
max_error_bound = 1.0
[aggregation]
mode = "plaintext"
[trust]
enabled = true
voting = "validation"
[attack]
enabled = true
kind = "sign_flip"
fraction = 0.2
"""
    )
    summary = start_job(cfg, tmp_path / "run")
    malicious = set(summary["attack"]["malicious"])
    assert len(malicious) == 2
    assert set(summary["untrusted_participants"]) == malicious
    trail = json.loads((tmp_path / "run" / "summary.json").read_text())["trust"]
    assert all(m["participant"] in malicious for m in trail["marks"])
    assert trail["verdicts"] and all(v["trusted"] not in malicious for v in trail["verdicts"])
