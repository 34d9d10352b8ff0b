"""The training corpus of a model, and the people who keep it.

A model's corpus is its labelled events — each with its most trustworthy label (person > oracle
> system > pseudo) — less those kept out of it (:class:`~driftpilot.memory.tables.CorpusExclusion`:
deleted by an operator, or flagged by the Curator's cleaning). Operators list and search it, read
one item with its history, relabel, delete and restore items, add examples, import and export it
(CSV and JSON lines, the same form both ways), take immutable snapshots of it and diff them; and
they answer the label queue (the requests the Curator opened). Each change is attributed to who
made it and logged as a decision (agent ``operator``, action ``corpus_*`` or ``label``) in the same
transaction as the change: all of it is stored, or none (:func:`~driftpilot.memory.db.one_transaction`).

Every change is idempotent: relabelling to the label an item has, deleting a deleted item, adding
an example whose key is stored with the same content, answering a request again with the same
label change nothing and log nothing. Bad input (an unknown class, an unknown event or request,
a bad row of an import) raises :class:`CorpusError` naming what was wrong, before anything is
written.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import chunks, committing, insert_columns_ignoring_duplicates, one_transaction
from driftpilot.memory.decisions import record_decision
from driftpilot.memory.ingest import IngestError, check_events, ingest_events
from driftpilot.memory.label_requests import add_label_requests
from driftpilot.memory.managed import get_model, model_schema
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.snapshots import content_hash, create_snapshot, get_snapshot
from driftpilot.memory.tables import (
    EXCLUSION_KINDS,
    LABEL_SOURCES,
    CorpusExclusion,
    Decision,
    Event,
    Label,
    LabelRequest,
    ManagedModel,
    Snapshot,
    SnapshotItem,
    table_of,
)
from driftpilot.memory.times import optional_utc, to_utc, utcnow

__all__ = [
    "FORMATS",
    "CorpusChange",
    "CorpusError",
    "add_examples",
    "answer_request",
    "corpus_item",
    "corpus_rows",
    "delete_items",
    "diff_snapshots",
    "exclude",
    "excluded_ids",
    "export_corpus",
    "label_queue",
    "list_snapshots",
    "parse_corpus_file",
    "relabel",
    "restore_items",
    "skip_request",
    "snapshot_corpus",
    "snapshot_model",
]

#: The file forms of a corpus, for import and export.
FORMATS = ("csv", "jsonl")
#: The fields of a corpus row besides a tabular model's features.
ROW_FIELDS = ("key", "label", "time", "entity", "group", "text")


class CorpusError(ValueError):
    """A corpus change refused for bad input; the message names the row or item at fault."""


class CorpusConflict(CorpusError):
    """A change that contradicts one already made (a request answered otherwise before)."""


@dataclass(frozen=True)
class CorpusChange:
    """What a change did: how many items it changed, the decision that logs it (None when it
    changed nothing), and a sentence saying so."""

    changed: int
    decision_id: int | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"changed": self.changed, "decision": self.decision_id, "message": self.message}


# --------------------------------------------------------------------------- reading


def _best_labels(session: Session, model_id: int, ids: Sequence[int] | None = None) -> dict[int, tuple[str, str]]:
    """Each labelled event's most trustworthy label, as ``{event id: (value, source)}``."""
    rank = {source: i for i, source in enumerate(LABEL_SOURCES)}
    stmt = sa.select(Label.event_id, Label.value, Label.source).where(Label.model_id == model_id)
    rows: list[Any] = []
    if ids is None:
        rows = list(session.execute(stmt))
    else:
        for part in chunks(sorted(set(ids))):
            rows.extend(session.execute(stmt.where(Label.event_id.in_(part))))
    best: dict[int, tuple[str, str]] = {}
    for event_id, value, source in rows:
        held = best.get(event_id)
        if held is None or rank.get(source, len(rank)) < rank.get(held[1], len(rank)):
            best[int(event_id)] = (str(value), str(source))
    return best


def excluded_ids(*, session: Session, model_id: int) -> set[int]:
    """The ids of the model's events kept out of its corpus."""
    return set(session.scalars(sa.select(CorpusExclusion.event_id).where(CorpusExclusion.model_id == model_id)))


def _exclusions(session: Session, model_id: int, ids: Sequence[int]) -> dict[int, CorpusExclusion]:
    found: dict[int, CorpusExclusion] = {}
    for part in chunks(sorted(set(ids))):
        stmt = sa.select(CorpusExclusion).where(
            CorpusExclusion.model_id == model_id, CorpusExclusion.event_id.in_(part)
        )
        found.update((row.event_id, row) for row in session.scalars(stmt))
    return found


