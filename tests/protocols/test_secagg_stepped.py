"""Multi-step SecAgg+ sessions (protocols/secagg/stepped.py), played from the
coordinator's side of the wire: honest steps, a dropout in step 0, a contributor that
vanishes later, and a lying coordinator (another sum for one member, forged or missing
signatures, replayed and out-of-order steps)."""

from __future__ import annotations

import contextlib
import hashlib
import os

import numpy as np
import pytest

from crypto.errors import MessageError, SecurePoolError, SecurityViolation, StageError
from crypto.signing import IdentityKey
from protocols.secagg.client import SessionHistory
from protocols.secagg.messages import (
    StepGo,
    StepInput,
    StepModel,
    decode_message,
    encode_message,
)
from protocols.secagg.settings import MaskSettings
from protocols.secagg.stepped import (
    SteppedClient,
    SteppedServer,
    StepRule,
    StepsStopped,
    from_words,
    noise_floor,
    to_words,
)

SETTINGS = MaskSettings(bits=64, max_weight=1.0)
RULE = StepRule(lr=0.5, momentum=0.9, grid=2.0**-12, batch_size=4.0)
D = 6
STEPS = 3
DIGEST = hashlib.sha256(b"the global model").digest()


class Group:
    """n honest stepped clients and the honest stepped server; the test carries the
    messages (and may replace them)."""

    def __init__(
        self, n: int = 5, *, steps: int = STEPS, seed: int = 0, settings: MaskSettings = SETTINGS
    ) -> None:
        rng = np.random.default_rng(seed)
        self.pids = [f"p{i:02d}" for i in range(n)]
        self.ids = {p: IdentityKey.generate() for p in self.pids}
        self.pki = {p: k.public_bytes() for p, k in self.ids.items()}
        self.model0 = rng.normal(size=D).astype(np.float32)
        seed32 = os.urandom(32)
        #: each member's integer input per step (what it would add to the sum)
        self.inputs = {
            p: [rng.integers(-(2**20), 2**20, D, dtype=np.int64) for _ in range(steps)]
            for p in self.pids
        }
        self.server = SteppedServer(
            steps=steps,
            params=self.model0,
            rule=RULE,
            session="s",
            settings=settings,
            directory=self.pki,
            length=D,
            min_contributors=3,
            joint_seed=seed32,
        )
        self.clients = {
            p: SteppedClient(
                steps=steps,
                params=self.model0,
                rule=RULE,
                pid=p,
                session="s",
                identity=self.ids[p],
                directory=self.pki,
                settings=settings,
                update=self.inputs[p][0],
                members=self.pids,
                joint_seed=seed32,
                model_digest=DIGEST,
                history=SessionHistory(),
            )
            for p in self.pids
        }

    def step0(self, drop: tuple[str, ...] = ()) -> np.ndarray:
        """The ordinary SecAgg+ session; ``drop`` never send their masked input."""
        s = self.server
        for p, c in self.clients.items():
            s.receive(c.start(), sender=p)
        directory = s.close_keys()
        for p in self.pids:
            s.receive(self.clients[p].handle(directory), sender=p)
        for p, msg in s.close_shares().items():
            if p not in drop:
                s.receive(self.clients[p].handle(msg), sender=p)
        survivors = s.close_inputs()
        for p in sorted(s.survivors):
            s.receive(self.clients[p].handle(survivors), sender=p)
        unmask = s.close_signatures()
        for p in sorted(s.signers):
            s.receive(self.clients[p].handle(unmask), sender=p)
        return s.close_unmask()

    def models(self, step: int) -> dict[str, bytes]:
        """StepModel out, each contributor's StepDigest in (returns the digests sent)."""
        out = self.server.open_step()
        assert self.server.step == step
        replies = {}
        for p, msg in out.items():
            replies[p] = self.clients[p].handle(msg)
            self.server.receive_step(replies[p], sender=p)
        return replies

    def inputs_in(self, step: int, skip: tuple[str, ...] = ()) -> dict[str, bytes]:
        sent = {}
        for p, msg in self.server.close_digests().items():
            if p in skip:
                continue
            self.clients[p].on_go(msg)
            sent[p] = self.clients[p].masked_input(self.inputs[p][step])
            self.server.receive_step(sent[p], sender=p)
        return sent


def _expected_models(g: Group, contributors: list[str], steps: int) -> list[np.ndarray]:
    model, velocity = g.model0, np.zeros(D)
    out = []
    for s in range(steps):
        total = sum(g.inputs[p][s] for p in contributors)
        model, velocity = RULE.apply(model, velocity, np.asarray(total), len(contributors))
        out.append(model)
    return out


