"""Multi-step SecAgg+ sessions: one key set-up, several secure sums (distributed DP).

A group that runs ``steps`` DP-SGD steps together (``privacy.mechanism =
"distributed"``) sums one vector of integers per step. Step 0 is an ordinary SecAgg+
session (:class:`~protocols.secagg.client.SecAggClient`): keys, shares, masked input,
signed survivor list, unmasking. It fixes the *contributors* (the survivors the
unmasking was answered for) and the sum of step 0. Every later step ``s`` costs two
round trips and no new keys:

1. ``StepModel(s, total)``: the sum of step ``s - 1``. Each contributor applies
   :class:`StepRule` to it (the same public rule the coordinator applies) and signs the
   digest of the model it obtained (``StepDigest``).
2. ``StepGo(s, signatures)``: every contributor's signature. A contributor checks that
   *all* of them are valid and over the model it computed itself (a coordinator that sent
   one member another sum, to aim a crafted model at it, is caught here, before anything
   derived from that model is sent), then sends ``StepInput``: its input of step ``s``
   masked with fresh pairwise masks, expanded from the pair seeds agreed in step 0 under a
   per-step label, with its neighbours among the contributors.

The coordinator sums the step's inputs: the pairwise masks cancel because every
contributor masks with exactly its step-0 neighbours among the contributors. There is no
self mask after step 0 and no unmasking round: nothing is ever revealed about a
contributor after step 0.

Security (on top of SecAgg+'s, with at most ``corrupt_fraction`` of the group colluding
with the coordinator):

* a contributor's pair seeds are never revealed: in step 0 an honest member reveals key
  shares only of peers the signed survivor list calls dropped, and the contributors are
  exactly the survivors; after step 0 no message asks for shares at all. So a step's
  input is hidden exactly as the step-0 input is after its self mask is removed, by the
  pair masks with its neighbours among the contributors;
* a contributor sends at most one input per step, steps strictly in order and at most
  ``steps - 1`` of them, each only after every contributor signed the same model;
* the fixed contributor set is also the noise's floor: the distributed DP noise is sized
  for the honest members among the fewest contributors a step can have
  (:func:`noise_floor`), which the step-0 unmasking already enforces.

Dropouts: a member that drops in step 0 is handled by SecAgg+ recovery. A contributor
that fails to answer a later step cannot be removed (its masks stay in everyone's input
and its pair seeds must stay secret), so that step fails and the group's run of steps
stops there: the coordinator keeps the model after the last completed step
(:class:`StepsStopped`), which every completed step's noise already covers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from crypto.encoding import bind
from crypto.errors import (
    InvalidSignature,
    MessageError,
    SecurePoolError,
    SecurityViolation,
    StageError,
)
from crypto.fixedpoint import FixedPointSpec
from crypto.prg import expand_mask
from crypto.signing import verify_maybe_memo, verify_signature
from protocols.secagg.client import ClientStage, SecAggClient
from protocols.secagg.graph import consistency_threshold
from protocols.secagg.labels import pair_sign
from protocols.secagg.messages import (
    StepDigest,
    StepGo,
    StepInput,
    StepModel,
    UnmaskRequest,
    decode_message,
    encode_message,
)
from protocols.secagg.server import SecAggServer, ServerStage
from protocols.secagg.settings import MaskSettings

_DOMAIN = b"securepool/secagg-steps/v1/"
LABEL_STEP_MODEL = b"secagg/step-model"
#: the word every contributor appends to its input: the step's sum of it is the count
COUNT_WORD = 1


class StepsStopped(SecurePoolError):
    """A step of a multi-step session could not complete; the steps before it stand."""


def step_mask_label(step: int) -> bytes:
    """The PRG label of the pairwise masks of step ``step`` >= 1 (step 0 uses SecAgg+'s)."""
    return bind(_DOMAIN + b"pairmask", step)


def model_digest(session: str, step: int, params: NDArray[np.float32]) -> bytes:
    """SHA-256 of the model of ``step`` (float32, little-endian) under the session."""
    raw = np.ascontiguousarray(params, dtype="<f4").tobytes()
    return hashlib.sha256(bind(_DOMAIN + b"model", session, step, raw)).digest()


def step_payload(session: str, step: int, digest: bytes) -> bytes:
    """What a contributor signs for step ``step``: the session, the step, its model."""
    return bind(_DOMAIN + b"step-model", session, step, digest)


def to_words(values: NDArray[np.int64]) -> NDArray[np.uint64]:
    """Integers as words modulo 2^64 (two's complement), then the count word."""
    out = np.empty(values.size + 1, dtype=np.uint64)
    out[:-1] = np.asarray(values, dtype=np.int64).view(np.uint64)
    out[-1] = COUNT_WORD
    return out


def from_words(words: NDArray[np.unsignedinteger]) -> tuple[NDArray[np.int64], int]:
    """(the signed integers, the count word) of a sum of :func:`to_words` vectors."""
    w = np.asarray(words, dtype=np.uint64)
    return w[:-1].view(np.int64).copy(), int(w[-1])


@dataclass(frozen=True)
class NoiseFloor:
    """How a group's noise is shared: a step is unmasked with at least ``contributors``
    members, of whom at most ``corrupt`` collude, so at least ``honest`` add their share."""

    group: int
    contributors: int
    corrupt: int
    honest: int


def noise_floor(group_size: int, settings: MaskSettings, *, min_group_size: int) -> NoiseFloor:
    """The distributed noise's sizing for a group of ``group_size``: the fewest
    contributors a step can have (max(min_group_size, T), what every member's step-0
    unmasking already requires), minus C = ceil(corrupt_fraction x n) colluders.

    Security: every member computes this from its own view of the group and the agreed
    settings, like (k, t, T); a member's share then carries 1/honest of the target
    variance, so the honest contributors' shares alone sum to at least the target
    whatever the colluders add or subtract. T > (n + C) / 2 >= C, so at least one
    honest member is always left.
    """
    need = max(min_group_size, consistency_threshold(group_size, corrupt=settings.corrupt_fraction))
    corrupt = min(math.ceil(settings.corrupt_fraction * group_size), group_size)
    return NoiseFloor(group_size, need, corrupt, need - corrupt)


@dataclass(frozen=True)
class StepRule:
    """The public SGD rule both sides apply to a step's sum: the gradient is
    ``total x grid / (contributors x batch_size)``, then momentum and the learning rate."""

    lr: float
    momentum: float
    grid: float
    batch_size: float

    def apply(
        self,
        params: NDArray[np.float32],
        velocity: NDArray[np.float64],
        total: NDArray[np.int64],
        contributors: int,
    ) -> tuple[NDArray[np.float32], NDArray[np.float64]]:
        grad = total.astype(np.float64) * (self.grid / (contributors * self.batch_size))
        velocity = self.momentum * velocity + grad
        new = (params.astype(np.float64) - self.lr * velocity).astype(np.float32)
        return new, velocity


class SteppedClient(SecAggClient):
    """A member of a multi-step session (module docstring): SecAgg+ for step 0, then
    :meth:`on_model` and :meth:`on_go` / :meth:`masked_input` per later step.

    ``update`` is the member's step-0 input as integers (int64); ``params`` the model of
    step 0; ``rule`` the public SGD rule; ``steps`` the number of steps.
    """

    def __init__(
        self,
        *,
        steps: int,
        params: NDArray[np.float32],
        rule: StepRule,
        **kw: Any,
    ) -> None:
        if kw.get("binding") is not None:
            raise SecurityViolation(
                "a multi-step session has no binding report (the trust check's per-member "
                "summaries would release each member's noise share)"
            )
        if not isinstance(steps, int) or steps < 1:
            raise MessageError(f"steps must be an integer >= 1, got {steps!r}")
        super().__init__(weight=1.0, **kw)
        self.steps = steps
        self.rule = rule
        self.model = np.asarray(params, dtype=np.float32).copy()
        self.velocity = np.zeros(self.model.size, dtype=np.float64)
        self.step = 0
        #: "" in step 0; then "model" (waiting for StepModel), "go", "input", "done"
        self.phase = ""
        self.contributors: tuple[str, ...] = ()
        self.digest_of_step = b""
        self._step_signature = b""
        #: the caller's labels of this session (e.g. its model), kept with its state
        self.context: dict[str, str | int] = {}

    # --- step 0 ----------------------------------------------------------------------

    def _plain_input(self, spec: FixedPointSpec) -> NDArray[np.unsignedinteger]:
        """Step 0's input: the member's integers as words, then the count word."""
        if np.dtype(spec.dtype) != np.uint64:
            raise SecurityViolation(f"{self.pid}: a multi-step session needs 64-bit words")
        return to_words(np.asarray(self._update, dtype=np.int64))

    def _on_unmask(self, msg: UnmaskRequest) -> bytes:
        reply = super()._on_unmask(msg)
        self.contributors = tuple(sorted(self._survivors))
        self.phase = "model" if self.steps > 1 else "done"
        return reply

    # --- later steps -----------------------------------------------------------------

    def handle(self, data: bytes) -> bytes:
        if self.phase in ("", "done") or self.stage is not ClientStage.DONE:
            if self.phase == "done":
                raise StageError(f"{self.pid}: all {self.steps} steps are done")
            return super().handle(data)
        msg = decode_message(data)
        if msg.session != self.session:
            raise StageError(
                f"{self.pid}: message of session {msg.session!r}, not {self.session!r}"
            )
        if isinstance(msg, StepModel) and self.phase == "model":
            return self.on_model(msg)
        raise StageError(f"{self.pid}: {type(msg).__name__} not expected (phase {self.phase})")

    def on_model(self, msg: StepModel) -> bytes:
        """Step ``msg.step``'s model from the previous step's sum; its signed digest."""
        if self.phase != "model" or msg.step != self.step + 1 or msg.step >= self.steps:
            raise StageError(
                f"{self.pid}: step {msg.step} asked after step {self.step} of {self.steps} "
                "(steps run once each, in order)"
            )
        if msg.total.dtype != np.uint64 or msg.total.size != self.model.size + 1:
            raise MessageError(f"{self.pid}: a step sum of {msg.total.size} words")
        total, count = from_words(msg.total)
        if count != len(self.contributors):
            raise SecurityViolation(
                f"{self.pid}: the step sum counts {count} inputs, the contributors are "
                f"{len(self.contributors)}"
            )
        model, velocity = self.rule.apply(self.model, self.velocity, total, count)
        if not np.all(np.isfinite(model)):
            raise SecurityViolation(f"{self.pid}: the step sum gives a non-finite model")
        self.model, self.velocity = model, velocity
        self.step = msg.step
        self.digest_of_step = model_digest(self.session, self.step, self.model)
        sig = self._identity.sign(
            step_payload(self.session, self.step, self.digest_of_step), label=LABEL_STEP_MODEL
        )
        self._step_signature = sig
        self.phase = "go"
        return encode_message(StepDigest(self.session, self.pid, self.step, sig))

    def on_go(self, data: bytes) -> NDArray[np.float32]:
        """Check every contributor signed this member's model of the step; return that
        model (the caller computes the step's input on it and calls :meth:`masked_input`).

        Security: refuses unless *every* contributor's signature verifies over the digest
        this member computed itself (SecurityViolation), so no contributor was sent
        another sum; nothing derived from the model has been sent before this check.
        """
        msg = decode_message(data, StepGo)
        if msg.session != self.session or self.phase != "go" or msg.step != self.step:
            raise StageError(f"{self.pid}: StepGo of step {msg.step} not expected")
        if set(msg.signatures) != set(self.contributors):
            raise SecurityViolation(
                f"{self.pid}: step {self.step}'s signatures are not exactly the contributors'"
            )
        payload = step_payload(self.session, self.step, self.digest_of_step)
        if msg.signatures[self.pid] != self._step_signature:
            raise SecurityViolation(f"{self.pid}: the StepGo altered this member's signature")
        for signer in self.contributors:
            if signer == self.pid:
                continue
            try:
                verify_maybe_memo(
                    self._verified,
                    self._directory[signer],
                    payload,
                    msg.signatures[signer],
                    label=LABEL_STEP_MODEL,
                )
            except InvalidSignature:
                raise SecurityViolation(
                    f"{self.pid}: {signer} did not sign the model this member computed for "
                    f"step {self.step} (another sum was sent to someone); no input is sent"
                ) from None
        self.phase = "input"
        return self.model.copy()

    def masked_input(self, values: NDArray[np.int64]) -> bytes:
        """The step's input ``values`` (integers) masked with this step's pairwise masks."""
        if self.phase != "input":
            raise StageError(f"{self.pid}: no step is waiting for an input")
        values = np.asarray(values)
        if values.dtype != np.int64 or values.shape != (self.model.size,):
            raise MessageError(f"{self.pid}: a step input must be {self.model.size} int64 values")
        y = to_words(values)
        label = step_mask_label(self.step)
        for v in self._masked_with:
            if v not in self.contributors:
                continue  # dropped in step 0: its pair seed is known, it masks nothing
            m = expand_mask(self._mask_seeds[v], label=label, length=y.size, dtype=np.uint64)
            if pair_sign(self.pid, v) > 0:
                y += m
            else:
                y -= m
        self.phase = "model" if self.step + 1 < self.steps else "done"
        return encode_message(StepInput(self.session, self.pid, self.step, y))


class SteppedServer(SecAggServer):
    """The coordinator's side of a multi-step session (module docstring)."""

    def __init__(
        self, *, steps: int, params: NDArray[np.float32], rule: StepRule, **kw: Any
    ) -> None:
        super().__init__(**kw)
        self.steps = steps
        self.rule = rule
        self.model = np.asarray(params, dtype=np.float32).copy()
        self.velocity = np.zeros(self.model.size, dtype=np.float64)
        self.step = 0
        self.completed = 0  # steps whose sum is known
        self._total: NDArray[np.uint64] | None = None
        self._digests: dict[str, bytes] = {}
        self._step_inputs: dict[str, NDArray[np.uint64]] = {}
        self._expect: type[Any] | None = None

    def close_unmask(self) -> NDArray[np.unsignedinteger]:
        """Step 0's unmasking; its sum moves the model (:meth:`advance`)."""
        total = super().close_unmask()
        self._advance(np.asarray(total, dtype=np.uint64))
        return total

    def _advance(self, total: NDArray[np.uint64]) -> None:
        ints, count = from_words(total)
        if count != len(self.contributors):
            raise StepsStopped(
                f"session {self.session}: step {self.step}'s count word sums to {count}, "
                f"not {len(self.contributors)} (a member's input is malformed)"
            )
        self.model, self.velocity = self.rule.apply(
            self.model, self.velocity, ints, len(self.contributors)
        )
        self._total = total
        self.completed = self.step + 1

    @property
    def more(self) -> bool:
        """Whether another step is due (the last one's sum is known, steps remain)."""
        return self.stage is ServerStage.DONE and self.completed == self.step + 1 < self.steps

    def open_step(self) -> dict[str, bytes]:
        """The next step's StepModel to every contributor."""
        if not self.more or self._total is None:
            raise StageError(f"session {self.session}: no step to open")
        self.step += 1
        self._digests, self._expect = {}, StepDigest
        msg = encode_message(StepModel(self.session, self.step, self._total))
        return {pid: msg for pid in sorted(self.contributors)}

    def receive_step(self, data: bytes, *, sender: str) -> None:
        """File a contributor's StepDigest or StepInput of the open step."""
        msg = decode_message(data)
        if self._expect is None or not isinstance(msg, self._expect):
            raise StageError(f"{type(msg).__name__} not expected in step {self.step}")
        if msg.session != self.session:
            raise StageError(f"message of session {msg.session!r}, not {self.session!r}")
        if msg.sender != sender or sender not in self.contributors:
            raise SecurityViolation(f"{sender}: not a contributor of {self.session}")
        if msg.step != self.step:
            raise StageError(f"{sender}: a message of step {msg.step}, not {self.step}")
        if isinstance(msg, StepDigest):
            verify_signature(
                self._directory[sender],
                step_payload(
                    self.session, self.step, model_digest(self.session, self.step, self.model)
                ),
                msg.signature,
                label=LABEL_STEP_MODEL,
            )
            self._digests.setdefault(sender, msg.signature)
        else:
            if msg.vector.dtype != np.uint64 or msg.vector.size != self.model.size + 1:
                raise MessageError(f"{sender}: a step input of {msg.vector.size} words")
            self._step_inputs.setdefault(sender, msg.vector)

    def _all(self, got: Iterable[str], what: str) -> None:
        missing = sorted(set(self.contributors) - set(got))
        if missing:
            self._expect = None
            raise StepsStopped(
                f"session {self.session}: step {self.step} stopped: no valid {what} from "
                f"{', '.join(missing)} (a contributor cannot leave after step 0; the model "
                f"after step {self.completed - 1} stands)"
            )

    def close_digests(self) -> dict[str, bytes]:
        """Every contributor's signature to every contributor (StepGo)."""
        self._all(self._digests, "model signature")
        self._step_inputs, self._expect = {}, StepInput
        msg = encode_message(StepGo(self.session, self.step, dict(self._digests)))
        return {pid: msg for pid in sorted(self.contributors)}

    def close_step_inputs(self) -> None:
        """Sum the step's inputs (the pairwise masks cancel) and move the model."""
        self._all(self._step_inputs, "masked input")
        self._expect = None
        total = np.zeros(self.model.size + 1, dtype=np.uint64)
        for pid in sorted(self.contributors):
            total += self._step_inputs[pid]
        self._step_inputs = {}
        self._advance(total)


__all__ = [
    "NoiseFloor",
    "StepRule",
    "SteppedClient",
    "SteppedServer",
    "StepsStopped",
    "from_words",
    "model_digest",
    "noise_floor",
    "step_mask_label",
    "to_words",
]
