"""The golden set: events operators pin so that every candidate is scored on them.

Pinning is idempotent (an event pinned twice stays pinned once, also when two requests race) and
all-or-nothing: one unknown event, or one of another model, refuses the whole request.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import chunks, committing, insert_columns_ignoring_duplicates
from driftpilot.memory.events import events_by_ids
from driftpilot.memory.tables import Event, GoldenEvent, table_of


def pin(*, session: Session, model_id: int, event_ids: Sequence[int], time: datetime, note: str = "") -> int:
    """Pin ``event_ids`` to the model's golden set; return how many were not pinned before.

    Raises
    ------
    ValueError
        If ``event_ids`` is empty, or some ids are not events of this model (they are named);
        nothing is pinned then.
    """
    wanted = _ids(event_ids)
    if not wanted:
        raise ValueError("no event ids to pin: name at least one event of the model")
    with committing(session):
        found: set[int] = set()
        for part in chunks(wanted):
            found.update(session.scalars(sa.select(Event.id).where(Event.model_id == model_id, Event.id.in_(part))))
        unknown = [i for i in wanted if i not in found]
        if unknown:
            more = " …" if len(unknown) > 10 else ""
            raise ValueError(
                f"events {unknown[:10]}{more} are not events of model {model_id}: nothing was pinned; "
                "check the ids (driftpilot audit, the console) and try again"
            )
        added = insert_columns_ignoring_duplicates(
            session,
            table_of(GoldenEvent),
            {"event_id": wanted},
            unique=("model_id", "event_id"),
            constants={"model_id": model_id, "pinned_at": time, "note": note},
        )
    return added


def unpin(*, session: Session, model_id: int, event_ids: Sequence[int]) -> int:
    """Take ``event_ids`` out of the model's golden set; return how many of them were pinned.

    Ids that are not pinned are no error: unpinning twice is unpinning once.
    """
    wanted = _ids(event_ids)
    removed = 0
    with committing(session):
        for part in chunks(wanted):
            result = session.connection().execute(
                sa.delete(GoldenEvent).where(GoldenEvent.model_id == model_id, GoldenEvent.event_id.in_(part))
            )
            removed += result.rowcount
    return removed


def golden_ids(*, session: Session, model_id: int) -> list[int]:
    """The model's pinned event ids, in increasing order."""
    return list(
        session.scalars(
            sa.select(GoldenEvent.event_id).where(GoldenEvent.model_id == model_id).order_by(GoldenEvent.event_id)
        )
    )


def golden_frame(*, session: Session, model_id: int, visible_at: datetime | None = None) -> pd.DataFrame:
    """The pinned events with their features and labels as visible at ``visible_at`` (None: every
    label), in the form of :func:`~driftpilot.memory.events.events_by_ids`.

    Events without a label yet are left out: nothing can be scored on them.
    """
    frame = events_by_ids(session=session, ids=golden_ids(session=session, model_id=model_id), visible_at=visible_at)
    return frame[frame["label"].notna()].reset_index(drop=True)


def _ids(event_ids: Sequence[int]) -> list[int]:
    return sorted({int(i) for i in event_ids})
