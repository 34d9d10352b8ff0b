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

__all__ = ["release_leases", "take_lease"]


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
            session.execute(sa.insert(table).values(model_id=model_id, holder=holder, expires_at=now + ttl))
    except IntegrityError:
        return False  # held by another, not expired (or taken in between)
    return True


def release_leases(*, session: Session, holder: str) -> int:
    """Give up every lease ``holder`` has (a clean stop), so others need not wait for expiry."""
    table = table_of(LoopLease)
    with committing(session):
        result: Any = session.execute(sa.delete(table).where(table.c.holder == holder))
    return int(result.rowcount)
