"""Autonomy L3 in the graph: a release waits (durably) for a person; change freezes hold releases."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.memory import approvals, decisions, releases
from driftpilot.policies.loader import policy_from_mapping

from .crash_world import MODEL_NAME, NOW, POLICY, build, parts, start_run

# Whole-graph runs, each on a fleet with a model trained for it: seconds each, so `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

CONFIG = {"configurable": {"thread_id": f"{MODEL_NAME}:main"}}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("approval-world")
    build(folder)
    return folder


def _run(built: Path, tmp_path: Path, policy: dict, answer=None, then=timedelta(hours=1)):
    """Start a run at the Trainer under ``policy``; ``answer(session, approval_id)`` plays the
    person, then the loop looks again ``then`` later. Returns the decisions and the releases."""
    folder = tmp_path / "world"
    shutil.copytree(built, folder)
    context, checkpoints = parts(folder)
    context.policy.replace(policy_from_mapping(POLICY | policy))
    with sqlite_checkpointer(checkpoints) as checkpointer:
        runner = LoopRunner(context, checkpointer)
        start_run(runner)
        first = runner.graph.get_state(CONFIG).next
        if answer is not None:
            with context.sessions() as session:
                (pending,) = approvals.list_approvals(session=session, status="pending")
                answer(session, pending.id)
        runner.step(MODEL_NAME, NOW + then, {"kind": "schedule"})
        last = runner.graph.get_state(CONFIG).next
    with context.sessions() as session:
        log = [
            (d.agent, d.action, d.outcome, d.approvals)
            for d in decisions.list_decisions(session=session, model_id=1)
            if d.agent == "release_manager"
        ]
        started = [r.id for r in releases.list_releases(session=session, model_id=1)]
        asked = approvals.list_approvals(session=session)
    return first, last, log, started, asked


def _answer(approve: bool):
    def answer(session, approval_id):
        approvals.decide_approval(
            session=session,
            approval_id=approval_id,
            approve=approve,
            by="noc-lead",
            at=NOW,
            comment="ok" if approve else "not tonight",
        )

    return answer


def test_at_l3_the_release_waits_for_a_person_and_starts_once_approved(built, tmp_path):
    first, last, log, started, asked = _run(built, tmp_path, {"autonomy": "L3"}, _answer(True))
    assert first == ("approval_gate",)
    assert [entry[:3] for entry in log] == [
        ("release_manager", "start_canary", "awaiting_approval"),
        ("release_manager", "start_canary", "shadow_started"),
    ]
    given = log[1][3]
    assert [(a["status"], a["decided_by"], a["comment"]) for a in given] == [("approved", "noc-lead", "ok")]
    assert started == [1] and last == ("canary_judge",)
    assert [(a.action, a.status) for a in asked] == [("start_canary", "approved")]


def test_a_denied_release_never_starts_and_the_denial_is_logged(built, tmp_path):
    first, last, log, started, _ = _run(built, tmp_path, {"autonomy": "L3"}, _answer(False))
    assert [entry[:3] for entry in log][-1] == ("release_manager", "start_canary", "approval_denied")
    assert log[-1][3][0]["comment"] == "not tonight"
    assert started == [] and last == ()


def test_an_unanswered_request_expires_after_the_policys_time(built, tmp_path):
    policy = {"autonomy": "L3", "changes": {"approval_timeout_hours": 2}}
    _, waiting, _, _, _ = _run(built, tmp_path / "a", policy, then=timedelta(hours=1))
    assert waiting == ("approval_gate",)
    _, last, log, started, asked = _run(built, tmp_path / "b", policy, then=timedelta(hours=3))
    assert [entry[2] for entry in log] == ["awaiting_approval", "approval_expired"]
    assert started == [] and last == () and [a.status for a in asked] == ["expired"]


def test_a_change_freeze_refuses_the_release_and_says_which(built, tmp_path):
    freeze = {"start": NOW - timedelta(days=1), "end": NOW + timedelta(days=1), "reason": "year-end freeze"}
    _, last, log, started, _ = _run(built, tmp_path, {"changes": {"freezes": [freeze]}})
    assert [entry[:3] for entry in log] == [("release_manager", "start_canary", "denied")]
    with parts(tmp_path / "world")[0].sessions() as session:
        (denied,) = decisions.list_decisions(session=session, model_id=1, action="start_canary")
        calendar = [v for v in denied.policy_verdicts[0]["verdicts"] if v["rule"] == "change_calendar"]
    assert calendar[0]["passed"] is False
    assert "inside the change freeze 'year-end freeze'" in calendar[0]["reason"]
    assert started == [] and last == ()


def test_no_retrain_in_a_freeze_or_soon_after_a_person_said_no(tmp_path):
    from driftpilot.agents.context import held_back
    from driftpilot.loop.demo import schema_of_ont
    from driftpilot.memory import db, managed

    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    with sessions() as session:
        model_id = managed.register_model(
            session=session, name="ont", task="tabular_classification", family="tabular_mlp", schema=schema_of_ont()
        ).id
        policy = policy_from_mapping({"name": "p", "changes": {"after_denial_hours": 12}})
        assert held_back(session, model_id, policy, NOW) is None
        denied = decisions.record_decision(
            session=session,
            model_id=model_id,
            run_id="r",
            agent="release_manager",
            time=NOW,
            trigger={},
            evidence={},
            diagnosis={},
            policy_verdicts=[],
            action="start_canary",
            outcome="approval_denied",
            rationale="no",
        )
        assert held_back(session, model_id, policy, NOW + timedelta(hours=11)) == (
            f"a person denied a release at 2026-03-01 13:00 UTC (decision #{denied.id}); "
            "the loop asks again 12 hours after"
        )
        assert held_back(session, model_id, policy, NOW + timedelta(hours=13)) is None
        frozen = policy_from_mapping(
            {
                "name": "p",
                "changes": {"freezes": [{"start": NOW, "end": NOW + timedelta(days=2), "reason": "migration"}]},
            }
        )
        assert held_back(session, model_id, frozen, NOW + timedelta(days=1)) == (
            "the change freeze 'migration' lasts until 2026-03-03 13:00 UTC"
        )
