"""The auditor role (privileged party): judges summaries, votes, flags, signs.

The auditor holds the summary-opening key and an identity key. It sees, per session,
only the summaries (norm + sketch) of the participants whose updates are aggregated;
never a masked input, ciphertext or aggregate. In plaintext mode those summaries are the
coordinator's, of the updates it received, under a projection drawn after every update
of the group was fixed (:meth:`Auditor.vet_opened`). With the validation vote it also sees
each participant's ballot (the losses of its peers' models on its own records). A
summary that does not open, has the wrong size or carries NaN, or a ballot that does
not open or carries a non-finite loss, gets its participant flagged with the reason; it
never stops the run.

In mask mode with binding (:mod:`protocols.secagg.binding`) the auditor instead opens
each survivor's binding report, checks it against R y_i (computed by the coordinator)
and against its neighbours' reports, decodes the bound ``r_i`` into sketches for the
same judgement, and signs exactly one :class:`~protocols.secagg.binding.MaskVerdict`
per session, with its commitments to every mask seed it opened (the post-check
after unmasking runs against those, at the coordinator, not against the auditor again)
and the group instance it judged: the members, the survivors and the digest of every
masked input, so that clients of another instance of the session refuse it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from crypto.errors import SecurePoolError, StageError
from crypto.fixedpoint import FixedPointSpec
from crypto.hpke import SummaryOpeningKey
from crypto.signing import IdentityKey
from protocols.ballots import open_ballot
from protocols.secagg.binding import (
    Judgement,
    JudgeRequest,
    MaskVerdict,
    OpenedReport,
    check_reports,
    decode_sketch,
    encode_commitments,
    open_report,
    projection,
    projection_seed,
)
from protocols.summaries import Summary, open_summary
from protocols.verdict import Verdict, proven
from securepool.trust.config import TrustConfig, VotingRule
from securepool.trust.difference import difference, threshold_for
from securepool.trust.screening import screen
from securepool.trust.voting import krum_vote, nearest_neighbour_vote, validation_vote


@dataclass
class Auditor:
    config: TrustConfig
    opening_key: SummaryOpeningKey = field(init=False)
    identity: IdentityKey = field(init=False, default_factory=IdentityKey.generate)
    _mask_sessions: set[str] = field(default_factory=set, repr=False)
    #: ``aggregation.weighting = "equal"``: a member whose bound weight is not 1 is
    #: flagged (it claimed a weight; the weight bucket of its report shows it exactly)
    equal_weights: bool = False

    def __post_init__(self) -> None:
        self.opening_key = SummaryOpeningKey(self.config.kem)

    @classmethod
    def from_keys(
        cls,
        config: TrustConfig,
        *,
        identity: IdentityKey,
        opening_key: SummaryOpeningKey,
        equal_weights: bool,
    ) -> Auditor:
        """An auditor over keys kept in its own files (an auditor node, securepool/node)."""
        if opening_key.kem is not config.kem:
            raise StageError(
                f"the stored opening key is {opening_key.kem.value}, trust.kem is "
                f"{config.kem.value}"
            )
        auditor = cls(config, equal_weights=equal_weights)
        auditor.identity, auditor.opening_key = identity, opening_key
        return auditor

    def public_key(self) -> bytes:
        return self.opening_key.public_bytes()

    def identity_public(self) -> bytes:
        return self.identity.public_bytes()

    def vet(self, session: str, sealed: Mapping[str, bytes], *, dim: int) -> tuple[Verdict, bytes]:
        """P6 on summaries sealed to the auditor: open, screen (near-duplicates, too
        central, misaligned), elect the trusted participant among the rest, flag those at
        or past the threshold. A summary that does not open, has the wrong size or
        carries NaN flags its sender. (No mode seals summaries any more: plaintext mode
        judges the coordinator's, :meth:`vet_opened`; ``securepool bench mask_binding``
        times this as its pre-binding baseline.)"""
        flagged: dict[str, str] = {}
        summaries: dict[str, Summary] = {}
        for pid, blob in sealed.items():
            try:
                summaries[pid] = open_summary(
                    self.opening_key, blob, session=session, participant=pid, expected_dim=dim
                )
            except SecurePoolError as exc:
                flagged[pid] = f"summary rejected: {exc}"
        return self.vet_opened(session, summaries, flagged=flagged)

    def judge_mask(self, request: JudgeRequest, *, dim: int) -> tuple[MaskVerdict, bytes, bytes]:
        """Mask mode with binding: checks (a) and (b), then P6 on the bound sketches.

        Returns the verdict, its encoding and the signature over it. Raises StageError
        for a second request for one session: one verdict per session, so the
        coordinator cannot show different clients different verdicts; MessageError for a
        request that is not one consistent group instance. The verdict names the
        instance judged (members, survivors, every masked input's digest): clients of
        any other instance of the session refuse it.
        """
        session = request.session
        request.check_instance()
        if session in self._mask_sessions:
            raise StageError(f"session {session!r} already has a verdict (one per session)")
        opened, judged = self._open_mask(request, dim=dim)
        flagged = dict(judged.flagged)
        summaries: dict[str, Summary] = {}
        for pid, rep in judged.bound.items():
            sketch, _weight = decode_sketch(rep.r, request.spec)  # plausible: it decodes
            summaries[pid] = Summary(float(np.linalg.norm(sketch)), sketch)
        verdict = self._judge(session, summaries, flagged, {})
        commitments = {
            pid: encode_commitments(session, pid, rep)
            for pid, rep in opened.items()
            if pid not in judged.flagged
        }
        threshold = float(verdict.threshold)
        mask_verdict = MaskVerdict(
            session,
            dict(verdict.flagged),
            dict(judged.excluded),
            commitments,
            judged.disputes,
            verdict.trusted or "",
            threshold if math.isfinite(threshold) else 0.0,
            frozenset(request.members),
            frozenset(request.survivors),
            dict(request.digests),
        )
        data, signature = mask_verdict.sign(self.identity)
        self._mask_sessions.add(session)
        return mask_verdict, data, signature

    def _open_mask(
        self, request: JudgeRequest, *, dim: int
    ) -> tuple[dict[str, OpenedReport], Judgement]:
        """Open the survivors' reports and run checks (a) and (b)."""
        session = request.session
        seed = projection_seed(
            session=session, joint_seed=request.joint_seed, digests=request.digests
        )
        proj = projection(seed, length=request.length, dim=dim)
        dtype = request.spec.dtype
        opened: dict[str, OpenedReport] = {}
        rejected: dict[str, str] = {}
        for pid, blob in sorted(request.reports.items()):
            if pid not in request.survivors:
                continue
            try:
                opened[pid] = open_report(
                    self.opening_key,
                    blob,
                    session=session,
                    participant=pid,
                    width=proj.width,
                    dtype=dtype,
                )
            except SecurePoolError as exc:
                rejected[pid] = str(exc)
        judged = check_reports(
            survivors=request.survivors,
            opened=opened,
            rejected=rejected,
            projected=request.projected,
            neighbours=request.neighbours,
            proj=proj,
            dtype=dtype,
            plausible=functools.partial(self._impossible, spec=request.spec),
        )
        return opened, judged

    def _impossible(self, r: NDArray[np.unsignedinteger], *, spec: FixedPointSpec) -> str | None:
        """Why a bound ``r`` cannot be an honest sketch, or None: its weight bucket (which
        holds the weight alone) is no positive weight, or under equal weighting not 1.
        A claimed weight shows here, and so does a false mask seed (it leaves R e_i plus
        a pseudo-random vector, whose weight bucket is 1 with probability 2^-k).

        Security: called before disputes are opened, so such a member is flagged alone
        and no honest neighbour disputes with it."""
        try:
            _sketch, weight = decode_sketch(r, spec)
        except SecurePoolError as exc:
            return proven(f"bound sketch rejected: {exc} (a claimed weight, or a false mask seed)")
        if self.equal_weights and weight != 1.0:
            return proven(
                f"bound weight {weight:.6g}: equal weighting weighs every update 1 "
                "(a claimed weight, or a false mask seed)"
            )
        return None

    def vet_opened(
        self,
        session: str,
        summaries: Mapping[str, Summary],
        *,
        flagged: Mapping[str, str] | None = None,
        ballots: Mapping[str, bytes] | None = None,
    ) -> tuple[Verdict, bytes]:
        """P6 on summaries in the clear, with ``flagged`` already marked; signed. They
        are the ones the auditor computed itself (HE binding: one per fold it opened,
        securepool.trust.he_binding) or, in plaintext mode, the coordinator's of the
        updates it received, under the projection drawn after all of them were fixed
        (:func:`securepool.trust.check.plain_projection_seed`; the coordinator sees every
        update in that mode, so it is trusted for their integrity there).

        ``ballots`` (validation vote only): each voter's sealed losses of the others'
        models on its own records (protocols.ballots). A ballot that does not open or
        fails its checks (e.g. a non-finite loss) flags its voter."""
        marks = dict(flagged or {})
        opened: dict[str, dict[str, float]] = {}
        for voter, blob in (ballots or {}).items():
            try:
                opened[voter] = open_ballot(self.opening_key, blob, session=session, voter=voter)
            except SecurePoolError as exc:
                marks.setdefault(voter, f"ballot rejected: {exc}")
        kept = {p: v for p, v in summaries.items() if p not in marks}
        verdict = self._judge(session, kept, marks, opened)
        return verdict, verdict.sign(self.identity)

    def _judge(
        self,
        session: str,
        summaries: Mapping[str, Summary],
        flagged: dict[str, str],
        ballots: Mapping[str, Mapping[str, float]],
    ) -> Verdict:
        if len(summaries) < 2:
            return Verdict(session, next(iter(summaries), None), flagged)
        cfg = self.config
        everyone = {p: s.sketch for p, s in summaries.items()}
        screened = screen(
            everyone,
            duplicate_ratio=cfg.duplicate_ratio,
            central_ratio=cfg.central_ratio,
            align_floor=cfg.align_floor,
        )
        flagged.update(screened)
        vectors = {p: v for p, v in everyone.items() if p not in screened}
        if len(vectors) < 2:
            return Verdict(session, next(iter(vectors), None), flagged)
        trusted = self._elect(vectors, ballots)
        diffs = {
            p: difference(v, vectors[trusted], cfg.difference)
            for p, v in vectors.items()
            if p != trusted
        }
        limit = threshold_for(diffs, rule=cfg.threshold_rule, fixed=cfg.threshold, mad_k=cfg.mad_k)
        for p, dv in diffs.items():
            if dv >= limit:
                flagged[p] = (
                    f"{cfg.difference.value} difference {dv:.3f} from trusted {trusted} "
                    f">= threshold {limit:.3f}"
                )
        if cfg.norm_ratio:
            median_norm = float(np.median([s.norm for s in summaries.values()]))
            for p, s in summaries.items():
                if p not in flagged and s.norm >= cfg.norm_ratio * max(median_norm, 1e-12):
                    flagged[p] = (
                        f"norm {s.norm:.3g} >= {cfg.norm_ratio} x group median {median_norm:.3g}"
                    )
        return Verdict(session, trusted, flagged, diffs, limit)

    def _elect(
        self,
        vectors: Mapping[str, NDArray[np.float64]],
        ballots: Mapping[str, Mapping[str, float]],
    ) -> str:
        cfg = self.config
        if cfg.voting is VotingRule.KRUM:
            return krum_vote(vectors, f=cfg.krum_f)
        if cfg.voting is VotingRule.VALIDATION:
            elected = validation_vote(ballots, vectors)
            if elected is not None:
                return elected  # no ballot at all: fall back to the nearest-neighbour vote
        return nearest_neighbour_vote(vectors)
