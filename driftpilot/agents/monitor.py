"""Monitor: is the champion still healthy?

One check fuses every signal into at most one finding: balanced accuracy on labelled events
(a loss beyond the policy's tolerance), the labelled error stream, accuracy estimated from the
served probabilities when labels are too few (nannyml's CBPE), per-feature input drift (and, if
the policy asks, multivariate drift), drift of the predictions and of the class priors, and
alarms. The Monitor reads what the check needs from memory; :mod:`driftpilot.tools.fusion` tests
the signals, names the kinds of change and their severity, and tells a new finding from a repeat.

The policy's false-alarm budget sets the check's significance level; it is split evenly
(Bonferroni) among the five signal families that run a test (:data:`SIGNALS`): the labelled error
stream, the estimate without labels, input drift (each feature and each text tested at that
share, after the correction within the family), prediction drift and prior drift. Labelled
accuracy is judged by the policy's tolerance and multivariate drift by nannyml's own band, so
that on unchanged data about ``false_alarms_per_week`` findings a week come from the tests.
A drift-only finding (low or medium severity) of the same kinds, no more severe, within the
policy's cool-down is logged as a repeat and not raised again; a high-severity one (the model is
losing) is raised until mended.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, held_back, now_of, record, stream_rates, trainings_since_serving
from driftpilot.agents.state import LoopState
from driftpilot.memory import alarms, decisions, events, managed, quarantine, releases, snapshots, versions
from driftpilot.memory.tables import Quarantine, Version
from driftpilot.memory.times import to_utc
from driftpilot.policies.auto import MonitorPlan, StreamRates, derive_monitor, derive_training
from driftpilot.tools.diagnosis import to_json
from driftpilot.tools.fusion import (
    MIN_ROWS,
    AlarmSeen,
    CheckEvidence,
    CheckFrames,
    Finding,
    Window,
    check_signals,
    fuse,
    input_moved,
    outcome_of,
    rationale,
    with_estimate,
)

#: Most recent events compared with the reference for input drift (enough for the tests'
#: power, few enough to keep a check well under a second).
DRIFT_SAMPLE = 3000
#: Rows of the champion's training snapshot kept as the drift reference.
REFERENCE_SAMPLE = 5000
#: Most recent labelled events the accuracy is judged on.
ACCURACY_SAMPLE = 5000
#: Signal families a check tests, sharing its false-alarm budget: the labelled error stream, the
#: estimate without labels, input drift, prediction drift, class-prior drift.
SIGNALS = 5
#: How far back the champion's own served (and labelled) events make the reference of a check.
SERVED_REFERENCE = timedelta(days=7)
#: The events of the hour before an outage are labelled by it when the target looks an hour
#: ahead: they tell how well outages are foreseen, not whether the model decays, so they do not
#: judge it. They stay in training, which is how outages are learnt.
OUTAGE_LEAD = timedelta(hours=1)


def monitor(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Check the champion and return one finding fusing every signal, none when it is healthy, or
    what it lacked when it could not judge (blind)."""
    ctx = runtime.context
    policy = ctx.policy.policy.monitor
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        schema = managed.model_schema(model)
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion version to monitor")
        rates = stream_rates(session, model.id, now)
        plan = derive_monitor(policy, rates)
        held = quarantine.list_quarantines(session=session, model_id=model.id)
        frames, window = _frames(session, ctx, model.id, champion, held, plan, now)
        metrics = champion.metrics or {}
        evidence = check_signals(
            frames,
            features=[(f.name, f.kind) for f in schema.features],
            window=window,
            alpha=plan.alpha / SIGNALS,  # Bonferroni across the signal families of one check
            reference_accuracy=metrics.get("reference_balanced_accuracy", metrics.get("recent_balanced_accuracy")),
            reference_n=metrics.get("reference_n"),
            alarms=_firing(session, now, held),
            min_labelled=plan.min_labelled,
            psi_threshold=policy.psi_threshold,
            multivariate=policy.multivariate,
            seed=ctx.seed,
        )
        evidence = _judged_in_release(session, model.id, champion, plan, rates, now, evidence)
        finding = fuse(evidence, max_accuracy_drop=policy.max_accuracy_drop)
        # Without labels to judge it, accuracy is estimated from the served probabilities when
        # the inputs or the answers moved: CBPE's fit (~0.4 s) is the dearest step of a check.
        if finding["balanced_accuracy"] is None and policy.estimate_without_labels and input_moved(finding):
            evidence = _with_estimate(session, schema.classes, frames, evidence)
            finding = fuse(evidence, max_accuracy_drop=policy.max_accuracy_drop)
        previous = None
        if finding["kinds"]:
            since = now - timedelta(hours=policy.cooldown_hours)
            last = decisions.last_decision(
                session=session, model_id=model.id, agent="monitor", outcome="finding", since=since
            )
            previous = (last.evidence or {}) if last is not None else None
        outcome = outcome_of(finding, previous)
        logged = to_json(finding)
        decision = record(
            session,
            state,
            model,
            agent="monitor",
            action="check",
            outcome=outcome,
            rationale=rationale(outcome, finding, cooldown_hours=policy.cooldown_hours),
            # The settings the check ran under, each auto one with its derivation.
            evidence={**logged, "plan": plan.as_dict(), "rates": rates.as_dict()},
        )
        # Blind will do (a challenger needs new labels, no judgement); a repeat's finding still stands.
        due = outcome in ("healthy", "blind")
        challenge = _challenger_due(ctx, session, model.id, champion, rates, now) if due else None
    raised = logged if outcome == "finding" else None
    blind = _monitoring_sample(finding, outcome, plan, rates, window, now)
    return {
        "finding": raised,
        "blind": blind,
        "challenge": challenge,
        "outcome": "finding" if raised else "blind" if outcome == "blind" else "healthy",
        "last_decision": decision.id,
    }


