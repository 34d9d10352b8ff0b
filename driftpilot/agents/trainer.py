"""Trainer: a candidate warm-started from the champion, judged against it before any release."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import pandas as pd
from langgraph.runtime import Runtime
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import events, models, snapshots, versions
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.tools.evaluation import compare_models, gate_facts


def trainer(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    ctx = runtime.context
    policy = ctx.policy.policy
    now = now_of(state)
    with ctx.sessions() as session:
        model = models.get_model(session=session, name=state["model"])
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion to warm-start from")
        snapshot = snapshots.get_snapshot(session=session, snapshot_id=state["snapshot_id"])
        usage = usage_today(session, model, now)
        # The labelled events behind the retrain: what it learns from and the recent ones held out
        # to judge it, as the Curator counted them when it decided there were enough.
        labelled = snapshot.n_rows + len(snapshot.stats.get("recent_holdout_ids", []))
        retrain = ctx.policy.check("retrain", {"training_labels": labelled}, usage)
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
        parent = ctx.registry.load(champion)
        started = time.perf_counter()
        candidate = TabularMLP.from_config(parent.config()).fit(frame, frame["label"].to_numpy(), warm_start=parent)
        seconds = time.perf_counter() - started
        recent = _holdout(session, snapshot.stats.get("recent_holdout_ids", []), now)
        old = _holdout(session, snapshot.stats.get("old_holdout_ids", []), now)
        comparison = compare_models(candidate.predict, parent.predict, recent, old)
        canary = ctx.policy.check(
            "start_canary",
            gate_facts(comparison.as_dict(), policy.release.canary_share),
            usage,
        )
        accepted = canary.allowed
        version = ctx.registry.register(
            session=session,
            model_id=model.id,
            model_name=model.name,
            model=candidate,
            time=now,
            parent_id=champion.id,
            snapshot_id=snapshot.id,
            stage="candidate" if accepted else "rejected",
            metrics={
                "recent_balanced_accuracy": comparison.candidate_recent,
                # The level the model is expected to hold, inherited from the first version:
                # a candidate that only recovers half of a loss must not lower the bar.
                "reference_balanced_accuracy": max(
                    comparison.candidate_recent,
                    (champion.metrics or {}).get("reference_balanced_accuracy", comparison.champion_recent),
                ),
                "old_balanced_accuracy": comparison.candidate_old,
                "champion_recent_balanced_accuracy": comparison.champion_recent,
                "train_rows": snapshot.n_rows,
                "train_seconds": round(seconds, 3),
                "loss_history": [round(v, 5) for v in candidate.history_],
            },
        )
        verdict_text = "; ".join(canary.reasons)
        decision = record(
            session,
            state,
            model,
            agent="trainer",
            action="retrain",
            outcome="candidate" if accepted else "rejected",
            rationale=(
                f"Version {version.number} warm-started from version {champion.number} on snapshot {snapshot.id} "
                f"({snapshot.n_rows} rows, {seconds:.1f} s): balanced accuracy on the recent holdout "
                f"{comparison.candidate_recent:.3f} vs the champion's {comparison.champion_recent:.3f}"
                + (
                    f", on old concepts {comparison.candidate_old:.3f} vs {comparison.champion_old:.3f}"
                    if comparison.candidate_old is not None and comparison.champion_old is not None
                    else ""
                )
                + (". Goes to canary." if accepted else f". Kept for audit, not released: {verdict_text}.")
            ),
            evidence={
                "version": version.number,
                "comparison": comparison.as_dict(),
                "training": {"rows": snapshot.n_rows, "seconds": seconds, "loss": candidate.history_},
            },
            verdicts=[retrain, canary],
        )
        versions.set_decision(session=session, version_id=version.id, decision_id=decision.id)
    return {
        "candidate": version.number if accepted else None,
        "evaluation": comparison.as_dict(),
        "outcome": "candidate" if accepted else "rejected",
        "last_decision": decision.id,
    }


def _holdout(session: Session, ids: list[int], now: datetime) -> pd.DataFrame:
    """The holdout events with their labels as visible ``now`` (unlabelled ones dropped)."""
    if not ids:
        return pd.DataFrame(columns=["label"])
    frame = events.events_by_ids(session=session, ids=ids, visible_at=now)
    return frame[frame["label"].notna()]
