"""The decision log over HTTP: filtered and paged, one decision, an export, the chain verified."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from driftpilot.memory.decisions import record_decision
from driftpilot.memory.tables import Decision

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _log(sessions, n: int) -> None:
    with sessions() as session:
        for i in range(n):
            record_decision(
                session=session,
                model_id=1,
                run_id=f"r{i}",
                agent="monitor" if i % 2 else "trainer",
                time=T0 + timedelta(hours=i),
                trigger={"kind": "schedule"},
                evidence={"i": i},
                diagnosis={},
                policy_verdicts=[],
                action="check" if i % 2 else "retrain",
                outcome="healthy" if i % 2 else "trained",
                rationale=f"step {i}",
            )


def test_auditors_filter_page_show_export_and_verify(service) -> None:
    client, sessions, headers, _ = service
    _log(sessions, 7)
    auditor = headers["auditor"]

    checks = client.get("/decisions", params={"agent": "monitor"}, headers=auditor).json()
    first_page = client.get("/decisions", params={"limit": 3}, headers=auditor).json()
    second_page = client.get("/decisions", params={"limit": 3, "after": first_page[-1]["id"]}, headers=auditor).json()
    window = client.get(
        "/decisions",
        params={"since": (T0 + timedelta(hours=2)).isoformat(), "until": (T0 + timedelta(hours=4)).isoformat()},
        headers=auditor,
    ).json()
    shown = client.get("/decisions/4", headers=auditor).json()
    exported = [
        json.loads(line)
        for line in client.get("/decisions/export", params={"model": "ont-offline"}, headers=auditor).text.splitlines()
    ]

    assert [d["id"] for d in checks] == [2, 4, 6]
    assert [d["id"] for d in first_page] == [1, 2, 3] and [d["id"] for d in second_page] == [4, 5, 6]
    assert [d["rationale"] for d in window] == ["step 2", "step 3"]
    assert (shown["action"], shown["evidence"], shown["hash"]) == ("check", {"i": 3}, shown["hash"])
    assert [d["id"] for d in exported] == list(range(1, 8))
    assert client.get("/decisions/verify", headers=auditor).json() == {
        "ok": True,
        "checked": 7,
        "first_broken_id": None,
        "reason": "",
    }
    assert client.get("/decisions/99", headers=auditor).status_code == 404
    assert client.get("/decisions", params={"model": "nope"}, headers=auditor).status_code == 404
    assert client.get("/decisions/export", params={"model": "nope"}, headers=auditor).status_code == 404

    with sessions() as session:  # tamper with a stored rationale behind the log's back
        session.execute(sa.update(Decision).where(Decision.id == 5).values(rationale="nothing to see"))
        session.commit()
    broken = client.get("/decisions/verify", headers=auditor).json()
    assert (broken["ok"], broken["first_broken_id"]) == (False, 5)