def _monitoring_sample(
    finding: Finding, outcome: str, plan: MonitorPlan, rates: StreamRates, window: Window, now: datetime
) -> dict[str, Any] | None:
    """What the Curator is asked to label for a check that lacked labels of the champion's own
    (None: nothing). A champion judged on its release's events still has too few of its own: the
    sample is asked for as when blind, so that its own accuracy is judged next."""
    own_missing = outcome == "healthy" and "judged_in_release" in finding
    if not (own_missing or (outcome == "blind" and "labels" in finding.get("missing", {}))):
        return None
    # Labels of the window's newest events are still on their way: the Curator asks for no
    # more than the rest, a quarter of a judgement at a time (the budget is spread over checks).
    reach = (now - to_utc(window["start"], what="the window's start")).total_seconds() / 3600
    coming = rates.labels_per_hour * min(rates.label_delay_hours or 0.0, reach)
    return {
        "labelled": finding.get("served_labelled", finding["labelled"]),
        "needed": plan.min_labelled,
        "coming": round(coming, 1),
        "at_most": plan.check_every_labels,
        "since": window["start"],
    }


def _challenger_due(
    ctx: AgentContext, session: Session, model_id: int, champion: Version, rates: StreamRates, now: datetime
) -> dict[str, Any] | None:
    """Whether a challenger is due, and why: a champion not found losing is challenged by a model
    trained on the newest labels once ``challenger_every_labels`` of them arrived since the last
    training (the champion's own, or a challenger's or retrain's since it serves). Each training
    since that did not replace the champion doubles the labels the next one waits for, so that
    on a stream where nothing beats the champion the challengers thin out on their own."""
    policy = ctx.policy.policy
    if policy.autonomy != "L4":
        return None  # a person approves every release: a challenger answers no finding worth their time
    plan = derive_training(policy.training, rates)  # the rates the check measured
    if plan.challenger_every_labels is None or releases.active_release(session=session, model_id=model_id):
        return None  # (a release runs, from the other thread: it is judged first)
    if held_back(session, model_id, policy, now):
        return None  # (a freeze, or a person's recent no: a candidate could not be released)
    tried = trainings_since_serving(session, model_id, champion, now)
    every = plan.challenger_every_labels * 2**tried.count
    if tried.new_labels < every:
        return None
    return {
        "new_labels": tried.new_labels,
        "every": every,
        "since": tried.since.isoformat(),
        "tried_since_serving": tried.count,
        "plan": plan.as_dict(),
    }


