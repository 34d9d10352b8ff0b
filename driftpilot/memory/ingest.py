"""THE ingest path: events, labels and alarms, as the API's predictions, the demo and replay send them.

Every batch is validated as a whole first, then written in one transaction, so a refused batch
leaves nothing behind. Writes are idempotent by the client's key: re-sent events and labels
are skipped and counted as duplicates, a re-sent alarm updates its row. Alarms are generic
(:func:`ingest_alarm`); :func:`alertmanager_to_alarms` converts Prometheus Alertmanager's
webhook to them, the affected group read from the labels the deployment configures.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import (
    chunks,
    committing,
    insert_columns_ignoring_duplicates,
    writer_turn,
)
from driftpilot.memory.managed import UnknownModelError, get_model, known_model
from driftpilot.memory.rolling import RollingHistory, load_history, save_history
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import (
    ALARM_STATUSES,
    LABEL_SOURCES,
    Alarm,
    Event,
    Label,
    table_of,
)
from driftpilot.memory.times import optional_utc, to_utc, utcnow

EVENT_FIELDS = (
    "key",
    "time",
    "entity",
    "group",
    "features",
    "served_version",
    "prediction",
    "probabilities",
    "text",
    "answered_by",
)
LABEL_FIELDS = ("event_key", "value", "source", "confidence", "time")
ALARM_FIELDS = (
    "key",
    "name",
    "severity",
    "status",
    "starts_at",
    "ends_at",
    "groups",
    "labels",
    "model",
)

# Rows per executemany: bounds the memory a million-event batch needs while it is written.
_WRITE_CHUNK = 20_000
# Probabilities may be off by float rounding from a softmax.
_PROBABILITY_SLACK = 1e-6


class IngestError(ValueError):
    """A batch was refused; the message names the event (key and index) and the field."""


class ResentConflict(IngestError):
    """An event was sent again under a stored key with other content."""


@dataclass(frozen=True)
class IngestResult:
    """How many records of a batch were new and how many were already stored."""

    inserted: int
    duplicates: int


@dataclass
class EventBatch:
    """Events in columns: the fast form of an ingest batch.

    ``features`` holds one column per schema feature (numpy array or list);
    ``probabilities`` is an ``n × n_classes`` array in the order of the schema's classes, a row
    of NaN meaning "not given". ``served_version``, ``prediction`` and ``probabilities`` may be
    ``None`` when no event has them. A number feature's missing values are NaN (stored as JSON
    null: the served model imputes them). ``texts`` holds a text model's raw texts (its features
    hold their sentence vectors), or ``None``.
    """

    keys: list[str]
    times: list[datetime]
    entities: list[str]
    groups: list[str | None]
    features: Mapping[str, np.ndarray | list[Any]]
    served_version: list[int | None] | None = None
    prediction: list[str | None] | None = None
    probabilities: np.ndarray | None = None
    texts: list[str | None] | None = None
    #: Who answered each event: ``"server"``, or an edge node (``"edge:<node>"``), with why when
    #: a node answered what it would have deferred (``None``: not said).
    answered_by: list[str | None] | None = None

    def __len__(self) -> int:
        return len(self.keys)


def _where(keys: Sequence[Any], index: int) -> str:
    key = keys[index] if index < len(keys) else None
    if isinstance(key, str) and key:
        return f"event {key!r} (#{index})"
    return f"event #{index}"


# --------------------------------------------------------------------------- events


def ingest_events(
    *,
    session: Session,
    model: str,
    events: Sequence[Mapping[str, Any]] | EventBatch,
    history: RollingHistory | None = None,
) -> IngestResult:
    """Validate and store a batch of events for ``model``, in one transaction.

    Parameters
    ----------
    events
        An :class:`EventBatch`, or mappings ``{"key", "time", "entity", "group"?, "features",
        "served_version"?, "prediction"?, "probabilities"? (class -> float)}`` with ``time`` a
        datetime or an ISO 8601 string. Classes missing from ``probabilities`` count as 0.
    history
        For a schema with rolling features: the entities' history that derived the features an
        :class:`EventBatch` already carries (serving derives them before it predicts); it is
        stored with the events. Without it, the features are derived here from the stored
        history, which moves with the events. Clients never send derived features.

    Raises
    ------
    UnknownModelError
        If no model is called ``model``.
    IngestError
        If any event is invalid; nothing of the batch is stored then.
    """
    model_id, schema = known_model(session=session, name=model)
    batch = events if isinstance(events, EventBatch) else _batch_from_mappings(events, schema)
    columns = _validated_columns(batch, schema)
    n = len(batch)
    ingested_at = utcnow()
    inserted = 0
    with writer_turn(session), committing(session):
        if schema.rolling is not None:
            history = _derived(session, model_id, schema, batch, columns, history)
        for start in range(0, n, _WRITE_CHUNK):
            part = slice(start, min(start + _WRITE_CHUNK, n))
            inserted += insert_columns_ignoring_duplicates(
                session,
                table_of(Event),
                {
                    "key": columns["keys"][part],
                    "time": columns["times"][part],
                    "entity": columns["entities"][part],
                    "group_key": columns["groups"][part],
                    "features": _json_features(schema, columns["features"], part),
                    "served_version": columns["served_version"][part],
                    "prediction": columns["prediction"][part],
                    "probabilities": _json_probabilities(schema.classes, columns["probabilities"], part),
                    "text": columns["texts"][part],
                    "answered_by": columns["answered_by"][part],
                },
                unique=("model_id", "key"),
                json_text=("features", "probabilities"),
                constants={"model_id": model_id, "ingested_at": ingested_at},
            )
        if inserted < n:
            # Rolls the whole batch back (committing) when a re-sent key carries other content.
            _refuse_changed_resends(session, model_id, columns, schema)
        if history is not None:
            save_history(session, model_id, history)
    return IngestResult(inserted=inserted, duplicates=n - inserted)


def _derived(
    session: Session,
    model_id: int,
    schema: ModelSchema,
    batch: EventBatch,
    columns: dict[str, Any],
    history: RollingHistory | None,
) -> RollingHistory | None:
    """Add the batch's rolling features to ``columns``: as the batch carries them (with the
    history that derived them, or none when a driver derived them itself), or derived here from
    the stored history. Returns the history to store."""
    names = [f.name for f in schema.derived_features]
    carried = [name for name in names if name in batch.features]
    keys = columns["keys"]
    if carried:
        missing = [name for name in names if name not in carried]
        if missing:
            raise IngestError(f"EventBatch carries some rolling features but not {missing[0]!r}")
        for name in names:
            given = len(batch.features[name])
            if given != len(keys):
                raise IngestError(f"EventBatch column {name!r} has {given} values, expected {len(keys)}")
            columns["features"][name] = _number_column(batch.features[name], keys, f"feature {name!r}")
        return history
    if history is None:
        history = load_history(session, model_id, schema, columns["entities"])
    derived = history.derive(
        columns["entities"], columns["times"], {name: columns["features"][name] for name in schema.rolling_numbers}
    )
    columns["features"].update({name: values.tolist() for name, values in derived.items()})
    return history


def check_events(*, schema: ModelSchema, events: Sequence[Mapping[str, Any]]) -> None:
    """Validate events as :func:`ingest_events` would, without storing anything; ``IngestError``
    names the first event at fault."""
    _validated_columns(_batch_from_mappings(events, schema), schema)


def _refuse_changed_resends(session: Session, model_id: int, columns: dict[str, Any], schema: ModelSchema) -> None:
    """A key stored before must come back with the same time, entity, group and features (and
        served version and prediction, when the re-sent event states them): a retry, not a second
        event under a used key. Only batches with duplicates pay for this look (the rows just written
    compare equal to themselves)."""
    position = {key: i for i, key in enumerate(columns["keys"])}
    for part in chunks(columns["keys"]):
        stored: Sequence[Any] = session.execute(
            sa.select(
                Event.key,
                Event.time,
                Event.entity,
                Event.group_key,
                Event.features,
                Event.served_version,
                Event.prediction,
            ).where(Event.model_id == model_id, Event.key.in_(part))
        ).all()
        for key, time, entity, group, features, served, prediction in stored:
            i = position[key]
            # Judged by what the client sent: the rolling features are the server's.
            given = {spec.name: _stored_form(columns["features"][spec.name][i]) for spec in schema.features}
            if isinstance(features, str):
                features = json.loads(features)
            features = {name: features.get(name) for name in given}
            comparisons: tuple[tuple[str, Any, Any], ...] = (
                ("time", to_utc(time), to_utc(columns["times"][i])),
                ("entity", entity, columns["entities"][i]),
                ("group", group, columns["groups"][i]),
                ("features", features, given),
                ("served_version", served, columns["served_version"][i] or served),
                ("prediction", prediction, columns["prediction"][i] or prediction),
            )
            differs = [name for name, before, now in comparisons if before != now]
            if differs:
                raise ResentConflict(
                    f"{_where(columns['keys'], i)}: key was stored before with another {differs[0]!r}; "
                    "a re-sent event must repeat the first one exactly"
                )


def _stored_form(value: Any) -> Any:
    """A feature value as it reads back from the stored JSON: a missing number (NaN) is null."""
    return None if isinstance(value, float) and value != value else value


def _batch_from_mappings(events: Sequence[Mapping[str, Any]], schema: ModelSchema) -> EventBatch:
    """Per-event checks of the mapping form, then its columns."""
    if isinstance(events, (str, bytes, Mapping)):
        raise IngestError("events must be a list of event objects")
    names = schema.feature_names
    name_set = set(names)
    allowed = set(EVENT_FIELDS)
    classes = schema.classes
    keys: list[Any] = []
    times: list[datetime] = []
    entities: list[Any] = []
    groups: list[Any] = []
    features: dict[str, np.ndarray | list[Any]] = {name: [] for name in names}
    served: list[Any] = []
    predictions: list[Any] = []
    texts: list[Any] = []
    answered: list[Any] = []
    numbers = {spec.name for spec in schema.features if spec.kind == "number"}
    probabilities = np.full((len(events), len(classes)), np.nan)
    class_index = {c: j for j, c in enumerate(classes)}
    # The checks run on every event of every request: the cheap test first (a JSON object is a
    # dict; a set's issuperset), the sorted names for the message only when it fails.
    for i, event in enumerate(events):
        if type(event) is not dict and not isinstance(event, Mapping):
            raise IngestError(f"event #{i}: must be an object, got {type(event).__name__}")
        key = event.get("key")
        if not isinstance(key, str) or not key:
            raise IngestError(f"event #{i}: field 'key' must be a non-empty string, got {key!r}")
        where = f"event {key!r} (#{i})"
        if not allowed.issuperset(event):
            unknown = sorted(set(event) - allowed)
            raise IngestError(f"{where}: unknown field {unknown[0]!r}; fields are {list(EVENT_FIELDS)}")
        for field in ("time", "entity", "features"):
            if event.get(field) is None:
                raise IngestError(f"{where}: field {field!r} is missing")
        try:
            times.append(to_utc(event["time"], what="field 'time'"))
        except (TypeError, ValueError) as exc:
            raise IngestError(f"{where}: {exc}") from None
        given = event["features"]
        if type(given) is not dict and not isinstance(given, Mapping):
            raise IngestError(f"{where}: field 'features' must be an object, got {given!r}")
        for name in names:
            if name in given:
                features[name].append(given[name])  # type: ignore[union-attr]
            elif name in numbers:
                features[name].append(None)  # type: ignore[union-attr]  # a reading that did not come
            else:
                raise IngestError(f"{where}: feature {name!r} is missing")
        if not name_set.issuperset(given):
            extra = sorted(set(given) - name_set)
            raise IngestError(f"{where}: feature {extra[0]!r} is not in the schema; features are {names}")
        probs = event.get("probabilities")
        if probs is not None:
            if not isinstance(probs, Mapping):
                raise IngestError(f"{where}: field 'probabilities' must map classes to numbers, got {probs!r}")
            probabilities[i, :] = 0.0
            for cls, p in probs.items():
                if cls not in class_index:
                    raise IngestError(f"{where}: probabilities name class {cls!r}, not one of {classes}")
                if not _is_number(p):
                    raise IngestError(f"{where}: probability of {cls!r} must be a number, got {p!r}")
                probabilities[i, class_index[cls]] = float(p)
        keys.append(key)
        entities.append(event["entity"])
        groups.append(event.get("group"))
        served.append(event.get("served_version"))
        predictions.append(event.get("prediction"))
        texts.append(event.get("text"))
        answered.append(event.get("answered_by"))
    return EventBatch(
        keys=keys,
        times=times,
        entities=entities,
        groups=groups,
        features=features,
        served_version=served,
        prediction=predictions,
        probabilities=probabilities,
        texts=texts if any(t is not None for t in texts) else None,
        answered_by=answered if any(a is not None for a in answered) else None,
    )


def _is_number_type(kind: type) -> bool:
    return issubclass(kind, (int, float, np.integer, np.floating)) and not issubclass(kind, (bool, np.bool_))


def _is_number(value: Any) -> bool:
    return _is_number_type(type(value))


def _validated_columns(batch: EventBatch, schema: ModelSchema) -> dict[str, Any]:
    """Check a whole batch with column-wide operations; return the columns to store."""
    keys = list(batch.keys)
    n = len(keys)

    def check_length(name: str, column: Any) -> None:
        if len(column) != n:
            raise IngestError(f"EventBatch column {name!r} has {len(column)} values, expected {n} (one per key)")

    bad = [i for i, key in enumerate(keys) if type(key) is not str or not key]
    if bad:
        raise IngestError(f"event #{bad[0]}: field 'key' must be a non-empty string, got {keys[bad[0]]!r}")
    if len(set(keys)) != n:
        seen: dict[str, int] = {}
        for i, key in enumerate(keys):
            if key in seen:
                raise IngestError(f"{_where(keys, i)}: key repeats event #{seen[key]} of this batch")
            seen[key] = i

    check_length("times", batch.times)
    times = _time_column(batch.times, keys)
    check_length("entities", batch.entities)
    entities = _string_column(batch.entities, keys, "field 'entity'", optional=False)
    check_length("groups", batch.groups)
    groups = _string_column(batch.groups, keys, "field 'group'", optional=True)

    given = set(batch.features)
    # An EventBatch may carry the rolling features (checked with the history, in ingest_events).
    extra = sorted(given - set(schema.feature_names) - {f.name for f in schema.derived_features})
    if extra:
        raise IngestError(f"feature {extra[0]!r} is not in the schema; features are {schema.feature_names}")
    features: dict[str, list[Any]] = {}
    for spec in schema.features:
        if spec.name not in given:
            raise IngestError(f"EventBatch has no column for feature {spec.name!r}")
        column = batch.features[spec.name]
        check_length(f"features[{spec.name!r}]", column)
        what = f"feature {spec.name!r}"
        if spec.kind == "number":
            features[spec.name] = _number_column(column, keys, what)
        else:
            features[spec.name] = _string_column(column, keys, what, optional=False)

    if batch.served_version is None:
        served: list[int | None] = [None] * n
    else:
        check_length("served_version", batch.served_version)
        served = _version_column(batch.served_version, keys)
    if batch.prediction is None:
        predictions: list[str | None] = [None] * n
    else:
        check_length("prediction", batch.prediction)
        predictions = _prediction_column(batch.prediction, keys, schema.classes)
    probabilities = _probability_column(batch.probabilities, keys, schema.classes)
    if batch.texts is None:
        texts: list[Any] = [None] * n
    else:
        check_length("texts", batch.texts)
        texts = _string_column(batch.texts, keys, "field 'text'", optional=True)
    if batch.answered_by is None:
        answered_by: list[Any] = [None] * n
    else:
        check_length("answered_by", batch.answered_by)
        answered_by = _string_column(batch.answered_by, keys, "field 'answered_by'", optional=True)
    return {
        "keys": keys,
        "times": times,
        "entities": entities,
        "groups": groups,
        "features": features,
        "served_version": served,
        "prediction": predictions,
        "probabilities": probabilities,
        "texts": texts,
        "answered_by": answered_by,
    }


def _time_column(values: Sequence[Any], keys: Sequence[str]) -> list[datetime]:
    if all(type(v) is datetime and v.tzinfo is None for v in values):
        return list(values)
    # Events sent as mappings arrive here already converted (to_utc): pandas would return the
    # same datetimes, at a millisecond a batch.
    if all(type(v) is datetime and v.tzinfo is UTC for v in values):
        return list(values)
    try:
        index = pd.to_datetime(pd.Series(values, dtype=object), utc=True, format="ISO8601")
    except (ValueError, TypeError, OverflowError):
        index = None
    if index is None or index.isna().any():
        # Slow path only to name the culprit.
        for i, value in enumerate(values):
            try:
                to_utc(value, what="field 'time'")
            except (TypeError, ValueError) as exc:
                raise IngestError(f"{_where(keys, i)}: {exc}") from None
        raise IngestError("field 'time' has values that are not times")
    return list(index.dt.to_pydatetime())


def _string_column(
    values: Sequence[Any] | np.ndarray,
    keys: Sequence[str],
    what: str,
    *,
    optional: bool,
) -> list[Any]:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    kinds = set(map(type, items))
    allowed = {str, type(None)} if optional else {str}
    if not kinds <= allowed or "" in items:
        for i, value in enumerate(items):
            if (value is None and optional) or (isinstance(value, str) and value):
                continue
            expected = "a non-empty string or null" if optional else "a non-empty string"
            raise IngestError(f"{_where(keys, i)}: {what} must be {expected}, got {value!r}")
    return items


def _number_column(values: Sequence[Any] | np.ndarray, keys: Sequence[str], what: str) -> list[float]:
    """The numbers of a feature as floats; a missing reading (None or NaN) is NaN, an infinite
    one or anything but a number is refused with the event named."""
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        numbers = values.astype(np.float64, copy=False)
    else:
        items = values.tolist() if isinstance(values, np.ndarray) else list(values)
        bad_kinds = {kind for kind in set(map(type, items)) if not _is_number_type(kind) and kind is not type(None)}
        if bad_kinds:
            i = next(i for i, value in enumerate(items) if type(value) in bad_kinds)
            raise IngestError(f"{_where(keys, i)}: {what} must be a number, got {items[i]!r}")
        numbers = np.asarray(items, dtype=np.float64)
    if numbers.ndim != 1:
        raise IngestError(f"{what} must be one column of numbers, got shape {numbers.shape}")
    infinite = np.isinf(numbers)
    if infinite.any():
        i = int(np.argmax(infinite))
        raise IngestError(
            f"{_where(keys, i)}: {what} must be a finite number or null (missing), got {float(numbers[i])!r}"
        )
    return numbers.tolist()


def _version_column(values: Sequence[Any], keys: Sequence[str]) -> list[int | None]:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    for kind in set(map(type, items)):
        if kind is type(None) or (issubclass(kind, (int, np.integer)) and not issubclass(kind, bool)):
            continue
        i = next(i for i, value in enumerate(items) if type(value) is kind)
        raise IngestError(f"{_where(keys, i)}: field 'served_version' must be an integer or null, got {items[i]!r}")
    return [None if v is None else int(v) for v in items]


def _prediction_column(values: Sequence[Any], keys: Sequence[str], classes: list[str]) -> list[str | None]:
    items = values.tolist() if isinstance(values, np.ndarray) else list(values)
    allowed = set(classes)
    allowed_or_none: set[Any] = {*allowed, None}
    if not set(items) <= allowed_or_none:
        i = next(i for i, value in enumerate(items) if value not in allowed_or_none)
        raise IngestError(f"{_where(keys, i)}: field 'prediction' must be one of {classes}, got {items[i]!r}")
    return [None if v is None else str(v) for v in items]


def _probability_column(values: np.ndarray | None, keys: Sequence[str], classes: list[str]) -> np.ndarray | None:
    """The validated ``n × n_classes`` matrix (a NaN row: not given), or None."""
    n = len(keys)
    if values is None:
        return None
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise IngestError("field 'probabilities' must be a numeric n × n_classes array") from None
    if matrix.shape != (n, len(classes)):
        raise IngestError(
            f"field 'probabilities' must have shape ({n}, {len(classes)}) (events × classes {classes}), "
            f"got {matrix.shape}"
        )
    missing = np.isnan(matrix).all(axis=1)
    invalid = ~missing & ~(
        np.isfinite(matrix).all(axis=1)
        & (matrix >= -_PROBABILITY_SLACK).all(axis=1)
        & (matrix <= 1 + _PROBABILITY_SLACK).all(axis=1)
    )
    if invalid.any():
        i = int(np.argmax(invalid))
        raise IngestError(
            f"{_where(keys, i)}: field 'probabilities' must hold numbers in [0, 1], got {matrix[i].tolist()}"
        )
    return matrix


def _json_features(schema: ModelSchema, features: dict[str, list[Any]], part: slice) -> list[str]:
    specs = [spec for spec in schema.model_features if spec.name in features]
    encoded = [
        _json_numbers(features[spec.name][part]) if spec.kind == "number" else _json_strings(features[spec.name][part])
        for spec in specs
    ]
    return _json_objects([spec.name for spec in specs], encoded)


def _json_probabilities(classes: list[str], matrix: np.ndarray | None, part: slice) -> list[str | None]:
    if matrix is None:
        return [None] * (part.stop - part.start)
    rows = matrix[part]
    encoded = _json_objects(classes, [_json_numbers(rows[:, j].tolist()) for j in range(len(classes))])
    missing: list[str | None] = list(encoded)
    for i in np.flatnonzero(np.isnan(rows).all(axis=1)).tolist():
        missing[i] = None
    return missing


def _json_numbers(values: list[float]) -> list[str]:
    # float.__repr__ is what json.dumps writes for a finite float; a missing number (NaN) is null.
    encoded = list(map(float.__repr__, values))
    if "nan" in encoded:
        encoded = ["null" if text == "nan" else text for text in encoded]
    return encoded


def _json_strings(values: list[str]) -> list[str]:
    encoded = {value: json.dumps(value) for value in set(values)}
    return list(map(encoded.__getitem__, values))


def _json_objects(names: Sequence[str], encoded_columns: Sequence[list[str]]) -> list[str]:
    """One JSON object per row from columns of JSON-encoded values.

    Writing the objects by hand, rather than ``json.dumps`` of a dict per row, is several
    times faster on a million events; the text is what ``json.dumps`` with compact
    separators writes.
    """
    template = "{" + ",".join(json.dumps(n).replace("%", "%%") + ":%s" for n in names) + "}"
    return list(map(template.__mod__, zip(*encoded_columns, strict=True)))


# --------------------------------------------------------------------------- labels


def ingest_labels(*, session: Session, model: str, labels: Sequence[Mapping[str, Any]]) -> IngestResult:
    """Validate and store labels of ``model``'s events, in one transaction.

    Each label is ``{"event_key", "value", "source"? ("system"), "confidence"? (1.0),
    "time"?}``; ``time`` is when the label became known (default: now) and decides when
    :func:`driftpilot.memory.events.window` may show it. A label already stored for the same
    event and source is kept, and the new one counted as a duplicate.

    Raises
    ------
    UnknownModelError
        If no model is called ``model``.
    IngestError
        If any label is invalid or names an event the model does not have.
    """
    model_id, schema = known_model(session=session, name=model)
    classes = schema.classes
    if isinstance(labels, (str, bytes, Mapping)):
        raise IngestError("labels must be a list of label objects")
    now = utcnow()
    parsed: list[tuple[str, str, str, float, datetime]] = []
    seen: dict[tuple[str, str], int] = {}
    for i, label in enumerate(labels):
        if not isinstance(label, Mapping):
            raise IngestError(f"label #{i}: must be an object, got {type(label).__name__}")
        key = label.get("event_key")
        if not isinstance(key, str) or not key:
            raise IngestError(f"label #{i}: field 'event_key' must be a non-empty string, got {key!r}")
        where = f"label for event {key!r} (#{i})"
        unknown = sorted(set(label) - set(LABEL_FIELDS))
        if unknown:
            raise IngestError(f"{where}: unknown field {unknown[0]!r}; fields are {list(LABEL_FIELDS)}")
        value = label.get("value")
        if value not in classes:
            raise IngestError(f"{where}: field 'value' must be one of {classes}, got {value!r}")
        source = label.get("source", "system")
        if source not in LABEL_SOURCES:
            raise IngestError(f"{where}: field 'source' must be one of {list(LABEL_SOURCES)}, got {source!r}")
        confidence = label.get("confidence", 1.0)
        if not _is_number(confidence) or not 0.0 <= float(confidence) <= 1.0:
            raise IngestError(f"{where}: field 'confidence' must be a number in [0, 1], got {confidence!r}")
        try:
            time = optional_utc(label.get("time"), what="field 'time'") or now
        except (TypeError, ValueError) as exc:
            raise IngestError(f"{where}: {exc}") from None
        if (key, source) in seen:
            raise IngestError(f"{where}: repeats label #{seen[key, source]} (same event and source)")
        seen[key, source] = i
        parsed.append((key, str(value), source, float(confidence), time))

    event_ids_by_key = event_ids(session=session, model_id=model_id, keys=sorted({p[0] for p in parsed}))
    for i, (key, *_) in enumerate(parsed):
        if key not in event_ids_by_key:
            raise IngestError(f"label for event {key!r} (#{i}): model {model!r} has no event with this key")
    columns: dict[str, list[Any]] = {
        "event_id": [event_ids_by_key[key] for key, *_ in parsed],
        "value": [p[1] for p in parsed],
        "source": [p[2] for p in parsed],
        "confidence": [p[3] for p in parsed],
        "time": [p[4] for p in parsed],
    }
    with writer_turn(session), committing(session):
        inserted = insert_columns_ignoring_duplicates(
            session,
            table_of(Label),
            columns,
            unique=("event_id", "source"),
            constants={"model_id": model_id},
        )
    return IngestResult(inserted=inserted, duplicates=len(parsed) - inserted)


#: The fields of a label as clients send it (``POST /models/{name}/labels``, MQTT, JetStream):
#: ``key`` is the labelled event's key, ``label`` its class.
CONTRACT_LABEL_FIELDS = ("key", "label", "source", "confidence", "time")


def contract_labels(labels: Any) -> list[dict[str, Any]]:
    """Labels in the clients' contract (``{"key", "label", "source", "confidence"?, "time"?}``)
    as :func:`ingest_labels` takes them; ``IngestError`` names the first label at fault.

    >>> contract_labels([{"key": "e1", "label": "ok", "source": "person"}])
    [{'event_key': 'e1', 'value': 'ok', 'source': 'person'}]
    >>> contract_labels([{"key": "e1", "value": "ok"}])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftpilot.memory.ingest.IngestError: label #0: unknown field 'value'; fields are ['key', 'label', ...]
    """
    if not isinstance(labels, Sequence) or isinstance(labels, (str, bytes)):
        raise IngestError("labels must be a list of label objects")
    renamed = {"key": "event_key", "label": "value"}
    out: list[dict[str, Any]] = []
    for i, label in enumerate(labels):
        if not isinstance(label, Mapping):
            raise IngestError(f"label #{i}: must be an object, got {type(label).__name__}")
        unknown = sorted(set(label) - set(CONTRACT_LABEL_FIELDS))
        if unknown:
            raise IngestError(f"label #{i}: unknown field {unknown[0]!r}; fields are {list(CONTRACT_LABEL_FIELDS)}")
        out.append({renamed.get(str(k), str(k)): v for k, v in label.items()})
    return out


def event_ids(*, session: Session, model_id: int, keys: Sequence[str]) -> dict[str, int]:
    """The ids of the model's events with these client keys (keys not stored are absent)."""
    found: dict[str, int] = {}
    for part in chunks(keys):
        stmt = sa.select(Event.key, Event.id).where(Event.model_id == model_id, Event.key.in_(part))
        found.update(dict(session.execute(stmt).all()))
    return found


