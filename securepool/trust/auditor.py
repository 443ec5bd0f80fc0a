"""The auditor role (privileged party): opens sealed summaries, votes, flags, signs.

The auditor holds the summary-opening key and an identity key. It sees, per session,
only the summaries (norm + sketch) of the participants whose updates are aggregated;
never a masked input, ciphertext or aggregate. With the validation vote it also sees
each participant's ballot (the losses of its peers' models on its own records). A
summary that does not open, has the wrong size or carries NaN, or a ballot that does
not open or carries a non-finite loss, gets its participant flagged with the reason; it
never stops the run.

In mask mode with binding (:mod:`protocols.secagg.binding`) the auditor instead opens
each survivor's binding report, checks it against R y_i (computed by the coordinator)
and against its neighbours' reports, decodes the bound ``r_i`` into sketches for the
same judgement, and signs exactly one :class:`~protocols.secagg.binding.MaskVerdict`
per session, with its commitments to every mask projection it opened (the post-check
after unmasking runs against those, at the coordinator, not against the auditor again)
and the group instance it judged: the members, the survivors and the digest of every
masked input, so that clients of another instance of the session refuse it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from crypto.errors import SecurePoolError, StageError
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
from protocols.verdict import Verdict
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

    def vet(
        self,
        session: str,
        sealed: Mapping[str, bytes],
        *,
        dim: int,
        ballots: Mapping[str, bytes] | None = None,
        expected: Mapping[str, Summary] | None = None,
    ) -> tuple[Verdict, bytes]:
        """P6: open, screen (near-duplicates, too central, misaligned), elect the trusted
        participant among the rest, flag those at or past the threshold.

        ``expected`` (plaintext mode): the summary of the update the coordinator actually
        received from each participant. A sealed summary that is not it flags its sender
        (an honest participant's matches exactly: same function of the same float32
        update), so a poisoned update cannot hide behind an honest-looking summary.

        ``ballots`` (validation vote only): each voter's sealed losses of the others'
        models on its own records (protocols.ballots). A ballot that does not open or
        fails its checks (e.g. a non-finite loss) flags its voter.
        """
        flagged: dict[str, str] = {}
        opened: dict[str, dict[str, float]] = {}
        for voter, blob in (ballots or {}).items():
            try:
                opened[voter] = open_ballot(self.opening_key, blob, session=session, voter=voter)
            except SecurePoolError as exc:
                flagged[voter] = f"ballot rejected: {exc}"
        summaries: dict[str, Summary] = {}
        for pid, blob in sealed.items():
            try:
                summaries[pid] = open_summary(
                    self.opening_key, blob, session=session, participant=pid, expected_dim=dim
                )
            except SecurePoolError as exc:
                flagged.setdefault(pid, f"summary rejected: {exc}")
        for pid, want in (expected or {}).items():
            got = summaries.get(pid)
            if got is not None and not _same_summary(got, want):
                flagged.setdefault(
                    pid, "summary does not match the update the coordinator received"
                )
        summaries = {p: v for p, v in summaries.items() if p not in flagged}
        verdict = self._judge(session, summaries, flagged, opened)
        return verdict, verdict.sign(self.identity)

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
            try:
                sketch, weight = decode_sketch(rep.r, request.spec)
            except SecurePoolError as exc:
                flagged[pid] = f"bound sketch rejected: {exc}"
                continue
            if self.equal_weights and weight != 1.0:
                flagged[pid] = (
                    f"bound weight {weight:.6g}: equal weighting weighs every update 1 "
                    "(a claimed weight)"
                )
                continue
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
        )
        return opened, judged

    def vet_opened(
        self,
        session: str,
        summaries: Mapping[str, Summary],
        *,
        flagged: Mapping[str, str] | None = None,
    ) -> tuple[Verdict, bytes]:
        """P6 on summaries the auditor computed itself (HE binding: one per fold it
        opened, securepool.trust.he_binding), with ``flagged`` already marked; signed."""
        marks = dict(flagged or {})
        kept = {p: v for p, v in summaries.items() if p not in marks}
        verdict = self._judge(session, kept, marks, {})
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


def _same_summary(a: Summary, b: Summary) -> bool:
    """Equal up to float rounding (both are the same float64 function of one update)."""
    scale = max(a.norm, b.norm, 1e-12)
    return (
        a.sketch.shape == b.sketch.shape
        and abs(a.norm - b.norm) <= 1e-9 * scale
        and bool(np.allclose(a.sketch, b.sketch, rtol=0.0, atol=1e-9 * scale))
    )
