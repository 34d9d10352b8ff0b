"""Times in memory: whatever zone goes in, aware UTC comes out, and the stored text is naive UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory import golden
from driftpilot.memory.alarms import claim_signature
from driftpilot.memory.alerts import raise_alert
from driftpilot.memory.approvals import decide_approval, request_approval
from driftpilot.memory.corpus import exclude
from driftpilot.memory.dead_letters import record_dead_letter
from driftpilot.memory.decisions import list_decisions, record_decision
from driftpilot.memory.events import events_by_ids, last_group, window
from driftpilot.memory.ingest import ingest_alarm, ingest_events, ingest_labels
from driftpilot.memory.label_requests import add_label_requests, mark_answered
from driftpilot.memory.leases import take_lease
from driftpilot.memory.managed import register_model
from driftpilot.memory.quarantine import add_quarantine
from driftpilot.memory.releases import end_release, serving_at, start_release
from driftpilot.memory.schemas import Rolling
from driftpilot.memory.snapshots import create_snapshot, snapshot_frame
from driftpilot.memory.tables import Base, Event, ManagedModel, UTCDateTime
from driftpilot.memory.tokens import create_token
from driftpilot.memory.versions import add_version, version_of_run

from .conftest import ONT_SCHEMA
from .helpers import T0, event

PLUS_TWO = timezone(timedelta(hours=2))
# One instant three ways: naive (taken as UTC), aware in another zone, ISO text with a zone.
AWARE_T0 = T0.replace(tzinfo=UTC)
T0_PLUS_TWO = AWARE_T0.astimezone(PLUS_TWO)


def _fill_every_table(session: Session, model: ManagedModel) -> None:
    """At least one row in every table with a time column, times given in mixed forms."""
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
    # A model with rolling features keeps its entities' readings (entity_state).
    rolling = ONT_SCHEMA.model_copy(update={"rolling": Rolling()})
    register_model(session=session, name="ont-rolling", task="tabular", family="mlp", schema=rolling)
    ingest_events(session=session, model="ont-rolling", events=[event(i) for i in range(3)])
    ingest_labels(
        session=session,
        model="ont",
        labels=[{"event_key": event(0)["key"], "value": "offline", "source": "person", "time": T0_PLUS_TWO}],
    )
    ingest_alarm(
        session=session,
        alarm={
            "key": "a-1",
            "name": "OltPortDown",
            "severity": "critical",
            "status": "resolved",
            "starts_at": "2026-03-01T12:00:00+02:00",
            "ends_at": T0_PLUS_TWO + timedelta(hours=1),
        },
    )
    snapshot = create_snapshot(
        session=session, model_id=model.id, event_ids=[1], labels=["offline"], time=T0_PLUS_TWO, stats={}
    )
    base = add_version(session=session, model_id=model.id, time=T0, stage="champion", snapshot_id=snapshot.id)
    candidate = add_version(session=session, model_id=model.id, time=T0_PLUS_TWO, stage="canary")
    release = start_release(
        session=session,
        model_id=model.id,
        version_id=candidate.id,
        baseline_version_id=base.id,
        share=0.1,
        started_at=T0_PLUS_TWO,
    )
    end_release(session=session, release_id=release.id, ended_at=T0 + timedelta(hours=1), verdict="promote")
    record_decision(
        session=session,
        model_id=model.id,
        run_id="run-1",
        agent="monitor",
        time=T0_PLUS_TWO,
        trigger=None,
        evidence=None,
        diagnosis=None,
        policy_verdicts=None,
        action="check",
        outcome="healthy",
        rationale="",
    )
    approval = request_approval(
        session=session, model_id=model.id, run_id="run-1", action="promote", subject={}, reason="", time=T0
    )
    decide_approval(session=session, approval_id=approval.id, approve=True, by="alice", at=T0_PLUS_TWO)
    add_label_requests(session=session, model_id=model.id, event_ids=[2, 3], reasons=["a", "b"], time=T0_PLUS_TWO)
    mark_answered(session=session, event_ids=[2], answered_at=T0_PLUS_TWO)
    add_quarantine(session=session, model_id=model.id, start=T0_PLUS_TWO, end=None, groups=None, reason="test")
    golden.pin(session=session, model_id=model.id, event_ids=[1], time=T0_PLUS_TWO)
    exclude(session=session, model_id=model.id, event_ids=[2], kind="deleted", reasons=["test"], by="bob", time=T0)
    create_token(session=session, name="alice", role="operator", now="2026-03-01T12:00:00+02:00")
    take_lease(session=session, model_id=model.id, holder="loop-1", now=T0_PLUS_TWO, ttl=timedelta(minutes=2))
    claim_signature(session=session, signature="sha256=00", now=T0_PLUS_TWO, forget_before=T0)
    session.commit()
    raise_alert(
        session=session,
        key="k",
        name="DriftpilotRollback",
        severity="warning",
        labels={},
        annotations={},
        starts_at=T0_PLUS_TWO,
        at=T0_PLUS_TWO,
        model_id=model.id,
    )
    record_dead_letter(session=session, source="mqtt", subject="driftpilot/x/events", payload=b"{", reason="bad JSON")


def _times_of_every_row(session: Session) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for mapper in Base.registry.mappers:
        columns = [c.key for c in mapper.columns if isinstance(c.type, UTCDateTime)]
        if columns:
            rows = session.scalars(sa.select(mapper.class_)).all()
            found[mapper.class_.__name__] = [getattr(row, c) for row in rows for c in columns]
    return found


def test_every_table_returns_aware_utc_times(session: Session, ont: ManagedModel) -> None:
    _fill_every_table(session, ont)

    in_session = _times_of_every_row(session)
    session.expunge_all()  # read back from the database, not from the objects assigned
    reloaded = _times_of_every_row(session)

    for found in (in_session, reloaded):
        assert all(found.values()), f"tables without rows: {[name for name, times in found.items() if not times]}"
        not_utc = {name: t for name, times in found.items() for t in times if t is not None and t.tzinfo is not UTC}
        assert not_utc == {}


def test_an_aware_time_in_another_zone_reads_back_as_the_same_instant(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(0, time=T0_PLUS_TWO)])
    snapshot = create_snapshot(
        session=session, model_id=ont.id, event_ids=[1], labels=["online"], time=T0_PLUS_TWO, stats={}
    )
    session.expunge_all()

    stored = session.scalars(sa.select(Event)).one()
    text = session.execute(sa.select(sa.type_coerce(Event.time, sa.String))).scalar_one()

    assert stored.time == AWARE_T0 and stored.time.tzinfo is UTC
    assert session.get(type(snapshot), snapshot.id).time == AWARE_T0  # type: ignore[union-attr]
    # The stored form did not change: naive UTC (SQLite's text, PostgreSQL's timestamp).
    assert str(text).startswith("2026-03-01 10:00:00")


def test_event_frames_have_an_aware_utc_time_column(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
    snapshot = create_snapshot(
        session=session, model_id=ont.id, event_ids=[1, 2], labels=["online", "offline"], time=T0, stats={}
    )

    frames = {
        "window": window(session=session, model_id=ont.id, start=None, end=None),
        "no features": window(session=session, model_id=ont.id, start=None, end=None, with_features=False),
        "by ids": events_by_ids(session=session, ids=[1, 3]),
        "no ids": events_by_ids(session=session, ids=[]),
        "snapshot": snapshot_frame(session=session, snapshot_id=snapshot.id),
        "golden": golden.golden_frame(session=session, model_id=ont.id),
    }

    assert {name: str(frame["time"].dtype) for name, frame in frames.items()} == dict.fromkeys(
        frames, "datetime64[us, UTC]"
    )
    assert frames["window"]["time"].iloc[1] == pd.Timestamp("2026-03-01T12:01:00+02:00")


def test_comparisons_bind_any_zone_through_the_column_type(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
    add_version(session=session, model_id=ont.id, time=T0, metrics={"run_id": "r"})
    ten_past_in_plus_two = datetime(2026, 3, 1, 12, 1, tzinfo=PLUS_TWO)  # 10:01 UTC

    # [T0, 10:01 UTC): events 0 only, whichever form the bounds take.
    for end in (ten_past_in_plus_two, T0 + timedelta(minutes=1), "2026-03-01T10:01:00Z"):
        frame = window(session=session, model_id=ont.id, start=T0_PLUS_TWO, end=end)  # type: ignore[arg-type]
        assert frame["key"].tolist() == [event(0)["key"]]
    assert last_group(session=session, model_id=ont.id, entity="ont-1", at=ten_past_in_plus_two) == "port-1"
    assert last_group(session=session, model_id=ont.id, entity="ont-2", at=ten_past_in_plus_two) is None
    assert version_of_run(session=session, model_id=ont.id, run_id="r", time=T0_PLUS_TWO) is not None
    assert serving_at(session=session, model_id=ont.id, at=T0_PLUS_TWO) is None
    assert [d.time for d in list_decisions(session=session, since=T0_PLUS_TWO)] == []
