"""Version 1 of a managed model: trained on labelled history, recorded with its decision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import decisions, releases, snapshots, versions
from driftpilot.memory.ingest import event_ids
from driftpilot.memory.tables import Version
from driftpilot.models.registry import Registry


def register_first_version(
    sessions: sessionmaker[Session],
    registry: Registry,
    *,
    model_id: int,
    model_name: str,
    model: Any,
    score: float,
    fit_rows: pd.DataFrame,
    holdout_keys: Sequence[str],
    now: datetime,
    source: str,
    shapes: Mapping[str, float] | None = None,
    metric: str = "balanced_accuracy",
    transfer: Mapping[str, Any] | None = None,
) -> Version:
    """Record version 1 as champion, with the snapshot it learnt from and a bootstrap decision.

    ``fit_rows`` holds the event ``key`` and ``label`` of each training row (already ingested);
    ``score`` is its balanced accuracy on the newest labelled rows held out, whose keys
    ``holdout_keys`` names (they become the first retrain's old-concept holdout);
    ``source`` says in words where the history comes from; ``shapes``, when given, the score in
    ``metric`` of each model shape version 1 was chosen among; ``transfer``, when one of them
    started from a sibling model's weights, what it carried over (and whether it was chosen).
    """
    with sessions() as session:
        held = event_ids(session=session, model_id=model_id, keys=list(holdout_keys))
        ids = event_ids(session=session, model_id=model_id, keys=list(fit_rows["key"]))
        snapshot = snapshots.create_snapshot(
            session=session,
            model_id=model_id,
            event_ids=[ids[k] for k in fit_rows["key"]],
            labels=[str(v) for v in fit_rows["label"]],
            time=now,
            stats={
                "recent": len(fit_rows),
                "replay": 0,
                "source": source,
                "recent_holdout_ids": [held[k] for k in holdout_keys],
            },
        )
        version = registry.register(
            session=session,
            model_id=model_id,
            model_name=model_name,
            model=model,
            time=now,
            snapshot_id=snapshot.id,
            stage="champion",
            metrics={
                "recent_balanced_accuracy": score,
                "reference_balanced_accuracy": score,
                "reference_n": len(holdout_keys),
                "train_rows": len(fit_rows),
                "loss_history": [round(v, 5) for v in model.history_],
            },
        )
        decision = decisions.record_decision(
            session=session,
            model_id=model_id,
            run_id=f"{model_name}/bootstrap",
            agent="trainer",
            time=now,
            trigger={"kind": "bootstrap"},
            evidence={
                "version": version.number,
                "rows": len(fit_rows),
                "holdout_balanced_accuracy": score,
                **({"shapes": dict(shapes), "chosen_by": metric} if shapes else {}),
                **({"transfer": dict(transfer)} if transfer else {}),
            },
            diagnosis={},
            policy_verdicts=[],
            action="bootstrap",
            outcome="champion",
            rationale=(
                "Version 1 trained "
                + (f"from {transfer['from']}'s weights" if transfer and transfer.get("chosen") else "from scratch")
                + f" on {len(fit_rows)} labelled events of {source}; "
                f"balanced accuracy {score:.3f} on the newest {len(holdout_keys)} held out"
                + (
                    f" (the best in {metric.replace('_', ' ')} of "
                    + ", ".join(f"{shape}: {value:.3f}" for shape, value in shapes.items())
                    + ")."
                    if shapes
                    else "."
                )
            ),
        )
        versions.set_decision(session=session, version_id=version.id, decision_id=decision.id)
        releases.log_serving(
            session=session,
            model_id=model_id,
            at=now,
            run_id=f"{model_name}/bootstrap",
            reason=f"Version 1 serves everyone: the first champion, trained on {source}.",
        )
        return version
