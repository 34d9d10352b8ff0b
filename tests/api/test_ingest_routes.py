"""Data in over HTTP: stored before the answer, idempotent by key, and every refusal a 4xx that
names what was wrong, with nothing stored."""

from __future__ import annotations

import json
import time

import pytest
import sqlalchemy as sa

from driftpilot.api.ingest import sign
from driftpilot.memory.tables import Alarm, Event, HookSignature, Label

from .conftest import SECRET

NUMBERS = (
    "rx_power tx_power temperature voltage bias_current crc_errors fec_corrected packet_loss cpu "
    "memory uptime_hours reboots_24h"
).split()


def _event(i: int, **changes) -> dict:
    features = {name: float(i % 7) for name in NUMBERS} | {
        "device_model": "HG8245",
        "firmware": "v1.4",
        "region": "north",
    }
    return {
        "key": f"gw-{i}",
        "entity": f"ont-{i % 5}",
        "time": f"2026-03-01T10:{i % 60:02d}:00Z",
        "group": "port-1",
        "features": features,
        "served_version": 1,
        "prediction": "online",
    } | changes


def _count(sessions, table) -> int:
    with sessions() as session:
        return int(session.scalar(sa.select(sa.func.count()).select_from(table)))


def test_events_and_labels_are_stored_once_and_resends_are_duplicates(service) -> None:
    client, sessions, headers, _ = service
    url = "/models/ont-offline/"
    first = client.post(url + "events", json={"events": [_event(i) for i in range(20)]}, headers=headers["ingest"])
    again = client.post(url + "events", json={"events": [_event(i) for i in range(10, 30)]}, headers=headers["ingest"])
    labels = {"labels": [{"key": f"gw-{i}", "label": "fibre", "source": "person"} for i in range(5)]}
    labelled = client.post(url + "labels", json=labels, headers=headers["ingest"])
    relabelled = client.post(url + "labels", json=labels, headers=headers["ingest"])

    assert first.json() == {"inserted": 20, "duplicates": 0}
    assert again.json() == {"inserted": 10, "duplicates": 10}
    assert labelled.json() == {"inserted": 5, "duplicates": 0}
    assert relabelled.json() == {"inserted": 0, "duplicates": 5}
    assert (_count(sessions, Event), _count(sessions, Label)) == (30, 5)
    metrics = client.get("/metrics", headers=headers["auditor"]).text
    assert 'driftpilot_events_ingested_total{model="ont-offline",source="http"} 30.0' in metrics
    assert 'driftpilot_duplicates_total{model="ont-offline",source="http"} 15.0' in metrics
    assert 'driftpilot_ingest_seconds_count{route="events"} 2.0' in metrics


@pytest.mark.parametrize(
    ("route", "body", "code", "names"),
    [
        ("nope/events", {"events": [_event(1)]}, 404, "unknown model 'nope'"),
        (
            "ont-offline/events",
            {"events": [_event(1, features={"rx_power": 1.0})]},
            422,
            "feature 'device_model' is missing",
        ),
        ("ont-offline/events", {"events": [_event(1, colour="red")]}, 422, "unknown field 'colour'"),
        ("ont-offline/events", {"events": [_event(1, time="yesterday")]}, 422, "gw-1"),
        ("ont-offline/events", {"events": [_event(1, prediction="maybe")]}, 422, "'prediction'"),
        ("ont-offline/events", {"events": [_event(i) for i in range(51)]}, 413, "the limit is 50"),
        ("ont-offline/events", {"events": []}, 422, "field 'events' is empty"),
        ("ont-offline/events", {"rows": [_event(1)]}, 422, "a list 'events'"),
        ("ont-offline/labels", {"labels": [{"key": "gw-404", "label": "fibre"}]}, 422, "no event with this key"),
        ("ont-offline/labels", {"labels": [{"key": "gw-1", "label": "alien"}]}, 422, "must be one of"),
        ("ont-offline/labels", {"labels": [{"key": "gw-1", "label": "fibre", "who": "x"}]}, 422, "unknown field 'who'"),
    ],
)
def test_a_refused_batch_names_the_fault_and_stores_nothing(service, route, body, code, names) -> None:
    client, sessions, headers, _ = service
    answer = client.post(f"/models/{route}", json=body, headers=headers["ingest"])

    assert answer.status_code == code, answer.text
    assert names in answer.json()["detail"]
    assert _count(sessions, Event) == 0 and _count(sessions, Label) == 0