def _frames(
    session: Session,
    ctx: AgentContext,
    model_id: int,
    champion: Version,
    held: list[Quarantine],
    plan: MonitorPlan,
    now: datetime,
) -> tuple[CheckFrames, Window]:
    """What the check reads from memory: the window's events, and what the champion learnt from
    and served before it.

    The window is sized by evidence: the last ``plan.window_hours``, reaching back (as far as
    ``plan.max_window_hours``) for the newest ``plan.min_labelled`` labelled events and
    ``plan.drift_rows`` events when the shortest window holds fewer.
    """
    shortest = now - timedelta(hours=plan.window_hours)
    farthest = now - timedelta(hours=plan.max_window_hours)
    labelled = _newest(
        session, model_id, shortest, farthest, now, wanted=plan.min_labelled, limit=ACCURACY_SAMPLE, labelled=True
    )
    current = _newest(session, model_id, shortest, farthest, now, wanted=plan.drift_rows, limit=DRIFT_SAMPLE)
    starts = [f["time"].iloc[0].to_pydatetime() for f in (labelled, current) if len(f)]
    start = min([shortest, *starts])
    # What the champion served (and what came of it) before this window: the reference of the
    # signals that need its predictions.
    served_before = events.window(
        session=session,
        model_id=model_id,
        start=start - SERVED_REFERENCE,
        end=start,
        visible_at=now,
        labelled_only=True,
        limit=ACCURACY_SAMPLE,
        with_features=False,
    )
    # Predictions are compared on everything served: labelled events are a biased sample of
    # them (the Curator asks for the uncertain ones).
    answered_before = events.window(
        session=session,
        model_id=model_id,
        start=start - SERVED_REFERENCE,
        end=start,
        limit=DRIFT_SAMPLE,
        with_features=False,
    )
    frames = CheckFrames(
        champion=champion.number,
        labelled=_without_outage_leads(labelled, held),
        current=current,
        reference=_reference(session, ctx, champion.snapshot_id),
        answered_before=answered_before[answered_before["served_version"] == champion.number],
        served_before=served_before[served_before["served_version"] == champion.number],
    )
    return frames, {"start": start.isoformat(), "end": now.isoformat()}


def _newest(
    session: Session,
    model_id: int,
    shortest: datetime,
    farthest: datetime,
    now: datetime,
    *,
    wanted: int,
    limit: int,
    labelled: bool = False,
) -> pd.DataFrame:
    """The events since ``shortest`` (at most ``limit``); when fewer than ``wanted``, the newest
    ``wanted`` since ``farthest`` instead. Labelled ones only (without features) if ``labelled``."""
    read: dict[str, Any] = {"visible_at": now, "labelled_only": True, "with_features": False} if labelled else {}
    frame = events.window(session=session, model_id=model_id, start=shortest, end=now, limit=limit, **read)
    if len(frame) < wanted and farthest < shortest:
        frame = events.window(session=session, model_id=model_id, start=farthest, end=now, limit=wanted, **read)
    return frame


def _reference(session: Session, ctx: AgentContext, snapshot_id: int | None) -> pd.DataFrame | None:
    """A sample of the champion's training snapshot, kept in the context from one check to the next."""
    if snapshot_id is None:
        return None
    if snapshot_id not in ctx.references:
        frame = snapshots.snapshot_frame(session=session, snapshot_id=snapshot_id)
        ctx.references.clear()  # only the champion's reference is ever needed again
        sample = frame.sample(n=min(len(frame), REFERENCE_SAMPLE), random_state=ctx.seed)
        # Every class the champion learnt stays in the reference, however rare: the
        # Diagnostician reads the classes it knows from it (a class missing from a sample
        # would pass for a new one).
        rare = frame.groupby("label").head(1)
        ctx.references[snapshot_id] = pd.concat([sample, rare[~rare.index.isin(sample.index)]])
    return ctx.references[snapshot_id]


