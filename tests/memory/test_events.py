"""Reading events back: label visibility and trust, quarantines, limits, ids, snapshots."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from driftpilot.memory.events import count_events, events_by_ids, window
from driftpilot.memory.ingest import ingest_events, ingest_labels
from driftpilot.memory.labels import count_labels
from driftpilot.memory.quarantine import add_quarantine, list_quarantines
from driftpilot.memory.snapshots import content_hash, create_snapshot, snapshot_frame
from driftpilot.memory.tables import ManagedModel

from .helpers import T0, event

HOUR = timedelta(hours=1)


@pytest.fixture
def six(session: Session, ont: ManagedModel) -> ManagedModel:
    """Six events, one a minute from T0, on ports 0 and 1 alternately."""
    ingest_events(session=session, model="ont", events=[event(i) for i in range(6)])
    return ont


def test_labels_stay_invisible_until_their_time(session: Session, six: ManagedModel) -> None:
    ingest_labels(
        session=session,
        model="ont",
        labels=[
            {
                "event_key": event(0)["key"],
                "value": "offline",
                "source": "system",
                "time": T0 + HOUR,
            },
            {
                "event_key": event(0)["key"],
                "value": "online",
                "source": "person",
                "time": T0 + 2 * HOUR,
            },
            {
                "event_key": event(1)["key"],
                "value": "online",
                "source": "pseudo",
                "time": T0,
                "confidence": 0.6,
            },
        ],
    )

    def labels_at(visible_at):
        frame = window(
            session=session,
            model_id=six.id,
            start=None,
            end=None,
            visible_at=visible_at,
        )
        return list(
            zip(
                frame["label"].tolist()[:2],
                frame["label_source"].tolist()[:2],
                strict=True,
            )
        )

    assert labels_at(T0 - HOUR) == [(None, None), (None, None)]
    # A pseudo-label is never read as truth (what a model is judged or trained by).
    assert labels_at(T0 + HOUR) == [("offline", "system"), (None, None)]
    assert labels_at(T0 + 2 * HOUR) == [("online", "person"), (None, None)]
    assert labels_at(None) == [("online", "person"), (None, None)]
    labelled = window(
        session=session,
        model_id=six.id,
        start=None,
        end=None,
        visible_at=T0 + HOUR,
        labelled_only=True,
    )
    assert labelled["id"].tolist() == [1]
    assert count_labels(session=session, model_id=six.id) == 2
    assert count_labels(session=session, model_id=six.id, source="pseudo") == 1
    assert (
        count_labels(
            session=session,
            model_id=six.id,
            source="person",
            since=T0,
            until=T0 + 3 * HOUR,
        )
        == 1
    )


def test_window_bounds_and_limit(session: Session, six: ManagedModel) -> None:
    minute = timedelta(minutes=1)

    between = window(session=session, model_id=six.id, start=T0 + minute, end=T0 + 4 * minute)
    newest = window(session=session, model_id=six.id, start=None, end=None, limit=2)

    assert between["id"].tolist() == [2, 3, 4]
    assert newest["id"].tolist() == [5, 6]
    assert count_events(session=session, model_id=six.id, start=T0 + minute, end=T0 + 4 * minute) == 3


def test_quarantine_drops_its_events(session: Session, six: ManagedModel) -> None:
    minute = timedelta(minutes=1)
    ingest_events(session=session, model="ont", events=[event(6, group=None)])
    add_quarantine(
        session=session,
        model_id=six.id,
        start=T0,
        end=T0 + 3 * minute,
        groups=["port-0"],
        reason="OLT port down",
    )
    add_quarantine(
        session=session,
        model_id=six.id,
        start=T0 + 5 * minute,
        end=T0 + 5 * minute,
        groups=None,
        reason="bad data",
    )

    kept = window(session=session, model_id=six.id, start=None, end=None)
    everything = window(
        session=session,
        model_id=six.id,
        start=None,
        end=None,
        exclude_quarantined=False,
    )

    # event i is on port-(i % 2): 0 and 2 are quarantined by port, 5 by time; 6 has no group.
    assert kept["key"].str.split("/").str[0].tolist() == [
        "ont-1",
        "ont-3",
        "ont-4",
        "ont-6",
    ]
    assert len(everything) == 7
    assert [q.reason for q in list_quarantines(session=session, model_id=six.id)] == [
        "OLT port down",
        "bad data",
    ]


def test_events_by_ids(session: Session, six: ManagedModel) -> None:
    frame = events_by_ids(session=session, ids=[4, 2])

    assert frame["id"].tolist() == [2, 4]
    assert frame["temperature"].tolist() == [46.0, 48.0]
    with pytest.raises(LookupError, match=r"no events with ids \[99\]"):
        events_by_ids(session=session, ids=[2, 99])


def test_snapshot_keeps_its_labels(session: Session, six: ManagedModel) -> None:
    snapshot = create_snapshot(
        session=session,
        model_id=six.id,
        event_ids=[3, 1],
        labels=["offline", "online"],
        time=T0 + HOUR,
        stats={"n": 2},
    )

    frame = snapshot_frame(session=session, snapshot_id=snapshot.id)

    assert snapshot.n_rows == 2
    assert snapshot.content_hash == content_hash([1, 3], ["online", "offline"])
    assert snapshot.content_hash == "6eba8417d8af12416b76718cb7b599f451ccae8369eece8cebbf7c048d6de26a"
    assert frame[["id", "label", "label_source"]].to_dict("list") == {
        "id": [1, 3],
        "label": ["online", "offline"],
        "label_source": ["snapshot", "snapshot"],
    }
    with pytest.raises(ValueError, match=r"snapshot labels \['down'\] are not classes"):
        create_snapshot(
            session=session,
            model_id=six.id,
            event_ids=[1],
            labels=["down"],
            time=T0,
            stats={},
        )
