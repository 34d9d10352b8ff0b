"""The graph's waits are durable on both databases: a run waiting for a person survives a restart
(new connections, new runner) and acts on the answer, with its checkpoints in SQLite or in the
memory's own PostgreSQL database."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path

from driftpilot.graph.runner import LoopRunner, open_checkpointer
from driftpilot.memory import approvals, decisions, releases
from driftpilot.policies.loader import policy_from_mapping

sys.path.insert(0, str(Path(__file__).parents[1] / "graph"))
import crash_world  # noqa: E402 - the world of the crash test, on the database under test


def test_a_run_waiting_for_approval_survives_a_restart(memory_url: str, tmp_path: Path) -> None:
    crash_world.build(tmp_path, memory_url)
    policy = policy_from_mapping(crash_world.POLICY | {"autonomy": "L3"})

    def runner_parts():
        context, checkpoints = crash_world.parts(tmp_path, memory_url)
        context.policy.replace(policy)
        return context, open_checkpointer(memory_url, checkpoints)

    context, opened = runner_parts()
    with opened as checkpointer:
        crash_world.start_run(LoopRunner(context, checkpointer))
    context.sessions.kw["bind"].dispose()

    # A restart: new connections, a new runner; a person answers in between.
    context, opened = runner_parts()
    with context.sessions() as session:
        (pending,) = approvals.list_approvals(session=session, status="pending")
        approvals.decide_approval(session=session, approval_id=pending.id, approve=True, by="noc", at=crash_world.NOW)
    with opened as checkpointer:
        runner = LoopRunner(context, checkpointer)
        assert runner.waiting(crash_world.MODEL_NAME)
        runner.step(crash_world.MODEL_NAME, crash_world.NOW + timedelta(hours=1), {"kind": "schedule"})
        assert runner.graph.get_state({"configurable": {"thread_id": f"{crash_world.MODEL_NAME}:main"}}).next == (
            "canary_judge",
        )
    with context.sessions() as session:
        steps = [(d.action, d.outcome) for d in decisions.list_decisions(session=session, agent="release_manager")]
        assert steps == [("start_canary", "awaiting_approval"), ("start_canary", "shadow_started")]
        assert [r.phase for r in releases.list_releases(session=session, model_id=1)] == ["shadow"]
    context.sessions.kw["bind"].dispose()