def test_non_finite_numbers_and_a_key_resent_with_other_content_are_refused(service) -> None:
    client, sessions, headers, _ = service
    url = "/models/ont-offline/events"
    body = json.dumps({"events": [_event(1)]}).replace('"rx_power": 1.0', '"rx_power": NaN')
    client.post(url, json={"events": [_event(2)]}, headers=headers["ingest"])

    nan = client.post(url, content=body, headers=headers["ingest"])
    infinite = client.post(url, content=body.replace("NaN", "1e999"), headers=headers["ingest"])
    changed = client.post(url, json={"events": [_event(3), _event(2, entity="ont-9")]}, headers=headers["ingest"])
    broken = client.post(url, content=b"{not json", headers=headers["ingest"])

    for answer in (nan, infinite):
        assert answer.status_code == 400 and "every feature must be a finite number" in answer.json()["detail"]
    assert (
        changed.status_code == 409 and "'gw-2'" in changed.json()["detail"] and "'entity'" in changed.json()["detail"]
    )
    assert broken.status_code == 400 and "not valid JSON" in broken.json()["detail"]
    assert _count(sessions, Event) == 1  # only event 2, from the first request


ALERT = {
    "version": "4",
    "groupKey": '{}:{alertname="OltPortDown"}',
    "status": "firing",
    "receiver": "driftpilot",
    "groupLabels": {"alertname": "OltPortDown"},
    "commonLabels": {"alertname": "OltPortDown"},
    "commonAnnotations": {},
    "externalURL": "http://alertmanager:9093",
    "truncatedAlerts": 0,
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "OltPortDown",
                "olt_port": "olt-3/1",
                "severity": "critical",
                "model": "ont-offline",
            },
            "annotations": {"summary": "port down"},
            "startsAt": "2026-03-01T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "c0ffee",
        }
    ],
}


def test_alertmanager_firing_then_resolved_updates_one_alarm_and_wakes_the_loop(service) -> None:
    client, sessions, headers, woken = service
    resolved = json.loads(json.dumps(ALERT))
    resolved["status"] = resolved["alerts"][0]["status"] = "resolved"
    resolved["alerts"][0]["endsAt"] = "2026-03-01T11:00:00Z"

    fired = client.post("/hooks/alertmanager", json=ALERT, headers=headers["ingest"])
    ended = client.post("/hooks/alertmanager", json=resolved, headers=headers["ingest"])
    wrong = client.post("/hooks/alertmanager", json=ALERT | {"version": "3"}, headers=headers["ingest"])

    assert fired.status_code == ended.status_code == 200
    with sessions() as session:
        (alarm,) = session.scalars(sa.select(Alarm)).all()
    assert (alarm.key, alarm.status, alarm.groups) == ("c0ffee", "resolved", ["olt-3/1"])
    assert woken == [["ont-offline"], ["ont-offline"]]
    assert wrong.status_code == 422 and "version" in wrong.json()["detail"]


def _signed(client, headers, body: bytes, *, at: int | None = None, secret: str = SECRET):
    at = int(time.time()) if at is None else at
    extra = {"X-Driftpilot-Timestamp": str(at), "X-Driftpilot-Signature": sign(secret, at, body)}
    return client.post("/hooks/alarms", content=body, headers=headers | extra)


def test_generic_alarms_need_a_fresh_signature_used_once(service) -> None:
    client, sessions, headers, _ = service
    alarm = {
        "key": "a-1",
        "name": "FibreCut",
        "severity": "critical",
        "status": "firing",
        "starts_at": "2026-03-01T10:00:00Z",
    }
    body = json.dumps({"alarms": [alarm]}).encode()
    now = int(time.time())

    accepted = _signed(client, headers["ingest"], body, at=now)
    replayed = _signed(client, headers["ingest"], body, at=now)
    stale = _signed(client, headers["ingest"], body, at=now - 3600)
    forged = _signed(client, headers["ingest"], body, secret="guess")
    unsigned = client.post("/hooks/alarms", content=body, headers=headers["ingest"])
    bad = _signed(client, headers["ingest"], json.dumps({"alarms": [alarm | {"status": "maybe"}]}).encode())

    assert accepted.status_code == 200 and accepted.json() == {"alarms": 1}
    assert (replayed.status_code, replayed.json()["detail"]) == (
        401,
        "this signature was used before: a replayed request",
    )
    assert stale.status_code == 401 and "stale" in stale.json()["detail"]
    assert forged.status_code == 401 and "bad X-Driftpilot-Signature" in forged.json()["detail"]
    assert unsigned.status_code == 401 and "missing header" in unsigned.json()["detail"]
    assert bad.status_code == 422 and "'status'" in bad.json()["detail"]
    assert _count(sessions, Alarm) == 1
    assert _count(sessions, HookSignature) == 1  # the refused batch's signature was not kept
