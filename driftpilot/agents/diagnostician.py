"""Diagnostician: why did the Monitor raise a finding, and what should be done about it?"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import events, models, quarantine, releases
from driftpilot.tools.diagnosis import OUTAGE_SILENT_SHARE, AlarmEvidence, diagnose, error_by_slice

#: How far before an alarm we look to count the entities that were reporting.
BEFORE_ALARM = timedelta(hours=1)
#: Quarantine kept after an outage ends, while the entities come back and resynchronise.
RECOVERY = timedelta(hours=1)
#: Quarantine of an outage whose end is not known yet (re-diagnosed if it lasts longer).
PROVISIONAL_OUTAGE = timedelta(hours=6)
#: Columns whose values the served errors are broken down by, when the schema has them.
SLICE_COLUMNS = ("firmware", "device_model", "region", "group")


def diagnostician(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    policy = ctx.policy.policy
    finding = state["finding"] or {}
    now = now_of(state)
    with ctx.sessions() as session:
        model = models.get_model(session=session, name=state["model"])
        alarm_evidence = [_alarm_evidence(session, model.id, alarm, now) for alarm in finding.get("alarms", [])]
        slices: dict[str, dict[str, float]] = {}
        if "performance_loss" in finding.get("kinds", []):
            # Where the errors sit is evidence for a loss of accuracy; a drift the labels do
            # not confirm needs none, so the window is only read when it serves.
            recent = events.window(
                session=session,
                model_id=model.id,
                start=now - timedelta(hours=policy.monitor.window_hours),
                end=now,
                visible_at=now,
                labelled_only=True,
                limit=5000,
            )
            slices = error_by_slice(recent, [c for c in SLICE_COLUMNS if c in recent.columns]) if len(recent) else {}
        result = diagnose(
            accuracy=finding.get("balanced_accuracy"),
            reference_accuracy=finding.get("reference_balanced_accuracy"),
            max_accuracy_drop=policy.monitor.max_accuracy_drop,
            drifted_features=finding.get("drifted_features", []),
            alarms=alarm_evidence,
            slices=slices,
        )
        verdicts = []
        outcome = result.remedy
        rationale = result.rationale
        if result.remedy == "quarantine":
            verdict = ctx.policy.check("quarantine", {}, usage_today(session, model, now))
            verdicts.append(verdict)
            if verdict.allowed:
                for alarm, raw in zip(alarm_evidence, finding.get("alarms", []), strict=True):
                    if alarm.silent_share < OUTAGE_SILENT_SHARE:
                        continue
                    start = datetime.fromisoformat(raw["starts_at"])
                    end = datetime.fromisoformat(raw["ends_at"]) if raw.get("ends_at") else start + PROVISIONAL_OUTAGE
                    held = quarantine.add_quarantine(
                        session=session,
                        model_id=model.id,
                        start=start,
                        end=end + RECOVERY,
                        groups=alarm.groups,
                        reason=f"alarm {alarm.key}: upstream outage",
                    )
                    rationale += (
                        f" Quarantined {', '.join(alarm.groups)} from {held.start:%Y-%m-%d %H:%M} "
                        f"to {held.end:%Y-%m-%d %H:%M} UTC."
                    )
                outcome = "quarantined"
            else:
                outcome = "quarantine_denied"
                rationale += " The policy denied the quarantine: " + "; ".join(verdict.reasons)
        elif result.remedy == "retrain" and releases.active_release(session=session, model_id=model.id):
            outcome = "deferred"
            rationale += " Deferred: a canary release is in progress; it is judged first."
        decision = record(
            session,
            state,
            model,
            agent="diagnostician",
            action="diagnose",
            outcome=outcome,
            rationale=rationale,
            evidence={"alarms": [a.__dict__ for a in alarm_evidence], "slices": slices},
            diagnosis=result.as_dict(),
            verdicts=verdicts,
        )
    return {"diagnosis": result.as_dict() | {"outcome": outcome}, "outcome": outcome, "last_decision": decision.id}


def _alarm_evidence(session: Any, model_id: int, alarm: dict[str, Any], now: datetime) -> AlarmEvidence:
    """Count the entities of the alarm's groups that reported before it and went silent since."""
    start = datetime.fromisoformat(alarm["starts_at"])
    groups = set(alarm["groups"])
    frame = events.window(
        session=session,
        model_id=model_id,
        start=start - BEFORE_ALARM,
        end=now + timedelta(seconds=1),
        exclude_quarantined=False,
    )
    frame = frame[frame["group"].isin(groups)]
    before = set(frame.loc[frame["time"] < start.replace(tzinfo=None), "entity"])
    during = set(frame.loc[frame["time"] >= start.replace(tzinfo=None), "entity"])
    return AlarmEvidence(
        key=alarm["key"],
        name=alarm["name"],
        groups=sorted(groups),
        entities_before=len(before),
        entities_silent=len(before - during),
    )
