"""Diagnostician: why did the Monitor raise a finding, and what should be done about it?"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext, held_back, now_of, record, retrain_backoff, usage_today
from driftpilot.agents.llm import narrate
from driftpilot.agents.monitor import SERVED_REFERENCE
from driftpilot.agents.state import LoopState, Outcome
from driftpilot.memory import events, managed, quarantine, releases, versions
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import ManagedModel
from driftpilot.memory.times import to_utc
from driftpilot.policies import PolicyVerdict, QuarantineFacts
from driftpilot.policies.schema import Monitor
from driftpilot.tools.diagnosis import (
    AlarmEvidence,
    Diagnosis,
    DiagnosisRecord,
    alarm_evidence,
    investigate,
    to_json,
)
from driftpilot.tools.fusion import AlarmSeen

#: How far before an alarm we look to count the entities that were reporting.
BEFORE_ALARM = timedelta(hours=1)
#: Quarantine kept after an outage ends, while the entities come back and resynchronise.
RECOVERY = timedelta(hours=1)
#: Quarantine of an outage whose end is not known yet (re-diagnosed if it lasts longer).
PROVISIONAL_OUTAGE = timedelta(hours=6)


def diagnostician(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Find the cause of the Monitor's finding, act on its remedy as far as the policy and the
    loop's other work allow (a quarantine, a retrain deferred), and log the decision."""
    ctx = runtime.context
    monitor = ctx.policy.policy.monitor
    finding: Mapping[str, Any] = state.get("finding") or {}
    raw_alarms: list[AlarmSeen] = finding.get("alarms", [])
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        schema = managed.model_schema(model)
        alarms = [_alarm_evidence(session, model.id, alarm, now) for alarm in raw_alarms]
        # The window the Monitor judged (sized by its evidence), or the policy's shortest one.
        checked = finding.get("window", {}).get("start")
        window = (
            now - to_utc(checked, what="the finding's window") if checked else timedelta(hours=monitor.window_hours)
        )
        windows = _windows(session, ctx, model.id, schema.classes, window, now)
        result = _diagnose(windows, schema, finding, monitor, alarms)
        outcome, note, verdicts = _act(session, ctx, model, result, list(zip(alarms, raw_alarms, strict=True)), now)
        rationale = result.rationale + note
        evidence = to_json(
            {
                "alarms": [a.__dict__ for a in alarms],
                "window_rows": len(windows.current),
                "reference_rows": len(windows.reference),
                "served_reference_rows": len(windows.served),
            }
        )
        diagnosis: DiagnosisRecord = to_json(result.as_dict())
        chat = getattr(ctx, "chat", None)
        if chat is not None:
            # The model only rephrases: the deterministic rationale stays the decision's rationale,
            # and the narrative (None when the model failed) is kept beside it with what it saw.
            evidence["narrative"] = narrate(
                chat, {"outcome": outcome, "diagnosis": diagnosis, "evidence": evidence}, rationale
            )
        decision = record(
            session,
            state,
            model,
            agent="diagnostician",
            action="diagnose",
            outcome=outcome,
            rationale=rationale,
            evidence=evidence,
            diagnosis=diagnosis,
            verdicts=verdicts,
        )
    return {"diagnosis": {**diagnosis, "outcome": outcome}, "outcome": outcome, "last_decision": decision.id}


@dataclass(frozen=True)
class _Windows:
    """The frames a diagnosis compares.

    ``current`` is the window of the finding and ``current_champion`` its events served by the
    champion; ``before`` the window just before it (consecutive readings) and ``served`` its
    events served by the champion; ``reference`` what the champion learnt from when known, else
    ``served``. What the champion learnt from is the reference for the inputs; what it served
    before this window (and how that went) the reference for its predictions and class shares.
    """

    current: pd.DataFrame
    current_champion: pd.DataFrame
    before: pd.DataFrame
    served: pd.DataFrame
    reference: pd.DataFrame


def _windows(
    session: Any, ctx: AgentContext, model_id: int, classes: list[str], window: timedelta, now: datetime
) -> _Windows:
    champion = versions.champion(session=session, model_id=model_id)
    start = now - window
    current = _served(session, model_id, classes, start, now, now, limit=WINDOW_SAMPLE)
    before = _served(session, model_id, classes, start - SERVED_REFERENCE, start, now, limit=WINDOW_SAMPLE)
    snapshot = champion.snapshot_id if champion is not None else None
    learnt = ctx.references.get(snapshot) if snapshot is not None else None
    served, current_champion = before, current
    if champion is not None:
        served = before[before["served_version"] == champion.number]
        current_champion = current[current["served_version"] == champion.number]
    reference = learnt if learnt is not None and len(learnt) else served
    return _Windows(current, current_champion, before, served, reference)


