"""Manual rollback: an operator puts an earlier version back, through the policy engine.

The change is one transaction that also appends to the serving history, so every process that
routes predictions (the API, an edge node's assignment) sees it on its next request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import decisions, managed, releases, versions
from driftpilot.memory.tables import Decision, Version
from driftpilot.models.registry import verify_artifacts
from driftpilot.policies import PolicyEngine, RollbackFacts, Usage, load_policy


def _previous_champion(session: Session, model_id: int, current: Version | None) -> int:
    """The version that was champion before the current one, from the serving history."""
    for change in reversed(releases.serving_history(session=session, model_id=model_id)):
        if change.champion is not None and (current is None or change.champion != current.number):
            return change.champion
    raise ValueError("no earlier champion to roll back to; name the version")


def manual_rollback(
    sessions: sessionmaker[Session],
    *,
    model: str,
    version: int | None = None,
    policy_path: str | Path | None = None,
    who: str = "operator",
    now: datetime | None = None,
) -> Decision:
    """Serve ``version`` to everyone again, ending any release; refused versions raise.

    Without ``version``: a running release is stopped (the champion keeps serving), else the
    previous champion comes back. The target's artifacts are checked against their recorded
    sha256 first, so a rollback never puts a damaged model in service.

    Raises
    ------
    LookupError
        If the model or the version does not exist.
    ValueError
        If the version never served, or there is nothing to undo.
    driftpilot.models.registry.ArtifactError
        If the version's artifacts are missing or fail their checksum.
    """
    now = now or datetime.now(UTC)
    engine = PolicyEngine(load_policy(policy_path))
    with sessions() as session:
        row = managed.get_model(session=session, name=model)
        current = versions.champion(session=session, model_id=row.id)
        release = releases.active_release(session=session, model_id=row.id)
        if version is None:
            # Stopping a running release puts the champion back; otherwise the previous champion.
            if release is not None and current is not None:
                version = current.number
            else:
                version = _previous_champion(session, row.id, current)
        try:
            target = versions.get_version(session=session, model_id=row.id, number=version)
        except LookupError:
            raise LookupError(f"model '{model}' has no version {version}") from None
        if target.stage in ("rejected", "candidate", "shadow", "student") or not target.artifacts:
            raise ValueError(
                f"version {version} of '{model}' was never served ({target.stage}); refusing to roll back to it"
            )
        verify_artifacts(target)
        # Rolling back to the champion is how a person stops a release; with none running there
        # is nothing to undo.
        if current is not None and current.number == version and release is None:
            raise ValueError(f"version {version} of '{model}' is already the champion and no release is running")
        verdict = engine.check("rollback", RollbackFacts(), Usage())
        evidence = {
            "from": current.number if current else None,
            "to": version,
            "release": release.id if release else None,
            "requested_by": who,
        }
        run_id = f"{model}/manual/{now.isoformat()}"
        if verdict.allowed and not verdict.needs_approval:
            if current is not None and current.id == target.id:
                rationale = f"{who} stopped the release of '{model}'; version {version} serves everyone."
                assert release is not None
                releases.end_release(
                    session=session,
                    release_id=release.id,
                    ended_at=now,
                    verdict="rolled_back",
                    evidence={"manual": True, "by": who},
                    run_id=run_id,
                    reason=rationale,
                )
            else:
                rationale = f"{who} rolled '{model}' back from version {evidence['from']} to version {version}."
                releases.restore_version(
                    session=session, model_id=row.id, version_id=target.id, at=now, run_id=run_id, reason=rationale
                )
            outcome = "rolled_back"
        else:
            outcome = "denied"
            rationale = "Rollback refused: " + "; ".join(verdict.reasons)
        return decisions.record_decision(
            session=session,
            model_id=row.id,
            run_id=run_id,
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
