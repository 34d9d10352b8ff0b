"""Versions, releases, label requests and alarms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.orm import Session

from driftpilot.config import Settings
from driftpilot.memory.alarms import active_alarms, alarms_between
from driftpilot.memory.ingest import alertmanager_to_alarms, ingest_alarm, ingest_events
from driftpilot.memory.label_requests import (
    add_label_requests,
    count_label_requests,
    mark_answered,
    open_label_requests,
)
from driftpilot.memory.releases import (
    active_release,
    end_release,
    list_releases,
    start_release,
)
from driftpilot.memory.tables import ManagedModel
from driftpilot.memory.versions import (
    add_version,
    champion,
    get_version,
    list_versions,
    set_stage,
)

from .helpers import T0, event

SHA = "ab" * 32


def test_versions_count_up_and_one_champion_remains(session: Session, ont: ManagedModel) -> None:
    first = add_version(session=session, model_id=ont.id, time=T0, stage="champion", metrics={"f1": 0.9})
    second = add_version(
        session=session,
        model_id=ont.id,
        time=T0,
        parent_id=first.id,
        artifacts={"onnx": {"path": "v2/model.onnx", "sha256": SHA}},
    )

    set_stage(session=session, version_id=second.id, stage="champion")

    assert [(v.number, v.stage) for v in list_versions(session=session, model_id=ont.id)] == [
        (1, "archived"),
        (2, "champion"),
    ]
    best = champion(session=session, model_id=ont.id)
    assert best is not None and best.id == second.id
    assert get_version(session=session, model_id=ont.id, number=2).artifacts == {
        "onnx": {"path": "v2/model.onnx", "sha256": SHA}
    }
    with pytest.raises(LookupError, match=f"model {ont.id} has no version 3"):
        get_version(session=session, model_id=ont.id, number=3)
    with pytest.raises(ValueError, match="stage must be one of"):
        set_stage(session=session, version_id=second.id, stage="gold")


def test_one_release_at_a_time(session: Session, ont: ManagedModel) -> None:
    base = add_version(session=session, model_id=ont.id, time=T0, stage="champion")
    canary = add_version(session=session, model_id=ont.id, time=T0, stage="canary")
    release = start_release(
        session=session,
        model_id=ont.id,
        version_id=canary.id,
        baseline_version_id=base.id,
        share=0.1,
        started_at=T0,
    )

    with pytest.raises(ValueError, match="already has release"):
        start_release(
            session=session,
            model_id=ont.id,
            version_id=canary.id,
            baseline_version_id=None,
            share=0.5,
            started_at=T0,
        )
    running = active_release(session=session, model_id=ont.id)
    assert running is not None and running.id == release.id
    end_release(
        session=session,
        release_id=release.id,
        ended_at=T0 + timedelta(hours=2),
        verdict="promote",
        evidence={"delta_f1": 0.04},
    )

    assert active_release(session=session, model_id=ont.id) is None
    assert [(r.verdict, r.evidence) for r in list_releases(session=session, model_id=ont.id)] == [
        ("promote", {"delta_f1": 0.04})
    ]


def test_label_requests_open_once_per_event(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])

    opened = add_label_requests(
        session=session,
        model_id=ont.id,
        event_ids=[1, 2],
        reasons=["uncertain", "novel"],
        time=T0,
    )
    again = add_label_requests(session=session, model_id=ont.id, event_ids=[2, 3], reasons=["x", "y"], time=T0)
    answered = mark_answered(session=session, event_ids=[1], answered_at=T0 + timedelta(hours=1))

    assert (opened, again, answered) == (2, 1, 1)
    assert [(r.event_id, r.reason) for r in open_label_requests(session=session, model_id=ont.id)] == [
        (2, "novel"),
        (3, "y"),
    ]
    assert count_label_requests(session=session, model_id=ont.id, since=T0, until=T0 + timedelta(days=1)) == 3


ALERTMANAGER: dict[str, Any] = {
    "version": "4",
    "status": "firing",
    "receiver": "driftpilot",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "OltPortDown",
                "severity": "critical",
                "olt_port": "olt-3/1/7",
                "model": "ont",
            },
            "annotations": {"summary": "PON port down"},
            "startsAt": "2026-03-01T10:00:00.123456789Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": "a1b2c3d4e5f60718",
        },
        {
            "status": "resolved",
            "labels": {"alertname": "HighTemp", "group": "site-9"},
            "annotations": {},
            "startsAt": "2026-03-01T08:00:00+01:00",
            "endsAt": "2026-03-01T09:30:00+01:00",
            "fingerprint": "0f0e0d0c0b0a0908",
        },
    ],
}


def test_alertmanager_payload_becomes_generic_alarms() -> None:
    # A fibre network names the port an alarm takes down; other alerts fall back to "group".
    assert alertmanager_to_alarms(ALERTMANAGER, group_labels=["olt_port", "group"]) == [
        {
            "key": "a1b2c3d4e5f60718",
            "name": "OltPortDown",
            "severity": "critical",
            "status": "firing",
            "starts_at": datetime(2026, 3, 1, 10, 0, 0, 123456, tzinfo=UTC),
            "ends_at": None,
            "groups": ["olt-3/1/7"],
            "labels": {
                "alertname": "OltPortDown",
                "severity": "critical",
                "olt_port": "olt-3/1/7",
                "model": "ont",
                "annotation.summary": "PON port down",
            },
            "model": "ont",
        },
        {
            "key": "0f0e0d0c0b0a0908",
            "name": "HighTemp",
            "severity": "warning",
            "status": "resolved",
            "starts_at": datetime(2026, 3, 1, 7, 0, tzinfo=UTC),
            "ends_at": datetime(2026, 3, 1, 8, 30, tzinfo=UTC),
            "groups": ["site-9"],
            "labels": {"alertname": "HighTemp", "group": "site-9"},
        },
    ]


def test_alarm_groups_come_from_the_configured_labels_only(monkeypatch: pytest.MonkeyPatch) -> None:
    port_alarm, group_alarm = ALERTMANAGER["alerts"]

    # The default configuration reads "group": a port label is just a label then.
    monkeypatch.delenv("DRIFTPILOT_ALARM_GROUP_LABELS", raising=False)
    default = Settings().alarm_group_labels
    assert default == ["group"]
    assert [a["groups"] for a in alertmanager_to_alarms(ALERTMANAGER, group_labels=default)] == [[], ["site-9"]]

    monkeypatch.setenv("DRIFTPILOT_ALARM_GROUP_LABELS", '["olt_port"]')
    configured = Settings().alarm_group_labels
    assert configured == ["olt_port"]
    assert [a["groups"] for a in alertmanager_to_alarms(ALERTMANAGER, group_labels=configured)] == [["olt-3/1/7"], []]
    # The labels are kept whole whichever of them names the group.
    assert alertmanager_to_alarms(ALERTMANAGER, group_labels=default)[0]["labels"]["olt_port"] == "olt-3/1/7"

    # Several labels: the first one an alert carries names its group.
    both = {**port_alarm, "labels": {**port_alarm["labels"], "group": "site-1"}}
    (port_first,) = alertmanager_to_alarms({"alerts": [both]}, group_labels=["olt_port", "group"])
    (group_first,) = alertmanager_to_alarms({"alerts": [both]}, group_labels=["group", "olt_port"])
    assert (port_first["groups"], group_first["groups"]) == (["olt-3/1/7"], ["site-1"])

    with pytest.raises(TypeError, match="list of label names"):
        alertmanager_to_alarms(ALERTMANAGER, group_labels="olt_port")


def test_alarms_are_idempotent_by_key_and_resolve(session: Session, ont: ManagedModel) -> None:
    firing, _ = alertmanager_to_alarms(ALERTMANAGER, group_labels=["olt_port"])
    stored = ingest_alarm(session=session, alarm=firing)
    ingest_alarm(session=session, alarm=firing)
    at = datetime(2026, 3, 1, 11, 0)

    assert [a.key for a in active_alarms(session=session, at=at)] == ["a1b2c3d4e5f60718"]
    resolved = ingest_alarm(
        session=session,
        alarm={**firing, "status": "resolved", "ends_at": "2026-03-01T10:30:00Z"},
    )

    assert resolved.id == stored.id
    assert (resolved.status, resolved.ends_at, resolved.model_id) == (
        "resolved",
        datetime(2026, 3, 1, 10, 30, tzinfo=UTC),
        ont.id,
    )
    assert active_alarms(session=session, at=at) == []
    assert [a.key for a in alarms_between(session=session, start=T0, end=at)] == ["a1b2c3d4e5f60718"]
