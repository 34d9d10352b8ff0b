"""Quarantines: windows of events kept out of monitoring and training (an outage, bad data)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.tables import Quarantine
from driftpilot.memory.times import optional_utc, to_utc


def add_quarantine(
    *,
    session: Session,
    model_id: int,
    start: datetime,
    end: datetime | None,
    groups: Sequence[str] | None,
    reason: str,
    decision_id: int | None = None,
) -> Quarantine:
    """Quarantine a model's events with time in ``[start, end]`` (``end`` None: open-ended)
    and group in ``groups`` (None: every group)."""
    begin = to_utc(start, what="start")
    finish = optional_utc(end, what="end")
    if finish is not None and finish < begin:
        raise ValueError(f"quarantine ends ({finish.isoformat()}) before it starts ({begin.isoformat()})")
    if groups is not None:
        if isinstance(groups, str) or not all(isinstance(g, str) and g for g in groups):
            raise ValueError(f"groups must be a list of non-empty strings or None, got {groups!r}")
        groups = list(groups)
    with committing(session):
        quarantine = Quarantine(
            model_id=model_id,
            start=begin,
            end=finish,
            groups=groups,
            reason=reason,
            decision_id=decision_id,
        )
        session.add(quarantine)
    return quarantine


def list_quarantines(*, session: Session, model_id: int) -> list[Quarantine]:
    """A model's quarantines, oldest first."""
    return list(session.scalars(sa.select(Quarantine).where(Quarantine.model_id == model_id).order_by(Quarantine.id)))
