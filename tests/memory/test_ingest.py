"""The ingest path: events, labels, alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest
from sqlalchemy.orm import Session

from driftpilot.memory.events import count_events, window
from driftpilot.memory.ingest import (
    EventBatch,
    IngestError,
    IngestResult,
    ingest_events,
    ingest_labels,
)
from driftpilot.memory.managed import UnknownModelError
from driftpilot.memory.tables import ManagedModel

from .helpers import T0, event


def test_ingest_mappings_then_resend_is_idempotent(session: Session, ont: ManagedModel) -> None:
    first = ingest_events(session=session, model="ont", events=[event(i) for i in range(5)])
    again = ingest_events(session=session, model="ont", events=[event(i) for i in range(3, 8)])

    assert first == IngestResult(inserted=5, duplicates=0)
    assert again == IngestResult(inserted=3, duplicates=2)
    assert count_events(session=session, model_id=ont.id) == 8


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"entity": "ont-other"}, "entity"),
        ({"time": "2026-03-02T00:00:00Z"}, "time"),
        ({"features": {"rx_power": -27.5, "temperature": 46.0, "firmware": "v1"}}, "features"),
        ({"prediction": "offline"}, "prediction"),
    ],
)
def test_a_resent_key_with_other_content_is_refused_and_nothing_of_its_batch_is_stored(
    session: Session, ont: ManagedModel, change: dict[str, object], field: str
) -> None:
    ingest_events(session=session, model="ont", events=[event(1)])
    changed = event(1) | change

    with pytest.raises(IngestError, match=f"stored before with another '{field}'"):
        ingest_events(session=session, model="ont", events=[event(2), changed])

    assert count_events(session=session, model_id=ont.id) == 1  # event 2 was not kept either
    # The exact event again is a retry: counted a duplicate, not refused.
    assert ingest_events(session=session, model="ont", events=[event(1)]) == IngestResult(inserted=0, duplicates=1)


def test_ingest_stores_what_was_sent(session: Session, ont: ManagedModel) -> None:
    sent = event(
        1,
        time="2026-03-01T12:01:00+02:00",
        group=None,
        served_version=None,
        prediction=None,
        probabilities=None,
    )
    ingest_events(session=session, model="ont", events=[sent])

    frame = window(session=session, model_id=ont.id, start=None, end=None)

    assert frame.to_dict("records") == [
        {
            "id": 1,
            "key": "ont-1/2026-03-01T10:01:00",
            "time": datetime(2026, 3, 1, 10, 1, tzinfo=UTC),  # +02:00 read back as the same instant in UTC
            "entity": "ont-1",
            "group": None,
            "served_version": None,
            "prediction": None,
            "label": None,
            "label_source": None,
            "rx_power": -20.1,
            "temperature": 46.0,
            "firmware": "v1",
        }
    ]
    assert list(frame.dtypes.astype(str))[:3] == ["int64", "object", "datetime64[us, UTC]"]


def _batch(n: int) -> EventBatch:
    return EventBatch(
        keys=[f"e{i}" for i in range(n)],
        times=[T0 + timedelta(seconds=i) for i in range(n)],
        entities=[f"ont-{i % 7}" for i in range(n)],
        groups=[f"port-{i % 2}" for i in range(n)],
        features={
            "rx_power": np.linspace(-25.0, -15.0, n),
            "temperature": list(range(n)),
            "firmware": ["v1", "v2"] * (n // 2),
        },
        served_version=[2] * n,
        prediction=["online", "offline"] * (n // 2),
        probabilities=np.tile([0.6, 0.4], (n, 1)),
    )


def test_ingest_event_batch(session: Session, ont: ManagedModel) -> None:
    batch = _batch(1000)

    first = ingest_events(session=session, model="ont", events=batch)
    again = ingest_events(session=session, model="ont", events=batch)
    frame = window(session=session, model_id=ont.id, start=T0, end=T0 + timedelta(seconds=10))

    assert len(batch) == 1000
    assert first == IngestResult(inserted=1000, duplicates=0)
    assert again == IngestResult(inserted=0, duplicates=1000)
    assert frame["key"].tolist() == [f"e{i}" for i in range(10)]
    assert frame["temperature"].tolist() == [float(i) for i in range(10)]
    assert frame["rx_power"].iloc[-1] == pytest.approx(-25.0 + 9 * 10 / 999)
    assert frame["firmware"].tolist()[:3] == ["v1", "v2", "v1"]
    assert frame["prediction"].tolist()[:2] == ["online", "offline"]
    assert frame["served_version"].tolist()[:2] == [2, 2]


BAD_EVENTS = [
    (
        {"entity": None},
        "event 'ont-2/2026-03-01T10:02:00' (#2): field 'entity' is missing",
    ),
    (
        {"features": {"rx_power": -20.0, "temperature": 40.0}},
        "event 'ont-2/2026-03-01T10:02:00' (#2): feature 'firmware' is missing",
    ),
    (
        {"features": {"rx_power": "n/a", "temperature": 40.0, "firmware": "v1"}},
        "event 'ont-2/2026-03-01T10:02:00' (#2): feature 'rx_power' must be a number, got 'n/a'",
    ),
    (
        {"features": {"rx_power": float("-inf"), "temperature": 40.0, "firmware": "v1"}},
        "event 'ont-2/2026-03-01T10:02:00' (#2): feature 'rx_power' must be a finite number or null (missing), "
        "got -inf",
    ),
    (
        {"features": {"rx_power": True, "temperature": 40.0, "firmware": "v1"}},
        "event 'ont-2/2026-03-01T10:02:00' (#2): feature 'rx_power' must be a number, got True",
    ),
    (
        {"features": {"rx_power": -20.0, "temperature": 40.0, "firmware": ""}},
        "event 'ont-2/2026-03-01T10:02:00' (#2): feature 'firmware' must be a non-empty string, got ''",
    ),
    (
        {"prediction": "maybe"},
        (
            "event 'ont-2/2026-03-01T10:02:00' (#2): field 'prediction' must be one of "
            "['online', 'offline'], got 'maybe'"
        ),
    ),
    (
        {"time": "yesterday"},
        "event 'ont-2/2026-03-01T10:02:00' (#2): field 'time' must be an ISO 8601 time, got 'yesterday'",
    ),
    (
        {"key": "ont-0/2026-03-01T10:00:00"},
        "event 'ont-0/2026-03-01T10:00:00' (#2): key repeats event #0 of this batch",
    ),
]


@pytest.mark.parametrize(
    ("change", "message"),
    BAD_EVENTS,
    ids=[m.split(": ", 1)[1][:30] for _, m in BAD_EVENTS],
)
def test_a_bad_event_refuses_the_whole_batch(session: Session, ont: ManagedModel, change: dict, message: str) -> None:
    ingest_events(session=session, model="ont", events=[event(100)])
    batch = [event(0), event(1), event(2, **change), event(3)]

    with pytest.raises(IngestError) as error:
        ingest_events(session=session, model="ont", events=batch)

    assert str(error.value) == message
    assert count_events(session=session, model_id=ont.id) == 1


def test_a_missing_number_is_stored_as_missing_and_a_resend_of_it_is_a_duplicate(
    session: Session, ont: ManagedModel
) -> None:
    # A reading that did not come: omitted, null, or NaN (a CSV's empty cell) are all "missing".
    batch = [
        event(0, features={"rx_power": -20.0, "firmware": "v1"}),
        event(1, features={"rx_power": None, "temperature": 41.0, "firmware": "v1"}),
        event(2, features={"rx_power": float("nan"), "temperature": 42.0, "firmware": "v1"}),
    ]

    first = ingest_events(session=session, model="ont", events=batch)
    again = ingest_events(session=session, model="ont", events=batch)

    frame = window(session=session, model_id=ont.id, start=None, end=None)
    assert (first.inserted, again.duplicates) == (3, 3)
    assert frame["temperature"].isna().tolist() == [True, False, False]
    assert frame["rx_power"].isna().tolist() == [False, True, True]


def test_unknown_model_refuses_the_batch(session: Session, ont: ManagedModel) -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'onu'"):
        ingest_events(session=session, model="onu", events=[event(0)])
    assert count_events(session=session, model_id=ont.id) == 0


def test_a_bad_column_refuses_the_whole_event_batch(session: Session, ont: ManagedModel) -> None:
    batch = _batch(10)
    batch.features["rx_power"][7] = np.inf

    with pytest.raises(IngestError) as error:
        ingest_events(session=session, model="ont", events=batch)

    assert str(error.value) == "event 'e7' (#7): feature 'rx_power' must be a finite number or null (missing), got inf"
    assert count_events(session=session, model_id=ont.id) == 0


def test_labels_are_idempotent_and_checked(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
    key = event(1)["key"]
    labels = [{"event_key": key, "value": "offline", "time": T0 + timedelta(hours=1)}]

    first = ingest_labels(session=session, model="ont", labels=labels)
    again = ingest_labels(session=session, model="ont", labels=labels)
    with pytest.raises(IngestError) as unknown_key:
        ingest_labels(
            session=session,
            model="ont",
            labels=[*labels, {"event_key": "ont-9", "value": "online"}],
        )
    with pytest.raises(IngestError) as bad_value:
        ingest_labels(session=session, model="ont", labels=[{"event_key": key, "value": "down"}])

    assert first == IngestResult(inserted=1, duplicates=0)
    assert again == IngestResult(inserted=0, duplicates=1)
    assert str(unknown_key.value) == "label for event 'ont-9' (#1): model 'ont' has no event with this key"
    assert str(bad_value.value) == (
        f"label for event {key!r} (#0): field 'value' must be one of ['online', 'offline'], got 'down'"
    )


def test_aware_and_naive_times_agree(session: Session, ont: ManagedModel) -> None:
    aware = datetime(2026, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))
    ingest_events(session=session, model="ont", events=[event(0, time=aware)])

    inside = window(session=session, model_id=ont.id, start=T0, end=T0 + timedelta(seconds=1))
    outside = window(session=session, model_id=ont.id, start=T0 + timedelta(seconds=1), end=None)

    assert len(inside) == 1
    assert len(outside) == 0
