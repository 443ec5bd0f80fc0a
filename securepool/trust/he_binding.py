"""HE binding of P6 on bytes: the auditor's answer to a fold request, and its check.

The auditor role in HE mode is the key holder (it decrypts) plus the trust auditor (it
judges and signs). :func:`answer_fold_request` is that role's whole job for one
session, bytes in and bytes out, so a separate auditor process can run it as is: open
one fold per receipted participant (protocols.he.keyholder.HEKeyHolder.open_folds),
judge the weight-normalised sketches with the P6 rules (screens, vote, threshold, norm
rule), sign the verdict, and clear only the participants it did not flag for the
aggregate of that session. :func:`read_fold_verdict` is the coordinator's side.
"""

from __future__ import annotations

from crypto.errors import SecurityViolation
from protocols.he.keyholder import HEKeyHolder
from protocols.he.messages import FoldVerdict
from protocols.verdict import Verdict
from securepool.trust.auditor import Auditor


def answer_fold_request(keyholder: HEKeyHolder, auditor: Auditor, request: bytes) -> bytes:
    """The signed :class:`FoldVerdict` on a :class:`FoldRequest`.

    Security: raises what :meth:`HEKeyHolder.open_folds` raises (a refused request:
    wrong seed, not a fold, not that participant's ciphertext, bad receipts), so a lying
    coordinator gets no verdict and, with no cleared set, no aggregate of the session.
    """
    opening = keyholder.open_folds(request)
    verdict, signature = auditor.vet_opened(
        opening.session, opening.summaries, flagged=opening.flagged
    )
    cleared = frozenset(opening.summaries) - frozenset(verdict.flagged)
    keyholder.restrict(opening.session, cleared)
    return signed_verdict(verdict, signature)


def signed_verdict(verdict: Verdict, signature: bytes) -> bytes:
    """A P6 verdict and the auditor's signature as one message (:class:`FoldVerdict`'s
    wire form; also the plaintext judgement's answer in the split runtimes), which
    :func:`read_fold_verdict` checks."""
    return FoldVerdict(
        session=verdict.session,
        trusted=verdict.trusted or "",
        flagged=tuple(sorted(verdict.flagged.items())),
        differences=tuple(sorted(verdict.differences.items())),
        threshold=float(verdict.threshold),
        signature=signature,
    ).to_bytes()


def read_fold_verdict(reply: bytes, *, auditor_public: bytes, session: str) -> Verdict:
    """The verdict in ``reply`` if the auditor signed it for ``session``.

    Security: raises :class:`MessageError` (malformed), :class:`SecurityViolation`
    (another session) or :class:`InvalidSignature` (not the auditor's signature).
    """
    msg = FoldVerdict.from_bytes(reply)
    if msg.session != session:
        raise SecurityViolation(f"verdict for session {msg.session!r}, expected {session!r}")
    verdict = Verdict(
        session=msg.session,
        trusted=msg.trusted or None,
        flagged=dict(msg.flagged),
        differences=dict(msg.differences),
        threshold=msg.threshold,
    )
    verdict.verify(auditor_public, msg.signature)
    return verdict
