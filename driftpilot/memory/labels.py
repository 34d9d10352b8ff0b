"""Counting labels (label budgets), and the Curator's pseudo-labels; the labels clients send are
written by :mod:`driftpilot.memory.ingest`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing, insert_columns_ignoring_duplicates
from driftpilot.memory.tables import PSEUDO, Label, table_of


def count_labels(
    *,
    session: Session,
    model_id: int,
    source: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many labels of a model (of one ``source``; of every source but pseudo-labels when
    None) became known with ``since <= time < until``."""
    stmt = sa.select(sa.func.count()).select_from(Label).where(Label.model_id == model_id)
    stmt = stmt.where(Label.source == source) if source is not None else stmt.where(Label.source != PSEUDO)
    if since is not None:
        stmt = stmt.where(Label.time >= since)
    if until is not None:
        stmt = stmt.where(Label.time < until)
    return int(session.scalar(stmt) or 0)


def add_pseudo_labels(
    *,
    session: Session,
    model_id: int,
    event_ids: Sequence[int],
    values: Sequence[str],
    confidences: Sequence[float],
    time: datetime,
) -> int:
    """Store the Curator's pseudo-labels (source ``pseudo``, the model's confidence kept): what a
    snapshot learnt from, for audit, never read as truth (:func:`~driftpilot.memory.events.window`
    ignores them). An event's pseudo-label stored before is kept. Returns how many were new."""
    ids = [int(i) for i in event_ids]
    if not len(ids) == len(values) == len(confidences):
        raise ValueError(f"one value and confidence per event: {len(ids)}, {len(values)}, {len(confidences)}")
    with committing(session):
        return insert_columns_ignoring_duplicates(
            session,
            table_of(Label),
            {"event_id": ids, "value": [str(v) for v in values], "confidence": [float(c) for c in confidences]},
            unique=("event_id", "source"),
            constants={"model_id": model_id, "source": PSEUDO, "time": time},
        )
