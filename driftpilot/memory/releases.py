"""Releases and the history of what served whom.

A release takes a candidate through a plan: shadow (it answers beside the champion, nothing it
says is served), then canary steps of growing shares of cohorts, then promotion or rollback.
Every change of what is served appends a :class:`ServingChange` in the same transaction as the
change itself, so "what was serving at time T, and why?" is one indexed lookup
(:func:`serving_at`) and the history is never rewritten. Which cohort an entity falls in is the
hashing in :mod:`driftpilot.tools.cohort`, applied by the layers above.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory import versions
from driftpilot.memory.audit import to_jsonable
from driftpilot.memory.db import committing
from driftpilot.memory.tables import COHORT_KINDS, Decision, Release, ServingChange, Version


def _check_share(share: float, what: str = "share") -> None:
    if not (isinstance(share, (int, float)) and math.isfinite(share) and 0.0 < share <= 1.0):
        raise ValueError(f"{what} must be a number in (0, 1], got {share!r}")


def _version(session: Session, version_id: int | None) -> Version | None:
    return None if version_id is None else session.get(Version, version_id)


def _set_champion(session: Session, version: Version) -> None:
    versions.archive_champion(session, version.model_id, keep_id=version.id)
    version.stage = "champion"


def _close(release: Release, at: datetime, verdict: str, evidence: Mapping[str, Any] | None) -> None:
    if release.ended_at is not None:
        raise ValueError(f"release {release.id} already ended at {release.ended_at.isoformat()}")
    release.ended_at = at
    release.verdict = verdict
    release.phase = "ended"
    if evidence is not None:
        release.evidence = to_jsonable(dict(evidence))


def _append_change(session: Session, model_id: int, at: datetime, run_id: str, reason: str) -> ServingChange:
    """Append what the model serves now (after this transaction's changes) to the history."""
    session.flush()
    champion = versions.champion(session=session, model_id=model_id)
    release = active_release(session=session, model_id=model_id)
    candidate = _version(session, release.version_id) if release is not None else None
    change = ServingChange(
        model_id=model_id,
        at=at,
        champion=champion.number if champion else None,
        candidate=candidate.number if candidate else None,
        phase=release.phase if release is not None else None,
        share=float(release.share) if release is not None and release.phase == "canary" else 0.0,
        cohort=release.cohort if release is not None else "entity",
        salt=release.salt if release is not None else "",
        release_id=release.id if release is not None else None,
        run_id=str(run_id),
        reason=str(reason),
    )
    session.add(change)
    return change


def log_serving(*, session: Session, model_id: int, at: datetime, run_id: str, reason: str) -> ServingChange:
    """Record what the model serves from ``at`` on (e.g. its first champion), and why."""
    with committing(session):
        change = _append_change(session, model_id, at, run_id, reason)
    return change


def start_release(
    *,
    session: Session,
    model_id: int,
    version_id: int,
    baseline_version_id: int | None,
    started_at: datetime,
    plan: Sequence[float] = (0.2,),
    shadow: bool = False,
    cohort: str = "entity",
    salt: str = "",
    run_id: str = "",
    reason: str = "",
    share: float | None = None,
) -> Release:
    """Start taking a version through ``plan`` (its canary shares, increasing, each in (0, 1]):
    in shadow first when ``shadow``, else at the plan's first share. ``share`` is a shorthand for
    a one-step plan.

    Raises
    ------
    ValueError
        If the plan or cohort is invalid or the model already has a release running.
    """
    plan = [float(share)] if share is not None else [float(s) for s in plan]
    if not plan:
        raise ValueError("a release plan needs at least one canary share")
    for s in plan:
        _check_share(s, "every share of the plan")
    if any(b <= a for a, b in zip(plan, plan[1:], strict=False)):
        raise ValueError(f"the plan's shares must increase, got {plan}")
    if cohort not in COHORT_KINDS:
        raise ValueError(f"cohort must be one of {list(COHORT_KINDS)}, got {cohort!r}")
    with committing(session):
        running = active_release(session=session, model_id=model_id)
        if running is not None:
            raise ValueError(
                f"model {model_id} already has release {running.id} (version id {running.version_id}) "
                "running; end it first"
            )
        candidate = _version(session, version_id)
        if candidate is None or candidate.model_id != model_id:
            raise LookupError(f"model {model_id} has no version with id {version_id}")
        release = Release(
            model_id=model_id,
            version_id=version_id,
            baseline_version_id=baseline_version_id,
            share=0.0 if shadow else plan[0],
            started_at=started_at,
            step_started_at=started_at,
            evidence={},
            phase="shadow" if shadow else "canary",
            step=-1 if shadow else 0,
            plan=plan,
            cohort=cohort,
            salt=salt,
        )
        session.add(release)
        candidate.stage = "shadow" if shadow else "canary"
        _append_change(session, model_id, started_at, run_id, reason)
    return release


def step_release(*, session: Session, release_id: int, at: datetime, run_id: str = "", reason: str = "") -> Release:
    """Move a running release to its plan's next share (from shadow, to the first)."""
    with committing(session):
        release = get_release(session=session, release_id=release_id)
        if release.ended_at is not None:
            raise ValueError(f"release {release_id} already ended at {release.ended_at.isoformat()}")
        if release.step + 1 >= len(release.plan):
            raise ValueError(
                f"release {release_id} is at its plan's last share ({release.plan[-1]}); promote or end it"
            )
        release.step += 1
        release.share = float(release.plan[release.step])
        release.phase = "canary"
        release.step_started_at = at
        candidate = _version(session, release.version_id)
        assert candidate is not None  # a foreign key
        candidate.stage = "canary"
        _append_change(session, release.model_id, at, run_id, reason)
    return release


def end_release(
    *,
    session: Session,
    release_id: int,
    ended_at: datetime,
    verdict: str,
    evidence: Mapping[str, Any] | None = None,
    promote: bool = False,
    run_id: str = "",
    reason: str = "",
) -> Release:
    """End a release with its verdict and evidence: the candidate becomes the champion when
    ``promote``, else it is rolled back and the champion serves everyone again."""
    with committing(session):
        release = get_release(session=session, release_id=release_id)
        _close(release, ended_at, verdict, evidence)
        candidate = _version(session, release.version_id)
        assert candidate is not None  # a foreign key
        if promote:
            _set_champion(session, candidate)
        else:
            candidate.stage = "rolled_back"
        _append_change(session, release.model_id, ended_at, run_id, reason)
    return release


def restore_version(
    *, session: Session, model_id: int, version_id: int, at: datetime, run_id: str = "", reason: str = ""
) -> Version:
    """Make an earlier version the champion again (a manual rollback), ending any running release;
    the champion it replaces is marked rolled back. One transaction."""
    with committing(session):
        target = _version(session, version_id)
        if target is None or target.model_id != model_id:
            raise LookupError(f"model {model_id} has no version with id {version_id}")
        release = active_release(session=session, model_id=model_id)
        if release is not None:
            _close(release, at, "rolled_back", {**(release.evidence or {}), "manual": True})
            candidate = _version(session, release.version_id)
            if candidate is not None and candidate.id != target.id:
                candidate.stage = "rolled_back"
        current = versions.champion(session=session, model_id=model_id)
        if current is not None and current.id != target.id:
            current.stage = "rolled_back"
            session.flush()
        _set_champion(session, target)
        _append_change(session, model_id, at, run_id, reason)
    return target


def active_release(*, session: Session, model_id: int) -> Release | None:
    """The model's running release (not yet ended), or None."""
    stmt = (
        sa.select(Release).where(Release.model_id == model_id, Release.ended_at.is_(None)).order_by(Release.id.desc())
    )
    return session.scalars(stmt).first()


def promoted_by(*, session: Session, version_id: int) -> Release | None:
    """The release that promoted this version (ended, verdict ``promoted``), or None."""
    stmt = (
        sa.select(Release)
        .where(Release.version_id == version_id, Release.verdict == "promoted", Release.ended_at.is_not(None))
        .order_by(Release.id.desc())
    )
    return session.scalars(stmt).first()


def release_started_by(*, session: Session, model_id: int, run_id: str) -> Release | None:
    """The release run ``run_id`` started, or None (found through the serving change it logged)."""
    stmt = (
        sa.select(ServingChange.release_id)
        .where(
            ServingChange.model_id == model_id,
            ServingChange.run_id == str(run_id),
            ServingChange.release_id.is_not(None),
        )
        .order_by(ServingChange.id)
        .limit(1)
    )
    release_id = session.scalar(stmt)
    return session.get(Release, release_id) if release_id is not None else None


def get_release(*, session: Session, release_id: int) -> Release:
    """The release with this id; LookupError if there is none."""
    release = session.get(Release, release_id)
    if release is None:
        raise LookupError(f"no release with id {release_id}")
    return release


def list_releases(*, session: Session, model_id: int) -> list[Release]:
    """A model's releases, oldest first."""
    return list(session.scalars(sa.select(Release).where(Release.model_id == model_id).order_by(Release.id)))


def serving_history(*, session: Session, model_id: int) -> list[ServingChange]:
    """Every change of what the model serves, oldest first."""
    stmt = sa.select(ServingChange).where(ServingChange.model_id == model_id).order_by(ServingChange.id)
    return list(session.scalars(stmt))


def serving_at(*, session: Session, model_id: int, at: datetime) -> ServingChange | None:
    """What the model served at ``at`` (the last change at or before it), or None before any."""
    stmt = (
        sa.select(ServingChange)
        .where(ServingChange.model_id == model_id, ServingChange.at <= at)
        .order_by(ServingChange.at.desc(), ServingChange.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()


def latest_change(*, session: Session, model_id: int) -> ServingChange | None:
    """What the model serves now (its newest serving change), or None before any."""
    stmt = sa.select(ServingChange).where(ServingChange.model_id == model_id).order_by(ServingChange.id.desc()).limit(1)
    return session.scalars(stmt).first()


def latest_change_id(*, session: Session, model_id: int) -> int:
    """Id of the model's newest serving change (0 before any): a cheap "has anything changed?"."""
    stmt = sa.select(sa.func.max(ServingChange.id)).where(ServingChange.model_id == model_id)
    return int(session.scalar(stmt) or 0)


def decision_of(*, session: Session, change: ServingChange) -> Decision | None:
    """The decision that explains a serving change: its run's decision at the change's time."""
    stmt = (
        sa.select(Decision)
        .where(
            Decision.model_id == change.model_id,
            Decision.run_id == change.run_id,
            Decision.time == change.at,
        )
        .order_by(Decision.id.desc())
        .limit(1)
    )
    return session.scalars(stmt).first()
