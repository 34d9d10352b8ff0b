"""Monitor: is the champion still healthy? Accuracy on labelled events, input drift, alarms."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext, now_of, record
from driftpilot.agents.state import LoopState
from driftpilot.memory import alarms, events, models, quarantine, snapshots, versions
from driftpilot.memory.tables import Quarantine
from driftpilot.tools.drift import feature_drift
from driftpilot.tools.metrics import balanced_accuracy

#: Most recent events compared with the reference for input drift (enough for the tests'
#: power, few enough to keep a check well under a second).
DRIFT_SAMPLE = 3000
#: Rows of the champion's training snapshot kept as the drift reference.
REFERENCE_SAMPLE = 5000
#: Most recent labelled events the accuracy is judged on.
ACCURACY_SAMPLE = 5000


def handled_alarm_keys(reasons: list[str]) -> set[str]:
    """Alarm keys already diagnosed: a quarantine's reason reads ``alarm <key>: <why>``.

    Keys may hold colons themselves (timestamps), so the key ends at the last ``": "``.

    >>> sorted(handled_alarm_keys(["alarm olt/2026-03-14T07:15:00+00:00: upstream outage", "manual"]))
    ['olt/2026-03-14T07:15:00+00:00']
    """
    return {r.removeprefix("alarm ").rsplit(": ", 1)[0] for r in reasons if r.startswith("alarm ")}


def monitor(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Check the champion and return a finding, or none when it is healthy."""
    ctx = runtime.context
    policy = ctx.policy.policy.monitor
    now = now_of(state)
    with ctx.sessions() as session:
        model = models.get_model(session=session, name=state["model"])
        schema = models.model_schema(model)
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion version to monitor")
        start = now - timedelta(hours=policy.window_hours)
        labelled = events.window(
            session=session,
            model_id=model.id,
            start=start,
            end=now,
            visible_at=now,
            labelled_only=True,
            limit=ACCURACY_SAMPLE,
            with_features=False,
        )
        current = events.window(session=session, model_id=model.id, start=start, end=now, limit=DRIFT_SAMPLE)
        if champion.snapshot_id not in ctx.references and champion.snapshot_id is not None:
            frame = snapshots.snapshot_frame(session=session, snapshot_id=champion.snapshot_id)
            ctx.references.clear()  # only the champion's reference is ever needed again
            ctx.references[champion.snapshot_id] = frame.sample(
                n=min(len(frame), REFERENCE_SAMPLE), random_state=ctx.seed
            )
        reference = ctx.references.get(champion.snapshot_id)
        held = quarantine.list_quarantines(session=session, model_id=model.id)
        handled = handled_alarm_keys([q.reason for q in held])
        labelled = _without_outage_leads(labelled, held)
        firing = [a for a in alarms.active_alarms(session=session, at=now) if a.key not in handled]

        judged = labelled[labelled["served_version"] == champion.number]
        accuracy = None
        if len(judged) >= policy.min_labelled:
            accuracy = balanced_accuracy(judged["label"].to_numpy(), judged["prediction"].to_numpy())
        metrics = champion.metrics or {}
        reference_accuracy = metrics.get("reference_balanced_accuracy", metrics.get("recent_balanced_accuracy"))
        drift = None
        if reference is not None:
            drift = feature_drift(
                reference,
                current,
                [(f.name, f.kind) for f in schema.features],
                p_threshold=policy.drift_p_value,
                psi_threshold=policy.psi_threshold,
            )
        kinds = []
        if accuracy is not None and reference_accuracy is not None:
            if reference_accuracy - accuracy > policy.max_accuracy_drop:
                kinds.append("performance_loss")
        if drift is not None and drift.drifted:
            kinds.append("data_drift")
        if firing:
            kinds.append("alarm")

        evidence = {
            "champion": champion.number,
            "window": {"start": start.isoformat(), "end": now.isoformat()},
            "labelled": len(judged),
            "balanced_accuracy": accuracy,
            "reference_balanced_accuracy": reference_accuracy,
            "drifted_features": drift.drifted if drift else [],
            "drift": [f.model_dump() for f in drift.features if f.drifted] if drift else [],
            "drift_enough_data": drift.enough_data if drift else False,
            "alarms": [
                {
                    "key": a.key,
                    "name": a.name,
                    "groups": list(a.groups or []),
                    "starts_at": a.starts_at.isoformat(),
                    "ends_at": a.ends_at.isoformat() if a.ends_at else None,
                }
                for a in firing
            ],
        }
        finding = {"kinds": kinds, **evidence} if kinds else None
        if finding:
            rationale = "Finding: " + ", ".join(kinds) + _describe(evidence)
        else:
            rationale = "Healthy" + _describe(evidence)
        decision = record(
            session,
            state,
            model,
            agent="monitor",
            action="check",
            outcome="finding" if finding else "healthy",
            rationale=rationale,
            evidence=evidence,
        )
    return {"finding": finding, "outcome": "finding" if finding else "healthy", "last_decision": decision.id}


#: The readings of the hour before an outage are labelled by it (the horizon of an "offline
#: within the hour" target): they tell how well outages are foreseen, not whether the model
#: decays, so they do not judge it. They stay in training, which is how outages are learnt.
OUTAGE_LEAD = timedelta(hours=1)


def _without_outage_leads(frame: pd.DataFrame, held: list[Quarantine]) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    for q in held:
        if not q.reason.startswith("alarm "):
            continue
        start = pd.Timestamp(q.start).tz_localize(None)
        in_lead = (frame["time"] >= start - OUTAGE_LEAD) & (frame["time"] < start)
        if q.groups:
            in_lead &= frame["group"].isin(q.groups)
        keep &= ~in_lead.to_numpy()
    return frame[keep]


def _describe(evidence: dict[str, Any]) -> str:
    parts = []
    if evidence["balanced_accuracy"] is not None:
        parts.append(
            f"balanced accuracy {evidence['balanced_accuracy']:.3f} on {evidence['labelled']} labelled events "
            f"(reference {evidence['reference_balanced_accuracy']:.3f})"
        )
    else:
        parts.append(f"only {evidence['labelled']} labelled events: accuracy not judged")
    if evidence["drifted_features"]:
        parts.append("drifted: " + ", ".join(evidence["drifted_features"]))
    for alarm in evidence["alarms"]:
        parts.append(f"alarm {alarm['name']} on {', '.join(alarm['groups'])}")
    return ": " + "; ".join(parts) + "."
