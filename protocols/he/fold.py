"""The HE binding of the trust check: the auditor judges a fold of each actual ciphertext.

Without it, P6 in HE mode judges a summary each participant computes itself: nothing
ties it to the ciphertext it uploads, and the count-sketch projection is public before
anyone trains, so a participant can hide a poisoned update behind an honest summary or
add a perturbation from the projection's kernel. With it:

1. **A projection nobody knows in advance.** Once every upload of the group is fixed,
   the fold seed is ``SHA-256(bind(domain, session, joint seed, n, (pid, upload
   digest)...))`` over the receipted upload digests in participant order
   (:func:`fold_seed`); every party can recompute it and the auditor refuses a request
   whose seed is not that. From it, every chunk ``c`` gets a public sparse integer
   multiplier ``a_c`` (:data:`~crypto.ckks.fold.FOLD_TERMS` signed monomials): slot
   ``j`` of chunk ``c`` is multiplied by ``r_{c,j} = a_c(zeta_j)``, a random complex
   number with ``E[Re(r)^2] = FOLD_TERMS / 2`` (a random-sign-like projection that
   needs no rescaling level, see crypto/ckks/fold.py).
2. **The coordinator folds each participant's own ciphertext** (:func:`fold_upload`):
   ``sum_c ct_c * a_c``, rotate-and-add down to ``fold_dim`` slots, then add the complex
   conjugate (``2 Re``), with the Galois keys of those ``log2(slots / fold_dim)`` steps
   and the conjugation only.
3. **The auditor opens only folds** (:func:`open_fold`). The layout's reserved columns
   (protocols/he/layout.py) keep the pieces apart in a fold: the update's columns give
   the sketch, the weight column gives ``Re(r) * (w / u)`` (so the sketch is
   weight-normalised: the auditor judges the update, as in the other modes), and the
   tag columns must equal the fold of *this participant's* contribution tags, which
   only the auditor knows (sealed in its signed receipt). Before using anything it
   checks that the decrypted vector is real and periodic with period ``fold_dim`` (a
   fold: at most ``fold_dim`` real values; an unfolded, partly folded or unconjugated
   ciphertext is refused) and
   that the tag columns match (another participant's ciphertext, a combination, or a
   ciphertext the coordinator made up is refused).

A weight slot with an imaginary part (``w + iy``) would shift the weight estimate by
``-Im(r) y / Re(r)``; the key holder therefore also refuses an aggregate with imaginary
parts (protocols/he/keyholder.py), so such junk buys no way into an aggregate.

The sketch is ``fold[update columns] / (w/u * sqrt(FOLD_TERMS / 2))``: a random
projection of the update to ``fold_dim - tag_slots - 1`` values whose squared norm
is the update's in expectation; the norm the auditor judges is that sketch's norm.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from crypto.ckks.context import PublicCKKSContext, SecretCKKSContext
from crypto.ckks.fold import (
    FOLD_TERMS,
    FoldKeys,
    FoldPlaintexts,
    decrypt_complex,
    fold_chunks,
    slot_multipliers,
)
from crypto.ckks.params import CKKSParameters
from crypto.encoding import bind, require_identifier
from crypto.errors import SecurityViolation
from crypto.prg import expand_mask
from protocols.he.layout import SlotLayout

SEED_DOMAIN = b"securepool/he/fold-seed/v1"
_MULTIPLIER_LABEL = b"he/fold/multipliers/v1"


def fold_seed(session: str, joint_seed: bytes, digests: Mapping[str, bytes]) -> bytes:
    """The group's fold seed, drawn after every upload is fixed.

    Security: injective encoding (:func:`crypto.encoding.bind`) of the session, the
    group's joint seed (empty if none) and every (participant, upload digest) pair in
    participant order, hashed with SHA-256: a participant that changes its upload changes
    the projection, so nobody can pick a perturbation in its kernel before uploading.
    The coordinator can recompute it but not choose it (the digests are signed by the
    participants; the joint seed comes from their joint randomness).
    """
    fields: list[bytes | str | int] = [require_identifier("session", session), joint_seed]
    fields.append(len(digests))
    for pid in sorted(digests):
        fields += [require_identifier("participant", pid), digests[pid]]
    return hashlib.sha256(bind(SEED_DOMAIN, *fields)).digest()


@dataclass(frozen=True)
class FoldProjection:
    """The public multipliers of one group's fold: ``multipliers[c, j] = a_c(zeta_j)``."""

    layout: SlotLayout
    seed: bytes
    multipliers: NDArray[np.complex128]

    @classmethod
    def derive(cls, seed: bytes, layout: SlotLayout, params: CKKSParameters) -> FoldProjection:
        """The multipliers of every chunk from ``seed`` (ChaCha20 via expand_mask)."""
        if not layout.fold_dim:
            raise SecurityViolation("this layout has no fold dimension")
        k = layout.n_chunks
        words = expand_mask(seed, label=_MULTIPLIER_LABEL, length=k * FOLD_TERMS, dtype=np.uint64)
        positions = (words % np.uint64(params.poly_modulus_degree)).astype(np.int64)
        signs = np.where((words >> np.uint64(63)) == 1, -1.0, 1.0)
        rows = [
            slot_multipliers(
                params,
                positions[c * FOLD_TERMS : (c + 1) * FOLD_TERMS],
                signs[c * FOLD_TERMS : (c + 1) * FOLD_TERMS],
            )
            for c in range(k)
        ]
        return cls(layout, seed, np.stack(rows))

    def plaintexts(self, public: PublicCKKSContext) -> FoldPlaintexts:
        return FoldPlaintexts(public, self.multipliers)

    def columns(self) -> NDArray[np.complex128]:
        """Multipliers as ``(chunk, row, column)`` of the fold layout."""
        f = self.layout.fold_dim
        return self.multipliers.reshape(self.layout.n_chunks, -1, f)


