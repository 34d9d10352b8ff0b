"""What every agent is handed at run time: memory, registry, policy engine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.state import LoopState
from driftpilot.memory import decisions, events, label_requests, releases, versions
from driftpilot.memory.tables import Decision, ManagedModel, Version
from driftpilot.memory.times import to_utc
from driftpilot.models.registry import Registry
from driftpilot.policies import Policy, PolicyEngine, PolicyVerdict, Usage
from driftpilot.policies.auto import MAX_WINDOW_HOURS, ReleasePlan, StreamRates, derive_training


@dataclass
class AgentContext:
    """Run-time context of the graph (LangGraph's ``context_schema``).

    Heavy things are created once by the caller and passed in, so tests can swap them; the
    snapshot frames used as drift references are kept per context, not per module.
    """

    sessions: sessionmaker[Session]
    registry: Registry
    policy: PolicyEngine
    seed: int = 0
    references: dict[int, pd.DataFrame] = field(default_factory=dict)
    #: Per running release: both versions' answers on the events seen so far, and the latency
    #: measurement with the rows it was taken on, so that each hourly look predicts only what is new.
    release_answers: dict[int, tuple[pd.DataFrame, tuple[float, float], int]] = field(default_factory=dict)
    #: Per running release: the evidence and time it needs, and the new labels that make a
    #: challenger due, derived from the stream's rates at its first look (measuring the rates is a
    #: query over 30 days; the release keeps its plan).
    release_plans: dict[int, tuple[ReleasePlan, int | None]] = field(default_factory=dict)
    #: Called with each training epoch's curve point (a progress bar in the CLI).
    on_epoch: Callable[[dict[str, Any]], None] | None = None
    #: The optional chat model (see :mod:`driftpilot.agents.llm`); None keeps every agent deterministic.
    chat: Any = None
    #: Runs federated training (Flower, :mod:`driftpilot.edge`, wired in by the loop: agents do
    #: not import the edge). Called with the starting model, the nodes' rows (None: the nodes of
    #: a SuperLink hold their own), the server's own labelled rows to screen updates on, and the
    #: policy's ``federated`` section; returns the model and the run's record. None: the loop
    #: that built this context cannot federate, and the Trainer says so when the policy asks.
    federate: Callable[..., tuple[Any, dict[str, Any]]] | None = None


def now_of(state: LoopState) -> datetime:
    return to_utc(state["now"], what="the state's now")


def usage_today(session: Session, model: ManagedModel, now: datetime) -> Usage:
    """What the model has used of its daily budgets so far (UTC day of ``now``, inclusive)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    until = now + timedelta(seconds=1)
    return Usage(
        retrains_today=decisions.count_decisions(
            session=session, model_id=model.id, action="retrain", since=day, until=until
        ),
        labels_requested_today=label_requests.count_label_requests(
            session=session, model_id=model.id, since=day, until=until
        ),
        compute_seconds_today=versions.training_seconds(session=session, model_id=model.id, since=day, until=until),
        federated_rounds_today=sum(
            int((d.evidence or {}).get("rounds_run", 0))
            for d in decisions.list_decisions(
                session=session, model_id=model.id, action="federate", since=day, until=until
            )
        ),
    )


def record(
    session: Session,
    state: LoopState,
    model: ManagedModel,
    *,
    agent: str,
    action: str,
    outcome: str,
    rationale: str,
    evidence: Any = None,
    diagnosis: Any = None,
    verdicts: list[PolicyVerdict] | None = None,
    approvals: list[dict[str, Any]] | None = None,
) -> Decision:
    """Append this step's decision to the log (trigger, evidence, verdicts, approvals, outcome, why)."""
    return decisions.record_decision(
        session=session,
        model_id=model.id,
        run_id=state["run_id"],
        agent=agent,
        time=now_of(state),
        trigger=state.get("trigger") or {},
        evidence=evidence or {},
        diagnosis=diagnosis or {},
        policy_verdicts=[v.model_dump() for v in verdicts or []],
        action=action,
        outcome=outcome,
        rationale=rationale,
        approvals=approvals or [],
    )


def stream_rates(session: Session, model_id: int, now: datetime) -> StreamRates:
    """What the model's stream brought over the last ``MAX_WINDOW_HOURS``, or since it is managed
    (its first version: the history it learnt from arrived labelled at once, and says nothing of
    how labels come). What every ``auto`` policy field is derived from."""
    start = now - timedelta(hours=MAX_WINDOW_HOURS)
    managed = versions.list_versions(session=session, model_id=model_id)
    if managed:
        start = max(start, managed[0].time)
    n_events, first = events.event_span(session=session, model_id=model_id, start=start, end=now)
    n_labels, delay = events.label_flow(session=session, model_id=model_id, start=start, end=now)
    hours = (now - max(start, first)).total_seconds() / 3600 if first is not None else 0.0
    return StreamRates(hours=hours, events=n_events, labels=n_labels, label_delay_hours=delay)


def held_back(session: Session, model_id: int, policy: Policy, now: datetime) -> str | None:
    """Why a retrain would be wasted now, or None: a change freeze is on (its candidate could not
    be released), or a person recently said no to a release (asking again at once is noise)."""
    for freeze in policy.changes.freezes:
        if freeze.start <= now < freeze.end:
            return f"the change freeze '{freeze.reason}' lasts until {freeze.end:%Y-%m-%d %H:%M} UTC"
    hours = policy.changes.after_denial_hours
    since = now - timedelta(hours=hours)
    for outcome in ("approval_denied", "approval_expired"):
        refused = decisions.last_decision(
            session=session, model_id=model_id, agent="release_manager", outcome=outcome, since=since
        )
        if refused is not None:
            who = "nobody answered the approval of" if outcome == "approval_expired" else "a person denied"
            return (
                f"{who} a release at {refused.time:%Y-%m-%d %H:%M} UTC (decision #{refused.id}); "
                f"the loop asks again {hours:g} hours after"
            )
    # A promotion refused by a person ends its release with that verdict (the decision is the rollback).
    for release in releases.list_releases(session=session, model_id=model_id):
        ended = release.ended_at
        if ended is not None and release.verdict in ("approval_denied", "approval_expired"):
            if ended >= since:
                return (
                    f"the promotion of release {release.id} was {release.verdict.removeprefix('approval_')} "
                    f"at {ended:%Y-%m-%d %H:%M} UTC; the loop asks again {hours:g} hours after"
                )
    return None


@dataclass(frozen=True)
class Tried:
    """The trainings since the champion began serving (none of them replaced it; ``retrains``
    of them answered a finding, the others were challengers), and the labels that became known
    since the last training (the champion's own when there was none)."""

    count: int
    retrains: int
    since: datetime
    new_labels: int


def trainings_since_serving(session: Session, model_id: int, champion: Version, now: datetime) -> Tried:
    """What :class:`Tried` says of the model's champion at ``now``: what backs off the next
    training (each that did not replace the champion doubles the new labels the next one needs)."""
    promoted = decisions.last_decision(session=session, model_id=model_id, agent="release_manager", outcome="promoted")
    serving_since = max(champion.time, promoted.time) if promoted is not None else champion.time
    tried = [
        d
        for d in decisions.list_decisions(
            session=session, model_id=model_id, agent="trainer", action="retrain", since=serving_since
        )
        if d.outcome in ("candidate", "rejected")
    ]
    since = max([champion.time, *(d.time for d in tried)])
    new, _ = events.label_flow(session=session, model_id=model_id, start=since, end=now, with_delay=False)
    retrains = sum(1 for d in tried if not (d.evidence or {}).get("challenger"))
    return Tried(count=len(tried), retrains=retrains, since=since, new_labels=new)


def retrain_backoff(session: Session, model_id: int, policy: Policy, now: datetime) -> str | None:
    """Why a retrain would be wasted now, or None: retrains (not challengers) since the champion
    serves did not replace it, and fewer labels than the back-off asks arrived since the last
    training: ``k`` of them wait for ``2^(k-1)`` times the labels that make a challenger due (a
    quarter of a retrain's, when the policy keeps no challenger). A finding that holds while
    nothing trained beats the champion is retrained on ever more new evidence, not at every check."""
    champion = versions.champion(session=session, model_id=model_id)
    if champion is None:
        return None
    tried = trainings_since_serving(session, model_id, champion, now)
    if tried.retrains == 0:
        return None
    plan = derive_training(policy.training, stream_rates(session, model_id, now))
    base = plan.challenger_every_labels or max(1, plan.min_training_labels // 4)
    needed = base * 2 ** (tried.retrains - 1)
    if tried.new_labels >= needed:
        return None
    return (
        f"{tried.retrains} retrain(s) since the champion serves did not replace it; the next waits for "
        f"{needed} new labels, {tried.new_labels} so far"
    )