def _diagnose(
    windows: _Windows, schema: ModelSchema, finding: Mapping[str, Any], monitor: Monitor, alarms: list[AlarmEvidence]
) -> Diagnosis:
    """Investigate the windows with the model's features and slices and the Monitor's thresholds."""
    return investigate(
        windows.reference,
        windows.current,
        features=[(f.name, f.kind) for f in schema.features],
        known_classes=_known_classes(windows.reference, schema.classes),
        accuracy=finding.get("balanced_accuracy"),
        reference_accuracy=finding.get("reference_balanced_accuracy"),
        max_accuracy_drop=monitor.max_accuracy_drop,
        alarms=alarms,
        # The schema names the slices, in the order a cause is named when two hold the same rows.
        slice_columns=[c for c in schema.slice_columns if c in windows.current.columns],
        p_threshold=monitor.drift_p_value,
        psi_threshold=monitor.psi_threshold,
        served_reference=windows.served,
        served_current=windows.current_champion,
        quality_reference=windows.before,
    )


def _act(
    session: Any,
    ctx: AgentContext,
    model: ManagedModel,
    result: Diagnosis,
    alarms: list[tuple[AlarmEvidence, AlarmSeen]],
    now: datetime,
) -> tuple[Outcome, str, list[PolicyVerdict]]:
    """What comes of the remedy: (outcome, what to add to the rationale, the policy's verdicts).

    A quarantine is asked of the policy; a remedy that retrains is deferred while a canary runs
    or while a retrain would be wasted; any other remedy is the outcome itself.
    """
    if result.remedy == "quarantine":
        return _quarantine(session, ctx, model, alarms, now)
    if result.remedy in RETRAINING and releases.active_release(session=session, model_id=model.id):
        return "deferred", " Deferred: a canary release is in progress; it is judged first.", []
    if result.remedy in RETRAINING and (why := held_back(session, model.id, ctx.policy.policy, now)):
        return "deferred", f" Deferred: {why}.", []
    if result.remedy in RETRAINING and (why := retrain_backoff(session, model.id, ctx.policy.policy, now)):
        return "deferred", f" Deferred: {why}.", []
    return result.remedy, "", []


def _quarantine(
    session: Any,
    ctx: AgentContext,
    model: ManagedModel,
    alarms: list[tuple[AlarmEvidence, AlarmSeen]],
    now: datetime,
) -> tuple[Outcome, str, list[PolicyVerdict]]:
    """Quarantine the groups of every alarm that is an outage, from its start until after its end."""
    verdict = ctx.policy.check("quarantine", QuarantineFacts(), usage_today(session, model, now), at=now)
    if not verdict.allowed:
        return "quarantine_denied", " The policy denied the quarantine: " + "; ".join(verdict.reasons), [verdict]
    note = ""
    for alarm, raw in alarms:
        if not alarm.is_outage:
            continue
        start = to_utc(raw["starts_at"], what="the alarm's starts_at")
        end = to_utc(raw["ends_at"], what="the alarm's ends_at") if raw["ends_at"] else start + PROVISIONAL_OUTAGE
        held = quarantine.add_quarantine(
            session=session,
            model_id=model.id,
            start=start,
            end=end + RECOVERY,
            groups=alarm.groups,
            reason=f"alarm {alarm.key}: upstream outage",
        )
        note += (
            f" Quarantined {', '.join(alarm.groups)} from {held.start:%Y-%m-%d %H:%M} to {held.end:%Y-%m-%d %H:%M} UTC."
        )
    return "quarantined", note, [verdict]


#: Remedies that go on to the Data Curator (and the Trainer, which plans the update from the
#: cause: a recalibration for a prior shift updates the output layer only).
RETRAINING = ("retrain", "expand_corpus", "recalibrate")
#: Most recent events of a window the diagnosis reads.
WINDOW_SAMPLE = 5000


def _served(
    session: Any, model_id: int, classes: list[str], start: datetime, end: datetime, now: datetime, *, limit: int
) -> pd.DataFrame:
    """Events of a window with their features, labels known by ``now``, and served top probability."""
    frame = events.window(session=session, model_id=model_id, start=start, end=end, visible_at=now, limit=limit)
    if len(frame):
        served = events.probabilities(session=session, ids=frame["id"].tolist(), classes=classes)
        frame["confidence"] = np.nanmax(np.where(np.isnan(served), -np.inf, served), axis=1)
        frame.loc[np.isnan(served).all(axis=1), "confidence"] = np.nan
    return frame


def _known_classes(reference: pd.DataFrame, classes: list[str]) -> list[str]:
    """The classes the champion learnt: those in its training data when known, else the schema's."""
    if "label" in reference and reference["label"].notna().any():
        return sorted(reference["label"].dropna().astype(str).unique())
    return list(classes)


def _alarm_evidence(session: Any, model_id: int, alarm: AlarmSeen, now: datetime) -> AlarmEvidence:
    """Count the entities of the alarm's groups that reported before it and went silent since."""
    # Checkpoints written before memory returned aware times hold naive ones: read both as UTC.
    start = to_utc(alarm["starts_at"], what="the alarm's starts_at")
    frame = events.window(
        session=session,
        model_id=model_id,
        start=start - BEFORE_ALARM,
        end=now + timedelta(seconds=1),
        exclude_quarantined=False,
        with_features=False,
    )
    return alarm_evidence(frame, key=alarm["key"], name=alarm["name"], groups=alarm["groups"], starts_at=start)
