"""Release Manager: canary on a hashed share of entities, then promote or roll back."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

from langgraph.runtime import Runtime
from langgraph.types import interrupt

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import events, models, releases, versions
from driftpilot.tools.canary import paired_canary_evidence


def release_manager(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Start the canary: the candidate serves the policy's share of entities."""
    ctx = runtime.context
    share = ctx.policy.policy.release.canary_share
    now = now_of(state)
    with ctx.sessions() as session:
        model = models.get_model(session=session, name=state["model"])
        champion = versions.champion(session=session, model_id=model.id)
        candidate = versions.get_version(session=session, model_id=model.id, number=state["candidate"])
        evaluation = state.get("evaluation") or {}
        # The Trainer's evaluation carries the facts its gate judged; the canary is asked again
        # here because the policy (or today's usage) may have changed while the candidate waited.
        verdict = ctx.policy.check(
            "start_canary",
            dict(evaluation.get("gate_facts") or {}) | {"share": share},
            usage_today(session, model, now),
        )
        if not verdict.allowed:
            decision = record(
                session,
                state,
                model,
                agent="release_manager",
                action="start_canary",
                outcome="denied",
                rationale="Canary refused by the policy: " + "; ".join(verdict.reasons),
                verdicts=[verdict],
            )
            return {"release_id": None, "outcome": "canary_denied", "last_decision": decision.id}
        release = releases.start_release(
            session=session,
            model_id=model.id,
            version_id=candidate.id,
            baseline_version_id=champion.id if champion else None,
            share=share,
            started_at=now,
        )
        versions.set_stage(session=session, version_id=candidate.id, stage="canary")
        decision = record(
            session,
            state,
            model,
            agent="release_manager",
            action="start_canary",
            outcome="canary_started",
            rationale=(
                f"Version {candidate.number} serves {share:.0%} of entities (chosen by hashing the entity id) "
                f"next to champion version {champion.number if champion else '-'}; it is judged once "
                f"{ctx.policy.policy.release.min_canary_samples} of its events are labelled."
            ),
            evidence={
                "release": release.id,
                "share": share,
                "candidate": candidate.number,
                "champion": champion.number if champion else None,
            },
            verdicts=[verdict],
        )
    return {"release_id": release.id, "outcome": "canary_started", "last_decision": decision.id}


def canary_judge(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait for canary evidence (durably), then promote or roll back.

    The wait is a LangGraph ``interrupt``: nothing happens before it, since this code runs
    again from the top when the loop resumes the run with the current time.
    """
    resumed = interrupt({"waiting_for": "canary_evidence", "release_id": state["release_id"]})
    now_iso = resumed["now"]
    now = datetime.fromisoformat(now_iso)
    ctx = runtime.context
    rules = ctx.policy.policy.release
    with ctx.sessions() as session:
        model = models.get_model(session=session, name=state["model"])
        candidate = versions.get_version(session=session, model_id=model.id, number=state["candidate"])
        release = releases.get_release(session=session, release_id=state["release_id"])
        if release.ended_at is not None:
            # Ended while this run waited, by a manual rollback: acting now would undo it.
            decision = record(
                session,
                {**state, "now": now_iso},
                model,
                agent="release_manager",
                action="judge_canary",
                outcome="already_ended",
                rationale=(
                    f"The canary of version {candidate.number} ended at {release.ended_at:%Y-%m-%d %H:%M} UTC "
                    f"({release.verdict}) before it was judged; nothing more to do."
                ),
                evidence={"release": release.id},
            )
            return {"now": now_iso, "outcome": "already_ended", "last_decision": decision.id}
        champion = versions.get_version_by_id(session=session, version_id=release.baseline_version_id)
        served = events.window(
            session=session,
            model_id=model.id,
            start=release.started_at,
            end=now,
            visible_at=now,
            labelled_only=True,
            with_features=False,
        )
        served = served[served["served_version"] == candidate.number]
        elapsed = now.replace(tzinfo=None) - release.started_at.replace(tzinfo=None)
        if len(served) < rules.min_canary_samples and elapsed < timedelta(hours=rules.max_canary_hours):
            return {"now": now_iso, "outcome": "waiting_for_evidence"}
        if len(served):
            # Enough evidence: read the features too, for the champion's answers on them.
            served = events.events_by_ids(session=session, ids=[int(i) for i in served["id"]], visible_at=now)
        champion_answers = ctx.registry.load(champion).predict(served) if len(served) else served["label"].to_numpy()
        evidence = paired_canary_evidence(served["label"].to_numpy(), served["prediction"].to_numpy(), champion_answers)
        verdict = ctx.policy.check(
            "promote",
            {
                "canary_samples": evidence.n_labelled,
                "canary_score": evidence.canary_score,
                "control_score": evidence.control_score,
            },
            usage_today(session, model, now),
        )
        state = {**state, "now": now_iso}
        details = {"release": release.id, "hours": round(elapsed.total_seconds() / 3600, 2), **evidence.as_dict()}
        if verdict.allowed and not verdict.needs_approval:
            versions.set_stage(session=session, version_id=candidate.id, stage="champion")
            releases.end_release(
                session=session, release_id=release.id, ended_at=now, verdict="promoted", evidence=details
            )
            decision = record(
                session,
                state,
                model,
                agent="release_manager",
                action="promote",
                outcome="promoted",
                rationale=(
                    f"Version {candidate.number} promoted to champion: on {evidence.n_labelled} labelled canary "
                    f"events it scored {evidence.canary_score:.3f} balanced accuracy where champion version "
                    f"{champion.number} would have scored {evidence.control_score:.3f}."
                ),
                evidence=details,
                verdicts=[verdict],
            )
            return {"now": now_iso, "outcome": "promoted", "last_decision": decision.id}
        rollback = ctx.policy.check("rollback", {}, usage_today(session, model, now))
        versions.set_stage(session=session, version_id=candidate.id, stage="rolled_back")
        releases.end_release(
            session=session, release_id=release.id, ended_at=now, verdict="rolled_back", evidence=details
        )
        why = (
            "; ".join(verdict.reasons)
            if not verdict.allowed
            else "promotion needs a person's approval at this autonomy level"
        )
        decision = record(
            session,
            state,
            model,
            agent="release_manager",
            action="rollback",
            outcome="rolled_back",
            rationale=(
                f"Version {candidate.number} rolled back; champion version {champion.number} "
                f"serves everyone again: {why}."
            ),
            evidence=details,
            verdicts=[verdict, rollback],
        )
    return {"now": now_iso, "outcome": "rolled_back", "last_decision": decision.id}


def after_canary(state: LoopState) -> Literal["canary_judge", "__end__"]:
    return "canary_judge" if state.get("outcome") == "waiting_for_evidence" else "__end__"