# --------------------------------------------------------------------------- alarms


def ingest_alarm(*, session: Session, alarm: Mapping[str, Any]) -> Alarm:
    """Store one alarm: :func:`ingest_alarms` of ``[alarm]``."""
    return ingest_alarms(session=session, alarms=[alarm])[0]


def ingest_alarms(*, session: Session, alarms: Sequence[Mapping[str, Any]]) -> list[Alarm]:
    """Store alarms, or update the stored ones with the same keys, in one transaction (with
    whatever the session holds uncommitted); every alarm is checked before any is written.

    ``alarm`` is ``{"key", "name", "severity", "status" (firing or resolved), "starts_at",
    "ends_at"? (required when resolved), "groups"? [...], "labels"? {...}, "model"? (name)}``.
    A later post of the same key (the same Alertmanager fingerprint) sets its status,
    severity, times, groups and labels.
    """
    parsed = [_parsed_alarm(session, alarm) for alarm in alarms]
    rows: list[Alarm] = []
    with committing(session):
        for key, values in parsed:
            row = session.scalars(sa.select(Alarm).where(Alarm.key == key).with_for_update()).first()
            if row is None:
                row = Alarm(key=key, **values)
                session.add(row)
            else:
                for name, value in values.items():
                    if name == "model_id" and value is None:
                        continue  # a resolve that omits the model keeps the link
                    setattr(row, name, value)
            rows.append(row)
    return rows


