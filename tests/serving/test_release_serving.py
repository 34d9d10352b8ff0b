"""Releases as served: routing by cohort, the serving history, rollback under load, refusals."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, decisions, managed, releases, versions
from driftpilot.models.registry import ArtifactError, Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from driftpilot.serving.rollback import manual_rollback
from driftpilot.serving.routing import Serving, assignment, who_served
from driftpilot.tools.cohort import canary_mask

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def world(tmp_path: Path):
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    registry = Registry(tmp_path / "artifacts")
    tick = next(iter(OntSimulator(OntScenarioConfig(n_onts=200, days=0.1, seed=3, outages=())).ticks()))
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
        # What the versions learn does not matter here, only that they are real saved models that
        # disagree on a good share of the tick (each calls "fibre" another share of weakest Rx).
        weakest = np.argsort(np.argsort(tick.features["rx_power"])) / len(tick)
        for seed in (0, 1, 2):
            labels = np.where(weakest < 0.2 + 0.15 * seed, "fibre", "online")
            mlp = TabularMLP(FEATURES, CLASSES, epochs=20, seed=seed, hidden=(8,)).fit(tick.features, labels)
            version = registry.register(
                session=session,
                model_id=model.id,
                model_name=MODEL_NAME,
                model=mlp,
                time=START,
                stage="champion" if seed == 0 else "candidate",
            )
            assert version.number == seed + 1
        releases.log_serving(session=session, model_id=model.id, at=START, run_id="boot", reason="version 1 serves")
    return sessions, registry, model.id, tick


def _start(sessions, model_id, number, *, at, cohort="entity", shadow=True):
    with sessions() as session:
        candidate = versions.get_version(session=session, model_id=model_id, number=number)
        champion = versions.champion(session=session, model_id=model_id)
        return releases.start_release(
            session=session,
            model_id=model_id,
            version_id=candidate.id,
            baseline_version_id=champion.id,
            started_at=at,
            plan=[0.05, 0.25],
            shadow=shadow,
            cohort=cohort,
            salt="s",
            run_id=f"run-{number}",
            reason=f"version {number} released",
        ).id


def _step(sessions, release_id, at):
    with sessions() as session:
        releases.step_release(session=session, release_id=release_id, at=at, run_id="step", reason="step up")


def test_shadow_serves_no_one_and_canary_steps_serve_nested_cohorts(world):
    sessions, registry, model_id, tick = world
    serving = Serving(sessions, registry, model_id, MODEL_NAME)
    entities = [f"ont-{i}" for i in range(2000)]
    release = _start(sessions, model_id, 2, at=START + timedelta(hours=1))

    serving.refresh()
    assert set(serving.route(entities).tolist()) == {1}  # shadow: the candidate answers, never serves

    _step(sessions, release, START + timedelta(hours=2))
    serving.refresh()
    at_5 = serving.route(entities) == 2
    _step(sessions, release, START + timedelta(hours=3))
    serving.refresh()
    at_25 = serving.route(entities) == 2

    assert at_5.tolist() == canary_mask(entities, 0.05, salt="s").tolist()
    assert 0.03 < at_5.mean() < 0.07 and 0.22 < at_25.mean() < 0.28
    assert not (at_5 & ~at_25).any()  # whoever was in the 5 % stays in the 25 %
    with pytest.raises(ValueError, match="last share"):
        _step(sessions, release, START + timedelta(hours=4))


def test_group_cohorts_move_whole_groups(world):
    sessions, registry, model_id, _ = world
    serving = Serving(sessions, registry, model_id, MODEL_NAME)
    release = _start(sessions, model_id, 2, at=START, cohort="group", shadow=False)
    serving.refresh()
    entities = [f"ont-{i}" for i in range(3000)]
    groups = [f"port-{i % 60}" for i in range(3000)]

    served = serving.route(entities, groups)

    by_group = {}
    for group, version in zip(groups, served.tolist(), strict=True):
        by_group.setdefault(group, set()).add(version)
    assert all(len(v) == 1 for v in by_group.values())
    assert {2} in by_group.values() and {1} in by_group.values()
    with pytest.raises(ValueError, match="by group"):
        serving.route(entities)
    assert release


def test_who_served_answers_from_the_history_with_its_reason(world):
    sessions, registry, model_id, _ = world
    release = _start(sessions, model_id, 2, at=START + timedelta(hours=1), shadow=False)
    inside = next(f"ont-{i}" for i in range(1000) if canary_mask([f"ont-{i}"], 0.05, salt="s")[0])
    outside = next(f"ont-{i}" for i in range(1000) if not canary_mask([f"ont-{i}"], 0.05, salt="s")[0])
    with sessions() as session:
        releases.end_release(
            session=session,
            release_id=release,
            ended_at=START + timedelta(hours=5),
            verdict="promoted",
            promote=True,
            run_id="run-2",
            reason="version 2 promoted",
        )

    with sessions() as session:
        early = who_served(session, model=MODEL_NAME, entity=inside, at=START + timedelta(minutes=30))
        canary = who_served(session, model=MODEL_NAME, entity=inside, at=START + timedelta(hours=2))
        control = who_served(session, model=MODEL_NAME, entity=outside, at=START + timedelta(hours=2))
        later = who_served(session, model=MODEL_NAME, entity=outside, at=START + timedelta(hours=6))
        before = who_served(session, model=MODEL_NAME, entity=inside, at=START - timedelta(hours=1))

    assert (early.version, early.role, early.reason) == (1, "champion", "version 1 serves")
    assert (canary.version, canary.role, canary.reason) == (2, "canary", "version 2 released")
    assert (control.version, control.role) == (1, "champion")
    assert (later.version, later.role, later.reason) == (2, "champion", "version 2 promoted")
    assert before.version is None


def test_rollback_under_concurrent_predictions_takes_effect_on_the_next_request(world):
    sessions, registry, model_id, tick = world
    with sessions() as session:
        v2 = versions.get_version(session=session, model_id=model_id, number=2)
        releases.restore_version(session=session, model_id=model_id, version_id=v2.id, at=START, run_id="r", reason="2")
    entities = [str(e) for e in tick.entities[:20]]
    groups = [str(g) for g in tick.groups[:20]]
    features = {k: list(v[:20]) for k, v in tick.features.items()}
    serving = Serving(sessions, registry, model_id, MODEL_NAME)
    seen: list[tuple[float, float, int]] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    rolled_back_at: list[float] = []

    def client(worker: int) -> None:
        n = 0
        while not stop.is_set():
            sent = time.perf_counter()
            try:
                answers = serving.predict(
                    keys=[f"w{worker}/{n}/{i}" for i in range(20)],
                    times=[START + timedelta(hours=1)] * 20,
                    entities=entities,
                    groups=groups,
                    features=features,
                )
            except BaseException as exc:  # noqa: BLE001 - collected and failed on below
                errors.append(exc)
                return
            seen.extend((sent, time.perf_counter(), a["version"]) for a in answers)
            n += 1

    workers = [threading.Thread(target=client, args=(w,)) for w in range(3)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    decision = manual_rollback(sessions, model=MODEL_NAME, version=1, who="alice", now=START + timedelta(hours=1))
    rolled_back_at.append(time.perf_counter())
    time.sleep(0.5)
    stop.set()
    for w in workers:
        w.join()

    assert not errors, errors
    assert decision.outcome == "rolled_back"
    before = {v for sent, done, v in seen if done < rolled_back_at[0] - 0.2}
    after = {v for sent, done, v in seen if sent > rolled_back_at[0]}
    assert before == {2}
    assert after == {1}  # every request sent after the rollback returned is served by version 1
    with sessions() as session:
        stored = decisions.list_decisions(session=session, model_id=model_id)
        history = releases.serving_history(session=session, model_id=model_id)
    assert [h.champion for h in history] == [1, 2, 1]
    assert stored[-1].rationale == "alice rolled 'ont-offline' back from version 2 to version 1."


def test_a_rollback_to_a_missing_or_damaged_version_is_refused_and_changes_nothing(world):
    sessions, registry, model_id, _ = world
    with sessions() as session:
        v2 = versions.get_version(session=session, model_id=model_id, number=2)
        releases.restore_version(session=session, model_id=model_id, version_id=v2.id, at=START, run_id="r", reason="2")
        v1 = versions.get_version(session=session, model_id=model_id, number=1)
        weights = Path(v1.artifacts["weights"]["path"])

    with pytest.raises(LookupError, match="model 'ont-offline' has no version 9"):
        manual_rollback(sessions, model=MODEL_NAME, version=9)
    with pytest.raises(ValueError, match="version 3 of 'ont-offline' was never served"):
        manual_rollback(sessions, model=MODEL_NAME, version=3)
    weights.write_bytes(weights.read_bytes() + b"tampered")
    with pytest.raises(ArtifactError, match="sha256"):
        manual_rollback(sessions, model=MODEL_NAME, version=1)

    with sessions() as session:
        assert versions.champion(session=session, model_id=model_id).number == 2
        assert decisions.list_decisions(session=session, model_id=model_id) == []
        assert len(releases.serving_history(session=session, model_id=model_id)) == 2


def test_without_a_version_a_rollback_stops_the_release_or_restores_the_previous_champion(world):
    sessions, registry, model_id, _ = world
    _start(sessions, model_id, 2, at=START, shadow=False)

    stopped = manual_rollback(sessions, model=MODEL_NAME, now=START + timedelta(hours=1))
    with sessions() as session:
        v3 = versions.get_version(session=session, model_id=model_id, number=3)
        releases.restore_version(session=session, model_id=model_id, version_id=v3.id, at=START, run_id="r", reason="3")
    restored = manual_rollback(sessions, model=MODEL_NAME, now=START + timedelta(hours=2))

    assert stopped.rationale == "operator stopped the release of 'ont-offline'; version 1 serves everyone."
    assert restored.rationale == "operator rolled 'ont-offline' back from version 3 to version 1."
    with sessions() as session:
        stages = [v.stage for v in versions.list_versions(session=session, model_id=model_id)]
        edge = assignment(session, model=MODEL_NAME, entity="ont-1")
    assert stages == ["champion", "rolled_back", "rolled_back"]
    assert (edge["version"], edge["stage"]) == (1, "champion")
    assert set(edge["artifacts"]) >= {"weights"}
