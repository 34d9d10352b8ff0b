"""The corpus and label-queue routes, on SQLite and PostgreSQL: roles, refusals naming the row,
nothing half-applied, and every change in the decision log under the token's name."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from driftpilot.api import create_app
from driftpilot.config import Settings
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, managed
from driftpilot.memory.label_requests import add_label_requests
from driftpilot.models.registry import Registry

URL = f"/models/{MODEL_NAME}"
FEATURES = {f.name: (1.0 if f.kind == "number" else "x") for f in schema_of_ont().features}


@pytest.fixture
def api(tmp_path, bearer, memory_url):
    sessions = db.connect(memory_url)
    with sessions() as session:
        managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
    app = create_app(sessions, Registry(tmp_path / "artifacts"), settings=Settings(home=tmp_path))
    headers = {role: bearer(sessions, role, f"{role}-1") for role in ("ingest", "operator", "auditor")}
    client = TestClient(app)
    events = [
        {"key": f"e{i}", "time": f"2026-03-01T10:0{i}:00Z", "entity": f"ont-{i}", "features": FEATURES}
        for i in range(4)
    ]
    assert client.post(f"{URL}/events", json={"events": events}, headers=headers["ingest"]).status_code == 200
    labels = [{"key": f"e{i}", "label": "online" if i % 2 else "fibre", "source": "system"} for i in range(4)]
    assert client.post(f"{URL}/labels", json={"labels": labels}, headers=headers["ingest"]).status_code == 200
    yield client, sessions, headers
    sessions.kw["bind"].dispose()


def _decisions(client: TestClient, headers) -> list[tuple[str, str]]:
    rows = client.get("/decisions", params={"agent": "operator"}, headers=headers).json()
    return [(d["action"], d["trigger"]["by"]) for d in rows]


def test_people_read_relabel_delete_and_restore_items(api) -> None:
    client, _, headers = api
    listed = client.get(f"{URL}/corpus", headers=headers["auditor"]).json()
    first = listed[0]["event_id"]

    refused = client.put(f"{URL}/corpus/{first}/label", json={"label": "power"}, headers=headers["auditor"])
    unknown = client.put(f"{URL}/corpus/{first}/label", json={"label": "gremlins"}, headers=headers["operator"])
    relabelled = client.put(f"{URL}/corpus/{first}/label", json={"label": "power"}, headers=headers["operator"])
    again = client.put(f"{URL}/corpus/{first}/label", json={"label": "power"}, headers=headers["operator"])
    deleted = client.post(
        f"{URL}/corpus/delete", json={"events": [first], "reason": "bench rig"}, headers=headers["operator"]
    )
    missing = client.post(f"{URL}/corpus/delete", json={"events": [99999]}, headers=headers["operator"])
    after_delete = client.get(f"{URL}/corpus", headers=headers["operator"]).json()
    item = client.get(f"{URL}/corpus/{first}", headers=headers["auditor"]).json()
    restored = client.post(f"{URL}/corpus/restore", json={"events": [first]}, headers=headers["operator"])

    assert [r["label"] for r in listed] == ["fibre", "online", "fibre", "online"]
    assert refused.status_code == 403
    assert unknown.status_code == 422 and "label 'gremlins' is not a class" in unknown.json()["detail"]
    assert relabelled.json()["changed"] == 1 and again.json() == {
        "changed": 0,
        "decision": None,
        "message": f"event {first} already has the label 'power' from a person",
    }
    assert deleted.json()["changed"] == 1
    assert missing.status_code == 404 and "has no events [99999]" in missing.json()["detail"]
    assert [r["event_id"] for r in after_delete] == [r["event_id"] for r in listed[1:]]
    assert item["excluded"]["reason"] == "bench rig" and item["source"] == "person"
    assert restored.json()["changed"] == 1
    assert _decisions(client, headers["auditor"]) == [
        ("corpus_relabel", "operator-1"),
        ("corpus_delete", "operator-1"),
        ("corpus_restore", "operator-1"),
    ]


def test_an_import_with_a_bad_row_is_refused_whole_and_an_export_reads_back(api) -> None:
    client, _, headers = api
    names = list(FEATURES)
    good = ",".join(["n1", "power", "2026-03-02T00:00:00Z", "ont-9"] + [str(FEATURES[n]) for n in names])
    bad = ",".join(["n2", "gremlins", "2026-03-02T00:00:00Z", "ont-9"] + [str(FEATURES[n]) for n in names])
    csv = "key,label,time,entity," + ",".join(names) + "\n" + good + "\n" + bad + "\n"

    refused = client.post(f"{URL}/corpus/import", params={"format": "csv"}, content=csv, headers=headers["operator"])
    before = client.get(f"{URL}/corpus", headers=headers["operator"]).json()
    accepted = client.post(
        f"{URL}/corpus/import",
        params={"format": "csv"},
        content=csv.replace("gremlins", "online"),
        headers=headers["operator"],
    )
    exported = client.get(f"{URL}/corpus/export", params={"format": "jsonl"}, headers=headers["auditor"])
    reread = client.post(
        f"{URL}/corpus/import", params={"format": "jsonl"}, content=exported.content, headers=headers["operator"]
    )
    twice = client.post(
        f"{URL}/corpus/import", params={"format": "jsonl"}, content=exported.content, headers=headers["operator"]
    )

    assert refused.status_code == 422
    assert refused.json()["detail"].startswith("row 3: label 'gremlins' is not a class of model")
    assert len(before) == 4  # nothing of the refused file was stored
    assert accepted.json()["changed"] == 2
    assert exported.headers["content-type"] == "application/x-ndjson" and len(exported.text.splitlines()) == 6
    assert reread.json()["changed"] == 4  # the four system labels become a person's
    assert twice.json() == {
        "changed": 0,
        "decision": None,
        "message": "all 6 rows were in the corpus already, with these labels",
    }


def test_snapshots_diff_and_the_label_queue(api) -> None:
    client, sessions, headers = api
    ids = [r["event_id"] for r in client.get(f"{URL}/corpus", headers=headers["operator"]).json()]
    a = client.post(f"{URL}/snapshots", headers=headers["operator"])
    client.put(f"{URL}/corpus/{ids[0]}/label", json={"label": "power"}, headers=headers["operator"])
    b = client.post(f"{URL}/snapshots", headers=headers["operator"])
    snapshots = client.get(f"{URL}/snapshots", headers=headers["auditor"]).json()
    diff = client.get(
        f"{URL}/snapshots/diff", params={"a": snapshots[0]["id"], "b": snapshots[1]["id"]}, headers=headers["auditor"]
    )
    with sessions() as session:
        model_id = managed.get_model(session=session, name=MODEL_NAME).id
        add_label_requests(
            session=session, model_id=model_id, event_ids=ids[:2], reasons=["unsure", "drifted"], time=_t()
        )
    queue = client.get(f"{URL}/label-requests", headers=headers["operator"]).json()
    answered = client.post(
        f"{URL}/label-requests/{queue[0]['id']}/answer", json={"label": "fibre"}, headers=headers["operator"]
    )
    conflict = client.post(
        f"{URL}/label-requests/{queue[0]['id']}/answer", json={"label": "power"}, headers=headers["operator"]
    )
    skipped = client.post(f"{URL}/label-requests/{queue[1]['id']}/skip", headers=headers["operator"])
    nowhere = client.post(f"{URL}/label-requests/999/skip", headers=headers["operator"])

    assert (a.status_code, b.status_code) == (201, 201)
    assert [(s["kind"], s["made_by"], s["rows"]) for s in snapshots] == [("corpus", "operator-1", 4)] * 2
    assert diff.json()["relabelled_items"] == [{"event_id": ids[0], "from": "fibre", "to": "power"}]
    assert [(q["key"], q["reason"]) for q in queue] == [("e0", "unsure"), ("e1", "drifted")]
    assert answered.json()["changed"] == 1
    assert conflict.status_code == 409 and "answered by operator-1" in conflict.json()["detail"]
    assert skipped.json()["changed"] == 1 and nowhere.status_code == 404
    assert client.get(f"{URL}/label-requests", headers=headers["operator"]).json() == []


def _t():
    from datetime import UTC, datetime

    return datetime(2026, 3, 1, 12, tzinfo=UTC)