def _parsed_alarm(session: Session, alarm: Any) -> tuple[str, dict[str, Any]]:
    if not isinstance(alarm, Mapping):
        raise IngestError(f"an alarm must be an object, got {type(alarm).__name__}")
    key = alarm.get("key")
    if not isinstance(key, str) or not key:
        raise IngestError(f"alarm: field 'key' must be a non-empty string, got {key!r}")
    where = f"alarm {key!r}"
    unknown = sorted(set(alarm) - set(ALARM_FIELDS))
    if unknown:
        raise IngestError(f"{where}: unknown field {unknown[0]!r}; fields are {list(ALARM_FIELDS)}")
    for field in ("name", "severity"):
        if not isinstance(alarm.get(field), str) or not alarm[field]:
            raise IngestError(f"{where}: field {field!r} must be a non-empty string, got {alarm.get(field)!r}")
    status = alarm.get("status")
    if status not in ALARM_STATUSES:
        raise IngestError(f"{where}: field 'status' must be one of {list(ALARM_STATUSES)}, got {status!r}")
    try:
        if alarm.get("starts_at") is None:
            raise ValueError("field 'starts_at' is missing")
        starts_at = to_utc(alarm["starts_at"], what="field 'starts_at'")
        ends_at = optional_utc(alarm.get("ends_at"), what="field 'ends_at'")
    except (TypeError, ValueError) as exc:
        raise IngestError(f"{where}: {exc}") from None
    if status == "resolved" and ends_at is None:
        raise IngestError(f"{where}: a resolved alarm needs field 'ends_at'")
    if status == "firing":
        ends_at = None
    groups = alarm.get("groups") or []
    if not isinstance(groups, (list, tuple)) or not all(isinstance(g, str) and g for g in groups):
        raise IngestError(f"{where}: field 'groups' must be a list of non-empty strings, got {groups!r}")
    labels = alarm.get("labels") or {}
    if not isinstance(labels, Mapping):
        raise IngestError(f"{where}: field 'labels' must be an object, got {labels!r}")
    model_id = None
    if alarm.get("model") is not None:
        try:
            model_id = get_model(session=session, name=alarm["model"]).id
        except UnknownModelError as exc:
            raise IngestError(f"{where}: {exc}") from None
    values = {
        "name": alarm["name"],
        "severity": alarm["severity"],
        "status": status,
        "starts_at": starts_at,
        "ends_at": ends_at,
        "groups": list(groups),
        "labels": {str(k): str(v) for k, v in labels.items()},
        "model_id": model_id,
    }
    return key, values


