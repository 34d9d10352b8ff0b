"""Reading alarms; they are written by :func:`driftpilot.memory.ingest.ingest_alarm`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.tables import Alarm


def active_alarms(*, session: Session, at: datetime) -> list[Alarm]:
    """The alarms firing at ``at``: ``starts_at <= at`` and not ended by then."""
    stmt = (
        sa.select(Alarm)
        .where(Alarm.starts_at <= at, sa.or_(Alarm.ends_at.is_(None), Alarm.ends_at > at))
        .order_by(Alarm.starts_at, Alarm.id)
    )
    return list(session.scalars(stmt))


def alarms_between(*, session: Session, start: datetime, end: datetime) -> list[Alarm]:
    """The alarms active at some moment of ``[start, end)``."""
    stmt = (
        sa.select(Alarm)
        .where(
            Alarm.starts_at < end,
            sa.or_(Alarm.ends_at.is_(None), Alarm.ends_at > start),
        )
        .order_by(Alarm.starts_at, Alarm.id)
    )
    return list(session.scalars(stmt))
