"""Reading alarms; they are written by :func:`driftpilot.memory.ingest.ingest_alarm`."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.memory.tables import Alarm, HookSignature


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


def claim_signature(*, session: Session, signature: str, now: datetime, forget_before: datetime) -> None:
    """Record that a signed hook was accepted with ``signature``, in the session's transaction
    (the caller commits it with what the hook stores, or rolls both back). Signatures received
    before ``forget_before`` are dropped: their timestamps are stale, refused anyway.

    Raises ``ValueError`` if the signature was accepted before: the request is a replay.
    """
    session.execute(sa.delete(HookSignature).where(HookSignature.received_at < forget_before))
    session.add(HookSignature(signature=signature, received_at=now))
    try:
        session.flush()
    except IntegrityError as exc:
        session.rollback()
        raise ValueError("this signature was used before: a replayed request") from exc
