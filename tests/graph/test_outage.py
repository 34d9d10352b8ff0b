"""An upstream outage runs through the graph to a quarantine, and never to a retrain."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, decisions, managed, quarantine, snapshots
from driftpilot.memory.ingest import EventBatch, ingest_alarm, ingest_events, ingest_labels
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import Policy, PolicyEngine
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator

# Whole-graph runs, each on a fleet with a model trained for it: seconds each, so `make test-fast` leaves them out.
pytestmark = pytest.mark.slow

START = datetime(2026, 3, 1, tzinfo=UTC)
#: The default policy with the label needs these runs were written for pinned (not derived from
#: the half day of readings they have): 500 labels of the last 24 h to retrain, a 12-hour wait.
PINNED = Policy(name="default", training={"recent_hours": 24, "min_training_labels": 500, "label_wait_hours": 12})


@pytest.fixture
def world(tmp_path):
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    registry = Registry(tmp_path / "artifacts")
    context = AgentContext(sessions=sessions, registry=registry, policy=PolicyEngine(PINNED), seed=0)
    sim = OntSimulator(OntScenarioConfig(n_onts=120, days=0.5, seed=4, outages=()))
    ticks = list(sim.ticks())
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
    features = {k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features}
    labels = np.concatenate([t.labels for t in ticks])
    mlp = TabularMLP(FEATURES, CLASSES, epochs=2, seed=0).fit(features, labels)
    # One port goes silent at 10:00: its ONTs report before, none after.
    groups, counts = np.unique(ticks[0].groups, return_counts=True)
    port = str(groups[counts.argmax()])
    keys = []
    with sessions() as session:
        for t in ticks:
            keep = ~((t.groups == port) & (t.time >= START + timedelta(hours=10)))
            batch_keys = [f"{e}/{t.index}" for e in t.entities[keep]]
            keys += batch_keys
            ingest_events(
                session=session,
                model=MODEL_NAME,
                events=EventBatch(
                    keys=batch_keys,
                    times=[t.time] * int(keep.sum()),
                    entities=list(t.entities[keep]),
                    groups=list(t.groups[keep]),
                    features={k: v[keep] for k, v in t.features.items()},
                    served_version=[1] * int(keep.sum()),
                    prediction=list(mlp.predict({k: v[keep] for k, v in t.features.items()})),
                ),
            )
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[{"event_key": k, "value": "online", "time": START + timedelta(hours=11)} for k in keys[:50]],
        )
        snap = snapshots.create_snapshot(
            session=session,
            model_id=model.id,
            event_ids=list(range(1, 301)),
            labels=["online"] * 300,
            time=START,
            stats={},
        )
        registry.register(
            session=session,
            model_id=model.id,
            model_name=MODEL_NAME,
            model=mlp,
            time=START,
            snapshot_id=snap.id,
            stage="champion",
            metrics={"recent_balanced_accuracy": 0.95, "reference_balanced_accuracy": 0.95},
        )
        ingest_alarm(
            session=session,
            alarm={
                "key": "olt-down/2026-03-01T10:00:00+00:00",
                "name": "OltPortDown",
                "severity": "critical",
                "status": "firing",
                "starts_at": START + timedelta(hours=10),
                "groups": [port],
                "labels": {},
            },
        )
    return context, tmp_path, model.id, port


def test_outage_is_quarantined_not_retrained(world):
    context, tmp_path, model_id, port = world
    now = START + timedelta(hours=11, minutes=45)

    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        LoopRunner(context, checkpointer).step(
            MODEL_NAME, now, {"kind": "alarm", "alarm": "olt-down/2026-03-01T10:00:00+00:00"}, thread="alarms"
        )

    with context.sessions() as session:
        logged = decisions.list_decisions(session=session, model_id=model_id)
        held = quarantine.list_quarantines(session=session, model_id=model_id)
    assert [(d.agent, d.action, d.outcome) for d in logged] == [
        ("monitor", "check", "finding"),
        ("diagnostician", "diagnose", "quarantined"),
    ]
    diagnosis = logged[1]
    assert diagnosis.diagnosis["cause"] == "upstream_outage"
    assert "no retraining" in diagnosis.rationale
    assert diagnosis.evidence["alarms"][0]["entities_silent"] == diagnosis.evidence["alarms"][0]["entities_before"] >= 6
    reason = "alarm olt-down/2026-03-01T10:00:00+00:00: upstream outage"
    assert [(q.groups, q.reason) for q in held] == [([port], reason)]


def test_handled_alarm_is_not_diagnosed_twice(world):
    context, tmp_path, model_id, _ = world
    now = START + timedelta(hours=11, minutes=45)

    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.step(MODEL_NAME, now, {"kind": "alarm"}, thread="alarms")
        runner.step(MODEL_NAME, now + timedelta(minutes=15), {"kind": "schedule"})

    with context.sessions() as session:
        outcomes = [(d.agent, d.outcome) for d in decisions.list_decisions(session=session, model_id=model_id)]
    assert outcomes.count(("diagnostician", "quarantined")) == 1


def test_curator_asks_people_for_uncertain_and_diverse_events_when_labels_are_short(world):
    from types import SimpleNamespace

    from driftpilot.agents.curator import curator
    from driftpilot.agents.state import initial_state
    from driftpilot.memory import label_requests

    context, _, model_id, _ = world
    now = START + timedelta(hours=11, minutes=45)
    state = initial_state(MODEL_NAME, now.isoformat(), "test-run", {"kind": "test"})

    update = curator(state, SimpleNamespace(context=context))

    with context.sessions() as session:
        asked = label_requests.open_label_requests(session=session, model_id=model_id)
        (decision,) = decisions.list_decisions(session=session, model_id=model_id)
    # 50 labelled events against the default policy's 500: ask for the 450 missing ones.
    assert update["snapshot_id"] is None and update["outcome"] == "waiting_for_labels"
    assert len(asked) == 450
    # Active learning: each request says why, naming the model's own classes, and one a group.
    assert all(r.reason.startswith("uncertain: margin") for r in asked)
    assert all("class " not in r.reason for r in asked)
    assert len({r.reason.split("; ")[1].split(" (")[0] for r in asked}) == len(asked)
    assert (decision.action, decision.outcome) == ("request_labels", "waiting_for_labels")
    assert decision.policy_verdicts[0]["allowed"] is True


def test_curator_does_not_ask_again_while_its_requests_are_open(world):
    from types import SimpleNamespace

    from driftpilot.agents.curator import curator
    from driftpilot.agents.state import initial_state
    from driftpilot.memory import label_requests

    context, _, model_id, _ = world
    now = START + timedelta(hours=11, minutes=45)
    runtime = SimpleNamespace(context=context)

    curator(initial_state(MODEL_NAME, now.isoformat(), "first", {}), runtime)
    later = (now + timedelta(hours=2)).isoformat()
    update = curator(initial_state(MODEL_NAME, later, "second", {}), runtime)

    with context.sessions() as session:
        asked = label_requests.open_label_requests(session=session, model_id=model_id)
        second = decisions.list_decisions(session=session, model_id=model_id)[-1]
    assert len(asked) == 450
    assert update["outcome"] == "waiting_for_labels"
    plan = {  # pinned
        "recent_hours": 24.0,
        "min_training_labels": 500,
        "label_wait_hours": 12.0,
        "challenger_every_labels": 125,
        "why": {"challenger_every_labels": "0.25 of the 500 labels a retrain needs at least, 30 or more"},
    }
    assert second.evidence == {"labelled": 50, "pending": 450, "needed": 0, "asked": 0, "plan": plan}


def test_a_canary_rolled_back_by_hand_while_waiting_is_left_alone(world):
    from driftpilot.memory import releases, versions
    from driftpilot.serving.rollback import manual_rollback

    context, tmp_path, model_id, _ = world
    now = START + timedelta(hours=12)
    with context.sessions() as session:
        champion = versions.champion(session=session, model_id=model_id)
        mlp = context.registry.load(champion)
        candidate = context.registry.register(
            session=session, model_id=model_id, model_name=MODEL_NAME, model=mlp, time=now, stage="canary"
        )
        release = releases.start_release(
            session=session,
            model_id=model_id,
            version_id=candidate.id,
            baseline_version_id=champion.id,
            share=0.2,
            started_at=now,
        )
    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        config = {"configurable": {"thread_id": f"{MODEL_NAME}:main"}}
        runner.graph.update_state(
            config,
            {
                "model": MODEL_NAME,
                "run_id": "r",
                "now": now.isoformat(),
                "trigger": {},
                "candidate": candidate.number,
                "release_id": release.id,
            },
            as_node="release_manager",
        )
        runner.invoke(None, config)
        assert runner.waiting(MODEL_NAME)

        manual_rollback(context.sessions, model=MODEL_NAME, version=1, who="alice", now=now + timedelta(hours=1))
        runner.step(MODEL_NAME, now + timedelta(hours=2), {"kind": "schedule"})

        assert not runner.waiting(MODEL_NAME)
    with context.sessions() as session:
        last = decisions.list_decisions(session=session, model_id=model_id)[-1]
        stages = [v.stage for v in versions.list_versions(session=session, model_id=model_id)]
    assert (last.agent, last.action, last.outcome) == ("release_manager", "judge_canary", "already_ended")
    assert stages == ["champion", "rolled_back"]