def fold_upload(keys: FoldKeys, plaintexts: FoldPlaintexts, chunks: tuple[bytes, ...]) -> bytes:
    """The coordinator's fold of one participant's ciphertext chunks (one chunk's bytes).

    Security: public operations on the participant's own ciphertext (see
    :func:`crypto.ckks.fold.fold_chunks`); reveals nothing to the coordinator.
    """
    return fold_chunks(keys, plaintexts, chunks)


@dataclass(frozen=True)
class OpenedFold:
    """What the auditor takes from one fold: the weight-normalised sketch, its norm and
    the participant's normalised weight ``w / weight_unit``."""

    sketch: NDArray[np.float64]
    norm: float
    weight: float


def open_fold(
    secret: SecretCKKSContext,
    projection: FoldProjection,
    blob: bytes,
    *,
    tags: NDArray[np.float64],
    tolerance: float,
) -> OpenedFold:
    """Decrypt one fold and check it is the fold of the ciphertext that carries ``tags``.

    Security: raises :class:`SecurityViolation`, before anything is taken from the
    values, if the decrypted vector is not periodic with period ``fold_dim`` within
    ``tolerance`` (more than ``fold_dim`` values: not a fold), or if its tag columns
    are not the fold of ``tags`` (another participant's ciphertext, a combination of
    ciphertexts, one the coordinator made up: it would have to guess tags it never saw).
    A ciphertext that does not load raises :class:`CiphertextError`. What stays visible
    to the auditor is ``fold_dim`` real values; deviations from periodicity within
    ``tolerance`` (about CKKS noise) are the only other channel, and only a coordinator
    that wanted the auditor to learn more could use it (they are assumed not to collude).
    """
    layout = projection.layout
    f = layout.fold_dim
    values = decrypt_complex(secret, blob).reshape(-1, f)
    imaginary = float(np.max(np.abs(values.imag)))
    base = values[0].real / 2.0  # the fold holds 2 Re(...)
    spread = float(np.max(np.abs(values.real / 2.0 - base)))
    if not (spread <= tolerance and imaginary <= tolerance):
        raise SecurityViolation(
            f"not a fold to {f} real slots: the decrypted vector varies by {spread:.3g} "
            f"across periods and has imaginary parts up to {imaginary:.3g} "
            f"(tolerance {tolerance:g})"
        )
    cols = projection.columns()
    tag_cols = slice(f - layout.tag_slots, f)
    expected = np.sum(cols[:, -1, tag_cols].real * tags, axis=0)
    tag_error = float(np.max(np.abs(base[tag_cols] - expected)))
    if not tag_error <= tolerance:
        raise SecurityViolation(
            f"the fold does not carry this participant's contribution tags (error "
            f"{tag_error:.3g}): not the fold of its receipted ciphertext"
        )
    weight = float(base[layout.weight_column] / cols[0, 0, layout.weight_column].real)
    scale = weight * float(np.sqrt(FOLD_TERMS / 2.0))
    raw = base[: layout.update_columns].astype(np.float64)
    sketch = raw / scale if np.isfinite(scale) and scale > 0 else raw * np.nan
    norm = float(np.linalg.norm(sketch))
    return OpenedFold(sketch=sketch, norm=norm, weight=weight)
