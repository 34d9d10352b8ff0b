"""Label requests: events the curator asks a person to label, and why."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import chunks, committing
from driftpilot.memory.tables import LabelRequest
from driftpilot.memory.times import to_utc


def add_label_requests(
    *,
    session: Session,
    model_id: int,
    event_ids: Sequence[int],
    reasons: Sequence[str],
    time: datetime,
) -> int:
    """Open a request per event, skipping events that already have an open one.

    Returns how many requests were opened.
    """
    ids = [int(i) for i in event_ids]
    if len(ids) != len(reasons):
        raise ValueError(f"one reason per event: {len(ids)} events, {len(reasons)} reasons")
    with committing(session):
        already: set[int] = set()
        for part in chunks(sorted(set(ids))):
            stmt = sa.select(LabelRequest.event_id).where(
                LabelRequest.model_id == model_id,
                LabelRequest.status == "open",
                LabelRequest.event_id.in_(part),
            )
            already.update(session.scalars(stmt))
        rows = []
        for event_id, reason in zip(ids, reasons, strict=True):
            if event_id in already:
                continue
            already.add(event_id)
            rows.append(
                {
                    "model_id": model_id,
                    "event_id": event_id,
                    "reason": str(reason),
                    "status": "open",
                    "time": time,
                }
            )
        if rows:
            session.execute(sa.insert(LabelRequest), rows)
    return len(rows)


def open_label_requests(*, session: Session, model_id: int) -> list[LabelRequest]:
    """A model's open requests, oldest first."""
    stmt = (
        sa.select(LabelRequest)
        .where(LabelRequest.model_id == model_id, LabelRequest.status == "open")
        .order_by(LabelRequest.id)
    )
    return list(session.scalars(stmt))


def mark_answered(*, session: Session, event_ids: Sequence[int], answered_at: datetime) -> int:
    """Close the open requests of these events as answered; returns how many were closed."""
    ids = sorted({int(i) for i in event_ids})
    # The UPDATE's values are copied as they are into objects of the session it matches.
    when = to_utc(answered_at)
    closed = 0
    with committing(session):
        for part in chunks(ids):
            stmt = (
                sa.update(LabelRequest)
                .where(LabelRequest.event_id.in_(part), LabelRequest.status == "open")
                .values(status="answered", answered_at=when)
            )
            result = session.execute(stmt, execution_options={"synchronize_session": "fetch"})
            closed += int(result.rowcount)  # type: ignore[attr-defined]
    return closed


def count_label_requests(
    *,
    session: Session,
    model_id: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many requests a model opened with ``since <= time < until``."""
    stmt = sa.select(sa.func.count()).select_from(LabelRequest).where(LabelRequest.model_id == model_id)
    if since is not None:
        stmt = stmt.where(LabelRequest.time >= since)
    if until is not None:
        stmt = stmt.where(LabelRequest.time < until)
    return int(session.scalar(stmt) or 0)
