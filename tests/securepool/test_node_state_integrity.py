"""A node's state files are authenticated (issue 21, item 6): an edited, foreign, stale or
torn ``session.json`` is refused with a typed reason and the node drops out of that
session only; an edited ``node_state.json`` (its replay counters) makes the node refuse
every round rather than start again from round 0; an intact file resumes exactly where
the node was; and whatever the bytes, only typed errors come out of the restore.

The attacks edit the files of real nodes run by a real coordinator over the in-process
driver, as someone who can write to a node's state directory but does not hold its
identity key would (see :mod:`securepool.node.state_files` for what a MAC cannot give).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from split_helpers import config, coordinator_over, node_builders

from crypto.errors import MessageError, SecurePoolError, SecurityViolation
from crypto.signing import IdentityKey
from protocols.session_state import snapshot_beacon, snapshot_secagg
from securepool.config import RunConfig
from securepool.node.app import SESSION_FILE, STATE_FILE, ParticipantNode
from securepool.node.state_files import open_node_file, seal_node_file
from securepool.node.wire import NodeStage, Reply, decode_bundle, pack_list
from tests.mutations import mutated

Files = dict[str, bytes]


def _files(state_dir: Path) -> Files:
    return {
        n: (state_dir / n).read_bytes()
        for n in (STATE_FILE, SESSION_FILE)
        if (state_dir / n).is_file()
    }


def _write(state_dir: Path, files: Files) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    for name in (STATE_FILE, SESSION_FILE):
        (state_dir / name).unlink(missing_ok=True)
    for name, data in files.items():
        (state_dir / name).write_bytes(data)


def _machines(node: ParticipantNode) -> tuple[Any, ...]:
    """What a node holds mid-iteration, as comparable bytes (with the outcome it
    endorsed and the round whose quorum certificate it holds)."""
    return (
        None if node._beacon is None else snapshot_beacon(node._beacon),
        None if node._client is None else snapshot_secagg(node._client),
        None if node._ballot is None else node._ballot.to_json(),
        node._endorsed,
        node._certified,
    )


#: a node holding no session: no machines, no endorsed outcome, no certificate
NOTHING = (None, None, None, None, 0)


def _refusal(raw: bytes) -> dict[str, Any]:
    reply = Reply.from_bytes(raw)
    assert not reply.ok
    return dict(reply.meta)


# --- a real run whose p01 lives in a state directory ---------------------------------


@dataclass
class Capture:
    cfg: RunConfig
    registry: dict[str, bytes]
    live: ParticipantNode
    #: p01's files after each message: (iteration, stage) -> files
    files: dict[tuple[int, str], Files] = field(default_factory=dict)
    #: the real payloads p01 was sent: (iteration, stage) -> bytes
    sent: dict[tuple[int, str], bytes] = field(default_factory=dict)
    #: after each message, a node rebuilt from the files held what the live node held
    resumed: list[tuple[int, str, bool]] = field(default_factory=list)

    def build(self, state_dir: Path | None, **kw: Any) -> ParticipantNode:
        """A fresh p01 (its key, data and PKI) over ``state_dir``."""
        n_features, n_classes = self.live._shape
        return ParticipantNode(
            "p01",
            cfg=self.cfg,
            data=self.live._data_source,
            identity=self.live._identity,
            registry=self.registry,
            n_features=n_features,
            n_classes=n_classes,
            state_dir=state_dir,
            **kw,
        )


@pytest.fixture(scope="module")
def capture(tmp_path_factory: pytest.TempPathFactory) -> Capture:
    root = tmp_path_factory.mktemp("capture")
    cfg = config(n=5, mode="mask", iterations=2, max_models=1, models=1)
    builders, registry = node_builders(cfg, root)
    apps: dict[str, Any] = {pid: b() for pid, b in builders.items() if pid != "p01"}
    for app in apps.values():
        app._state_dir = None  # only p01 keeps files: the others stay in memory
    cap = Capture(cfg, registry, builders["p01"]())
    trains = [0]

    class Recorder:
        def handle(self, stage: str, payload: bytes) -> bytes:
            if stage == NodeStage.BUNDLE.value:  # each part as a message of its own
                answers = [self.handle(st, part) for st, part in decode_bundle(payload)]
                return Reply(True, pack_list(answers)).to_bytes()
            trains[0] += stage == NodeStage.TRAIN.value
            key = (trains[0], stage)
            cap.sent.setdefault(key, payload)
            reply = cap.live.handle(stage, payload)
            cap.files[key] = _files(root / "p01")
            fresh = builders["p01"]()  # what a restarted node finds
            same = fresh._session_error is None and _machines(fresh) == _machines(cap.live)
            same = same and fresh._counters() == cap.live._counters()
            cap.resumed.append((*key, same))
            return reply

    apps["p01"] = Recorder()
    records: list[Any] = []
    coordinator_over(cfg, apps, registry).run(on_iteration=records.append)
    assert [g.status for r in records for g in r.groups] == ["aggregated", "aggregated"]
    assert all("p01" in g.contributors for r in records for g in r.groups)
    return cap


def test_an_intact_file_resumes_exactly_where_the_node_was(capture: Capture) -> None:
    """After every message of two iterations, a node rebuilt from p01's files holds the
    same beacon and SecAgg+ state machines (snapshot for snapshot) and counters."""
    assert len(capture.resumed) >= 12
    assert [r for r in capture.resumed if not r[2]] == []
    mid = capture.files[(2, NodeStage.SECAGG_KEYS.value)]
    assert SESSION_FILE in mid and json.loads(mid[SESSION_FILE])["counters"] == [2, 2]


# --- session.json edited between two messages of a real run --------------------------


def _edit_inner(data: bytes, edit: Callable[[dict[str, Any]], None]) -> bytes:
    """``data`` with the SecAgg+ snapshot inside it edited, the bytes around it and the
    MAC left in place (what someone without the node's key can do)."""
    doc = json.loads(data)
    inner = json.loads(doc["secagg"])
    edit(inner["state"])
    old = json.dumps(doc["secagg"]).encode()
    new = json.dumps(json.dumps(inner, sort_keys=True)).encode()
    assert data.count(old) == 1
    return data.replace(old, new)


def _flip_weight(data: bytes) -> bytes:
    """The sample weight inside the MAC'd body: 230.0 -> 2300000.0 (a poisoning)."""
    edited, n = re.subn(rb'(\\"_weight\\": )([0-9.]+)', rb"\g<1>2300000.0", data)
    assert n == 1 and edited != data
    return edited


def _strip_mac(data: bytes) -> bytes:
    stripped, n = re.subn(rb',"mac":"[0-9a-f]{64}"}\n$', b"}", data)
    assert n == 1
    return stripped


def _inject(name: str) -> Callable[[bytes], bytes]:
    def edit(state: dict[str, Any]) -> None:
        state[name] = {"t": "bytes", "v": "00"}

    return lambda data: _edit_inner(data, edit)


class Tampered:
    """A NodeApp rebuilt for every message over its state directory (as Flower runs
    one); ``hooks[(iteration, stage)]`` edits its files after it answered that stage."""

    def __init__(
        self,
        build: Callable[[], ParticipantNode],
        state_dir: Path,
        hooks: dict[tuple[int, str], Callable[[Path], None]],
    ) -> None:
        self.build, self.state_dir, self.hooks = build, state_dir, hooks
        self.iteration = 0
        self.session_errors: dict[int, str] = {}
        self.state_errors: dict[int, str] = {}
        self.refusals: list[dict[str, Any]] = []

    def handle(self, stage: str, payload: bytes) -> bytes:
        if stage == NodeStage.BUNDLE.value:  # each part as a message of its own
            answers = [self.handle(st, part) for st, part in decode_bundle(payload)]
            return Reply(True, pack_list(answers)).to_bytes()
        self.iteration += stage == NodeStage.TRAIN.value
        node = self.build()
        if node._session_error is not None:
            self.session_errors.setdefault(self.iteration, node._session_error)
        if node._state_error is not None:
            self.state_errors.setdefault(self.iteration, node._state_error)
        reply = node.handle(stage, payload)
        if not Reply.from_bytes(reply).ok:
            self.refusals.append(_refusal(reply))
        hook = self.hooks.get((self.iteration, stage))
        if hook is not None:
            hook(self.state_dir)
        return reply


def test_edited_session_files_cost_the_node_that_session_only(tmp_path: Path) -> None:
    """Three victims, three iterations of edits to their session.json (each between two
    messages of an open session), then a clean one. Every edit is refused with a typed
    reason; the victim drops out of that session (the group still aggregates) and
    takes part again in the next iteration; its counters move on as everyone's. A
    fourth node's node_state.json is edited before the last iteration: it answers no
    round of it, each refusal naming the file."""
    cfg = config(n=9, mode="mask", iterations=4, max_models=1, models=1)
    builders, registry = node_builders(cfg, tmp_path)
    saved: dict[str, bytes] = {}
    train = NodeStage.TRAIN.value
    keys, shares = NodeStage.SECAGG_KEYS.value, NodeStage.SECAGG_SHARES.value

    def edit(pid: str, how: Callable[[bytes], bytes]) -> Callable[[Path], None]:
        def hook(state_dir: Path) -> None:
            path = state_dir / SESSION_FILE
            saved.setdefault(pid, path.read_bytes())  # p02's session of iteration 1
            path.write_bytes(how(path.read_bytes()))

        return hook

    def foreign(state_dir: Path) -> None:  # p04's own, valid file of the same session
        (state_dir / SESSION_FILE).write_bytes((tmp_path / "p04" / SESSION_FILE).read_bytes())

    def stale(state_dir: Path) -> None:  # p02's own, valid file of iteration 1
        (state_dir / SESSION_FILE).write_bytes(saved["p02"])

    def counter(state_dir: Path) -> None:  # p05's beacon counter set back to 0
        path = state_dir / STATE_FILE
        saved["p05"] = _rewrite_counter(path.read_bytes(), "beacon_last_iteration", 0)
        path.write_bytes(saved["p05"])

    hooks: dict[str, dict[tuple[int, str], Callable[[Path], None]]] = {
        "p01": {
            (1, keys): edit("p01", _flip_weight),
            (2, keys): foreign,
            (3, train): edit("p01", _inject("__class__")),
        },
        "p02": {
            (1, keys): edit("p02", _strip_mac),
            (2, keys): stale,
            (3, train): edit("p02", _inject("handle")),
        },
        "p03": {
            (1, shares): edit("p03", lambda d: d[: len(d) // 2]),
            (2, shares): edit("p03", lambda d: b"\x00not json at all"),
            (3, shares): edit(
                "p03", lambda d: d.replace(b'"counters": [3, 3]', b'"counters": [9, 9]')
            ),
        },
        "p05": {(3, NodeStage.EVALUATE.value): counter},
    }
    for pid in builders:
        (tmp_path / pid).mkdir()
    apps = {p: Tampered(b, tmp_path / p, hooks.get(p, {})) for p, b in builders.items()}
    records: list[Any] = []
    coordinator_over(cfg, dict(apps), registry).run(on_iteration=records.append)

    assert [g.status for r in records for g in r.groups] == ["aggregated"] * 4
    for i, record in enumerate(records[:3], start=1):
        (group,) = record.groups
        # p01, p02 lost their session before sending a masked input: dropouts; p03 after
        # it: its input is in the sum, its self-mask rebuilt from its peers' shares
        assert set(group.members) - set(group.contributors) == {"p01", "p02"}, i
        for pid in ("p01", "p02"):
            assert "no SecAgg+ session open" in group.excluded[pid]
    (last,) = records[3].groups
    assert set(last.contributors) == set(builders) - {"p05"}
    expected = {
        "p01": {1: "MAC does not verify", 2: "MAC does not verify", 3: "MAC does not verify"},
        "p02": {1: "no MAC where", 2: "older session", 3: "MAC does not verify"},
        "p03": {1: "no MAC where", 2: "no MAC where", 3: "MAC does not verify"},
    }
    for pid, by_iteration in expected.items():
        assert set(apps[pid].session_errors) == {1, 2, 3}, pid
        for i, text in by_iteration.items():
            assert text in apps[pid].session_errors[i], (pid, i, apps[pid].session_errors[i])
        assert apps[pid].state_errors == {}
    for pid in ("p01", "p02"):  # (p03's next message is a bundle: refused inside it)
        lost = [r for r in apps[pid].refusals if "no SecAgg+ session open" in r["reason"]]
        assert len(lost) == 3 and all(r["error"] == "StageError" for r in apps[pid].refusals)
        # a session lost at train also lost the outcome it endorsed: the certificate
        # that leads secagg/keys finds nothing to certify
        assert all(
            "no SecAgg+ session open" in r["reason"] or "no endorsed outcome" in r["reason"]
            for r in apps[pid].refusals
        )
    # p05: every round of the last iteration refused, naming its node_state.json
    assert STATE_FILE in apps["p05"].state_errors[4]
    assert apps["p05"].refusals and all(
        r["error"] == "SecurityViolation" and STATE_FILE in r["reason"]
        for r in apps["p05"].refusals
    )
    assert (tmp_path / "p05" / STATE_FILE).read_bytes() == saved["p05"]  # kept as found
    # the victims' counters moved on as everyone's; their last session file is gone
    honest = set(builders) - {"p05"}
    final = {p: json.loads((tmp_path / p / STATE_FILE).read_bytes()) for p in honest}
    assert {s["beacon_last_iteration"] for s in final.values()} == {4}
    assert {s["secagg_last_iteration"] for s in final.values()} == {4}
    assert not any((tmp_path / p / SESSION_FILE).exists() for p in honest)


def test_an_injected_attribute_is_refused_even_under_a_valid_mac(capture: Capture) -> None:
    """The second layer: a file re-sealed under the node's own key (a bug, or someone who
    read the identity key) that puts ``__class__`` or ``handle`` into the SecAgg+ or
    beacon state still restores to a typed refusal, and the node builds."""
    live, key = capture.live, capture.live._file_key
    cases = (
        ((1, NodeStage.SECAGG_KEYS.value), "secagg", ("__class__", "__dict__", "handle", "start")),
        ((0, NodeStage.BEACON_COMMITS.value), "beacon", ("__class__", "on_start", "on_outcome")),
    )
    for stage, part, names in cases:
        files = capture.files[stage]
        doc = open_node_file(files[SESSION_FILE], key=key, kind=SESSION_FILE, node="p01")
        assert doc[part] is not None
        for name in names:
            inner = json.loads(doc[part])
            inner["state"][name] = {"t": "bytes", "v": "00"}
            forged = dict(doc, **{part: json.dumps(inner)})
            sealed = seal_node_file(forged, key=key, kind=SESSION_FILE, node="p01")
            with tempfile.TemporaryDirectory() as d:
                _write(Path(d), {STATE_FILE: files[STATE_FILE], SESSION_FILE: sealed})
                node = capture.build(Path(d))
                assert node._session_error is not None, (part, name)
                assert "is not an attribute a snapshot restores" in node._session_error
                assert _machines(node) == NOTHING
                assert not (Path(d) / SESSION_FILE).exists()
    assert live._session_error is None


def test_a_snapshot_without_its_key_directory_is_refused_typed(capture: Capture) -> None:
    """Behind the MAC too: a SecAgg+ snapshot whose key directory or id is missing or of
    the wrong type is a typed refusal (it was an AttributeError)."""
    key = capture.live._file_key
    files = capture.files[(1, NodeStage.SECAGG_KEYS.value)]
    doc = open_node_file(files[SESSION_FILE], key=key, kind=SESSION_FILE, node="p01")
    for edit in (
        lambda state: state.pop("_directory"),
        lambda state: state.pop("pid"),
        lambda state: state.update(_directory={"t": "list", "v": []}),
        lambda state: state.update(_directory={"t": "dict", "v": {}}),
    ):
        inner = json.loads(doc["secagg"])
        edit(inner["state"])
        forged = dict(doc, secagg=json.dumps(inner))
        sealed = seal_node_file(forged, key=key, kind=SESSION_FILE, node="p01")
        node = _build_over(capture, {**files, SESSION_FILE: sealed})
        assert node._session_error is not None and _machines(node) == NOTHING
        assert "key directory" in node._session_error or "not this node's" in node._session_error


# --- node_state.json: the replay counters ---------------------------------------------


def _rewrite_counter(data: bytes, name: str, value: int) -> bytes:
    edited, n = re.subn(rf'"{name}": -?\d+'.encode(), f'"{name}": {value}'.encode(), data)
    assert n == 1 and edited != data
    return edited


def test_an_edited_replay_counter_is_refused_not_reset(capture: Capture, tmp_path: Path) -> None:
    """The coordinator replays iteration 1's BeaconStart to p01 after someone set its
    beacon counter back to 0 in node_state.json (MAC left in place). With the edit
    honoured, p01 would commit a second nonce to round 1; instead it refuses every stage
    with a SecurityViolation naming the file, keeps the file as it is, and says so in
    its HELLO. Removing the MAC (an unauthenticated file) is refused the same way."""
    replay = capture.sent[(0, NodeStage.BEACON_START.value)]
    end = capture.files[(2, NodeStage.EVALUATE.value)]
    state = end[STATE_FILE]
    assert json.loads(state)["beacon_last_iteration"] == 2

    _write(tmp_path, {STATE_FILE: state})  # the intact file: a replay, refused as such
    meta = _refusal(capture.build(tmp_path).handle(NodeStage.BEACON_START.value, replay))
    assert meta["error"] == "StageError" and "replayed" in meta["reason"]

    for forged in (
        _rewrite_counter(state, "beacon_last_iteration", 0),
        _rewrite_counter(state, "secagg_last_iteration", -1),
        _strip_mac(state),
        json.dumps({"participant": "p01", "beacon_last_iteration": 0}).encode(),
    ):
        _write(tmp_path, {STATE_FILE: forged})
        node = capture.build(tmp_path)
        assert node._state_error is not None
        for stage, payload in (
            (NodeStage.BEACON_START.value, replay),
            (NodeStage.TRAIN.value, capture.sent[(1, NodeStage.TRAIN.value)]),
            (NodeStage.EVALUATE.value, b""),
        ):
            meta = _refusal(node.handle(stage, payload))
            assert meta["error"] == "SecurityViolation"
            assert STATE_FILE in meta["reason"] and "no round is answered" in meta["reason"]
        hello = Reply.from_bytes(node.handle(NodeStage.HELLO.value, b""))
        assert hello.ok and STATE_FILE in hello.meta["node_state"]
        assert (tmp_path / STATE_FILE).read_bytes() == forged  # never written over


def test_node_state_rolled_back_or_deleted_under_an_open_session_is_detected(
    capture: Capture, tmp_path: Path
) -> None:
    """Mid-iteration 2 the session file was written at counters (2, 2). Deleting
    node_state.json, or putting back p01's own valid file of iteration 1, leaves counters
    below the session's: the node trusts neither and refuses every round."""
    mid = capture.files[(2, NodeStage.SECAGG_KEYS.value)]
    older = capture.files[(1, NodeStage.SECAGG_KEYS.value)][STATE_FILE]
    assert json.loads(older)["beacon_last_iteration"] == 1
    for files in ({SESSION_FILE: mid[SESSION_FILE]},
                  {SESSION_FILE: mid[SESSION_FILE], STATE_FILE: older}):  # fmt: skip
        _write(tmp_path, files)
        node = capture.build(tmp_path)
        assert node._state_error is not None and "rolled back or deleted" in node._state_error
        assert _machines(node) == NOTHING
        meta = _refusal(node.handle(NodeStage.SECAGG_SHARES.value, b""))
        assert meta["error"] == "SecurityViolation"
        assert _files(tmp_path) == files  # the evidence is left in place


def test_an_exported_state_of_the_wrong_shape_or_owner_is_refused(capture: Capture) -> None:
    """The in-process runtime's exported states (``durable=``) go through the same
    typed checks."""
    for bad in ({"beacon_last_iteration": "1"}, {"secagg_last_iteration": -5},
                {"beacon_last_iteration": True}, {"privacy": [1]}, [1, 2]):  # fmt: skip
        with pytest.raises(MessageError):
            capture.build(None, durable=bad)
    with pytest.raises(SecurityViolation, match="node state of 'p02'"):
        capture.build(None, durable={"participant": "p02"})
    assert capture.build(None, durable={"beacon_last_iteration": 3})._beacon_last == 3


def test_a_state_file_of_another_node_or_kind_does_not_verify(capture: Capture) -> None:
    """The MAC binds the node id and the file kind: p01's own valid node_state.json is
    not a session.json, and the same bytes do not open as another node's file, nor
    under another identity key."""
    from crypto.errors import InvalidSignature
    from securepool.node.state_files import node_file_key

    state = capture.files[(1, NodeStage.SECAGG_KEYS.value)][STATE_FILE]
    key = capture.live._file_key
    assert open_node_file(state, key=key, kind=STATE_FILE, node="p01")["participant"] == "p01"
    for kw in (
        {"key": key, "kind": SESSION_FILE, "node": "p01"},
        {"key": key, "kind": STATE_FILE, "node": "p02"},
        {"key": node_file_key(IdentityKey.generate()), "kind": STATE_FILE, "node": "p01"},
    ):
        with pytest.raises(InvalidSignature):
            open_node_file(state, **kw)


# --- fuzz: whatever the bytes, typed errors only ---------------------------------------

_EXAMPLES = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _stages(capture: Capture, name: str) -> list[tuple[int, str]]:
    return sorted(k for k, f in capture.files.items() if name in f)


def _build_over(capture: Capture, files: Files) -> ParticipantNode:
    """A node over ``files``: building it must not raise (it catches the typed errors of
    the restore and only those, so any other error fails the test)."""
    with tempfile.TemporaryDirectory() as d:
        _write(Path(d), files)
        return capture.build(Path(d))


@given(st.data())
@_EXAMPLES
def test_fuzzed_session_files_are_refused_with_a_typed_reason(
    capture: Capture, data: st.DataObject
) -> None:
    """Random byte edits of p01's valid session files (every stage of two iterations):
    the node always builds; an edited file is discarded with a typed reason and nothing
    is restored; the untouched one restores exactly. 0 untyped escapes."""
    stage = data.draw(st.sampled_from(_stages(capture, SESSION_FILE)))
    files = capture.files[stage]
    edited = data.draw(mutated(files[SESSION_FILE]))
    node = _build_over(capture, {**files, SESSION_FILE: edited})
    assert node._state_error is None
    if edited == files[SESSION_FILE]:
        assert node._session_error is None
    else:
        assert node._session_error is not None and _machines(node) == NOTHING


@given(st.data())
@_EXAMPLES
def test_fuzzed_node_state_files_are_refused_with_a_typed_reason(
    capture: Capture, data: st.DataObject
) -> None:
    """Random byte edits of p01's valid node_state.json: the node always builds, and an
    edited file always leaves it refusing every round (never counters of the edit)."""
    stage = data.draw(st.sampled_from(_stages(capture, STATE_FILE)))
    files = {STATE_FILE: capture.files[stage][STATE_FILE]}
    edited = data.draw(mutated(files[STATE_FILE]))
    node = _build_over(capture, {STATE_FILE: edited})
    if edited == files[STATE_FILE]:
        assert node._state_error is None
    else:
        assert node._state_error is not None
        meta = _refusal(node.handle(NodeStage.BEACON_START.value, b""))
        assert meta["error"] == "SecurityViolation"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=8,
)  # fmt: skip
_TAGGED = st.fixed_dictionaries(
    {
        "t": st.sampled_from(["bytes", "x25519", "array", "enum", "msg", "dc", "tuple",
                              "list", "set", "frozenset", "dict", "other"]),
        "v": _JSON | st.text(alphabet="0123456789abcdef", max_size=80),
        "c": st.sampled_from(["protocols.beacon:Commit", "protocols.secagg.client:ClientStage",
                              "protocols.secagg.graph:SessionParameters", "os:system"]),
        "d": st.sampled_from(["<f4", "<u8", "|O"]),
    }
)  # fmt: skip


def _paths(node: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [at]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*at, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*at, i))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        node = node[p]
    return node


def _replace(node: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(node, dict):
        return {**node, head: _replace(node[head], rest, value)}
    return [_replace(v, rest, value) if i == head else v for i, v in enumerate(node)]


@given(st.data())
@_EXAMPLES
def test_fuzzed_resealed_session_files_restore_with_typed_errors_only(
    capture: Capture, data: st.DataObject
) -> None:
    """The restore itself, behind the MAC: any value anywhere in a session file (its
    members, the beacon and SecAgg+ snapshots inside it, the ballot), re-sealed under
    the node's own key, restores or is discarded with a typed reason; 0 untyped
    escapes."""
    key = capture.live._file_key
    stage = data.draw(st.sampled_from(_stages(capture, SESSION_FILE)))
    files = capture.files[stage]
    doc = open_node_file(files[SESSION_FILE], key=key, kind=SESSION_FILE, node="p01")
    tree = {k: json.loads(v) if k in ("beacon", "secagg") and v else v for k, v in doc.items()}
    value = data.draw(_JSON | _TAGGED)
    machines = [(k, "state") for k in ("beacon", "secagg") if tree.get(k)]
    if data.draw(st.booleans()):  # a new member: most often an attribute of a machine
        anywhere = [p for p in _paths(tree) if isinstance(_get(tree, p), dict)]
        where = data.draw(st.sampled_from(machines * 2 * len(anywhere) + anywhere))
        names = ["__class__", "__dict__", "handle", "start", "on_start", "on_outcome"]
        name = data.draw(st.sampled_from(names) | st.text(max_size=10))
        assume(where or name not in ("format", "kind", "node", "mac"))  # the file's own
        forged = _replace(tree, where, {**_get(tree, where), name: value})
    else:  # any value replaced
        forged = _replace(tree, data.draw(st.sampled_from(_paths(tree)[1:])), value)
    body = {k: json.dumps(v) if k in ("beacon", "secagg") and isinstance(v, dict) else v
            for k, v in forged.items()}  # fmt: skip
    sealed = seal_node_file(body, key=key, kind=SESSION_FILE, node="p01")
    node = _build_over(capture, {**files, SESSION_FILE: sealed})
    if node._session_error is not None:
        assert _machines(node) == NOTHING


def test_every_refusal_of_a_session_file_is_typed(capture: Capture) -> None:
    """The errors the node turns into a discarded session are SecurePool's: the reading
    function raises nothing else for the edits above."""
    files = capture.files[(1, NodeStage.SECAGG_KEYS.value)]
    node = capture.build(None)
    node._beacon_last, node._history.last_iteration = 1, 1
    for edited in (
        _flip_weight(files[SESSION_FILE]),
        _strip_mac(files[SESSION_FILE]),
        _inject("__class__")(files[SESSION_FILE]),
        files[SESSION_FILE][:100],
        b"",
        b"{}",
        files[STATE_FILE],
    ):
        with pytest.raises(SecurePoolError):
            node._read_session(edited)
    assert _machines(node) == NOTHING
