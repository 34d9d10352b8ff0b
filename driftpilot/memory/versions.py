"""Model versions: numbering, stages, the champion."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import to_jsonable
from driftpilot.memory.db import committing
from driftpilot.memory.tables import VERSION_STAGES, Version

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _check_stage(stage: str) -> None:
    if stage not in VERSION_STAGES:
        raise ValueError(f"stage must be one of {list(VERSION_STAGES)}, got {stage!r}")


def _check_artifacts(artifacts: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    checked: dict[str, dict[str, str]] = {}
    for name, artifact in artifacts.items():
        if not isinstance(artifact, Mapping) or not isinstance(artifact.get("path"), str):
            raise TypeError(f"artifact {name!r} must be {{'path': str, 'sha256': hex}}, got {artifact!r}")
        digest = artifact.get("sha256")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ValueError(f"artifact {name!r}: sha256 must be 64 lowercase hex digits, got {digest!r}")
        checked[str(name)] = {str(k): str(v) for k, v in artifact.items()}
    return checked


def archive_champion(session: Session, model_id: int, keep_id: int | None) -> None:
    """Archive the model's champion (all but ``keep_id``), inside the caller's transaction."""
    stmt = sa.update(Version).where(Version.model_id == model_id, Version.stage == "champion").values(stage="archived")
    if keep_id is not None:
        stmt = stmt.where(Version.id != keep_id)
    session.execute(stmt, execution_options={"synchronize_session": "fetch"})


def add_version(
    *,
    session: Session,
    model_id: int,
    time: datetime,
    parent_id: int | None = None,
    artifacts: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    snapshot_id: int | None = None,
    decision_id: int | None = None,
    stage: str = "candidate",
) -> Version:
    """Store a new version, numbered one past the model's last (1 for the first).

    ``artifacts`` maps names to ``{"path": ..., "sha256": ...}``. Adding a champion archives
    the previous champion in the same transaction.
    """
    _check_stage(stage)
    checked = _check_artifacts(artifacts or {})
    with committing(session):
        last = session.scalar(sa.select(sa.func.max(Version.number)).where(Version.model_id == model_id))
        if stage == "champion":
            archive_champion(session, model_id, keep_id=None)
        version = Version(
            model_id=model_id,
            number=(last or 0) + 1,
            parent_id=parent_id,
            stage=stage,
            artifacts=checked,
            metrics=to_jsonable(dict(metrics or {})),
            snapshot_id=snapshot_id,
            decision_id=decision_id,
            time=time,
        )
        session.add(version)
    return version


def get_version(*, session: Session, model_id: int, number: int) -> Version:
    """Version ``number`` of a model; LookupError naming both if it does not exist."""
    version = session.scalars(sa.select(Version).where(Version.model_id == model_id, Version.number == number)).first()
    if version is None:
        raise LookupError(f"model {model_id} has no version {number}")
    return version


def get_version_by_id(*, session: Session, version_id: int) -> Version:
    """The version with this id; LookupError if there is none."""
    version = session.get(Version, version_id)
    if version is None:
        raise LookupError(f"no version with id {version_id}")
    return version


def list_versions(*, session: Session, model_id: int) -> list[Version]:
    """A model's versions, by number."""
    return list(session.scalars(sa.select(Version).where(Version.model_id == model_id).order_by(Version.number)))


def champion(*, session: Session, model_id: int) -> Version | None:
    """The version a model serves by default, or None before the first promotion."""
    stmt = (
        sa.select(Version)
        .where(Version.model_id == model_id, Version.stage == "champion")
        .order_by(Version.number.desc())
    )
    return session.scalars(stmt).first()


def student_of(*, session: Session, version: Version) -> Version | None:
    """The edge student distilled from ``version`` (``None`` when it went out without one)."""
    stmt = sa.select(Version).where(Version.parent_id == version.id, Version.stage == "student")
    return session.scalars(stmt.order_by(Version.number.desc())).first()


def set_stage(*, session: Session, version_id: int, stage: str) -> Version:
    """Move a version to ``stage``; a new champion archives the previous one, atomically."""
    _check_stage(stage)
    with committing(session):
        version = get_version_by_id(session=session, version_id=version_id)
        if stage == "champion":
            archive_champion(session, version.model_id, keep_id=version.id)
        version.stage = stage
    return version


def set_decision(*, session: Session, version_id: int, decision_id: int) -> Version:
    """Link a version to the decision that made it."""
    with committing(session):
        version = get_version_by_id(session=session, version_id=version_id)
        version.decision_id = decision_id
    return version


def training_seconds(*, session: Session, model_id: int, since: datetime, until: datetime) -> float:
    """Seconds of training spent on the model's versions registered in ``since <= time < until``
    (candidates kept for audit included: the compute was spent either way)."""
    stmt = sa.select(Version.metrics).where(Version.model_id == model_id, Version.time >= since, Version.time < until)
    # A handful of versions a day: summing in Python spares a JSON query per SQL dialect.
    total = 0.0
    metrics: dict[str, Any] | None
    for metrics in session.scalars(stmt):
        total += float((metrics or {}).get("train_seconds", 0.0))
    return total


def version_of_run(*, session: Session, model_id: int, run_id: str, time: datetime) -> Version | None:
    """The version run ``run_id`` registered at ``time`` (the run's logical time; its metrics
    name the run), or None."""
    stmt = sa.select(Version).where(Version.model_id == model_id, Version.time == time)
    # The versions of one instant are one or two: a Python look at the JSON spares a query per dialect.
    return next((v for v in session.scalars(stmt) if (v.metrics or {}).get("run_id") == str(run_id)), None)
