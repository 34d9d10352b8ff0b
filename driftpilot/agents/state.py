"""The state the loop's graph carries from one agent to the next.

It lives with the agents, which read and update it, rather than in ``graph/``: the layering
of DESIGN.md lets the graph import the agents, not the other way round.
"""

from __future__ import annotations

from typing import Any, TypedDict


class LoopState(TypedDict, total=False):
    """One run of the loop for one managed model.

    ``now`` is the logical time of the step (ISO 8601): the wall clock in production, the
    simulated clock in the demo and in replays. Every value is plain data, so checkpoints
    survive a restart.
    """

    model: str
    run_id: str
    now: str
    trigger: dict[str, Any]
    finding: dict[str, Any] | None
    diagnosis: dict[str, Any] | None
    snapshot_id: int | None
    evaluation: dict[str, Any] | None
    candidate: int | None
    release_id: int | None
    approval_id: int | None
    #: When the run began waiting for labels (ISO 8601).
    waiting_since: str | None
    outcome: str
    last_decision: int | None


def initial_state(model: str, now: str, run_id: str, trigger: dict[str, Any]) -> LoopState:
    """A fresh run: every key set, so nothing of the thread's previous run leaks in."""
    return LoopState(
        model=model,
        run_id=run_id,
        now=now,
        trigger=trigger,
        finding=None,
        diagnosis=None,
        snapshot_id=None,
        evaluation=None,
        candidate=None,
        release_id=None,
        approval_id=None,
        waiting_since=None,
        outcome="started",
        last_decision=None,
    )
