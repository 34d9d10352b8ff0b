"""Access by role: every route but /healthz needs a live token of a role it admits."""

from __future__ import annotations

import itertools
import json
import time

import pytest

from driftpilot.api.ingest import sign

from .conftest import ROLES, SECRET

READ = {"operator", "auditor"}
#: What each route admits besides admin; the test below fails on a route missing here.
ACCESS: dict[tuple[str, str], set[str] | None] = {
    ("POST", "/models/{name}/predict"): {"ingest"},
    ("POST", "/models/{name}/events"): {"ingest"},
    ("POST", "/models/{name}/labels"): {"ingest"},
    ("POST", "/hooks/alertmanager"): {"ingest"},
    ("POST", "/hooks/alarms"): {"ingest"},
    ("GET", "/models/{name}/assignment"): {"ingest", "operator", "auditor"},
    ("GET", "/models/{name}/versions/{number}/artifacts/{artifact}"): {"ingest", "operator", "auditor"},
    ("POST", "/models/{name}/rollback"): {"operator"},
    ("POST", "/models/{name}/chat"): {"operator"},
    ("POST", "/approvals/{approval_id}"): {"operator"},
    ("GET", "/approvals"): READ,
    ("GET", "/models"): READ,
    ("GET", "/models/{name}/served"): READ,
    ("GET", "/models/{name}/serving-history"): READ,
    ("GET", "/decisions"): READ,
    ("GET", "/decisions/export"): READ,
    ("GET", "/decisions/verify"): READ,
    ("GET", "/decisions/{decision_id}"): READ,
    ("GET", "/models/{name}/corpus"): READ,
    ("GET", "/models/{name}/corpus/export"): READ,
    ("GET", "/models/{name}/corpus/{event_id}"): READ,
    ("PUT", "/models/{name}/corpus/{event_id}/label"): {"operator"},
    ("POST", "/models/{name}/corpus/delete"): {"operator"},
    ("POST", "/models/{name}/corpus/restore"): {"operator"},
    ("POST", "/models/{name}/corpus"): {"operator"},
    ("POST", "/models/{name}/corpus/import"): {"operator"},
    ("POST", "/models/{name}/snapshots"): {"operator"},
    ("POST", "/models/{name}/clusters"): {"operator"},
    ("POST", "/models/{name}/clusters/{proposal}/{cluster}/name"): {"operator"},
    ("GET", "/models/{name}/snapshots"): READ,
    ("GET", "/models/{name}/snapshots/diff"): READ,
    ("GET", "/models/{name}/label-requests"): READ,
    ("POST", "/models/{name}/label-requests/{request_id}/answer"): {"operator"},
    ("POST", "/models/{name}/label-requests/{request_id}/skip"): {"operator"},
    ("POST", "/tokens"): set(),
    ("GET", "/tokens"): set(),
    ("DELETE", "/tokens/{name}"): set(),
    ("GET", "/readyz"): {"ingest", "operator", "auditor"},
    ("GET", "/metrics"): {"ingest", "operator", "auditor"},
    ("GET", "/openapi.json"): {"ingest", "operator", "auditor"},
    ("GET", "/healthz"): None,  # open to anyone
}
_AGES = itertools.count()
PARAMS = {
    "name": "ont-offline",
    "approval_id": "1",
    "decision_id": "1",
    "event_id": "1",
    "request_id": "1",
    "proposal": "1",
    "cluster": "0",
    "number": "1",
    "artifact": "onnx",
}


def _call(client, method: str, path: str, headers: dict[str, str]):
    url = path.format(**PARAMS)
    body: bytes = b"{}"
    extra = dict(headers)
    if path == "/hooks/alarms":
        body = json.dumps({"alarms": []}).encode()
        now = int(time.time()) - next(_AGES)  # one signature a request: a second use is a replay
        extra |= {"X-Driftpilot-Timestamp": str(now), "X-Driftpilot-Signature": sign(SECRET, now, body)}
    query = {"entity": "ont-1", "at": "2026-03-01T00:00:00Z"} if method == "GET" else None
    return client.request(method, url, content=body if method != "GET" else None, headers=extra, params=query)


def test_every_route_is_in_the_matrix(service) -> None:
    client, *_ = service
    documented = {(m.upper(), path) for path, item in client.app.openapi()["paths"].items() for m in item}
    assert documented | {("GET", "/openapi.json")} == set(ACCESS)


@pytest.mark.parametrize(("method", "path"), sorted(ACCESS))
def test_each_role_gets_exactly_the_routes_it_is_admitted_to(service, method: str, path: str) -> None:
    client, _, headers, _ = service
    admitted = ACCESS[method, path]

    anonymous = _call(client, method, path, {})
    bogus = _call(client, method, path, {"Authorization": "Bearer dp_not-a-token"})
    if admitted is None:
        assert anonymous.status_code == 200
        return
    assert (anonymous.status_code, bogus.status_code) == (401, 401)
    assert anonymous.headers["www-authenticate"] == "Bearer"
    for role in ROLES:
        answer = _call(client, method, path, headers[role])
        if role == "admin" or role in admitted:
            assert answer.status_code not in (401, 403), (role, answer.text)
        else:
            assert answer.status_code == 403, (role, answer.text)
            assert f"has role '{role}'" in answer.json()["detail"]


def test_a_revoked_token_is_refused_at_once_and_tokens_are_managed_by_admins(service) -> None:
    client, _, headers, _ = service
    created = client.post("/tokens", json={"name": "gateway-7", "role": "ingest"}, headers=headers["admin"])
    token = {"Authorization": f"Bearer {created.json()['token']}"}

    assert created.status_code == 201 and created.json()["role"] == "ingest"
    assert client.get("/readyz", headers=token).status_code == 200
    assert client.delete("/tokens/gateway-7", headers=headers["admin"]).status_code == 200
    assert client.get("/readyz", headers=token).status_code == 401
    again = client.post("/tokens", json={"name": "gateway-7", "role": "ingest"}, headers=headers["admin"])
    assert (again.status_code, again.json()["detail"]) == (
        409,
        "a token named 'gateway-7' exists already: names are never reused",
    )
    wrong = client.post("/tokens", json={"name": "x", "role": "root"}, headers=headers["admin"])
    assert wrong.status_code == 422 and "role 'root' is not one of" in wrong.json()["detail"]
    listed = {t["name"]: t["revoked_at"] is not None for t in client.get("/tokens", headers=headers["admin"]).json()}
    assert listed["gateway-7"] is True and listed["ingest-1"] is False
    assert "secret" not in str(client.get("/tokens", headers=headers["admin"]).json())