def _firing(session: Session, now: datetime, held: list[Quarantine]) -> list[AlarmSeen]:
    """The alarms firing now that no quarantine has diagnosed yet."""
    handled = handled_alarm_keys([q.reason for q in held])
    return [
        {
            "key": a.key,
            "name": a.name,
            "groups": list(a.groups or []),
            "starts_at": a.starts_at.isoformat(),
            "ends_at": a.ends_at.isoformat() if a.ends_at else None,
        }
        for a in alarms.active_alarms(session=session, at=now)
        if a.key not in handled
    ]


def handled_alarm_keys(reasons: list[str]) -> set[str]:
    """Alarm keys already diagnosed: a quarantine's reason reads ``alarm <key>: <why>``.

    Keys may hold colons themselves (timestamps), so the key ends at the last ``": "``.

    >>> sorted(handled_alarm_keys(["alarm segment-3/2026-03-14T07:15:00+00:00: upstream outage", "manual"]))
    ['segment-3/2026-03-14T07:15:00+00:00']
    """
    return {r.removeprefix("alarm ").rsplit(": ", 1)[0] for r in reasons if r.startswith("alarm ")}


def _judged_in_release(
    session: Session,
    model_id: int,
    champion: Version,
    plan: MonitorPlan,
    rates: StreamRates,
    now: datetime,
    evidence: CheckEvidence,
) -> CheckEvidence:
    """The evidence, judged on the labelled events of the release that promoted the champion
    when its own served ones are too few and that release ended less than a label delay and the
    check's shortest window ago: after that its own labels are the ones to wait for (the check is
    blind, and asks for them).

    A champion promoted an hour ago has served few events whose labels are back, but it was just
    scored on today's events, more labelled ones than a check needs: it is not blind. (Called
    blind, its inputs' drift from its training snapshot, such as a daily cycle in a reading,
    read as "retrain before the damage shows" at the first check after almost every promotion:
    15 of the demo's 24 retrains.)"""
    if evidence["balanced_accuracy"] is not None or "labels" not in evidence.get("missing", {}):
        return evidence
    release = releases.promoted_by(session=session, version_id=champion.id)
    reach = now - timedelta(hours=(rates.label_delay_hours or 0.0) + plan.window_hours)
    if release is None or release.ended_at is None or release.ended_at < reach:
        return evidence
    overall = (release.evidence or {}).get("overall") or {}
    score, n = overall.get("candidate_score"), int(overall.get("n") or 0)
    if score is None or n < plan.min_labelled:
        return evidence
    judged: CheckEvidence = {**evidence, "balanced_accuracy": float(score), "labelled": n}
    judged["judged_in_release"] = release.id
    judged["served_labelled"] = evidence["labelled"]
    missing = {k: v for k, v in evidence["missing"].items() if k != "labels"}
    if missing:
        judged["missing"] = missing
    else:
        judged.pop("missing", None)
    return judged


def _with_estimate(session: Session, classes: list[str], frames: CheckFrames, evidence: CheckEvidence) -> CheckEvidence:
    """The evidence with CBPE's estimate of the champion's accuracy from the probabilities it served."""
    before, now = frames.served_before, frames.served_now
    if len(before) < MIN_ROWS or len(now) < MIN_ROWS:
        return evidence
    return with_estimate(
        evidence,
        events.probabilities(session=session, ids=before["id"].tolist(), classes=classes),
        before["label"].to_numpy(),
        events.probabilities(session=session, ids=now["id"].tolist(), classes=classes),
        classes=classes,
    )


def _without_outage_leads(frame: pd.DataFrame, held: list[Quarantine]) -> pd.DataFrame:
    """The frame without the events of the ``OUTAGE_LEAD`` before each diagnosed outage (in its groups)."""
    keep = np.ones(len(frame), dtype=bool)
    for q in held:
        if not q.reason.startswith("alarm "):
            continue
        in_lead = (frame["time"] >= q.start - OUTAGE_LEAD) & (frame["time"] < q.start)
        if q.groups:
            in_lead &= frame["group"].isin(q.groups)
        keep &= ~in_lead.to_numpy()
    return frame[keep]
