"""Malicious participants for experiments (``[attack]``): a node that lies at the wire.

An attacker is a :class:`~securepool.node.app.ParticipantNode` subclass, built in place
of the honest node for the participants the config names (or draws), in every runtime
(:func:`participant_class`: the in-process nodes, the multiprocess and Flower node
builders and the simulation all ask it): it runs the same protocol code and lies
exactly where a real malicious agency would, in what it trains on and in what it sends.

It knows what such an agency knows: its own records, its own training, the public run
config (hence the run seed, so also the PUBLIC sketch projection of every session,
:func:`securepool.trust.check.public_projection_seed`, which ``kernel`` aims at), the
global model it is sent and the members of its group; not its peers' updates, not how
many of them are malicious. So:

* data kinds (``label_flip``, ``backdoor``, ``backdoor_cover``) poison its own records
  on their first use (:func:`securepool.attacks.poison_local_data`);
* every benign statistic an attack needs is estimated from its own honest training:
  the benign mean by its honest update (``ipm``; ``kernel``'s median benign norm by its
  norm), the benign spread (``alie``) by the spread over its honest update and
  :data:`~securepool.attacks.BOOTSTRAPS` (3) extra honest trainings on bootstrap
  resamples of its own records; ALIE's z is ``alie_z(group size, 1)`` (it knows of one
  attacker, itself) unless ``strength`` is set;
* ``backdoor`` / ``backdoor_cover`` train on the triggered records and boost by the
  group size (or ``strength``); ``backdoor_cover``'s cover is an honest update trained
  on its clean records with the honest node's training seed;
* the cover kinds (:data:`~securepool.attacks.COVER_KINDS`) tell the trust check about
  the cover while the input sent is the poisoned one: in mask mode the binding report's
  sketch is of the cover (:class:`CoverClient`); in plaintext mode (the coordinator
  summarises the update it received) and HE mode (the auditor folds the ciphertexts
  themselves) there is no summary of its own to lie in, so the poisoned update is sent
  and the cover is moot;
* the weight sent is the honest one (its clean record count), whatever it trained on;
* under the validation vote (``trust.voting = "validation"``) it stuffs its ballot: a
  colluding peer (the malicious set is in the public config) gets the best score.

The extra trainings (bootstraps, the clean cover) are plain SGD, with or without
``[privacy]``: they never leave the node but as a cover's summary. Everything random
(Gaussian noise, bootstrap resamples) is drawn from the attack's seed, the iteration and
the participant, so a node rebuilt for every message (Flower) or resumed lies the same.
See :mod:`securepool.attacks` for each kind.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from crypto.errors import StageError
from crypto.fixedpoint import FixedPointSpec
from crypto.prg import expand_mask
from protocols.aggregation import Weighting
from protocols.secagg.binding import BindingReport, projection
from protocols.secagg.client import SecAggClient, encode_input
from protocols.secagg.labels import PAIR_MASK_LABEL, pair_sign
from securepool.attacks import (
    BOOTSTRAPS,
    COVER_KINDS,
    DATA_KINDS,
    DEFAULT_STRENGTH,
    AttackKind,
    alie_update,
    alie_z,
    kernel_poison,
    poison_local_data,
)
from securepool.config import RunConfig
from securepool.node.app import ParticipantNode, training_seed

if TYPE_CHECKING:
    from securepool.data import LocalData


def malicious_ids(cfg: RunConfig) -> frozenset[str]:
    """The participants ``[attack]`` makes malicious: ``participants`` as listed, or
    ``round(fraction x n)`` of them drawn with the attack's ``seed``."""
    a = cfg.attack
    if not a.enabled:
        return frozenset()
    if a.participants:
        return frozenset(a.participants)
    everyone = cfg.data.ids()
    k = int(round(a.fraction * len(everyone)))
    rng = np.random.default_rng(a.seed)
    return frozenset(rng.choice(everyone, size=k, replace=False).tolist())


def participant_class(cfg: RunConfig, pid: str) -> type[ParticipantNode]:
    """The node class participant ``pid`` runs: an attacker's, or the honest one."""
    if pid in malicious_ids(cfg):
        return AttackerNode
    return ParticipantNode


class InflatingClient(SecAggClient):
    """A SecAgg+ client that encodes its claimed weight as it is, past the cap every
    honest client applies (``max_weight``: 1 under equal weighting): ``weight x update``
    and ``weight`` as raw words at the group's scale, mod 2^bits, as an attacker writing
    its own encoder would. Its binding report is of exactly that input (truthful)."""

    def _plain_input(self, spec: FixedPointSpec) -> NDArray[np.unsignedinteger]:
        w = float(self._weight)
        clipped = np.clip(
            self._update.astype(np.float64), -self._settings.clip, self._settings.clip
        )
        values = np.concatenate([w * clipped, [w]])
        words = np.round(values * spec.scale).astype(np.int64)
        return words.astype(spec.dtype)  # two's complement: wraps mod 2^bits


