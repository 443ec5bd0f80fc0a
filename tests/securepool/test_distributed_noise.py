"""The distributed mechanism's noise, measured (issue 25): the sum of honest members'
shares has the exact distribution of a sum of discrete Gaussians; a coordinator that
unmasks one group's step and subtracts the shares of the allowed colluders still faces
the full noise; the masked inputs of a real run look uniform while their sum is right;
and the participants' ledgers agree with Google's dp-accounting.

Every test here also shows that it can fail: a share 5% too wide is rejected, one honest
member fewer than the floor falls short, a plain input is visibly not uniform."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from binding_helpers import Tap, tapped
from numpy.typing import NDArray
from scipy import stats
from split_helpers import inprocess_nodes
from test_privacy import independent_epsilon

from crypto.entropy import SecureStream
from crypto.signing import IdentityKey
from protocols.secagg.client import SessionHistory
from protocols.secagg.messages import StepGo, StepInput, StepModel, decode_message
from protocols.secagg.settings import MaskSettings
from protocols.secagg.stepped import (
    NoiseFloor,
    SteppedClient,
    SteppedServer,
    StepRule,
    from_words,
    noise_floor,
    to_words,
)
from securepool.config import RunConfig, parse_config
from securepool.coordinator.loop import PoolCoordinator
from securepool.coordinator.records import IterationRecord
from securepool.node.app import ParticipantNode
from securepool.node.wire import NodeStage, Reply
from securepool.privacy.config import Mechanism
from securepool.privacy.distributed import ShareSpec, noised_share, share_spec
from securepool.privacy.noise import grid_for
from securepool.privacy.trainer import ParticipantDP

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits_dp.toml"


def _stream(*parts: object) -> SecureStream:
    """A reproducible stream per test and member (the tests' p-values are then fixed)."""
    return SecureStream.insecure_from_seed(
        hashlib.sha256(repr(parts).encode()).digest(), label=b"test_distributed_noise"
    )


# --- 1. the sum of the honest members' shares: chi-square against the exact pmf ------

SUM_SAMPLES = 200_000
P_MIN = 1e-3


def _dgauss_pmf(sigma: float) -> tuple[NDArray[np.float64], int]:
    """The exact pmf of N_Z(0, sigma^2) on [-half, half], half = 20 sigma (the mass
    beyond is below e^-200; the sampler's own range is 14 sigma), and half."""
    half = math.ceil(20 * sigma)
    x = np.arange(-half, half + 1, dtype=np.float64)
    w = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return w / w.sum(), half


def _sum_pmf(sigma: float, h: int) -> tuple[NDArray[np.float64], int]:
    """The exact pmf of the sum of h independent N_Z(0, sigma^2) (numerical
    convolution), on [-offset, offset]."""
    one, half = _dgauss_pmf(sigma)
    pmf = one
    for _ in range(h - 1):
        pmf = np.convolve(pmf, one)
    return pmf / pmf.sum(), h * half


def _chi_square_p(samples: NDArray[np.int64], pmf: NDArray[np.float64], offset: int) -> float:
    """Chi-square goodness of fit of ``samples`` to ``pmf`` (support [-offset, offset]),
    the integers binned into ~100 bins of nearly equal probability (each expected count
    far above 5)."""
    assert samples.min() >= -offset and samples.max() <= offset
    bins = 100
    mid_cdf = np.cumsum(pmf) - pmf / 2.0
    bin_of = np.minimum((mid_cdf * bins).astype(np.int64), bins - 1)
    expected = np.bincount(bin_of, weights=pmf, minlength=bins) * samples.size
    observed = np.bincount(bin_of[samples + offset], minlength=bins)
    keep = expected > 0
    expected, observed = expected[keep], observed[keep]
    assert expected.min() >= 5 and keep.sum() >= 90
    expected *= observed.sum() / expected.sum()
    return float(stats.chisquare(observed, expected).pvalue)


def _honest_sum(spec: ShareSpec, h: int, tag: str) -> NDArray[np.int64]:
    """h members' shares on a zero gradient (noised_share, each its own stream), summed."""
    zero = np.zeros(SUM_SAMPLES)
    total = np.zeros(SUM_SAMPLES, dtype=np.int64)
    for member in range(h):
        total += noised_share(zero, spec=spec, stream=_stream(tag, spec.share_sigma, h, member))
    return total


@pytest.mark.parametrize("h", [2, 3])
def test_the_sum_of_honest_shares_has_the_exact_pmf_of_a_sum_of_discrete_gaussians(
    h: int,
) -> None:
    # sigma * C / g with C = 1 on a one-coordinate model: the grid is 2^-10, so this
    # noise multiplier puts each member's share at 81.92 grid units
    multiplier = 0.08 * math.sqrt(h)
    spec = share_spec(
        noise_multiplier=multiplier,
        max_grad_norm=1.0,
        dimension=1,
        floor=NoiseFloor(group=h, contributors=h, corrupt=0, honest=h),
    )
    assert 64 <= spec.share_sigma <= 100
    # the shares add up to the local mechanism's noise: h s_share^2 = (sigma C / g)^2
    assert h * spec.share_sigma**2 == pytest.approx((multiplier / spec.grid_step) ** 2)
    pmf, offset = _sum_pmf(spec.share_sigma, h)

    assert _chi_square_p(_honest_sum(spec, h, "exact"), pmf, offset) > P_MIN
    # teeth: the same test, the same sample size, shares 5% too wide -> rejected
    wide = dataclasses.replace(spec, share_sigma=spec.share_sigma * 1.05)
    assert _chi_square_p(_honest_sum(wide, h, "wide"), pmf, offset) < P_MIN


# --- 2. the coordinator's view of one group's step, minus the colluders' shares ------

COORDS = 100_000
MULTIPLIER = 1.1


def _example(*, iterations: int = 2, steps: int = 3) -> RunConfig:
    """examples/digits_dp.toml with the distributed mechanism, ``iterations`` pool
    iterations and ``steps`` DP-SGD steps per iteration."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = text.replace("secure_rng = true", 'secure_rng = true\nmechanism = "distributed"')
    text = text.replace("max_iterations = 15", f"max_iterations = {iterations}")
    text = text.replace("\nsteps = 2\n", f"\nsteps = {steps}\n")
    cfg = parse_config(tomllib.loads(text))
    assert cfg.privacy.mechanism is Mechanism.DISTRIBUTED
    assert cfg.convergence.max_iterations == iterations and cfg.privacy.steps == steps
    return cfg


class StepOfOneGroup:
    """A group of G real stepped clients and the real stepped server: step 0 with the
    last G - floor.contributors members dropped (the fewest contributors any member's
    unmasking accepts: the worst case for the noise), then step 1; every member's inputs
    are its noised shares on a zero gradient, kept to play its colluders' knowledge."""

    def __init__(self, group: int, settings: MaskSettings, *, min_group_size: int) -> None:
        self.floor = noise_floor(group, settings, min_group_size=min_group_size)
        self.spec = share_spec(
            noise_multiplier=MULTIPLIER, max_grad_norm=1.0, dimension=COORDS, floor=self.floor
        )
        pids = [f"p{i:02d}" for i in range(group)]
        ids = {p: IdentityKey.generate() for p in pids}
        pki = {p: k.public_bytes() for p, k in ids.items()}
        rule = StepRule(lr=0.1, momentum=0.0, grid=self.spec.grid_step, batch_size=256.0)
        zero, seed, digest = np.zeros(COORDS), os.urandom(32), os.urandom(32)
        model0 = np.zeros(COORDS, dtype=np.float32)
        self.shares = {
            p: [
                noised_share(zero, spec=self.spec, stream=_stream("view", group, p, s))
                for s in range(2)
            ]
            for p in pids
        }
        self.server = SteppedServer(
            steps=3,
            params=model0,
            rule=rule,
            session="s",
            settings=settings,
            directory=pki,
            length=COORDS,
            min_contributors=min_group_size,
            joint_seed=seed,
        )
        self.clients = {
            p: SteppedClient(
                steps=3,
                params=model0,
                rule=rule,
                pid=p,
                session="s",
                identity=ids[p],
                directory=pki,
                settings=settings,
                update=self.shares[p][0],
                members=pids,
                joint_seed=seed,
                model_digest=digest,
                history=SessionHistory(),
                min_group_size=min_group_size,
            )
            for p in pids
        }
        self.dropped = tuple(pids[self.floor.contributors :])

    def run(self) -> tuple[dict[str, NDArray[np.uint64]], NDArray[np.uint64]]:
        """(the StepInput vectors the coordinator receives in step 1, the step-1 sum it
        unmasks, as the StepModel of step 2 carries it to every contributor)."""
        s, clients = self.server, self.clients
        for p, c in clients.items():
            s.receive(c.start(), sender=p)
        directory = s.close_keys()
        for p, c in clients.items():
            s.receive(c.handle(directory), sender=p)
        for p, msg in s.close_shares().items():
            if p not in self.dropped:
                s.receive(clients[p].handle(msg), sender=p)
        survivors = s.close_inputs()
        for p in sorted(s.survivors):
            s.receive(clients[p].handle(survivors), sender=p)
        unmask = s.close_signatures()
        for p in sorted(s.signers):
            s.receive(clients[p].handle(unmask), sender=p)
        s.close_unmask()
        assert len(s.contributors) == self.floor.contributors
        for p, msg in s.open_step().items():
            s.receive_step(clients[p].handle(msg), sender=p)
        seen: dict[str, NDArray[np.uint64]] = {}
        for p, go in s.close_digests().items():
            clients[p].on_go(go)
            raw = clients[p].masked_input(self.shares[p][1])
            seen[p] = decode_message(raw, StepInput).vector
            s.receive_step(raw, sender=p)
        s.close_step_inputs()
        step2 = {decode_message(m, StepModel).total.tobytes() for m in s.open_step().values()}
        assert len(step2) == 1  # the same sum to every contributor
        return seen, np.frombuffer(step2.pop(), dtype=np.uint64)


@pytest.mark.parametrize("group", [5, 10])
def test_the_coordinators_view_of_a_step_keeps_the_full_noise_without_the_colluders(
    group: int,
) -> None:
    cfg = _example()
    settings = cfg.mask_settings()
    assert settings.bits == 64
    # min_group_size 3 (the default): the unmasking then accepts T < G contributors, the
    # case where the floor is below the group (the example sets 5: all five contribute)
    g = StepOfOneGroup(group, settings, min_group_size=3)
    floor, spec = g.floor, g.spec
    assert (floor.contributors, floor.corrupt, floor.honest) == {
        5: (4, 1, 3),
        10: (7, 2, 5),
    }[group]
    seen, step_sum = g.run()

    # the coordinator's view: the masked inputs, whose sum is the step's sum
    assert sorted(seen) == sorted(g.server.contributors)
    assert np.array_equal(sum(seen.values(), np.zeros(COORDS + 1, np.uint64)), step_sum)
    total, count = from_words(step_sum)
    assert count == floor.contributors
    contributors = sorted(seen)
    assert np.array_equal(total, sum(g.shares[p][1] for p in contributors))

    # the attack: the colluders (floor.corrupt contributors) subtract their own shares,
    # known exactly; the worst case leaves floor.honest honest shares
    colluders = contributors[: floor.corrupt]
    residual = total - sum(g.shares[p][1] for p in colluders)
    assert len(contributors) - len(colluders) == floor.honest
    target = (MULTIPLIER * 1.0 / spec.grid_step) ** 2  # (sigma C / g)^2, grid units
    tolerance = 4.0 * math.sqrt(2.0 / COORDS)  # 4 standard errors of a sample variance
    variance = float(np.mean(residual.astype(np.float64) ** 2))  # mean 0 by symmetry
    assert variance >= target * (1.0 - tolerance)
    assert variance <= target * (1.0 + tolerance)  # and not padded beyond the target

    # teeth: one honest member fewer than the floor (one more share removed) falls short
    fewer = residual - g.shares[contributors[floor.corrupt]][1]
    short = float(np.mean(fewer.astype(np.float64) ** 2))
    assert short < target * (1.0 - tolerance)
    assert short == pytest.approx(target * (floor.honest - 1) / floor.honest, rel=tolerance)


@pytest.mark.parametrize("group", [3, 5, 10, 25])
@pytest.mark.parametrize(("sigma", "dimension"), [(0.6, 650), (1.1, 100_000), (4.0, 7_000)])
def test_the_effective_multiplier_is_the_local_mechanisms(
    group: int, sigma: float, dimension: int
) -> None:
    settings = _example().mask_settings()
    floor = noise_floor(group, settings, min_group_size=3)
    spec = share_spec(noise_multiplier=sigma, max_grad_norm=1.0, dimension=dimension, floor=floor)
    local = grid_for(noise_multiplier=sigma, max_grad_norm=1.0, dimension=dimension)
    assert spec.effective_multiplier == pytest.approx(local.effective_multiplier, rel=1e-3)
    assert spec.effective_multiplier <= sigma  # rounding only ever costs noise


# --- 3 and 4. a real run: the coordinator's view and the ledgers -----------------------


@dataclasses.dataclass
class Run:
    cfg: RunConfig
    nodes: dict[str, ParticipantNode]
    coordinator: PoolCoordinator
    tap: Tap
    #: (session, member, step) -> the integers the member put into masked_input
    plain: dict[tuple[str, str, int], NDArray[np.int64]]
    records: list[IterationRecord]


@pytest.fixture(scope="module")
def distributed_run() -> Iterator[Run]:
    """examples/digits_dp.toml, distributed, 2 iterations of 3 steps, in process: the
    real coordinator and nodes over a tap; every member's plain step inputs recorded."""
    cfg = _example()
    nodes, registry = inprocess_nodes(cfg)
    made, build = tapped()
    plain: dict[tuple[str, str, int], NDArray[np.int64]] = {}
    original = SteppedClient.masked_input

    def recording(self: SteppedClient, values: NDArray[np.int64]) -> bytes:
        plain[(self.session, self.pid, self.step)] = np.asarray(values).copy()
        return original(self, values)

    records: list[IterationRecord] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(SteppedClient, "masked_input", recording)
        coord = PoolCoordinator(
            cfg,
            driver_factory=lambda: build(dict(nodes)),
            registry=registry,
            n_features=64,
            n_classes=10,
        )
        coord.run(on_iteration=records.append)
    yield Run(cfg, nodes, coord, made[0], plain, records)


def _step_inputs(run: Run) -> dict[tuple[str, int], dict[str, NDArray[np.uint64]]]:
    """(session, step) -> each contributor's StepInput vector, as the coordinator got it."""
    out: dict[tuple[str, int], dict[str, NDArray[np.uint64]]] = {}
    for part in run.tap.parts(NodeStage.DP_STEP.value):
        go = decode_message(part.payload, StepGo)
        assert part.answer is not None
        reply = Reply.from_bytes(part.answer)
        assert reply.ok
        msg = decode_message(reply.body, StepInput)
        assert (msg.session, msg.step, msg.sender) == (go.session, go.step, part.node)
        out.setdefault((msg.session, msg.step), {})[msg.sender] = msg.vector
    return out


def _step_sums(run: Run) -> dict[tuple[str, int], NDArray[np.uint64]]:
    """(session, step) -> the sum the coordinator sends back at step + 1 (one for all)."""
    out: dict[tuple[str, int], NDArray[np.uint64]] = {}
    for part in run.tap.parts(NodeStage.DP_MODEL.value):
        msg = decode_message(part.payload, StepModel)
        key = (msg.session, msg.step - 1)
        assert key not in out or np.array_equal(out[key], msg.total)
        out[key] = msg.total
    return out


NEAR_ZERO = 1 << 32  # a plain share's word is within this of 0 modulo 2^64


def _near_zero(words: NDArray[np.uint64]) -> NDArray[np.bool_]:
    return (words < np.uint64(NEAR_ZERO)) | (words > np.uint64((1 << 64) - NEAR_ZERO))


def test_each_step_input_looks_uniform_while_the_steps_sum_counts_the_contributors(
    distributed_run: Run,
) -> None:
    run = distributed_run
    assert len(run.records) == 2
    inputs, sums = _step_inputs(run), _step_sums(run)
    # steps 1 and 2 of each iteration reach the coordinator masked; step 1's sum goes
    # back out with step 2 (the last step's sum only moves the coordinator's model)
    assert sorted(step for _session, step in inputs) == [1, 1, 2, 2]
    everyone = sorted(run.nodes)
    for record in run.records:
        (group,) = record.groups
        assert group.status == "aggregated" and not group.note
        assert sorted(group.contributors) == everyone
    assert len({session for session, _step in inputs}) == 2  # one group per iteration
    checked = 0
    for (session, step), vectors in inputs.items():
        assert sorted(vectors) == everyone
        dim = next(iter(vectors.values())).size - 1
        for pid, vector in vectors.items():
            plain = run.plain[(session, pid, step)]
            assert plain.dtype == np.int64 and plain.size == dim
            words = to_words(plain)
            # no coordinate is the member's plain integer (nor its count word)
            assert not np.any(vector == words)
            # uniform modulo 2^64; the plain words are far from it (the test's teeth)
            assert not np.any(_near_zero(vector)) and np.all(_near_zero(words))
            u = vector.astype(np.float64) / 2.0**64
            assert stats.kstest(u, "uniform").pvalue > 1e-6
            assert stats.kstest(words.astype(np.float64) / 2.0**64, "uniform").pvalue < 1e-6
        total = sum(vectors.values(), np.zeros(dim + 1, dtype=np.uint64))
        values, count = from_words(total)
        assert count == len(everyone)  # the number of contributors
        assert np.array_equal(values, sum(run.plain[(session, p, step)] for p in vectors))
        if (session, step) in sums:
            assert np.array_equal(sums[(session, step)], total)
            checked += 1
    assert checked == 2


def test_the_ledgers_epsilon_matches_dp_accounting_for_a_distributed_run(
    distributed_run: Run,
) -> None:
    run = distributed_run
    cfg = run.cfg
    reports: dict[str, Any] = run.coordinator.trainer.report() or {}
    assert sorted(reports) == sorted(run.nodes)
    # what every member derives from public values alone: the group of 5's floor, the
    # configured target's sigma, the logreg's 650 parameters
    sigma = ParticipantDP(
        "public", cfg.privacy, planned_rounds=cfg.convergence.max_iterations
    ).noise_multiplier(cfg.training.settings())
    floor = noise_floor(5, cfg.mask_settings(), min_group_size=cfg.assignment.min_group_size)
    spec = share_spec(
        noise_multiplier=sigma,
        max_grad_norm=cfg.privacy.max_grad_norm,
        dimension=650,
        floor=floor,
    )
    local = grid_for(noise_multiplier=sigma, max_grad_norm=cfg.privacy.max_grad_norm, dimension=650)
    assert spec.effective_multiplier == pytest.approx(local.effective_multiplier, rel=1e-3)
    delta = cfg.privacy.delta
    for pid, node in run.nodes.items():
        report = reports[pid]  # the node's report, as summary.json shows it
        assert report["mechanism"] == "distributed"
        assert report["iterations"] == 2 and report["steps"] == 2 * cfg.privacy.steps
        assert report["sample_rate"] == cfg.privacy.sample_rate
        assert report["noise_multiplier"] == pytest.approx(spec.effective_multiplier, rel=1e-12)
        history = node._dp.ledger.account(pid).history  # the node's own ledger
        assert [(s, q) for s, q, _ in history] == [(report["noise_multiplier"], 1.0)] * 2
        assert report["epsilon"] == node._dp.epsilon()
        theirs = independent_epsilon(
            report["sample_rate"], report["noise_multiplier"], report["steps"], delta
        )
        assert report["epsilon"] == pytest.approx(theirs, rel=0.01)
        # the same (q, sigma, steps) under the local mechanism's multiplier: same epsilon
        assert theirs == pytest.approx(
            independent_epsilon(1.0, local.effective_multiplier, report["steps"], delta),
            rel=5e-3,
        )
