"""Approvals over HTTP and the CLI: a person's answer is stored once; a contrary one is refused."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from driftpilot import cli
from driftpilot.api import create_app
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import approvals, db, managed
from driftpilot.models.registry import Registry

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _world(tmp_path):
    url = f"sqlite:///{tmp_path / 'm.sqlite'}"
    sessions = db.connect(url)
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
        for run in ("r1", "r2"):
            approvals.request_approval(
                session=session,
                model_id=model.id,
                run_id=run,
                action="start_canary",
                subject={"version": 2},
                reason="release version 2",
                time=NOW,
            )
    return url, sessions


def test_an_answer_is_stored_once_and_a_contrary_one_refused_over_http(tmp_path, bearer):
    _, sessions = _world(tmp_path)
    client = TestClient(create_app(sessions, Registry(tmp_path / "artifacts")))
    lead, other = bearer(sessions, "operator", "noc-lead"), bearer(sessions, "operator", "someone-else")

    assert [a["id"] for a in client.get("/approvals", params={"model": MODEL_NAME}, headers=lead).json()] == [1, 2]
    first = client.post("/approvals/1", json={"approve": True, "comment": "go"}, headers=lead)
    again = client.post("/approvals/1", json={"approve": True, "comment": "go"}, headers=lead)
    contrary = client.post("/approvals/1", json={"approve": False}, headers=other)
    assert first.status_code == again.status_code == 200
    # Who answered is the token's name, never a field of the body.
    assert (first.json()["status"], first.json()["decided_by"]) == ("approved", "noc-lead")
    assert contrary.status_code == 409
    assert contrary.json()["detail"].startswith("approval request 1 was already approved by noc-lead at ")
    assert client.post("/approvals/9", json={"approve": True}, headers=lead).status_code == 404
    assert client.post("/approvals/2", json={"approve": True, "by": "mallory"}, headers=lead).status_code == 422
    assert client.post("/approvals/2", json={"approve": True}).status_code == 401
    assert [a["id"] for a in client.get("/approvals", headers=lead).json()] == [2]


def test_the_cli_lists_and_answers_requests(tmp_path, capsys):
    url, sessions = _world(tmp_path)
    assert cli.main(["--database-url", url, "deny", "2", "--by", "noc-lead", "--comment", "not tonight"]) == 0
    assert cli.main(["--database-url", url, "approvals"]) == 0
    out = capsys.readouterr().out
    assert "#2 denied by noc-lead: start_canary" in out
    assert out.splitlines()[-2].startswith('#1 pending: start_canary {"version": 2} asked 2026-03-01 12:00')
    assert cli.main(["--database-url", url, "approve", "2", "--by", "x"]) == 2
    assert "approval request 2 was already denied by noc-lead" in capsys.readouterr().err


def test_policy_check_names_the_field_at_fault(tmp_path, capsys):
    bad = tmp_path / "p.yaml"
    bad.write_text("name: x\nchanges:\n  windows: [{start: '22:00', end: '22:00'}]\n")
    assert cli.main(["policy", "check", str(bad)]) == 2
    assert "changes.windows.0" in capsys.readouterr().err


def test_the_cli_chat_without_a_chat_model_plans_from_commands(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("DRIFTPILOT_HOME", str(tmp_path))
    url, _ = _world(tmp_path)
    assert cli.main(["--database-url", url, "chat", MODEL_NAME, "promote 7", "--who", "ana"]) == 0
    out = capsys.readouterr().out
    assert ": refused" in out and "promote" in out
    assert cli.main(["--database-url", url, "chat", MODEL_NAME, "make it better"]) == 2
    assert "make it better" in capsys.readouterr().err
