"""HE mode with the auditor as its own node: the split coordinator, participant nodes and
the auditor node exchange only protocol bytes.

Attacks from both sides of the wire: a participant's garbage upload excludes it only; a
coordinator that replays a session's decrypt request, or hands participants a context
offer the auditor did not sign, is refused; a restarted auditor keeps its keys and still
refuses a session it decrypted. The default runtime's run equals nodes with their own
state files, and in its own processes the coordinator holds no secret.
"""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tenseal as ts
from separation_helpers import WalkAt, coordinator_view
from split_helpers import config_text, coordinator_over, inprocess_nodes, with_auditor

from crypto.errors import MessageError
from protocols.he.keyholder import HEKeyHolder
from securepool.config import parse_config
from securepool.coordinator.launch import multiprocess_coordinator
from securepool.coordinator.loop import PoolCoordinator
from securepool.node.auditor import AUDITOR_ID, HE_SETUP_SESSION, AuditorNode
from securepool.node.wire import (
    NodeStage,
    Reply,
    TrainRequest,
    decode_bundle,
    pack_list,
    unpack_list,
)
from securepool.runtime.inprocess import InProcessDriver


def he_run(
    tmp_path: Path,
    *,
    n: int = 4,
    iterations: int = 1,
    apps: Any = None,
    driver: type[InProcessDriver] = InProcessDriver,
) -> tuple[PoolCoordinator, list[Any], dict[str, Any]]:
    """An HE run of the split coordinator, participant nodes and an auditor node;
    ``apps(nodes)`` may replace some of them (the attacker's side)."""
    cfg = parse_config(tomllib.loads(he_text(n=n, iterations=iterations)))
    nodes, registry = inprocess_nodes(cfg)
    reachable = with_auditor(cfg, dict(nodes), registry, tmp_path / AUDITOR_ID)
    reachable.update(apps(reachable) if callable(apps) else apps or {})
    coord = coordinator_over(cfg, reachable, registry, driver)
    records: list[Any] = []
    coord.run(on_iteration=records.append)
    return coord, records, reachable


def he_text(*, n: int = 4, iterations: int = 1) -> str:
    return config_text(n=n, mode="he", iterations=iterations, max_models=1, models=1)


def test_he_default_runtime_equals_nodes_with_their_own_state_files(tmp_path: Path) -> None:
    """HE mode: the default runtime's in-memory nodes and nodes with their own state
    directories (he_run) give the same aggregate within CKKS error."""
    from securepool.runner import prepare

    coord, records, _ = he_run(tmp_path)
    (group,) = records[0].groups
    assert group.status == "aggregated" and len(group.contributors) == 4
    _cfg, default, nodes = prepare(he_text(), Path("x.toml"))
    assert nodes is not None
    default.run()
    nodes.close()
    for mid, vec in default.state.globals.items():
        np.testing.assert_allclose(coord.state.globals[mid], vec, atol=1e-4)


def test_two_he_iterations_cost_two_round_trips_each_after_the_first(tmp_path: Path) -> None:
    calls: list[str] = []

    class Counting(InProcessDriver):
        def exchange(self, stage: str, batch: Any, *, timeout: float, **kw: Any) -> Any:
            calls.append(stage)
            return super().exchange(stage, batch, timeout=timeout, **kw)

    coord, _records, _ = he_run(tmp_path, iterations=2, driver=Counting)
    assert coord.state.iteration == 2
    # connect (hello + offer), S401 evaluate, then per iteration: (beacon x2 only in the
    # first) train (+ next beacon's start), decrypt (+ next beacon's commits; led by the
    # round's certified statement to the auditor, so a bundle: no extra trip), evaluate
    assert calls == [
        "bundle",
        "evaluate",
        "beacon/start",
        "beacon/commits",
        "bundle",
        "bundle",
        "evaluate",
        "train",
        "bundle",
        "evaluate",
    ]


class GarbageUpload:
    """The first group member to upload changes its ciphertext after signing it."""

    victim: ClassVar[list[str]] = []

    def __init__(self, pid: str, honest: Any) -> None:
        self.pid, self.honest = pid, honest

    def handle(self, stage: str, payload: bytes) -> bytes:
        reply: bytes = self.honest.handle(stage, payload)
        if stage in ("train", "bundle") and self.victim in ([], [self.pid]):
            bad = _corrupt_train(reply, stage)
            if bad != reply:
                self.victim[:] = [self.pid]
            return bad
        return reply


def _corrupt_train(reply: bytes, stage: str) -> bytes:
    if stage == "bundle":
        try:
            parts = unpack_list(Reply.from_bytes(reply).body, what="x")
        except MessageError:
            return reply
        parts[0] = _corrupt_train(parts[0], "train")
        return Reply(True, pack_list(parts)).to_bytes()
    r = Reply.from_bytes(reply)
    try:
        upload, receipt = unpack_list(r.body, what="x", expected=2)
    except MessageError:  # not an upload (a hello, a beacon message)
        return reply
    bad = upload[:-64] + bytes(64)  # ciphertext bytes changed after signing
    return Reply(True, pack_list([bad, receipt]), r.meta).to_bytes()


def test_a_garbage_upload_excludes_its_sender_only(tmp_path: Path) -> None:
    GarbageUpload.victim = []
    _coord, records, _ = he_run(
        tmp_path,
        n=5,
        apps=lambda nodes: {
            p: GarbageUpload(p, node) for p, node in nodes.items() if p != AUDITOR_ID
        },
    )
    (group,) = records[0].groups
    (victim,) = GarbageUpload.victim
    assert group.status == "aggregated"
    assert set(group.contributors) == set(group.members) - {victim}
    assert "bad upload" in group.excluded[victim], group.excluded


