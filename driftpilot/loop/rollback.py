"""Manual rollback: an operator puts an earlier version back, through the policy engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import decisions, models, releases, versions
from driftpilot.memory.tables import Decision
from driftpilot.models.registry import verify_artifacts
from driftpilot.policies import PolicyEngine, Usage, load_policy


def manual_rollback(
    sessions: sessionmaker[Session],
    *,
    model: str,
    version: int,
    policy_path: str | Path | None = None,
    who: str = "operator",
    now: datetime | None = None,
) -> Decision:
    """Make ``version`` the champion again, ending any canary; refused versions raise.

    The target's artifacts are checked against their recorded sha256 first, so a rollback
    never puts a damaged model in service.
    """
    now = now or datetime.now(UTC)
    engine = PolicyEngine(load_policy(policy_path))
    with sessions() as session:
        row = models.get_model(session=session, name=model)
        target = versions.get_version(session=session, model_id=row.id, number=version)
        if target.stage == "rejected" or not target.artifacts:
            raise ValueError(
                f"version {version} of '{model}' was never served ({target.stage}); refusing to roll back to it"
            )
        verify_artifacts(target)
        current = versions.champion(session=session, model_id=row.id)
        release = releases.active_release(session=session, model_id=row.id)
        # Rolling back to the champion is how a person stops a canary; with no canary running
        # there is nothing to undo.
        if current is not None and current.number == version and release is None:
            raise ValueError(f"version {version} of '{model}' is already the champion and no canary is running")
        verdict = engine.check("rollback", {}, Usage())
        evidence = {
            "from": current.number if current else None,
            "to": version,
            "canary": release.id if release else None,
            "requested_by": who,
        }
        if verdict.allowed and not verdict.needs_approval:
            if release is not None:
                releases.end_release(
                    session=session,
                    release_id=release.id,
                    ended_at=now,
                    verdict="rolled_back",
                    evidence={"manual": True},
                )
                versions.set_stage(session=session, version_id=release.version_id, stage="rolled_back")
            if current is None or current.id != target.id:
                if current is not None:
                    versions.set_stage(session=session, version_id=current.id, stage="rolled_back")
                versions.set_stage(session=session, version_id=target.id, stage="champion")
                rationale = f"{who} rolled '{model}' back from version {evidence['from']} to version {version}."
            else:
                rationale = f"{who} stopped the canary of '{model}'; version {version} serves everyone."
            outcome = "rolled_back"
        else:
            outcome = "denied"
            rationale = "Rollback refused: " + "; ".join(verdict.reasons)
        return decisions.record_decision(
            session=session,
            model_id=row.id,
            run_id=f"{model}/manual/{now.isoformat()}",
            agent="operator",
            time=now,
            trigger={"kind": "manual", "by": who},
            evidence=evidence,
            diagnosis={},
            policy_verdicts=[verdict.model_dump()],
            action="rollback",
            outcome=outcome,
            rationale=rationale,
        )