class OmittingClient(SecAggClient):
    """A SecAgg+ client with an honest input whose binding report leaves out the seed
    towards every neighbour, each mask folded into r so that r still adds up to R y
    (``seed_omission``): what used to open a dispute with every honest neighbour."""

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = super()._report_body(seed, dim)
        spec = self._spec
        if spec is None:
            raise StageError(f"{self.pid}: no key directory seen")
        proj = projection(seed, length=self._update.size + 1, dim=dim)
        r = honest.r
        for peer, s_ in honest.seeds.items():
            m = proj.apply(
                expand_mask(s_, label=PAIR_MASK_LABEL, length=proj.length, dtype=spec.dtype)
            )
            r = r + m if pair_sign(self.pid, peer) > 0 else r - m
        return BindingReport(self.session, self.pid, r, honest.self_seed, {})


class CoverClient(SecAggClient):
    """A SecAgg+ client that masks its (poisoned) input honestly but seals a binding
    report whose sketch is of ``cover`` instead: the mask-mode cover attack. With
    ``cover = None`` it reports its input, as the honest client does.

    ``cover`` is a float32 vector, so it survives the node's session snapshot
    (:mod:`protocols.session_state`, restored with ``cls=CoverClient``)."""

    def __init__(self, *, cover: NDArray[np.float32] | None, **kw: Any) -> None:
        super().__init__(**kw)
        self.cover = cover

    def _report_body(self, seed: bytes, dim: int) -> BindingReport:
        honest = super()._report_body(seed, dim)
        if self.cover is None:
            return honest
        s, spec = self._settings, self._spec
        if spec is None:
            raise StageError(f"{self.pid}: no key directory seen")
        cover = encode_input(self.cover, self._weight, spec, clip=s.clip, max_weight=s.max_weight)
        r_cover = projection(seed, length=cover.size, dim=dim).apply(cover)
        return BindingReport(self.session, self.pid, r_cover, honest.self_seed, dict(honest.seeds))