_ALERTMANAGER_NO_END = "0001-01-01T00:00:00Z"


def alertmanager_to_alarms(payload: Mapping[str, Any], *, group_labels: Sequence[str]) -> list[dict[str, Any]]:
    """Convert a Prometheus Alertmanager webhook payload to generic alarms.

    The key is the alert's fingerprint (a hash of its labels when absent), the name its
    ``alertname`` label, the severity its ``severity`` label (``"warning"`` when absent), the
    model a ``model`` label. The affected group is the value of the first of ``group_labels``
    the alert carries (the deployment's ``Settings.alarm_group_labels``, e.g. ``["group"]``); an
    alert with none of them names no group. Annotations join the labels as
    ``annotation.<name>``. Times are aware UTC.

    Examples
    --------
    >>> payload = {"alerts": [{"status": "firing", "startsAt": "2026-03-01T10:00:00Z",
    ...                        "labels": {"alertname": "SegmentDown", "segment": "s-7", "group": "east"}}]}
    >>> alertmanager_to_alarms(payload, group_labels=["segment"])[0]["groups"]
    ['s-7']
    >>> alertmanager_to_alarms(payload, group_labels=["site"])[0]["groups"]
    []
    """
    if isinstance(group_labels, str):
        raise TypeError(f"group_labels must be a list of label names, got the string {group_labels!r}")
    alerts = payload.get("alerts") if isinstance(payload, Mapping) else None
    if not isinstance(alerts, list):
        raise IngestError("Alertmanager payload: field 'alerts' must be a list")
    converted: list[dict[str, Any]] = []
    for i, alert in enumerate(alerts):
        if not isinstance(alert, Mapping):
            raise IngestError(f"Alertmanager alert #{i}: must be an object")
        labels = {str(k): str(v) for k, v in (alert.get("labels") or {}).items()}
        annotations = {str(k): str(v) for k, v in (alert.get("annotations") or {}).items()}
        fingerprint = (
            alert.get("fingerprint")
            or hashlib.sha256("\n".join(f"{k}={v}" for k, v in sorted(labels.items())).encode()).hexdigest()[:16]
        )
        status = alert.get("status") or payload.get("status")
        ends = alert.get("endsAt")
        groups = [labels[name] for name in group_labels if labels.get(name)]
        try:
            starts_at = to_utc(alert.get("startsAt") or "", what="startsAt")
            ends_at = (
                None
                if status != "resolved" or not ends or ends == _ALERTMANAGER_NO_END
                else to_utc(ends, what="endsAt")
            )
        except (TypeError, ValueError) as exc:
            raise IngestError(f"Alertmanager alert {fingerprint!r} (#{i}): {exc}") from None
        generic: dict[str, Any] = {
            "key": fingerprint,
            "name": labels.get("alertname", "unnamed"),
            "severity": labels.get("severity", "warning"),
            "status": status,
            "starts_at": starts_at,
            "ends_at": ends_at,
            "groups": groups[:1],
            "labels": {
                **labels,
                **{f"annotation.{k}": v for k, v in annotations.items()},
            },
        }
        if labels.get("model"):
            generic["model"] = labels["model"]
        converted.append(generic)
    return converted
