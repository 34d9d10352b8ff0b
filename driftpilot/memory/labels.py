"""Counting labels (label budgets); labels are written by :mod:`driftpilot.memory.ingest`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.tables import Label


def count_labels(
    *,
    session: Session,
    model_id: int,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many labels of a model (of one ``source``) became known with ``since <= time < until``."""
    stmt = sa.select(sa.func.count()).select_from(Label).where(Label.model_id == model_id)
    if source is not None:
        stmt = stmt.where(Label.source == source)
    if since is not None:
        stmt = stmt.where(Label.time >= since)
    if until is not None:
        stmt = stmt.where(Label.time < until)
    return int(session.scalar(stmt) or 0)