class AttackerNode(ParticipantNode):
    """A malicious participant's node (see the module docstring)."""

    _poisoned: LocalData | None = None  # its records as it trains on them, on first use

    @property
    def kind(self) -> AttackKind:
        """The attack this node performs (``attack.kind``)."""
        return self.cfg.attack.kind

    # --- what it trains on -----------------------------------------------------------

    @property
    def _clean(self) -> LocalData:
        """Its own records as they are."""
        return super()._data

    @property
    def _data(self) -> LocalData:
        if self.kind not in DATA_KINDS:
            return self._clean
        if self._poisoned is None:
            self._poisoned = poison_local_data(self.kind, self._clean, n_classes=self._shape[1])
        return self._poisoned

    def _local_update(
        self,
        model_id: str,
        params: NDArray[np.float32],
        iteration: int,
        members: tuple[str, ...],
    ) -> tuple[NDArray[np.float32] | None, float, dict[str, Any]]:
        """Trained on its (possibly poisoned) records; weighted as the honest node would
        be (1 under equal weighting, its clean record count under ``records``), except
        under ``weight_inflation``: the claimed ``strength`` records."""
        update, weight, meta = super()._local_update(model_id, params, iteration, members)
        if update is not None and self.cfg.aggregation.weighting is Weighting.RECORDS:
            weight = float(self._clean.n_train)
            if self.kind is AttackKind.WEIGHT_INFLATION:
                weight = self._claimed_weight()
        return update, weight, meta

    def _claimed_weight(self) -> float:
        """1 as the honest node claims, or ``strength`` records (``weight_inflation``)."""
        if self.kind is AttackKind.WEIGHT_INFLATION:
            return self.cfg.attack.strength or DEFAULT_STRENGTH[self.kind]
        return 1.0

    # --- what it sends ---------------------------------------------------------------

    def _outgoing(
        self,
        trained: NDArray[np.float32],
        *,
        session: str,
        model_id: str,
        params: NDArray[np.float32],
        iteration: int,
        members: tuple[str, ...],
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """(the poisoned update it sends, the update its summary describes)."""
        kind, a = self.kind, self.cfg.attack
        s = a.strength or DEFAULT_STRENGTH[kind]
        own = trained.astype(np.float64)
        if kind is AttackKind.SIGN_FLIP or kind is AttackKind.IPM:
            # IPM: -strength x the benign mean, which it estimates by its own update
            sent = _f32(-s * own)
            return sent, sent
        if kind is AttackKind.SCALING:
            sent = _f32(s * own)
            return sent, sent
        if kind is AttackKind.GAUSSIAN_NOISE:
            sent = _f32(self._rng(iteration, "noise").normal(0.0, s, size=own.shape))
            return sent, sent
        if kind is AttackKind.ALIE:
            z = a.strength or alie_z(len(members), 1)
            sample = [trained, *self._bootstraps(model_id, params, iteration)]
            sent = alie_update(sample, z)
            return sent, sent
        if kind is AttackKind.SEED_OMISSION:
            return trained, trained  # an honest input: it lies in its binding report
        if kind is AttackKind.LABEL_FLIP or kind is AttackKind.WEIGHT_INFLATION:
            return trained, trained  # poisoned through its records (and its weight)
        if kind in (AttackKind.BACKDOOR, AttackKind.BACKDOOR_COVER):
            sent = _f32((a.strength or float(len(members))) * own)
            if kind is AttackKind.BACKDOOR:
                return sent, sent
            clean = self._clean
            seed = training_seed(self.cfg.run.seed, iteration, members.index(self.pid))
            return sent, self._train_on(model_id, params, clean.x_train, clean.y_train, seed)
        if kind is AttackKind.SCALING_COVER:
            return _f32(-s * own), trained
        return self._kernel(trained, session=session), trained

    def _kernel(self, trained: NDArray[np.float32], *, session: str) -> NDArray[np.float32]:
        """``trained`` minus alpha x its part in the kernel of the session's public
        sketch projection (the one it can know; every mode judges a projection drawn
        after the inputs are fixed instead); unchanged with raw summaries (no kernel)."""
        from protocols.summaries import sketch_projection
        from securepool.trust.check import public_projection_seed

        trust, a = self.cfg.trust, self.cfg.attack
        if trust.sketch_dim == 0:
            return trained
        buckets, signs = sketch_projection(
            trained.size,
            dim=trust.sketch_dim,
            seed=public_projection_seed(self.cfg.run.seed, session),
        )
        median = float(np.linalg.norm(trained.astype(np.float64)))  # its benign estimate
        mult = a.strength or (0.95 * trust.norm_ratio if trust.norm_ratio > 0 else 3.0)
        return kernel_poison(
            trained, buckets=buckets, signs=signs, dim=trust.sketch_dim, target_norm=mult * median
        )

    def _secagg_class(self) -> type[SecAggClient]:
        if self.kind is AttackKind.WEIGHT_INFLATION:
            return InflatingClient
        if self.kind is AttackKind.SEED_OMISSION:
            return OmittingClient
        return CoverClient if self.kind in COVER_KINDS else SecAggClient

    def _secagg_client(self, summary_of: NDArray[np.float32], **kw: Any) -> SecAggClient:
        if self.kind is AttackKind.WEIGHT_INFLATION:
            return InflatingClient(**kw)
        if self.kind is AttackKind.SEED_OMISSION:
            return OmittingClient(**kw)
        if self.kind not in COVER_KINDS:
            return SecAggClient(**kw)
        cover = None if summary_of is kw["update"] else summary_of
        return CoverClient(cover=cover, **kw)

    def score_candidates(
        self,
        model_id: str,
        params: NDArray[np.float32],
        candidates: Mapping[str, NDArray[np.float32]],
    ) -> dict[str, float]:
        """Ballot stuffing under the validation vote: its honest losses, except that a
        colluding peer of the group (the first malicious one by name: the malicious set
        is in the public config) gets the best score, so the attackers vote for each
        other."""
        ballot = super().score_candidates(model_id, params, candidates)
        peers = sorted(c for c in ballot if c in malicious_ids(self.cfg) and c != self.pid)
        if peers and ballot:
            ballot[peers[0]] = min(ballot.values()) - 1.0
        return ballot

    # --- its own estimates -----------------------------------------------------------

    def _rng(self, iteration: int, purpose: str) -> np.random.Generator:
        """Randomness of this attacker, iteration and purpose (from the attack's seed)."""
        words = [self.cfg.attack.seed, iteration, zlib.crc32(f"{self.pid}/{purpose}".encode())]
        return np.random.default_rng(np.random.SeedSequence(words))

    def _bootstraps(
        self, model_id: str, params: NDArray[np.float32], iteration: int
    ) -> list[NDArray[np.float32]]:
        """:data:`~securepool.attacks.BOOTSTRAPS` honest updates, each trained on a resample (with
        replacement) of its own records: its stand-in for the benign members' spread."""
        d = self._data
        rng = self._rng(iteration, "bootstrap")
        out = []
        for _ in range(BOOTSTRAPS):
            idx = rng.integers(0, d.n_train, size=d.n_train)
            seed = int(rng.integers(2**31))
            out.append(self._train_on(model_id, params, d.x_train[idx], d.y_train[idx], seed))
        return out

    def _train_on(
        self, model_id: str, params: NDArray[np.float32], x: Any, y: Any, seed: int
    ) -> NDArray[np.float32]:
        """One plain honest training from ``params`` on (x, y): the update."""
        from securepool.models import flatten, load_flat
        from securepool.training import PlainTrainer

        model, layout = self._models()[model_id]
        load_flat(model, params, layout)
        PlainTrainer().train(
            participant=self.pid,
            model=model,
            x=x,
            y=y,
            settings=self.cfg.training.settings(),
            seed=seed,
        )
        return (flatten(model) - params).astype(np.float32)


def _f32(x: NDArray[Any]) -> NDArray[np.float32]:
    return np.asarray(x, dtype=np.float32)
