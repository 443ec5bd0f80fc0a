"""The S401–S406 schedule the coordinator runs, in every runtime.

S401/S402 once, then S403–S406 until every test error is inside the preset range or
``convergence.max_iterations`` is hit, which is reported honestly as *not converged*.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from securepool.assignment import AssignmentError

if TYPE_CHECKING:
    from securepool.config import RunConfig
    from securepool.coordinator.records import IterationRecord, LoopState


class Schedulable(Protocol):
    """What the schedule needs of a coordinator."""

    cfg: RunConfig
    state: LoopState

    def s401_evaluate(self) -> Any: ...

    def s402_converged(self) -> bool: ...

    def step(self) -> IterationRecord: ...


def run_schedule(
    loop: Schedulable, *, on_iteration: Callable[[IterationRecord], None]
) -> LoopState:
    """Drive ``loop`` to convergence or the cap; returns its state with a stop reason."""
    cap = loop.cfg.convergence.max_iterations
    if loop.state.iteration == 0 and not loop.state.test:
        loop.s401_evaluate()
        loop.state.converged = loop.s402_converged()
    while not loop.state.converged and loop.state.iteration < cap:
        try:
            record = loop.step()
        except AssignmentError as exc:
            loop.state.stop_reason = f"too few eligible participants: {exc.problems[0]}"
            break
        on_iteration(record)
    if loop.state.stop_reason is None:
        loop.state.stop_reason = (
            "converged: every test error is inside the preset range"
            if loop.state.converged
            else f"not converged: max_iterations={cap} reached"
        )
    return loop.state