def _exclusion_dict(row: CorpusExclusion | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {"kind": row.kind, "reason": row.reason, "by": row.by, "time": row.time.isoformat()}


def corpus_rows(
    *,
    session: Session,
    model_id: int,
    label: str | None = None,
    source: str | None = None,
    search: str | None = None,
    include_excluded: bool = False,
    after_id: int = 0,
    limit: int | None = 50,
) -> list[dict[str, Any]]:
    """The corpus's items, by event id from ``after_id`` (a page of ``limit``; None: all).

    Filters: the item's ``label`` (its best label), the label's ``source``, and ``search``, a
    case-insensitive piece of the text (a text model's), the event key or the entity.
    ``include_excluded`` lists the items kept out of the corpus too, each with why.
    """
    if source is not None and source not in LABEL_SOURCES:
        raise CorpusError(f"source must be one of {list(LABEL_SOURCES)}, got {source!r}")
    best = _best_labels(session, model_id)
    out = set() if include_excluded else excluded_ids(session=session, model_id=model_id)
    ids = sorted(
        i
        for i, (value, src) in best.items()
        if i > after_id and i not in out and (label is None or value == label) and (source is None or src == source)
    )
    if search:
        pattern = f"%{search.lower()}%"
        matched: set[int] = set()
        for part in chunks(ids):
            stmt = sa.select(Event.id).where(
                Event.id.in_(part),
                sa.or_(
                    sa.func.lower(Event.text).like(pattern),
                    sa.func.lower(Event.key).like(pattern),
                    sa.func.lower(Event.entity).like(pattern),
                ),
            )
            matched.update(session.scalars(stmt))
        ids = [i for i in ids if i in matched]
    if limit is not None:
        ids = ids[:limit]
    return _rows(session, model_id, ids, best)


def _rows(
    session: Session, model_id: int, ids: Sequence[int], best: Mapping[int, tuple[str, str]]
) -> list[dict[str, Any]]:
    events: dict[int, Any] = {}
    for part in chunks(list(ids)):
        stmt = sa.select(Event.id, Event.key, Event.time, Event.entity, Event.group_key, Event.text).where(
            Event.id.in_(part)
        )
        events.update((row.id, row) for row in session.execute(stmt))
    exclusions = _exclusions(session, model_id, ids)
    return [
        {
            "event_id": i,
            "key": events[i].key,
            "time": to_utc(events[i].time).isoformat(),
            "entity": events[i].entity,
            "group": events[i].group_key,
            "text": events[i].text,
            "label": best[i][0],
            "source": best[i][1],
            "excluded": _exclusion_dict(exclusions.get(i)),
        }
        for i in ids
        if i in events
    ]


def _event_of(session: Session, model_id: int, event_id: int) -> Event:
    row = session.get(Event, int(event_id))
    if row is None or row.model_id != model_id:
        raise LookupError(f"model {model_id} has no event {event_id}")
    return row


def corpus_item(*, session: Session, model_id: int, event_id: int) -> dict[str, Any]:
    """One item as a person reviews it: the event (features, text, what was served), every label
    it has (with source, confidence and when it became known), why it is out of the corpus if it
    is, the label requests made for it, and the snapshots that hold it."""
    row = _event_of(session, model_id, event_id)
    labels = session.scalars(sa.select(Label).where(Label.event_id == row.id).order_by(Label.time, Label.id))
    requests = session.scalars(sa.select(LabelRequest).where(LabelRequest.event_id == row.id).order_by(LabelRequest.id))
    snapshot_ids = session.scalars(
        sa.select(SnapshotItem.snapshot_id).where(SnapshotItem.event_id == row.id).order_by(SnapshotItem.snapshot_id)
    )
    best = _best_labels(session, model_id, [row.id]).get(row.id)
    return {
        "event_id": row.id,
        "key": row.key,
        "time": to_utc(row.time).isoformat(),
        "entity": row.entity,
        "group": row.group_key,
        "text": row.text,
        "features": row.features if row.text is None else None,
        "served_version": row.served_version,
        "prediction": row.prediction,
        "label": best[0] if best else None,
        "source": best[1] if best else None,
        "labels": [
            {"value": lb.value, "source": lb.source, "confidence": lb.confidence, "time": lb.time.isoformat()}
            for lb in labels
        ],
        "excluded": _exclusion_dict(_exclusions(session, model_id, [row.id]).get(row.id)),
        "requests": [
            {"id": r.id, "status": r.status, "reason": r.reason, "time": r.time.isoformat(), "by": r.answered_by}
            for r in requests
        ],
        "snapshots": list(snapshot_ids),
    }


# --------------------------------------------------------------------------- changes


def _log(
    session: Session,
    model: ManagedModel,
    *,
    action: str,
    by: str,
    time: datetime,
    evidence: Mapping[str, Any],
    rationale: str,
    outcome: str = "done",
) -> int:
    decision = record_decision(
        session=session,
        model_id=model.id,
        run_id=f"{model.name}/corpus/{uuid.uuid4().hex[:12]}",
        agent="operator",
        time=time,
        trigger={"by": by},
        evidence=dict(evidence),
        diagnosis=None,
        policy_verdicts=None,
        action=action,
        outcome=outcome,
        rationale=rationale,
    )
    return decision.id


def _who(by: str) -> str:
    if not isinstance(by, str) or not by.strip():
        raise CorpusError("every change names who made it: 'by' must be a non-empty name")
    return by.strip()


def _class(schema: ModelSchema, value: Any, model: str, where: str = "") -> str:
    if value not in schema.classes:
        raise CorpusError(f"{where}label {value!r} is not a class of model {model!r}; its classes are {schema.classes}")
    return str(value)


def _set_person_label(session: Session, model_id: int, event_id: int, value: str, time: datetime) -> bool:
    """Give the event a person's label ``value`` (replacing an earlier person's label); False if
    it had that one already."""
    held = session.scalars(sa.select(Label).where(Label.event_id == event_id, Label.source == "person")).first()
    if held is not None and held.value == value:
        return False
    with committing(session):
        if held is None:
            session.add(
                Label(event_id=event_id, model_id=model_id, value=value, source="person", confidence=1.0, time=time)
            )
        else:
            held.value, held.confidence, held.time = value, 1.0, time
    return True


def relabel(
    *, session: Session, model: str, event_id: int, value: str, by: str, time: datetime | None = None
) -> CorpusChange:
    """Label an item ``value`` as a person: the label every later training reads (a person's
    beats every other source). Relabelling to the label a person gave already changes nothing."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        value = _class(model_schema(row), value, model)
        event = _event_of(session, row.id, event_id)
        before = _best_labels(session, row.id, [event.id]).get(event.id)
        if not _set_person_label(session, row.id, event.id, value, now):
            return CorpusChange(0, None, f"event {event.id} already has the label {value!r} from a person")
        said = f"{before[0]!r} ({before[1]})" if before else "no label"
        decision = _log(
            session,
            row,
            action="corpus_relabel",
            by=who,
            time=now,
            evidence={"event": event.id, "key": event.key, "from": list(before) if before else None, "to": value},
            rationale=f"{who} relabelled event {event.id} ({event.key}) from {said} to {value!r}.",
        )
    return CorpusChange(1, decision, f"event {event.id} relabelled {value!r}")


def exclude(
    *,
    session: Session,
    model_id: int,
    event_ids: Sequence[int],
    kind: str,
    reasons: Sequence[str],
    by: str,
    time: datetime,
    decision_id: int | None = None,
) -> int:
    """Keep events out of the corpus (one reason each); events already out stay as they were.
    Returns how many were newly excluded. The caller checks the events are the model's."""
    if kind not in EXCLUSION_KINDS:
        raise CorpusError(f"kind must be one of {list(EXCLUSION_KINDS)}, got {kind!r}")
    ids = [int(i) for i in event_ids]
    if len(ids) != len(reasons):
        raise ValueError(f"one reason per event: {len(ids)} events, {len(reasons)} reasons")
    with committing(session):
        return insert_columns_ignoring_duplicates(
            session,
            table_of(CorpusExclusion),
            {"event_id": ids, "reason": [str(r) for r in reasons]},
            unique=("model_id", "event_id"),
            constants={"model_id": model_id, "kind": kind, "by": by, "time": to_utc(time), "decision_id": decision_id},
        )


def _check_ids(session: Session, model_id: int, model: str, event_ids: Iterable[int]) -> list[int]:
    try:
        ids = sorted({int(i) for i in event_ids})
    except (TypeError, ValueError):
        raise CorpusError(f"event ids must be whole numbers, got {list(event_ids)!r}") from None
    if not ids:
        raise CorpusError("no event ids given: name at least one item of the corpus")
    found: set[int] = set()
    for part in chunks(ids):
        found.update(session.scalars(sa.select(Event.id).where(Event.model_id == model_id, Event.id.in_(part))))
    unknown = [i for i in ids if i not in found]
    if unknown:
        more = " …" if len(unknown) > 10 else ""
        raise LookupError(f"model {model!r} has no events {unknown[:10]}{more}: nothing was changed")
    return ids


def delete_items(
    *, session: Session, model: str, event_ids: Sequence[int], by: str, reason: str = "", time: datetime | None = None
) -> CorpusChange:
    """Take items out of the corpus (kept, with who and why, and restorable): no later training
    reads them. Items out already are left as they are."""
    who, now = _who(by), to_utc(time or utcnow())
    why = reason.strip() or f"deleted by {who}"
    with one_transaction(session):
        row = get_model(session=session, name=model)
        ids = _check_ids(session, row.id, model, event_ids)
        already = set(_exclusions(session, row.id, ids))
        new = [i for i in ids if i not in already]
        if not new:
            return CorpusChange(0, None, f"all {len(ids)} items were out of the corpus already")
        decision = _log(
            session,
            row,
            action="corpus_delete",
            by=who,
            time=now,
            evidence={"events": new, "reason": why},
            rationale=f"{who} took {len(new)} items out of the corpus: {why}.",
        )
        exclude(
            session=session,
            model_id=row.id,
            event_ids=new,
            kind="deleted",
            reasons=[why] * len(new),
            by=who,
            time=now,
            decision_id=decision,
        )
    return CorpusChange(len(new), decision, f"{len(new)} items taken out of the corpus")


def restore_items(
    *, session: Session, model: str, event_ids: Sequence[int], by: str, time: datetime | None = None
) -> CorpusChange:
    """Bring items kept out of the corpus (deleted, or flagged by cleaning) back into it."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        ids = _check_ids(session, row.id, model, event_ids)
        held = _exclusions(session, row.id, ids)
        if not held:
            return CorpusChange(0, None, f"none of the {len(ids)} items was out of the corpus")
        was = {str(i): {"kind": e.kind, "reason": e.reason, "by": e.by} for i, e in held.items()}
        decision = _log(
            session,
            row,
            action="corpus_restore",
            by=who,
            time=now,
            evidence={"events": sorted(held), "were": was},
            rationale=f"{who} brought {len(held)} items back into the corpus.",
        )
        with committing(session):
            for part in chunks(sorted(held)):
                session.execute(
                    sa.delete(CorpusExclusion).where(
                        CorpusExclusion.model_id == row.id, CorpusExclusion.event_id.in_(part)
                    )
                )
    return CorpusChange(len(held), decision, f"{len(held)} items back in the corpus")


def add_examples(
    *,
    session: Session,
    model: str,
    rows: Sequence[Mapping[str, Any]],
    by: str,
    time: datetime | None = None,
    lines: Sequence[int] | None = None,
) -> CorpusChange:
    """Add labelled examples to the corpus, or relabel stored ones, as a person: all rows or none.

    A row is ``{"key", "label", "features"?, "time"?, "entity"?, "group"?, "text"?}`` (a text
    model's rows carry ``features`` already encoded: the caller encodes the text). A row with
    features is an event, stored as ingest stores one (an event stored under its key before must
    repeat it exactly); a row without names a stored event by its key. Its label becomes a
    person's label of that event. Errors name a row by ``lines`` (a file's line numbers, as
    :func:`parse_corpus_file` gives them), else by its position from 1.
    """
    who, now = _who(by), to_utc(time or utcnow())
    if isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise CorpusError("rows must be a list of row objects")
    if not rows:
        raise CorpusError("no rows to add")
    with one_transaction(session):
        row = get_model(session=session, name=model)
        schema = model_schema(row)
        events, labels = _split_rows(rows, schema, model, now, lines or range(1, len(rows) + 1))
        if events:
            try:
                check_events(schema=schema, events=[e for _, e in events])
            except IngestError:
                for n, e in events:  # the slow path names the row
                    try:
                        check_events(schema=schema, events=[e])
                    except IngestError as exc:
                        raise CorpusError(f"row {n}: {exc}") from None
                raise
        keys = sorted({key for _, key, _ in labels})
        stored = {}
        for part in chunks(keys):
            stmt = sa.select(Event.key, Event.id).where(Event.model_id == row.id, Event.key.in_(part))
            stored.update(dict(session.execute(stmt).all()))
        new_keys = {e["key"] for _, e in events}
        for n, key, _ in labels:
            if key not in stored and key not in new_keys:
                raise CorpusError(
                    f"row {n}: model {model!r} has no event with key {key!r}, and the row has no features"
                )
        inserted = 0
        if events:
            try:
                inserted = ingest_events(session=session, model=model, events=[e for _, e in events]).inserted
            except IngestError as exc:
                raise CorpusError(f"{exc}") from None
            for part in chunks(sorted(new_keys)):
                stmt = sa.select(Event.key, Event.id).where(Event.model_id == row.id, Event.key.in_(part))
                stored.update(dict(session.execute(stmt).all()))
        changed = [
            (stored[key], value)
            for _, key, value in labels
            if _set_person_label(session, row.id, stored[key], value, now)
        ]
        if not changed and not inserted:
            return CorpusChange(0, None, f"all {len(rows)} rows were in the corpus already, with these labels")
        decision = _log(
            session,
            row,
            action="corpus_add",
            by=who,
            time=now,
            evidence={"rows": len(rows), "new_events": inserted, "labelled": [i for i, _ in changed][:1000]},
            rationale=f"{who} added {_n(len(rows), 'row')} to the corpus: {_n(inserted, 'new event')}, "
            f"{_n(len(changed), 'label')} set.",
        )
    return CorpusChange(len(changed), decision, f"{_n(inserted, 'new event')}, {_n(len(changed), 'label')} set")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _split_rows(
    rows: Sequence[Mapping[str, Any]], schema: ModelSchema, model: str, now: datetime, lines: Sequence[int]
) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str, str]]]:
    """The events to store (row number, event) and the labels to set (row number, key, value)."""
    events: list[tuple[int, dict[str, Any]]] = []
    labels: list[tuple[int, str, str]] = []
    seen: dict[str, int] = {}
    if len(lines) != len(rows):
        raise ValueError(f"one line number per row: {len(rows)} rows, {len(lines)} line numbers")
    for n, item in zip(lines, rows, strict=True):
        if not isinstance(item, Mapping):
            raise CorpusError(f"row {n}: must be an object, got {type(item).__name__}")
        unknown = sorted(set(item) - {*ROW_FIELDS, "features"})
        if unknown:
            raise CorpusError(f"row {n}: unknown field {unknown[0]!r}; fields are {[*ROW_FIELDS, 'features']}")
        key = item.get("key")
        if not isinstance(key, str) or not key:
            raise CorpusError(f"row {n}: field 'key' must be a non-empty string, got {key!r}")
        if key in seen:
            raise CorpusError(f"row {n}: key {key!r} repeats row {seen[key]}")
        seen[key] = n
        value = _class(schema, item.get("label"), model, where=f"row {n}: ")
        labels.append((n, key, value))
        if item.get("features") is not None:
            try:
                when = optional_utc(item.get("time"), what="field 'time'") or now
            except (TypeError, ValueError) as exc:
                raise CorpusError(f"row {n}: {exc}") from None
            event = {
                "key": key,
                "time": when,
                "entity": item.get("entity") or key,
                "group": item.get("group"),
                "features": item["features"],
            }
            if item.get("text") is not None:
                event["text"] = item["text"]
            events.append((n, event))
    return events, labels


# --------------------------------------------------------------------------- files


def parse_corpus_file(data: bytes | str, fmt: str, schema: ModelSchema) -> tuple[list[dict[str, Any]], list[int]]:
    """The rows of a corpus file (:data:`FORMATS`) in :func:`add_examples`' form, and the line
    of the file each came from (what errors name).

    CSV: a header with ``key`` and ``label`` and optionally ``time``, ``entity``, ``group``,
    ``text``, and a tabular model's features as columns (empty number cells are missing
    readings). JSON lines: one object a line, ``features`` an object. Errors name the line
    ("row" in CSV, where the header is row 1).
    """
    if fmt not in FORMATS:
        raise CorpusError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    rows: list[dict[str, Any]] = []
    lines: list[int] = []
    if fmt == "jsonl":
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"line {n}: not JSON: {exc.msg}") from None
            if not isinstance(parsed, dict):
                raise CorpusError(f"line {n}: must be a JSON object, got {type(parsed).__name__}")
            rows.append(parsed)
            lines.append(n)
        return rows, lines
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ("key", "label") if c not in header]
    if missing:
        raise CorpusError(f"the CSV header lacks the column {missing[0]!r}; it has {header}")
    kinds = {f.name: f.kind for f in schema.features}
    unknown = [c for c in header if c not in ROW_FIELDS and c not in kinds]
    if unknown:
        raise CorpusError(f"the CSV column {unknown[0]!r} is neither a corpus field {list(ROW_FIELDS)} nor a feature")
    has_features = any(c in kinds for c in header)
    for n, record in enumerate(reader, start=2):
        row: dict[str, Any] = {k: v for k, v in record.items() if k in ROW_FIELDS and v not in (None, "")}
        if has_features:
            features: dict[str, Any] = {}
            for name, kind in kinds.items():
                cell = record.get(name)
                if kind != "number":
                    features[name] = cell
                elif cell not in (None, ""):
                    try:
                        features[name] = float(str(cell))
                    except ValueError:
                        raise CorpusError(f"row {n}: feature {name!r} must be a number, got {cell!r}") from None
            row["features"] = features
        rows.append(row)
        lines.append(n)
    return rows, lines


def export_corpus(*, session: Session, model_id: int, fmt: str) -> str:
    """The corpus (every item in it, by event id) as a file of :data:`FORMATS` that
    :func:`parse_corpus_file` reads back: key, label, time, entity, group, then the text (a text
    model's) or the features."""
    if fmt not in FORMATS:
        raise CorpusError(f"format must be one of {list(FORMATS)}, got {fmt!r}")
    rows = corpus_rows(session=session, model_id=model_id, limit=None)
    schema = model_schema(session.get(ManagedModel, model_id))  # type: ignore[arg-type]
    texts = any(r["text"] is not None for r in rows)
    features: dict[int, dict[str, Any]] = {}
    if not texts:
        for part in chunks([r["event_id"] for r in rows]):
            found: Any = session.execute(sa.select(Event.id, Event.features).where(Event.id.in_(part)))
            for event_id, value in found:
                stored = json.loads(value) if isinstance(value, str) else dict(value)
                # What was sent, not the rolling features derived from it (imported, they are derived again).
                features[int(event_id)] = {name: stored.get(name) for name in schema.feature_names}
    out = io.StringIO()
    fields = ["key", "label", "time", "entity", "group"]
    if fmt == "jsonl":
        for r in rows:
            item = {f: r[f] for f in fields}
            item |= {"text": r["text"]} if texts else {"features": features[r["event_id"]]}
            out.write(json.dumps(item, ensure_ascii=False) + "\n")
        return out.getvalue()
    names = ["text"] if texts else schema.feature_names
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(fields + names)
    for r in rows:
        tail = [r["text"]] if texts else [_cell(features[r["event_id"]].get(n)) for n in names]
        writer.writerow([r[f] if r[f] is not None else "" for f in fields] + tail)
    return out.getvalue()


def _cell(value: Any) -> Any:
    return "" if value is None else value


# --------------------------------------------------------------------------- snapshots


def snapshot_corpus(*, session: Session, model: str, by: str, time: datetime | None = None) -> CorpusChange:
    """An immutable snapshot of the whole corpus as it is now (each item with its best label),
    to train from, compare with later, or restore from."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        items = corpus_rows(session=session, model_id=row.id, limit=None)
        if not items:
            raise CorpusError(f"model {model!r} has no labelled events in its corpus to snapshot")
        ids, labels = [r["event_id"] for r in items], [r["label"] for r in items]
        snapshot = create_snapshot(
            session=session,
            model_id=row.id,
            event_ids=ids,
            labels=labels,
            time=now,
            stats={"made_by": who, "kind": "corpus"},
        )
        decision = _log(
            session,
            row,
            action="corpus_snapshot",
            by=who,
            time=now,
            evidence={"snapshot": snapshot.id, "rows": len(ids), "content_hash": content_hash(ids, labels)},
            rationale=f"{who} took snapshot {snapshot.id} of the corpus: {len(ids)} labelled items.",
        )
    return CorpusChange(len(ids), decision, f"snapshot {snapshot.id}: {len(ids)} items")


def list_snapshots(*, session: Session, model_id: int) -> list[dict[str, Any]]:
    """The model's snapshots, oldest first: training snapshots of the Curator and corpus ones."""
    rows = session.scalars(sa.select(Snapshot).where(Snapshot.model_id == model_id).order_by(Snapshot.id))
    return [
        {
            "id": s.id,
            "time": s.time.isoformat(),
            "rows": s.n_rows,
            "content_hash": s.content_hash,
            "kind": (s.stats or {}).get("kind", "training"),
            "made_by": (s.stats or {}).get("made_by", "curator"),
        }
        for s in rows
    ]


def snapshot_model(*, session: Session, snapshot_id: int) -> int:
    """The id of the model a snapshot is of; LookupError if there is no such snapshot."""
    return get_snapshot(session=session, snapshot_id=snapshot_id).model_id


def diff_snapshots(*, session: Session, a: int, b: int, limit: int = 1000) -> dict[str, Any]:
    """What changed from snapshot ``a`` to ``b`` (of one model): items added, removed and
    relabelled (at most ``limit`` of each listed, all counted), and the class counts of each."""
    first, second = get_snapshot(session=session, snapshot_id=a), get_snapshot(session=session, snapshot_id=b)
    if first.model_id != second.model_id:
        raise CorpusError(f"snapshots {a} and {b} are of different models: a diff compares one model's snapshots")

    def items(snapshot_id: int) -> dict[int, str]:
        stmt = sa.select(SnapshotItem.event_id, SnapshotItem.label).where(SnapshotItem.snapshot_id == snapshot_id)
        return {int(i): str(v) for i, v in session.execute(stmt)}

    old, new = items(a), items(b)
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    relabelled = sorted(i for i in set(old) & set(new) if old[i] != new[i])

    def counts(labels: Mapping[int, str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for value in labels.values():
            out[value] = out.get(value, 0) + 1
        return dict(sorted(out.items()))

    return {
        "a": a,
        "b": b,
        "added": len(added),
        "removed": len(removed),
        "relabelled": len(relabelled),
        "unchanged": len(set(old) & set(new)) - len(relabelled),
        "added_items": [{"event_id": i, "label": new[i]} for i in added[:limit]],
        "removed_items": [{"event_id": i, "label": old[i]} for i in removed[:limit]],
        "relabelled_items": [{"event_id": i, "from": old[i], "to": new[i]} for i in relabelled[:limit]],
        "class_counts": {"a": counts(old), "b": counts(new)},
    }


# --------------------------------------------------------------------------- the label queue


def label_queue(*, session: Session, model_id: int, limit: int = 20, after_id: int = 0) -> list[dict[str, Any]]:
    """The open label requests, oldest first: each with its event (key, time, entity, text,
    what was served) and why the Curator chose it."""
    stmt = (
        sa.select(LabelRequest, Event)
        .join(Event, Event.id == LabelRequest.event_id)
        .where(LabelRequest.model_id == model_id, LabelRequest.status == "open", LabelRequest.id > after_id)
        .order_by(LabelRequest.id)
        .limit(limit)
    )
    return [
        {
            "id": request.id,
            "event_id": event.id,
            "key": event.key,
            "time": to_utc(event.time).isoformat(),
            "entity": event.entity,
            "text": event.text,
            "features": event.features if event.text is None else None,
            "prediction": event.prediction,
            "reason": request.reason,
            "asked": request.time.isoformat(),
        }
        for request, event in session.execute(stmt)
    ]


def _request_of(session: Session, model: ManagedModel, request_id: int) -> LabelRequest:
    request = session.get(LabelRequest, int(request_id))
    if request is None or request.model_id != model.id:
        raise LookupError(f"model {model.name!r} has no label request {request_id}")
    return request


def answer_request(
    *, session: Session, model: str, request_id: int, value: str, by: str, time: datetime | None = None
) -> CorpusChange:
    """Answer a label request: the event gets a person's label, the request is closed, and the
    answer is logged. Answering again with the same label changes nothing; a different label for
    a request answered already is a :class:`CorpusConflict` (relabel the item instead)."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        request = _request_of(session, row, request_id)
        value = _class(model_schema(row), value, model)
        if request.status != "open":
            held = session.scalars(
                sa.select(Label.value).where(Label.event_id == request.event_id, Label.source == "person")
            ).first()
            if request.status == "answered" and held == value:
                return CorpusChange(0, None, f"request {request.id} was answered {value!r} already")
            raise CorpusConflict(
                f"request {request.id} is {request.status}"
                + (f" by {request.answered_by}" if request.answered_by else "")
                + (f" with {held!r}" if held else "")
                + "; relabel its event instead"
            )
        _set_person_label(session, row.id, request.event_id, value, now)
        with committing(session):
            request.status, request.answered_at, request.answered_by = "answered", now, who
        decision = _log(
            session,
            row,
            action="label",
            by=who,
            time=now,
            evidence={"request": request.id, "event": request.event_id, "label": value, "reason": request.reason},
            rationale=f"{who} labelled event {request.event_id} {value!r} (request {request.id}: {request.reason}).",
        )
    return CorpusChange(1, decision, f"request {request.id} answered {value!r}")


def skip_request(
    *, session: Session, model: str, request_id: int, by: str, time: datetime | None = None
) -> CorpusChange:
    """Skip a label request (the person cannot tell): closed without a label, logged. Skipping a
    skipped request changes nothing."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        request = _request_of(session, row, request_id)
        if request.status == "skipped":
            return CorpusChange(0, None, f"request {request.id} was skipped already")
        if request.status != "open":
            raise CorpusConflict(f"request {request.id} is {request.status}; only an open request can be skipped")
        with committing(session):
            request.status, request.answered_at, request.answered_by = "skipped", now, who
        decision = _log(
            session,
            row,
            action="label_skip",
            by=who,
            time=now,
            evidence={"request": request.id, "event": request.event_id},
            rationale=f"{who} skipped request {request.id} (event {request.event_id}).",
            outcome="skipped",
        )
    return CorpusChange(1, decision, f"request {request.id} skipped")


# --------------------------------------------------------------------------- new intents

#: The decision that shows people the Curator's clusters of queries the model does not know.
PROPOSE_ACTION = "corpus_clusters"
#: The decision of a person naming one of them (a new class, or merged into an old one).
NAME_ACTION = "corpus_name_cluster"


def record_clusters(
    *, session: Session, model: str, clusters: Sequence[Mapping[str, Any]], by: str, time: datetime | None = None
) -> CorpusChange:
    """Log the clusters shown to people (each with its members' event ids, examples, suggested
    name): the proposal a person names a cluster of, by the decision's id."""
    who, now = _who(by), to_utc(time or utcnow())
    with one_transaction(session):
        row = get_model(session=session, name=model)
        names = ", ".join(
            f"{i}: {c['suggested_name']!r} ({len(c['event_ids'])} queries)" for i, c in enumerate(clusters)
        )
        decision = _log(
            session,
            row,
            action=PROPOSE_ACTION,
            by=who,
            time=now,
            evidence={"clusters": [dict(c) for c in clusters]},
            rationale=(
                f"{len(clusters)} clusters of queries the model does not know, shown to {who}: {names}."
                if clusters
                else f"No cluster of queries the model does not know stands out (shown to {who})."
            ),
        )
    return CorpusChange(len(clusters), decision, f"{len(clusters)} clusters proposed")


def proposed_cluster(*, session: Session, model: str, proposal: int, cluster: int) -> dict[str, Any]:
    """Cluster ``cluster`` of the proposal logged as decision ``proposal`` of ``model``."""
    row = get_model(session=session, name=model)
    decision = session.get(Decision, proposal)
    if decision is None or decision.model_id != row.id or decision.action != PROPOSE_ACTION:
        raise CorpusError(f"decision {proposal} is not a proposal of clusters of model {model!r}")
    clusters = (decision.evidence or {}).get("clusters", [])
    if not 0 <= cluster < len(clusters):
        raise CorpusError(f"proposal {proposal} has clusters 0 to {len(clusters) - 1}, not {cluster}")
    return dict(clusters[cluster])


def name_cluster(
    *,
    session: Session,
    model: str,
    proposal: int,
    cluster: int,
    name: str,
    by: str,
    around: Sequence[int],
    time: datetime | None = None,
) -> CorpusChange:
    """A person names a proposed cluster: a new class of the model (its schema grows) or an old
    one it merges into; the events ``around`` it are asked for labels, each request saying why.
    All of it in one transaction; naming a cluster again as it was named changes nothing, and
    under another name is refused."""
    who, now = _who(by), to_utc(time or utcnow())
    label = name.strip() if isinstance(name, str) else ""
    if not label:
        raise CorpusError("a cluster is named by a non-empty class name")
    with one_transaction(session):
        row = get_model(session=session, name=model)
        shown = proposed_cluster(session=session, model=model, proposal=proposal, cluster=cluster)
        earlier = session.scalars(
            sa.select(Decision).where(Decision.model_id == row.id, Decision.action == NAME_ACTION)
        ).all()
        for decision in earlier:
            said = decision.evidence or {}
            if (said.get("proposal"), said.get("cluster")) == (proposal, cluster):
                if said.get("name") == label:
                    return CorpusChange(0, None, f"cluster {cluster} of proposal {proposal} is named {label!r} already")
                raise CorpusError(
                    f"cluster {cluster} of proposal {proposal} was named {said.get('name')!r} already (decision "
                    f"{decision.id}); relabel its items to change it"
                )
        schema = model_schema(row)
        new = label not in schema.classes
        if new:
            grown = ModelSchema.model_validate({**schema.model_dump(mode="json"), "classes": [*schema.classes, label]})
            row.schema = grown.model_dump(mode="json")
        ids = [int(i) for i in around]
        what = "a new class" if new else "an old class"
        reason = f"near the queries {who} named {label!r} ({what}): cluster {cluster} of proposal {proposal}"
        asked = add_label_requests(
            session=session, model_id=row.id, event_ids=ids, reasons=[reason] * len(ids), time=now
        )
        decision_id = _log(
            session,
            row,
            action=NAME_ACTION,
            by=who,
            time=now,
            evidence={
                "proposal": proposal,
                "cluster": cluster,
                "name": label,
                "new_class": new,
                "suggested_name": shown.get("suggested_name"),
                "members": len(shown.get("event_ids", [])),
                "asked": ids,
            },
            rationale=(
                f"{who} named cluster {cluster} of proposal {proposal} (suggested {shown.get('suggested_name')!r}, "
                f"{len(shown.get('event_ids', []))} queries) {label!r}: "
                + (f"a new class of model {model!r}" if new else f"merged into class {label!r}")
                + f"; {asked} queries around it are asked for labels."
            ),
        )
    return CorpusChange(asked + int(new), decision_id, f"cluster {cluster} named {label!r}; {asked} label requests")
