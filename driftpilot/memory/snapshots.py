"""Snapshots: the immutable (event, label) sets versions are trained on."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import to_jsonable
from driftpilot.memory.db import chunks, committing
from driftpilot.memory.events import _EVENT_COLUMNS, event_frame
from driftpilot.memory.managed import get_model_by_id, model_schema
from driftpilot.memory.tables import Event, Snapshot, SnapshotItem, table_of


def content_hash(event_ids: Sequence[int], labels: Sequence[str]) -> str:
    """SHA-256 over the (event id, label) pairs sorted by event id: equal sets, equal hash.

    Examples
    --------
    >>> content_hash([2, 1], ["b", "a"]) == content_hash([1, 2], ["a", "b"])
    True
    """
    digest = hashlib.sha256()
    for event_id, label in sorted(zip((int(i) for i in event_ids), labels, strict=True)):
        digest.update(f"{event_id}\t{label}\n".encode())
    return digest.hexdigest()


def create_snapshot(
    *,
    session: Session,
    model_id: int,
    event_ids: Sequence[int],
    labels: Sequence[str],
    time: datetime,
    stats: dict[str, Any],
) -> Snapshot:
    """Store the (event, label) pairs a version will be trained on.

    Raises
    ------
    ValueError
        If the sequences differ in length, an event repeats, a label is not a class of the
        model, or an event is not one of the model's.
    """
    ids = [int(i) for i in event_ids]
    values = [str(v) for v in labels]
    if len(ids) != len(values):
        raise ValueError(f"a snapshot needs one label per event: {len(ids)} events, {len(values)} labels")
    if len(set(ids)) != len(ids):
        raise ValueError("a snapshot lists each event once; some event ids repeat")
    classes = model_schema(get_model_by_id(session=session, model_id=model_id)).classes
    unknown = sorted(set(values) - set(classes))
    if unknown:
        raise ValueError(f"snapshot labels {unknown} are not classes of model {model_id} ({classes})")
    found = 0
    for part in chunks(ids):
        # Look the ids up by primary key and compare the model here: with the model in the
        # WHERE clause SQLite walks the model's whole (model_id, time) index instead.
        owners = session.execute(sa.select(Event.model_id).where(Event.id.in_(part))).scalars()
        found += sum(1 for owner in owners if owner == model_id)
    if found != len(ids):
        raise ValueError(f"{len(ids) - found} of the snapshot's events are not events of model {model_id}")
    with committing(session):
        snapshot = Snapshot(
            model_id=model_id,
            time=time,
            content_hash=content_hash(ids, values),
            n_rows=len(ids),
            stats=to_jsonable(stats),
        )
        session.add(snapshot)
        session.flush()
        items = [{"snapshot_id": snapshot.id, "event_id": i, "label": v} for i, v in zip(ids, values, strict=True)]
        if items:
            # Core executemany: the ORM bulk path is several times slower for 10^4 rows.
            session.connection().execute(sa.insert(table_of(SnapshotItem)), items)
    return snapshot


def get_snapshot(*, session: Session, snapshot_id: int) -> Snapshot:
    """The snapshot with this id; LookupError if there is none."""
    snapshot = session.get(Snapshot, snapshot_id)
    if snapshot is None:
        raise LookupError(f"no snapshot with id {snapshot_id}")
    return snapshot


def snapshot_frame(*, session: Session, snapshot_id: int) -> pd.DataFrame:
    """A snapshot's events in the :func:`~driftpilot.memory.events.window` form, labelled with
    the snapshot's labels (``label_source`` ``"snapshot"``), oldest first."""
    snapshot = get_snapshot(session=session, snapshot_id=snapshot_id)
    schema = model_schema(get_model_by_id(session=session, model_id=snapshot.model_id))
    stmt = (
        sa.select(*_EVENT_COLUMNS, SnapshotItem.label, sa.literal("snapshot"))
        .join(SnapshotItem, SnapshotItem.event_id == Event.id)
        .where(SnapshotItem.snapshot_id == snapshot_id)
        .order_by(Event.time, Event.id)
    )
    return event_frame(session.connection().execute(stmt).all(), schema)
