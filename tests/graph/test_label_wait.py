"""Waiting for labels is an interrupt: the run resumes when people's labels are in, or ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory import decisions, events, label_requests
from driftpilot.memory.ingest import ingest_labels

from .test_outage import START, world  # noqa: F401 - the fixture

# Whole-graph runs, each on a fleet with a model trained for it: seconds each, so `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

CONFIG = {"configurable": {"thread_id": f"{MODEL_NAME}:main"}}
NOW = START + timedelta(hours=11, minutes=45)


def _start_at_the_curator(runner: LoopRunner) -> None:
    """A run the Diagnostician sent to the Curator (a retrain is needed)."""
    runner.graph.update_state(
        CONFIG,
        {
            "model": MODEL_NAME,
            "run_id": "label-wait",
            "now": NOW.isoformat(),
            "trigger": {"kind": "test"},
            "diagnosis": {"cause": "covariate_drift"},
            "snapshot_id": None,
            "outcome": "retrain",
        },
        as_node="diagnostician",
    )
    runner.invoke(None, CONFIG)


def _steps(context, model_id):
    with context.sessions() as session:
        return [(d.agent, d.action, d.outcome) for d in decisions.list_decisions(session=session, model_id=model_id)]


def test_the_run_waits_for_the_labels_it_asked_for_then_curates(world):  # noqa: F811
    context, tmp_path, model_id, _ = world
    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        _start_at_the_curator(runner)
        assert runner.graph.get_state(CONFIG).next == ("label_gate",)
        # An hour later nobody has answered: still waiting, nothing new in the log.
        runner.step(MODEL_NAME, NOW + timedelta(hours=1), {"kind": "schedule"})
        assert runner.graph.get_state(CONFIG).next == ("label_gate",)
        assert _steps(context, model_id) == [("curator", "request_labels", "waiting_for_labels")]
        # People answer the requests; the next look goes back to the Curator, which now has enough.
        with context.sessions() as session:
            asked = label_requests.open_label_requests(session=session, model_id=model_id)
            frame = events.events_by_ids(session=session, ids=[r.event_id for r in asked])
            ingest_labels(
                session=session,
                model=MODEL_NAME,
                labels=[
                    {
                        "event_key": k,
                        "value": "online",
                        "source": "person",
                        "time": NOW + timedelta(hours=1, minutes=30),
                    }
                    for k in frame["key"]
                ],
            )
        runner.step(MODEL_NAME, NOW + timedelta(hours=2), {"kind": "schedule"})
    steps = _steps(context, model_id)
    assert steps[:2] == [("curator", "request_labels", "waiting_for_labels"), ("curator", "curate", "snapshot")]
    # Every label says "online": the Trainer refuses to learn one class, and says so.
    assert steps[2] == ("trainer", "retrain", "failed")


def test_the_run_ends_when_no_labels_come_within_the_policys_time(world):  # noqa: F811
    context, tmp_path, model_id, _ = world
    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        _start_at_the_curator(runner)
        runner.step(MODEL_NAME, NOW + timedelta(hours=11), {"kind": "schedule"})
        assert runner.waiting(MODEL_NAME)
        runner.step(MODEL_NAME, NOW + timedelta(hours=12), {"kind": "schedule"})
        assert not runner.waiting(MODEL_NAME)
    assert _steps(context, model_id) == [
        ("curator", "request_labels", "waiting_for_labels"),
        ("curator", "request_labels", "labels_timed_out"),
    ]


def test_a_changed_policy_file_is_logged_applied_or_refused_and_old_runs_can_be_forgotten(world, tmp_path):  # noqa: F811
    from driftpilot.policies import PolicyEngine

    context, _, model_id, _ = world
    path = tmp_path / "policy.yaml"
    path.write_text("name: ont\nautonomy: L4\n")
    context.policy = PolicyEngine.from_file(path)
    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        _start_at_the_curator(runner)
        path.write_text("name: ont\nautonomy: L3\n")
        runner.step(MODEL_NAME, NOW + timedelta(hours=1), {"kind": "schedule"})
        path.write_text("name: ont\nautonomy: L9\n")
        runner.step(MODEL_NAME, NOW + timedelta(hours=2), {"kind": "schedule"})
        assert runner.waiting(MODEL_NAME)
        runner.forget(MODEL_NAME)
        assert not runner.waiting(MODEL_NAME)
    with context.sessions() as session:
        reloads = decisions.list_decisions(session=session, model_id=model_id, agent="policy")
    assert [(d.action, d.outcome, d.evidence["fields"]) for d in reloads] == [
        ("reload_policy", "applied", ["autonomy"]),
        ("reload_policy", "refused", ["autonomy"]),
    ]
    assert "the policy in force stays" in reloads[1].rationale
    assert context.policy.policy.autonomy == "L3"
