"""Leases on models: which loop process runs a model's graph now.

A lease is taken when free or expired and renewed while held, each by one conditional
``UPDATE`` (or the first ``INSERT``), so that of two processes asking at once exactly one gets
it, on SQLite and PostgreSQL alike. A process that dies keeps its leases until they expire;
another then takes them over and resumes the model's runs from the checkpointer.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.tables import LoopLease, table_of

__all__ = ["alarm_mark", "move_alarm_mark", "release_leases", "take_lease"]


def take_lease(*, session: Session, model_id: int, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take or renew the model's lease for ``holder`` until ``now + ttl``; False while another
    holder's lease has not expired."""
    table = table_of(LoopLease)
    with committing(session):
        result: Any = session.execute(
            sa.update(table)
            .where(
                table.c.model_id == model_id,
                sa.or_(table.c.holder == holder, table.c.expires_at <= now),
            )
            .values(holder=holder, expires_at=now + ttl)
        )
    if result.rowcount:
        return True
    try:
        with committing(session):
            session.execute(
                sa.insert(table).values(model_id=model_id, holder=holder, expires_at=now + ttl, alarm_mark=0)
            )
    except IntegrityError:
        return False  # held by another, not expired (or taken in between)
    return True


def release_leases(*, session: Session, holder: str) -> int:
    """Give up every lease ``holder`` has (a clean stop), so others need not wait for expiry;
    the rows stay, with their alarm marks."""
    table = table_of(LoopLease)
    with committing(session):
        result: Any = session.execute(
            sa.update(table).where(table.c.holder == holder).values(holder="", expires_at=datetime(1970, 1, 1))
        )
    return int(result.rowcount)


def alarm_mark(*, session: Session, model_id: int) -> int:
    """The last alarm id whose run the model's loop started (0 before any)."""
    return int(session.scalar(sa.select(LoopLease.alarm_mark).where(LoopLease.model_id == model_id)) or 0)


def move_alarm_mark(*, session: Session, model_id: int, holder: str, mark: int) -> bool:
    """Record that ``holder`` starts the runs of alarms up to ``mark``; False (nothing written)
    if it no longer holds the model. Written before the runs start: a run a crash interrupts is
    resumed from the checkpointer, never started twice."""
    table = table_of(LoopLease)
    with committing(session):
        result: Any = session.execute(
            sa.update(table)
            .where(table.c.model_id == model_id, table.c.holder == holder, table.c.alarm_mark < mark)
            .values(alarm_mark=mark)
        )
    return bool(result.rowcount)
