"""Reading events back as DataFrames: windows of time, chosen ids, with visible labels."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import chunks
from driftpilot.memory.managed import get_model_by_id, model_schema
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import LABEL_SOURCES, PSEUDO, CorpusExclusion, Event, Label, Quarantine

FRAME_COLUMNS = (
    "id",
    "key",
    "time",
    "entity",
    "group",
    "served_version",
    "prediction",
    "label",
    "label_source",
)
"""The leading columns of every event frame; one column per schema feature follows."""

# The order of trust: a person's label beats an oracle's, a system's, a pseudo-label.
_SOURCE_RANK = sa.case(
    {source: rank for rank, source in enumerate(LABEL_SOURCES)},
    value=Label.source,
    else_=len(LABEL_SOURCES),
)

# Times and features come back as the stored text where the database keeps text (SQLite):
# parsing a whole column at once in event_frame is many times faster than per value.
_EVENT_COLUMNS = (
    Event.id,
    Event.key,
    sa.type_coerce(Event.time, sa.String).label("time"),
    Event.entity,
    Event.group_key,
    Event.served_version,
    Event.prediction,
    sa.cast(Event.features, sa.Text).label("features"),
)


def window(
    *,
    session: Session,
    model_id: int,
    start: datetime | None,
    end: datetime | None,
    visible_at: datetime | None = None,
    labelled_only: bool = False,
    exclude_quarantined: bool = True,
    limit: int | None = None,
    with_features: bool = True,
    corpus_only: bool = False,
) -> pd.DataFrame:
    """The events of a model with ``start <= time < end``, oldest first, as a DataFrame.

    Columns are :data:`FRAME_COLUMNS` then one per feature (numbers float, categories str);
    ``time`` is aware UTC (``datetime64[us, UTC]``).
    ``label`` is the most trustworthy label (person > oracle > system; never a pseudo-label) known at
    ``visible_at`` (its ``time <= visible_at``; every label when ``visible_at`` is None), or
    None: this is what keeps labels from leaking before they exist.

    Parameters
    ----------
    labelled_only
        Keep only events with a visible label.
    exclude_quarantined
        Drop events inside a quarantine of the model (time in its [start, end], group in its
        groups, or any group when the quarantine names none).
    limit
        Keep only the ``limit`` most recent events (still returned oldest first).
    with_features
        False leaves the feature columns out: reading and parsing the features is most of
        the cost of a window, and judging served predictions against labels needs none.
    corpus_only
        Drop the events kept out of the training corpus (:mod:`driftpilot.memory.corpus`:
        deleted by an operator, or flagged by cleaning). Training reads these windows;
        monitoring does not, so that a stuck or missing reading is still seen.
    """
    schema = model_schema(get_model_by_id(session=session, model_id=model_id))
    conditions: list[sa.ColumnElement[bool]] = [Event.model_id == model_id]
    if start is not None:
        conditions.append(Event.time >= start)
    if end is not None:
        conditions.append(Event.time < end)
    if exclude_quarantined:
        conditions.extend(_outside_quarantines(session, model_id))
    if corpus_only:
        conditions.append(~sa.exists().where(CorpusExclusion.event_id == Event.id))
    label_join = _visible_label(visible_at)
    if limit is not None:
        newest = sa.select(Event.id).where(*conditions)
        if labelled_only:
            newest = newest.where(sa.exists().where(label_join))
        newest = newest.order_by(Event.time.desc(), Event.id.desc()).limit(limit)
        conditions = [Event.id.in_(newest)]
    stmt = (
        sa.select(*_columns(with_features), Label.value, Label.source)
        .join(Label, label_join, isouter=not labelled_only)
        .where(*conditions)
        .order_by(Event.time, Event.id, _SOURCE_RANK)
    )
    return event_frame(session.connection().execute(stmt).all(), schema, with_features=with_features)


def events_by_ids(
    *, session: Session, ids: Sequence[int], visible_at: datetime | None = None, with_features: bool = True
) -> pd.DataFrame:
    """The events with these ids (all of one model), oldest first, in the :func:`window` form
    (``with_features`` as there).

    Raises
    ------
    LookupError
        If some ids are not stored.
    ValueError
        If the ids belong to more than one model.
    """
    wanted = sorted({int(i) for i in ids})
    rows: list[Any] = []
    model_ids: set[int] = set()
    for part in chunks(wanted):
        stmt = (
            sa.select(*_columns(with_features), Label.value, Label.source, Event.model_id)
            .join(Label, _visible_label(visible_at), isouter=True)
            .where(Event.id.in_(part))
            .order_by(Event.time, Event.id, _SOURCE_RANK)
        )
        for row in session.connection().execute(stmt):
            rows.append(tuple(row)[:-1])
            model_ids.add(int(row.model_id))
    missing = sorted(set(wanted) - {row[0] for row in rows})
    if missing:
        raise LookupError(f"no events with ids {missing[:10]}{' …' if len(missing) > 10 else ''}")
    if not wanted:
        empty = {name: pd.Series(dtype=object) for name in FRAME_COLUMNS}
        return pd.DataFrame({**empty, "time": pd.Series(dtype="datetime64[us, UTC]")})
    if len(model_ids) > 1:
        raise ValueError(f"events_by_ids needs events of one model, got models {sorted(model_ids)}")
    rows.sort(key=lambda row: (row[2], row[0]))  # stable: keeps the label order per event
    schema = model_schema(get_model_by_id(session=session, model_id=model_ids.pop()))
    return event_frame(rows, schema, with_features=with_features)


def _columns(with_features: bool) -> tuple[Any, ...]:
    """The event columns read; without features, an empty object in their place (reading and
    parsing them is most of a read's cost)."""
    return _EVENT_COLUMNS if with_features else (*_EVENT_COLUMNS[:-1], sa.literal("{}").label("features"))


def probabilities(*, session: Session, ids: Sequence[int], classes: Sequence[str]) -> np.ndarray:
    """The served class probabilities of these events, one row per id (in order), one column per class.

    Rows of events served without probabilities are NaN; a class the stored dict lacks is 0.
    """
    wanted = [int(i) for i in ids]
    stored: dict[int, Any] = {}
    for part in chunks(sorted(set(wanted))):
        for event_id, value in session.execute(sa.select(Event.id, Event.probabilities).where(Event.id.in_(part))):
            stored[int(event_id)] = json.loads(value) if isinstance(value, str) else value
    matrix = np.full((len(wanted), len(classes)), np.nan)
    for row, event_id in enumerate(wanted):
        served = stored.get(event_id)
        if served:
            matrix[row] = [float(served.get(c, 0.0)) for c in classes]
    return matrix


def count_events(
    *,
    session: Session,
    model_id: int,
    start: datetime | None = None,
    end: datetime | None = None,
) -> int:
    """How many events a model has with ``start <= time < end``."""
    stmt = sa.select(sa.func.count()).select_from(Event).where(Event.model_id == model_id)
    if start is not None:
        stmt = stmt.where(Event.time >= start)
    if end is not None:
        stmt = stmt.where(Event.time < end)
    return int(session.scalar(stmt) or 0)


def arrivals(*, session: Session, model_id: int, after_event: int, after_label: int) -> tuple[int, int, int, int]:
    """What arrived since the marks: new events, new labels, and the marks to pass next time
    (the largest event and label ids). They pace checks only: a row of a transaction still open
    under a smaller id than the mark is not counted, and is read by the check all the same."""
    events = sa.select(sa.func.count(), sa.func.max(Event.id)).where(Event.model_id == model_id, Event.id > after_event)
    labels = sa.select(sa.func.count(), sa.func.max(Label.id)).where(
        Label.model_id == model_id, Label.id > after_label, Label.source != PSEUDO
    )
    n_events, last_event = session.execute(events).one()
    n_labels, last_label = session.execute(labels).one()
    return int(n_events or 0), int(n_labels or 0), int(last_event or after_event), int(last_label or after_label)


def event_span(*, session: Session, model_id: int, start: datetime, end: datetime) -> tuple[int, datetime | None]:
    """How many events a model has with ``start <= time < end``, and the time of the first (None without any)."""
    conditions = (Event.model_id == model_id, Event.time >= start, Event.time < end)
    count, first = session.execute(sa.select(sa.func.count(), sa.func.min(Event.time)).where(*conditions)).one()
    return int(count or 0), first  # min() keeps the column's type: aware UTC


#: Newest labels whose delay the median of :func:`label_flow` is taken over.
DELAY_SAMPLE = 1000


def label_flow(
    *, session: Session, model_id: int, start: datetime, end: datetime, with_delay: bool = True
) -> tuple[int, float | None]:
    """Labels that became known with ``start <= time < end`` (each labelled event once, whatever
    its sources), and the median hours from their events to them (None without any, or when not
    ``with_delay``: the count alone is one query)."""
    known = sa.and_(Label.model_id == model_id, Label.time >= start, Label.time < end, Label.source != PSEUDO)
    count = session.scalar(sa.select(sa.func.count(sa.distinct(Label.event_id))).where(known))
    if not with_delay:
        return int(count or 0), None
    pairs = session.execute(
        sa.select(Label.time, Event.time)
        .join(Event, Event.id == Label.event_id)
        .where(known)
        .order_by(Label.time.desc())
        .limit(DELAY_SAMPLE)
    ).all()
    if not pairs:
        return int(count or 0), None
    delays = [(labelled - happened).total_seconds() / 3600 for labelled, happened in pairs]
    return int(count or 0), float(np.median(delays))


def _visible_label(visible_at: datetime | None) -> sa.ColumnElement[bool]:
    # A pseudo-label is the Curator's guess from a model's own confident answer: training may
    # learn from it (its snapshot holds it), nothing may judge a model by it.
    truth = sa.and_(Label.event_id == Event.id, Label.source != PSEUDO)
    if visible_at is None:
        return truth
    return sa.and_(truth, Label.time <= visible_at)


def _outside_quarantines(session: Session, model_id: int) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    for quarantine in session.scalars(sa.select(Quarantine).where(Quarantine.model_id == model_id)):
        inside: list[sa.ColumnElement[bool]] = [Event.time >= quarantine.start]
        if quarantine.end is not None:
            inside.append(Event.time <= quarantine.end)
        if quarantine.groups is not None:
            # IS NOT NULL first: NULL IN (...) is NULL, and NOT NULL would drop the row.
            inside.extend([Event.group_key.is_not(None), Event.group_key.in_(quarantine.groups)])
        conditions.append(sa.not_(sa.and_(*inside)))
    return conditions


def event_frame(rows: Sequence[Sequence[Any]], schema: ModelSchema, *, with_features: bool = True) -> pd.DataFrame:
    """Build the event DataFrame from rows ``(id, key, time, entity, group, served_version,
    prediction, features, label, label_source)`` ordered by event, best label first."""
    names = (
        "id",
        "key",
        "time",
        "entity",
        "group",
        "served_version",
        "prediction",
        "features",
        "label",
        "label_source",
    )
    columns: dict[str, Sequence[Any]] = (
        dict(zip(names, zip(*rows, strict=True), strict=True)) if rows else {n: () for n in names}
    )
    ids = np.asarray(columns["id"], dtype=np.int64)
    # An event joined to several visible labels comes back once per label, best first.
    first = np.ones(len(ids), dtype=bool)
    first[1:] = ids[1:] != ids[:-1]
    if not first.all():
        columns = {name: [v for v, keep in zip(values, first, strict=True) if keep] for name, values in columns.items()}
        ids = ids[first]
    data: dict[str, Any] = {
        "id": ids,
        "key": _objects(columns["key"]),
        # Stored naive UTC, returned aware: the form of every time memory returns.
        "time": pd.to_datetime(pd.Index(columns["time"], dtype=object), format="ISO8601", utc=True).as_unit("us"),
        "entity": _objects(columns["entity"]),
        "group": _objects(columns["group"]),
        "served_version": pd.array(columns["served_version"], dtype="Int64"),
        "prediction": _objects(columns["prediction"]),
        "label": _objects(columns["label"]),
        "label_source": _objects(columns["label_source"]),
    }
    if not with_features:
        return pd.DataFrame(data)
    # One parse of a JSON array of all rows: less overhead than json.loads per row.
    parsed = json.loads("[" + ",".join(columns["features"]) + "]")
    for spec in schema.model_features:
        values = [row.get(spec.name) for row in parsed]
        if spec.kind == "number":
            data[spec.name] = np.asarray(values, dtype=np.float64)
        else:
            data[spec.name] = _objects(values)
    return pd.DataFrame(data)


def _objects(values: Sequence[Any]) -> pd.Series:
    # object dtype keeps None as None; pandas 3 would otherwise infer its str dtype (NaN).
    return pd.Series(np.asarray(values, dtype=object), dtype=object)


Answer = tuple[int | None, str | None, dict[str, float]]


def stored_answers(*, session: Session, model_id: int, keys: Sequence[str]) -> dict[str, Answer]:
    """What was answered for events already stored under ``keys``: served version, prediction
    and probabilities, by key (keys not stored are absent)."""
    found: dict[str, Answer] = {}
    for part in chunks(list(keys)):
        stmt = sa.select(Event.key, Event.served_version, Event.prediction, Event.probabilities).where(
            Event.model_id == model_id, Event.key.in_(part)
        )
        for key, version, prediction, probabilities in session.execute(stmt):
            found[key] = (version, prediction, probabilities or {})
    return found


def last_group(*, session: Session, model_id: int, entity: str, at: datetime) -> str | None:
    """The group of ``entity``'s last event at or before ``at`` (None if it has none)."""
    stmt = (
        sa.select(Event.group_key)
        .where(Event.model_id == model_id, Event.entity == entity, Event.time <= at)
        .order_by(Event.time.desc())
        .limit(1)
    )
    return session.scalar(stmt)


def texts(*, session: Session, ids: Sequence[int]) -> dict[int, str | None]:
    """The raw texts of these events (a text model's; None where none was stored)."""
    found: dict[int, str | None] = {}
    for part in chunks(sorted({int(i) for i in ids})):
        found.update((int(i), t) for i, t in session.execute(sa.select(Event.id, Event.text).where(Event.id.in_(part))))
    return found
