"""The state the loop's graph carries from one agent to the next.

It lives with the agents, which read and update it, rather than in ``graph/``: the layering
of DESIGN.md lets the graph import the agents, not the other way round.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, get_args

from driftpilot.tools.diagnosis import DiagnosisRecord
from driftpilot.tools.evaluation import ScoresRecord
from driftpilot.tools.fusion import Finding

__all__ = ["OUTCOMES", "EvaluationState", "LoopState", "Outcome", "initial_state"]

#: What the last node did, which the routing reads. Most are also the outcome of the decision
#: the node logged; where the log's word is shorter (the Trainer's ``denied`` and ``failed``,
#: the Release Manager's ``denied``) the state names the step too.
Outcome = Literal[
    "started",
    # Monitor
    "healthy",
    "finding",
    "blind",
    # Diagnostician: the remedy, or what became of it
    "quarantine",
    "fix_data",
    "expand_corpus",
    "recalibrate",
    "retrain",
    "watch",
    "none",
    "quarantined",
    "quarantine_denied",
    "deferred",
    # Data Curator and the label wait
    "monitoring_sample",
    "snapshot",
    "not_enough_labels",
    "waiting_for_labels",
    "labels_arrived",
    "labels_timed_out",
    # Trainer
    "candidate",
    "rejected",
    "retrain_denied",
    "training_failed",
    # Release Manager, the approval wait and the canary judge
    "waiting_for_approval",
    "approval_answered",
    "approval_denied",
    "approval_expired",
    "canary_denied",
    "canary_started",
    "waiting_for_evidence",
    "already_ended",
    "promoted",
    "rolled_back",
]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


class EvaluationState(TypedDict, total=False):
    """The Trainer's evaluation as the run carries it.

    The comparison's keys are those of :class:`~driftpilot.tools.evaluation.EvaluationRecord`
    (present when the Trainer evaluated the candidate in this run, or stored it with the version
    it recovers). ``gate_facts`` is always there: the plain dump of the
    :class:`~driftpilot.policies.StartCanaryFacts` the Trainer's gate judged (or that a release
    started outside the loop was given), which the Release Manager judges again at every step.
    """

    candidate: ScoresRecord
    champion: ScoresRecord
    n_recent: int
    n_old: int
    n_golden: int
    min_slice_samples: int
    candidate_recent: float
    champion_recent: float
    candidate_old: float | None
    champion_old: float | None
    gain: float
    worst_slice: str | None
    worst_slice_delta: float | None
    metric: str
    candidate_metric: float
    champion_metric: float
    gate_facts: dict[str, Any]


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
    finding: Finding | None
    #: What a blind check lacked in labels: ``labelled`` (it had), ``needed``, ``since`` (the
    #: oldest event time its window reached, ISO 8601).
    blind: dict[str, Any] | None
    #: Why a challenger is due (a healthy check with enough new labels): ``new_labels``,
    #: ``every`` (what made it due), ``since`` (the last training, ISO 8601).
    challenge: dict[str, Any] | None
    diagnosis: DiagnosisRecord | None
    snapshot_id: int | None
    evaluation: EvaluationState | None
    candidate: int | None
    release_id: int | None
    approval_id: int | None
    #: When the run began waiting for labels (ISO 8601).
    waiting_since: str | None
    outcome: Outcome
    last_decision: int | None


def initial_state(model: str, now: str, run_id: str, trigger: dict[str, Any]) -> LoopState:
    """A fresh run: every key set, so nothing of the thread's previous run leaks in."""
    return LoopState(
        model=model,
        run_id=run_id,
        now=now,
        trigger=trigger,
        finding=None,
        blind=None,
        challenge=None,
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