def test_every_step_sums_exactly_and_both_sides_reach_the_same_model() -> None:
    g = Group()
    total0 = g.step0()
    ints, count = from_words(total0)
    assert count == 5 and np.array_equal(ints, sum(g.inputs[p][0] for p in g.pids))
    expected = _expected_models(g, g.pids, STEPS)
    assert np.array_equal(g.server.model, expected[0])
    for step in (1, 2):
        g.models(step)
        g.inputs_in(step)
        g.server.close_step_inputs()
        assert np.array_equal(g.server.model, expected[step])
        assert all(np.array_equal(c.model, expected[step - 1]) for c in g.clients.values())
    assert not g.server.more and g.server.completed == STEPS
    assert all(c.phase == "done" for c in g.clients.values())


def test_a_step_input_is_masked_and_each_step_has_fresh_masks() -> None:
    g = Group()
    g.step0()
    g.models(1)
    sent = g.inputs_in(1)
    p = g.pids[0]
    masked1 = decode_message(sent[p], StepInput).vector
    assert not np.array_equal(masked1, to_words(g.inputs[p][1]))
    g.server.close_step_inputs()
    g.models(2)
    g.inputs[p][2] = g.inputs[p][1]  # the same plaintext in step 2
    sent2 = g.inputs_in(2)
    masked2 = decode_message(sent2[p], StepInput).vector
    # reused masks would cancel in the difference and reveal it (zero here)
    assert np.count_nonzero(masked2 - masked1) >= D


def test_a_dropout_in_step_0_is_recovered_and_later_steps_leave_it_out() -> None:
    g = Group(6)
    g.step0(drop=("p03",))
    contributors = [p for p in g.pids if p != "p03"]
    assert sorted(g.server.contributors) == contributors
    expected = _expected_models(g, contributors, STEPS)
    assert np.array_equal(g.server.model, expected[0])
    for step in (1, 2):
        out = g.server.open_step()
        assert "p03" not in out
        with pytest.raises(StageError):  # never unmasked for: no step reaches it
            g.clients["p03"].handle(out["p00"])
        for p, msg in out.items():
            g.server.receive_step(g.clients[p].handle(msg), sender=p)
        g.inputs_in(step)
        g.server.close_step_inputs()
        assert np.array_equal(g.server.model, expected[step])


def test_a_contributor_that_vanishes_stops_the_steps_and_the_last_model_stands() -> None:
    g = Group()
    g.step0()
    g.models(1)
    g.inputs_in(1, skip=("p02",))
    before = g.server.model.copy()
    with pytest.raises(StepsStopped, match="p02"):
        g.server.close_step_inputs()
    assert g.server.completed == 1 and np.array_equal(g.server.model, before)
    assert not g.server.more
    with pytest.raises(StageError):
        g.server.open_step()


def test_another_sum_for_one_member_is_caught_before_any_input_leaves() -> None:
    """The coordinator aims a crafted model at p01 by sending it another step-0 sum: every
    member refuses the StepGo, since p01's signature is over another model."""
    g = Group()
    g.step0()
    out = g.server.open_step()
    real = decode_message(out["p01"], StepModel)
    forged_total = real.total.copy()
    forged_total[0] += np.uint64(2**16)
    forged = encode_message(StepModel("s", 1, forged_total))
    sigs = {}
    for p, msg in out.items():
        reply = g.clients[p].handle(forged if p == "p01" else msg)
        sigs[p] = decode_message(reply).signature
        with contextlib.suppress(SecurePoolError):  # the honest server refuses p01's
            g.server.receive_step(reply, sender=p)
    with pytest.raises(StepsStopped, match="p01"):
        g.server.close_digests()
    go = encode_message(StepGo("s", 1, sigs))  # a lying server forwards them all
    for p in g.pids:
        with pytest.raises(SecurityViolation, match="did not sign the model"):
            g.clients[p].on_go(go)
        with pytest.raises(StageError):
            g.clients[p].masked_input(g.inputs[p][1])


@pytest.mark.parametrize("lie", ["missing", "forged", "stranger"])
def test_a_go_without_every_contributors_signature_is_refused(lie: str) -> None:
    g = Group()
    g.step0()
    replies = g.models(1)
    sigs = {p: decode_message(r).signature for p, r in replies.items()}
    if lie == "missing":
        del sigs["p04"]
    elif lie == "forged":
        sigs["p04"] = bytes(64)
    else:
        sigs["zz"] = bytes(64)
    for p in g.pids:
        with pytest.raises(SecurityViolation):
            g.clients[p].on_go(encode_message(StepGo("s", 1, sigs)))


