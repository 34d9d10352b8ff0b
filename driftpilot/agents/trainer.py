"""Trainer: a candidate updated from the champion (or retrained), judged against it before any release.

The Trainer plans how to train from the evidence and the policy
(:func:`~driftpilot.tools.training.plan_update`): by default an incremental update of the
champion — warm-started, held to its weights by EWC, on recent data mixed with the Curator's
class-balanced replay of older data, the output layer grown for new classes — and a full retrain
from scratch when the policy asks for one, after ``full_every`` updates in a row, or when an
update fails the evaluation gate. Every candidate is evaluated against the champion
(:func:`~driftpilot.tools.evaluation.evaluate_candidate`) and the comparison, the settings the
fit chose and its curves are stored with the version and the decision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from langgraph.runtime import Runtime
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import decisions, events, golden, managed, snapshots, versions
from driftpilot.memory.tables import Version
from driftpilot.models.base import TorchClassifier
from driftpilot.policies import PolicyVerdict
from driftpilot.tools.evaluation import Evaluation, evaluate_candidate
from driftpilot.tools.training import UpdatePlan, plan_update, train_candidate


def trainer(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    policy = ctx.policy.policy
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        done = _trained_before(session, state, model)
        if done is not None:
            return done
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion to warm-start from")
        snapshot = snapshots.get_snapshot(session=session, snapshot_id=state["snapshot_id"])
        usage = usage_today(session, model, now)
        # The labelled events behind the retrain: what it learns from and the recent ones held out
        # to judge it, as the Curator counted them when it decided there were enough.
        labelled = snapshot.n_rows + len(snapshot.stats.get("recent_holdout_ids", []))
        schema = managed.model_schema(model)
        retrain = ctx.policy.check(
            "retrain",
            {"training_labels": labelled, "features": ",".join(f.name for f in schema.features)},
            usage,
            at=now,
        )
        if not retrain.allowed:
            decision = record(
                session,
                state,
                model,
                agent="trainer",
                action="retrain",
                outcome="denied",
                rationale="Retraining refused by the policy: " + "; ".join(retrain.reasons),
                evidence={"snapshot": snapshot.id},
                verdicts=[retrain],
            )
            return {"candidate": None, "outcome": "retrain_denied", "last_decision": decision.id}

        frame = snapshots.snapshot_frame(session=session, snapshot_id=snapshot.id)
        labels = frame["label"].to_numpy()
        parent = ctx.registry.load(champion)
        cause = (state.get("diagnosis") or {}).get("cause")
        plan = plan_update(
            strategy=policy.training.strategy,
            cause=cause,
            parent=parent,
            labels=labels,
            updates_since_scratch=int((champion.metrics or {}).get("updates_since_scratch", 0)),
            full_every=policy.training.full_every,
            penalty=policy.training.penalty,
            strength=policy.training.penalty_strength,
        )
        recent = _holdout(session, snapshot.stats.get("recent_holdout_ids", []), now)
        old = _holdout(session, snapshot.stats.get("old_holdout_ids", []), now)
        pinned = golden.golden_frame(session=session, model_id=model.id, visible_at=now)
        facts = {"concept_changed": "yes" if cause == "concept_drift" else "no"}

        attempts: list[dict[str, Any]] = []
        try:
            candidate, evaluation, canary = _attempt(
                ctx, parent, frame, labels, plan, recent, old, pinned, facts, usage
            )
            attempts.append(_summary(plan, candidate, evaluation, canary))
            if not canary.allowed and plan.mode == "update" and policy.training.fallback_to_full:
                plan = UpdatePlan(
                    "scratch",
                    reasons=["the incremental update failed the evaluation gate: " + "; ".join(canary.reasons)],
                )
                candidate, evaluation, canary = _attempt(
                    ctx, parent, frame, labels, plan, recent, old, pinned, facts, usage
                )
                attempts.append(_summary(plan, candidate, evaluation, canary))
        except ValueError as exc:
            # A set the family cannot train on (empty, one class, features not of its schema):
            # said in the log, nothing registered.
            decision = record(
                session,
                state,
                model,
                agent="trainer",
                action="retrain",
                outcome="failed",
                rationale=f"Training on snapshot {snapshot.id} failed: {exc}. Nothing was registered.",
                evidence={"snapshot": snapshot.id, "plan": plan.as_dict(), "error": str(exc), "attempts": attempts},
                verdicts=[retrain],
            )
            return {"candidate": None, "outcome": "training_failed", "last_decision": decision.id}

        accepted = canary.allowed
        report = candidate.report_
        version = ctx.registry.register(
            session=session,
            model_id=model.id,
            model_name=model.name,
            model=candidate,
            time=now,
            parent_id=champion.id,
            snapshot_id=snapshot.id,
            stage="candidate" if accepted else "rejected",
            metrics=_metrics(champion, snapshot.n_rows, plan, candidate, evaluation)
            | {"run_id": state["run_id"], "gate_facts": evaluation.gate_facts(None) | facts},
        )
        decision = record(
            session,
            state,
            model,
            agent="trainer",
            action="retrain",
            outcome="candidate" if accepted else "rejected",
            rationale=_rationale(
                version, champion, snapshot.id, snapshot.n_rows, plan, report, evaluation, canary, attempts
            ),
            evidence={
                "version": version.number,
                "plan": plan.as_dict(),
                "attempts": attempts,
                "evaluation": evaluation.as_dict(),
                "comparison_table": evaluation.table(),
                "training": report.as_dict(),
            },
            verdicts=[retrain, canary],
        )
        versions.set_decision(session=session, version_id=version.id, decision_id=decision.id)
    return {
        "candidate": version.number if accepted else None,
        "evaluation": evaluation.as_dict() | {"gate_facts": evaluation.gate_facts(None) | facts},
        "outcome": "candidate" if accepted else "rejected",
        "last_decision": decision.id,
    }


def _trained_before(session: Session, state: LoopState, model: Any) -> dict[str, Any] | None:
    """What this run trained before a restart, or None: a run resumed after a crash never trains
    (or registers) twice. The version is found by its run; its decision is written now if the
    crash came between the two writes."""
    version = versions.version_of_run(session=session, model_id=model.id, run_id=state["run_id"], time=now_of(state))
    if version is None:
        return None
    accepted = version.stage != "rejected"
    outcome = "candidate" if accepted else "rejected"
    decision = decisions.run_decision(
        session=session, model_id=model.id, run_id=state["run_id"], agent="trainer", action="retrain"
    )
    if decision is None:
        decision = record(
            session,
            state,
            model,
            agent="trainer",
            action="retrain",
            outcome=outcome,
            rationale=(
                f"Version {version.number} was trained and registered by this run before a restart; "
                f"it is taken as it is ({'goes to canary' if accepted else 'kept for audit'}), not trained again."
            ),
            evidence={"version": version.number, "recovered": True, "evaluation": version.metrics.get("evaluation")},
        )
        versions.set_decision(session=session, version_id=version.id, decision_id=decision.id)
    metrics = version.metrics or {}
    return {
        "candidate": version.number if accepted else None,
        "evaluation": dict(metrics.get("evaluation") or {}) | {"gate_facts": metrics.get("gate_facts") or {}},
        "outcome": outcome,
        "last_decision": decision.id,
    }


def _attempt(
    ctx: AgentContext,
    parent: TorchClassifier,
    frame: pd.DataFrame,
    labels: Any,
    plan: UpdatePlan,
    recent: pd.DataFrame,
    old: pd.DataFrame,
    pinned: pd.DataFrame,
    facts: dict[str, Any],
    usage: Any,
) -> tuple[TorchClassifier, Evaluation, PolicyVerdict]:
    """Train as ``plan`` says, evaluate against the champion, and ask the gate."""
    candidate = train_candidate(parent, frame, labels, plan, on_epoch=ctx.on_epoch)
    evaluation = evaluate_candidate(
        candidate,
        parent,
        recent=recent,
        old=old,
        golden=pinned,
        min_slice_samples=ctx.policy.policy.evaluation.min_slice_samples,
    )
    share = ctx.policy.policy.release.canary_share
    canary = ctx.policy.check("start_canary", evaluation.gate_facts(share) | facts, usage)
    return candidate, evaluation, canary


def _summary(
    plan: UpdatePlan, candidate: TorchClassifier, evaluation: Evaluation, canary: PolicyVerdict
) -> dict[str, Any]:
    return {
        "plan": plan.as_dict(),
        "seconds": round(candidate.report_.seconds, 3),
        "epochs": candidate.report_.epochs,
        "gate_passed": canary.allowed,
        "gate_reasons": canary.reasons,
        "candidate_recent": evaluation.candidate_recent,
        "candidate_old": evaluation.candidate_old,
    }


def _metrics(
    champion: Version, rows: int, plan: UpdatePlan, candidate: TorchClassifier, evaluation: Evaluation
) -> dict[str, Any]:
    report = candidate.report_
    previous = champion.metrics or {}
    return {
        "recent_balanced_accuracy": evaluation.candidate_recent,
        # The level the model is expected to hold, inherited from the first version:
        # a candidate that only recovers half of a loss must not lower the bar.
        "reference_balanced_accuracy": max(
            evaluation.candidate_recent,
            previous.get("reference_balanced_accuracy", evaluation.champion_recent),
        ),
        "old_balanced_accuracy": evaluation.candidate_old,
        "champion_recent_balanced_accuracy": evaluation.champion_recent,
        "train_rows": rows,
        "train_seconds": round(report.seconds, 3),
        "loss_history": [round(c.train_loss, 5) for c in report.curves],
        "updates_since_scratch": 0 if plan.mode == "scratch" else int(previous.get("updates_since_scratch", 0)) + 1,
        "plan": plan.as_dict(),
        "training": report.as_dict(),
        "evaluation": evaluation.as_dict(),
        "comparison_table": evaluation.table(),
    }


def _rationale(
    version: Version,
    champion: Version,
    snapshot_id: int,
    rows: int,
    plan: UpdatePlan,
    report: Any,
    evaluation: Evaluation,
    canary: PolicyVerdict,
    attempts: list[dict[str, Any]],
) -> str:
    old = (
        f", on old concepts {evaluation.candidate_old:.3f} vs {evaluation.champion_old:.3f}"
        if evaluation.candidate_old is not None and evaluation.champion_old is not None
        else ""
    )
    retried = (
        f" The incremental update was tried first and failed the gate ({'; '.join(attempts[0]['gate_reasons'])}); "
        "this is the full retrain that followed."
        if len(attempts) > 1
        else ""
    )
    grown = f" New classes: {', '.join(report.new_classes)}." if report.new_classes else ""
    verdict = "Goes to canary." if canary.allowed else f"Kept for audit, not released: {'; '.join(canary.reasons)}."
    return (
        f"Version {version.number} is {plan.describe()} of version {champion.number} on snapshot {snapshot_id} "
        f"({rows} rows) because {'; '.join(plan.reasons)}. Settings found for this run: learning rate "
        f"{report.lr:.2g} ({report.lr_source}), batch {report.batch_size}, {report.epochs} of at most "
        f"{report.max_epochs} epochs (best {report.best_epoch}{', stopped early' if report.stopped_early else ''}), "
        f"{report.seconds:.1f} s.{grown}{retried} Balanced accuracy on the recent holdout "
        f"{evaluation.candidate_recent:.3f} vs the champion's {evaluation.champion_recent:.3f}{old}. {verdict}"
    )


def _holdout(session: Session, ids: list[int], now: datetime) -> pd.DataFrame:
    """The holdout events with their labels as visible ``now`` (unlabelled ones dropped)."""
    if not ids:
        return pd.DataFrame(columns=["label"])
    frame = events.events_by_ids(session=session, ids=ids, visible_at=now)
    return frame[frame["label"].notna()]
