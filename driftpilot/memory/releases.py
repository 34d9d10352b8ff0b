"""Releases: a version's exposure to a share of traffic, and its verdict."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import to_jsonable
from driftpilot.memory.db import committing
from driftpilot.memory.tables import Release
from driftpilot.memory.times import to_naive_utc


def start_release(
    *,
    session: Session,
    model_id: int,
    version_id: int,
    baseline_version_id: int | None,
    share: float,
    started_at: datetime,
) -> Release:
    """Start exposing a version to ``share`` (0 < share ≤ 1) of the model's traffic.

    Raises
    ------
    ValueError
        If ``share`` is out of range or the model already has a release running.
    """
    if not (isinstance(share, (int, float)) and math.isfinite(share) and 0.0 < share <= 1.0):
        raise ValueError(f"share must be a number in (0, 1], got {share!r}")
    with committing(session):
        running = active_release(session=session, model_id=model_id)
        if running is not None:
            raise ValueError(
                f"model {model_id} already has release {running.id} (version id {running.version_id}) "
                "running; end it first"
            )
        release = Release(
            model_id=model_id,
            version_id=version_id,
            baseline_version_id=baseline_version_id,
            share=float(share),
            started_at=to_naive_utc(started_at),
            evidence={},
        )
        session.add(release)
    return release


def active_release(*, session: Session, model_id: int) -> Release | None:
    """The model's running release (not yet ended), or None."""
    stmt = (
        sa.select(Release).where(Release.model_id == model_id, Release.ended_at.is_(None)).order_by(Release.id.desc())
    )
    return session.scalars(stmt).first()


def end_release(
    *,
    session: Session,
    release_id: int,
    ended_at: datetime,
    verdict: str,
    evidence: Mapping[str, Any] | None = None,
) -> Release:
    """End a release with its verdict (e.g. ``"promote"``, ``"rollback"``) and evidence."""
    with committing(session):
        release = session.get(Release, release_id)
        if release is None:
            raise LookupError(f"no release with id {release_id}")
        if release.ended_at is not None:
            raise ValueError(f"release {release_id} already ended at {release.ended_at.isoformat()}")
        release.ended_at = to_naive_utc(ended_at)
        release.verdict = verdict
        if evidence is not None:
            release.evidence = to_jsonable(dict(evidence))
    return release


def get_release(*, session: Session, release_id: int) -> Release:
    """The release with this id; LookupError if there is none."""
    release = session.get(Release, release_id)
    if release is None:
        raise LookupError(f"no release with id {release_id}")
    return release


def list_releases(*, session: Session, model_id: int) -> list[Release]:
    """A model's releases, oldest first."""
    return list(session.scalars(sa.select(Release).where(Release.model_id == model_id).order_by(Release.id)))