def test_the_auditor_refuses_a_replayed_session_even_after_a_restart(tmp_path: Path) -> None:
    seen: list[bytes] = []

    class Recorder:
        def __init__(self, auditor: AuditorNode) -> None:
            self.auditor = auditor

        def handle(self, stage: str, payload: bytes) -> bytes:
            # he/decrypt comes led by the round's certified statement: the whole message
            parts = [st for st, _ in decode_bundle(payload)] if stage == "bundle" else []
            if NodeStage.HE_DECRYPT.value in parts:
                seen.append(payload)
            return self.auditor.handle(stage, payload)

    coord, records, nodes = he_run(tmp_path, apps=lambda n: {AUDITOR_ID: Recorder(n[AUDITOR_ID])})
    assert records[0].groups[0].status == "aggregated" and seen
    auditor: AuditorNode = nodes[AUDITOR_ID].auditor
    restarted = AuditorNode(
        settings=coord.cfg.he_settings(),
        identity=auditor._identity,
        registry=coord.registry,
        state_dir=tmp_path / AUDITOR_ID,
        corrupt_fraction=coord.cfg.aggregation.mask.corrupt_fraction,
        weighting=coord.cfg.aggregation.weighting,
    )
    offer_before = Reply.from_bytes(auditor.handle("he/offer", b"")).body
    offer_after = Reply.from_bytes(restarted.handle("he/offer", b"")).body
    assert offer_before == offer_after  # the same CKKS and sealbox keys, from its files
    reply = Reply.from_bytes(restarted.handle("bundle", seen[0]))  # the message replayed
    certified, decrypted = unpack_list(reply.body, what="x", expected=2)
    assert Reply.from_bytes(certified).ok  # its certificate still holds ...
    (answer,) = unpack_list(Reply.from_bytes(decrypted).body, what="x")
    refused = Reply.from_bytes(answer)  # ... but the session is spent
    assert not refused.ok and "already decrypted" in refused.meta["reason"]


def test_participants_refuse_an_offer_the_auditor_did_not_sign(tmp_path: Path) -> None:
    """A coordinator that relays its own key holder's context offer (so that it could
    decrypt the uploads itself): every participant refuses to encrypt under it."""
    impostor = HEKeyHolder(parse_config(tomllib.loads(config_text(mode="he"))).he_settings())
    forged = impostor.context_offer(session=HE_SETUP_SESSION)

    class Swapping(InProcessDriver):
        def exchange(self, stage: str, batch: Any, *, timeout: float, **kw: Any) -> Any:
            if stage == "train":
                batch = {
                    pid: replace(TrainRequest.from_bytes(body), he_offer=forged).to_bytes()
                    for pid, body in batch.items()
                }
            return super().exchange(stage, batch, timeout=timeout, **kw)

    _coord, records, _ = he_run(tmp_path, driver=Swapping)
    (group,) = records[0].groups
    assert group.status.startswith("aborted") and not group.contributors
    for pid in group.members:
        assert "SecurityViolation" in group.excluded[pid], group.excluded[pid]


def test_he_nodes_in_their_own_processes_leave_the_coordinator_no_secret(tmp_path: Path) -> None:
    """multiprocess runtime, HE mode: when the aggregates go to the auditor to be
    decrypted (every upload checked and held), and again after the run, the walk of the
    coordinator (``separation_helpers.coordinator_view``: from the coordinator and from
    its frames' locals, where the iteration's uploads live) finds no secret-key object
    and no float vector of a model's size but a global model, and every CKKS context it
    reaches is public (the secret key is in the auditor's files)."""
    text = config_text(n=4, mode="he", iterations=1, runtime="multiprocess", max_models=1)
    cfg = parse_config(tomllib.loads(text))
    coord = multiprocess_coordinator(cfg, text, tmp_path, timeout=120.0)
    factory = coord._driver_factory
    spies: list[WalkAt] = []
    globals_then: list[np.ndarray] = []  # the global models when the walk ran

    def keep_globals(_spy: WalkAt) -> None:
        globals_then.extend(v.copy() for v in coord.state.globals.values())

    def spied() -> WalkAt:
        at = NodeStage.HE_DECRYPT
        spies.append(WalkAt(factory(), coord, at=at, then=keep_globals))
        return spies[-1]

    coord._driver_factory = spied
    records: list[Any] = []
    try:
        coord.run(on_iteration=records.append)
        after = coordinator_view(coord)
    finally:
        coord.close()
    assert records[0].groups[0].status == "aggregated"
    (spy,) = spies
    mid = spy.view
    assert mid is not None
    # mid-iteration the walk reached the iteration's checked uploads and the HE state
    assert {"_Encrypted", "Contribution", "HECoordinator", "PublicCKKSContext"} <= mid.types
    # no float vector of a model's size but a global model (no plaintext update)
    sizes = {lay.size for lay in coord.layouts.values()}
    model_sized = [a for a in mid.arrays if a.ndim == 1 and a.size in sizes and a.dtype.kind == "f"]
    assert model_sized, "the walk found not even the global model"
    for arr in model_sized:
        assert any(g.shape == arr.shape and np.array_equal(g, arr) for g in globals_then), (
            f"a model-sized float vector that is no global model: {mid.path(arr)}"
        )
    for found in (mid, after):
        assert not found.secrets, found.described(found.secrets)
        contexts = [o for o in found.objects if isinstance(o, ts.Context)]
        assert contexts and not any(c.has_secret_key() or c.is_private() for c in contexts)
    assert (tmp_path.with_name(tmp_path.name + ".nodes") / AUDITOR_ID / "ckks.secret").exists()
