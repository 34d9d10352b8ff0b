"""`driftpilot audit verify | export | show` on SQLite and PostgreSQL: the chain proven intact, a
tampered decision named, the log exported with filters, one decision read as a person would."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from driftpilot.cli import main
from driftpilot.memory.decisions import record_decision

T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)


def _log(session, model_id: int) -> None:
    steps = [
        ("monitor", "check", "finding", "Balanced accuracy fell from 0.95 to 0.81 on 400 labelled events."),
        ("trainer", "retrain", "candidate", "Version 2 trained incrementally on 1,400 rows."),
        ("release_manager", "rollback", "rolled_back", "Version 2 rolled back: shown worse in shadow."),
    ]
    for i, (agent, action, outcome, why) in enumerate(steps):
        record_decision(
            session=session,
            model_id=model_id,
            run_id="ont/run-1",
            agent=agent,
            time=T0 + timedelta(hours=i),
            trigger={"kind": "schedule"},
            evidence={"step": i, "scores": [0.95, 0.81]},
            diagnosis={},
            policy_verdicts=[
                {
                    "action": action,
                    "allowed": True,
                    "needs_approval": False,
                    "verdicts": [{"rule": "autonomy", "passed": True, "reason": "autonomy L4 may act"}],
                }
            ],
            action=action,
            outcome=outcome,
            rationale=why,
        )


def test_audit_verify_export_and_show(session, ont, memory_url, capsys):
    _log(session, ont.id)
    base = ["--database-url", memory_url, "audit"]

    assert main([*base, "verify"]) == 0
    assert capsys.readouterr().out.startswith("chain intact: 3 decisions")

    assert main([*base, "export", "--agent", "trainer"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(d["agent"], d["action"]) for d in lines] == [("trainer", "retrain")]

    assert main([*base, "export", "--format", "csv", "--since", "2026-03-01T09:00", "--model", "ont"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["outcome"] for r in rows] == ["candidate", "rolled_back"]
    assert json.loads(rows[0]["evidence"]) == {"step": 1, "scores": [0.95, 0.81]}

    assert main([*base, "export", "--outcome", "rolled_back", "--until", "2026-03-01T10:00"]) == 0
    assert capsys.readouterr().out == ""

    last = lines[0]["id"] + 1
    assert main([*base, "show", str(last)]) == 0
    shown = capsys.readouterr().out
    assert f"Decision #{last} at 2026-03-01T10:00:00" in shown
    assert "release_manager → rollback: rolled_back" in shown
    assert "Why: Version 2 rolled back: shown worse in shadow." in shown
    assert "[pass] autonomy: autonomy L4 may act" in shown

    assert main([*base, "show", "999"]) == 2
    assert "no decision #999" in capsys.readouterr().err
    assert main([*base, "export", "--since", "yesterday"]) == 2
    assert "--since must be an ISO 8601 time" in capsys.readouterr().err


def test_audit_verify_names_the_decision_edited_behind_its_back(session, ont, memory_url, capsys):
    _log(session, ont.id)
    middle = session.scalar(sa.text("SELECT id FROM decision ORDER BY id LIMIT 1 OFFSET 1"))
    session.execute(
        sa.text("UPDATE decision SET rationale = :r WHERE id = :i"), {"r": "Nothing happened here.", "i": middle}
    )
    session.commit()

    assert main(["--database-url", memory_url, "audit", "verify"]) == 1
    out = capsys.readouterr().out
    assert out.startswith(
        f"chain BROKEN at decision {middle}: decision {middle}: stored hash does not match its content"
    )