def test_steps_run_once_each_and_in_order() -> None:
    g = Group()
    g.step0()
    out = g.server.open_step()
    msg = decode_message(out["p00"], StepModel)
    client = g.clients["p00"]
    with pytest.raises(StageError, match="in order"):  # step 2 before step 1
        client.handle(encode_message(StepModel("s", 2, msg.total)))
    client.handle(out["p00"])
    with pytest.raises(StageError):  # step 1 again (a replay)
        client.handle(out["p00"])
    with pytest.raises(StageError):  # an input before the go
        client.masked_input(g.inputs["p00"][1])
    with pytest.raises(StageError):  # another session's StepModel
        client.handle(encode_message(StepModel("other", 1, msg.total)))


def test_a_step_beyond_the_agreed_count_is_refused() -> None:
    g = Group(steps=2)
    g.step0()
    g.models(1)
    g.inputs_in(1)
    g.server.close_step_inputs()
    total = g.server._total
    assert total is not None and not g.server.more
    for p in g.pids:
        with pytest.raises(StageError, match="done"):
            g.clients[p].handle(encode_message(StepModel("s", 2, total)))


def test_a_sum_with_a_wrong_count_word_is_refused() -> None:
    """A step sum claiming another number of inputs than the contributors (the
    coordinator pretending fewer members, to shrink the divisor) is refused."""
    g = Group()
    g.step0()
    out = g.server.open_step()
    total = decode_message(out["p00"], StepModel).total.copy()
    total[-1] = np.uint64(3)
    with pytest.raises(SecurityViolation, match="counts 3"):
        g.clients["p00"].handle(encode_message(StepModel("s", 1, total)))


def test_a_member_that_lies_in_its_count_word_stops_the_step() -> None:
    g = Group()
    g.step0()
    g.models(1)
    for p, msg in g.server.close_digests().items():
        g.clients[p].on_go(msg)
        data = g.clients[p].masked_input(g.inputs[p][1])
        if p == "p03":
            m = decode_message(data, StepInput)
            v = m.vector.copy()
            v[-1] += np.uint64(1)
            data = encode_message(StepInput("s", p, 1, v))
        g.server.receive_step(data, sender=p)
    with pytest.raises(StepsStopped, match="count word"):
        g.server.close_step_inputs()


def test_the_server_refuses_step_messages_out_of_place() -> None:
    g = Group()
    g.step0()
    replies = g.models(1)
    with pytest.raises(SecurityViolation):  # in another member's name
        g.server.receive_step(replies["p00"], sender="p01")
    g.server.close_digests()
    with pytest.raises(StageError):  # a digest again, now that inputs are expected
        g.server.receive_step(replies["p00"], sender="p00")
    with pytest.raises(MessageError):
        g.server.receive_step(b"junk", sender="p00")


def test_a_multi_step_client_refuses_32_bit_words() -> None:
    g = Group(settings=MaskSettings(bits=32, max_weight=1.0))
    with pytest.raises(SecurityViolation, match="64-bit"):
        g.step0()


def test_a_multi_step_client_refuses_a_binding() -> None:
    g = Group()
    with pytest.raises(SecurityViolation, match="binding"):
        SteppedClient(
            steps=2,
            params=g.model0,
            rule=RULE,
            binding=object(),
            pid="p00",
            session="s",
            identity=g.ids["p00"],
            directory=g.pki,
            settings=SETTINGS,
            update=g.inputs["p00"][0],
            members=g.pids,
            joint_seed=os.urandom(32),
            model_digest=DIGEST,
        )


@pytest.mark.parametrize(
    ("n", "corrupt", "honest"), [(3, 0.2, 2), (5, 0.2, 3), (10, 0.2, 5), (20, 0.1, 10)]
)
def test_noise_floor_is_the_required_contributors_minus_the_colluders(
    n: int, corrupt: float, honest: int
) -> None:
    floor = noise_floor(n, MaskSettings(bits=64, corrupt_fraction=corrupt), min_group_size=3)
    assert floor.honest == honest
    assert floor.contributors - floor.corrupt == honest


def test_a_member_restored_from_its_session_file_between_steps_carries_on() -> None:
    """A node whose process restarts between messages (the Flower runtime) rebuilds its
    multi-step client from the snapshot and finishes the steps with the same sums."""
    from protocols.session_state import restore_secagg, snapshot_secagg

    g = Group()
    g.step0()
    out = g.server.open_step()
    for p, msg in out.items():
        client = g.clients[p]
        data = snapshot_secagg(client)
        g.clients[p] = restore_secagg(
            data,
            identity=g.ids[p],
            history=SessionHistory(),
            settings=SETTINGS,
            cls=SteppedClient,
        )
        assert isinstance(g.clients[p], SteppedClient)
        g.server.receive_step(g.clients[p].handle(msg), sender=p)
    g.inputs_in(1)
    g.server.close_step_inputs()
    expected = _expected_models(g, g.pids, STEPS)
    assert np.array_equal(g.server.model, expected[1])
