"""The Trainer: incremental by default and saying why, gated against forgetting, refusing bad sets.

The champion is deliberately under-trained (a small sample, a few epochs), so a candidate trained
on the whole snapshot is clearly better: the fixtures sit far from the gate's thresholds, and what
is asserted of training holds on any CPU.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import numpy as np
import onnx
import pytest
from langgraph.runtime import Runtime

import driftpilot.agents.trainer as trainer_module
from driftpilot.agents.context import AgentContext
from driftpilot.agents.state import LoopState
from driftpilot.agents.trainer import trainer
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.loop.federation import federate
from driftpilot.memory import db, decisions, events, managed, snapshots, versions
from driftpilot.memory.ingest import EventBatch, ingest_events, ingest_labels
from driftpilot.models.edge_export import EDGE_ARTIFACT
from driftpilot.models.registry import Registry, artifact_file
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import PolicyEngine, StartCanaryFacts, Usage, evaluate
from driftpilot.policies.loader import policy_from_mapping
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from tests.ont_world import ingest_ticks, register_ont

START = datetime(2026, 3, 1, tzinfo=UTC)
#: The default policy, with room for every test's retrain in one day, and the ONT operator's
#: metric (the demo's ONT_CHOICES): an ONT going offline is the rare class that matters.
POLICY = {
    "name": "trainer-test",
    "budgets": {"max_retrains_per_day": 100},
    "evaluation": {"metric": "balanced_accuracy"},
    # The attempts each test counts; augmentation has a test of its own.
    "data": {"augmentation": False},
}
RUNS = itertools.count(1)
#: Rows and epochs of the under-trained champion.
CHAMPION_ROWS, CHAMPION_EPOCHS = 1500, 3
#: Least gain on the recent holdout that counts as "clearly better" (the gate's floor is -0.02).
CLEAR_GAIN = 0.03


class World(SimpleNamespace):
    def state(self, snapshot_id: int, cause: str = "covariate_drift", trigger: str = "test") -> dict:
        return {
            "model": MODEL_NAME,
            # Each run its own id: a run that finds its own version (a resume) does not train again.
            "run_id": f"test/{next(RUNS)}",
            "now": self.now.isoformat(),
            "trigger": {"kind": trigger},
            "diagnosis": {"cause": cause},
            "snapshot_id": snapshot_id,
        }

    def snapshot(self, ids, labels=None, *, recent=None, old=None) -> int:
        ids = [int(i) for i in ids]
        with self.sessions() as session:
            return snapshots.create_snapshot(
                session=session,
                model_id=self.model_id,
                event_ids=ids,
                labels=list(labels) if labels is not None else [self.labels[i] for i in ids],
                time=self.now,
                stats={"recent_holdout_ids": list(recent or self.recent), "old_holdout_ids": list(old or self.old)},
            ).id

    def run(
        self, snapshot_id: int, *, cause: str = "covariate_drift", policy=None, federate=None, trigger="test"
    ) -> dict:
        context = AgentContext(
            sessions=self.sessions,
            registry=self.registry,
            policy=PolicyEngine(policy or policy_from_mapping(POLICY)),
            seed=0,
            federate=federate,
        )
        runtime = cast(Runtime[AgentContext], SimpleNamespace(context=context))
        return trainer(cast(LoopState, self.state(snapshot_id, cause, trigger)), runtime)

    def decisions(self, action: str) -> list[dict]:
        with self.sessions() as session:
            found = decisions.list_decisions(session=session, model_id=self.model_id, action=action)
            return [decisions.decision_as_dict(d) for d in found]

    def last_decision(self):
        with self.sessions() as session:
            return decisions.decision_as_dict(decisions.list_decisions(session=session, model_id=self.model_id)[-1])


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trainer")
    sessions = db.connect(f"sqlite:///{tmp / 'm.sqlite'}")
    registry = Registry(tmp / "artifacts")
    ticks = list(OntSimulator(OntScenarioConfig(n_onts=150, days=1.0, seed=5, outages=())).ticks())
    features = {k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features}
    labels = np.concatenate([t.labels for t in ticks])
    n = len(labels)
    ids = np.arange(1, n + 1)  # event ids follow ingestion order
    rng = np.random.default_rng(0)
    # The old-concept holdout: rows of the first half the champion was not trained on.
    old = rng.choice(ids[: n // 2], 400, replace=False)
    first_half = np.setdiff1d(np.arange(n // 2), old - 1)
    with sessions() as session:
        model = register_ont(session)
        keys = ingest_ticks(session, ticks)
        now = ticks[-1].time + timedelta(minutes=5)
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[{"event_key": k, "value": str(v), "time": now} for k, v in zip(keys, labels, strict=True)],
        )
        sample = first_half[:: len(first_half) // CHAMPION_ROWS][:CHAMPION_ROWS]
        champion = TabularMLP(FEATURES, CLASSES, epochs=CHAMPION_EPOCHS, seed=0).fit(
            {k: v[sample] for k, v in features.items()}, labels[sample]
        )
        registry.register(
            session=session,
            model_id=model.id,
            model_name=MODEL_NAME,
            model=champion,
            time=START,
            stage="champion",
            metrics={"reference_balanced_accuracy": 0.9},
        )
    recent = ids[-n // 10 :]
    # As the Curator would: the newer rows, and a replay share of those the champion learnt from.
    replay = rng.choice(first_half + 1, 2000, replace=False)
    train = np.concatenate([ids[n // 2 : -n // 10], replay])
    return World(
        sessions=sessions,
        registry=registry,
        model_id=model.id,
        now=now,
        labels={int(i): str(labels[i - 1]) for i in ids},
        old=old.tolist(),
        recent=recent.tolist(),
        train=train.tolist(),
        root=tmp / "artifacts",
    )


def _versions(world):
    with world.sessions() as session:
        return [(v.number, v.stage) for v in versions.list_versions(session=session, model_id=world.model_id)]


def _folders(world):
    return sorted(p.name for p in (world.root / MODEL_NAME).iterdir())


def test_the_trainer_updates_incrementally_by_default_lets_rivals_compete_and_says_why(world):
    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    evidence = decision["evidence"]
    # A candidate clearly better than the champion in the policy's metric is accepted.
    compared = evidence["evaluation"]
    assert compared["metric"] == "balanced_accuracy"
    assert compared["candidate_metric"] - compared["champion_metric"] >= CLEAR_GAIN, compared
    assert decision["outcome"] == out["outcome"] == "candidate"
    assert out["candidate"] == evidence["version"]
    # The plan is an update held by EWC; a full retrain and a linear model compete with it on the
    # same snapshot, and the newest labels, held out of all three, choose.
    update, retrain, linear = evidence["attempts"]
    assert (update["plan"]["mode"], update["plan"]["scope"], update["plan"]["penalty"]) == ("update", "all", "ewc")
    assert (retrain["plan"]["mode"], retrain["plan"]["hidden"]) == ("scratch", None)
    assert (linear["plan"]["mode"], linear["plan"]["hidden"]) == ("scratch", [])
    chosen = max((a for a in evidence["attempts"] if a["gate_passed"]), key=lambda a: a["candidate_metric"])
    assert evidence["plan"] == chosen["plan"]
    assert "incremental update of the whole network" in decision["rationale"]
    assert "covariate_drift" in " ".join(update["plan"]["reasons"]) and "learning rate" in decision["rationale"]
    assert "Chosen on the recent holdout over" in decision["rationale"]
    training = evidence["training"]
    assert training["mode"] == chosen["plan"]["mode"]
    if chosen is update:
        assert training["lr_source"].startswith("half the lineage's last full training's")
    assert len(training["curves"]) == training["epochs"] >= 1
    assert {row["measure"] for row in evidence["comparison_table"]} >= {"balanced accuracy (recent)"}
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=evidence["version"])
        assert version.metrics["updates_since_scratch"] == (1 if chosen is update else 0)
        assert version.metrics["training"]["curves"] == training["curves"]
        assert version.metrics["comparison_table"] == evidence["comparison_table"]
        # The candidate is held to what it scored on the newest labels, not to the champion's
        # inherited reference (0.9): a reference describes what is attainable now.
        assert version.metrics["reference_balanced_accuracy"] == evidence["evaluation"]["candidate_recent"] != 0.9


def test_the_gate_facts_the_run_carries_are_judged_again_as_they_were(world):
    out = world.run(world.snapshot(world.train), cause="concept_drift")

    decision = world.last_decision()
    carried = out["evaluation"]
    # The state carries the evaluation's record and the gate's facts as plain data ...
    assert carried["gain"] == decision["evidence"]["evaluation"]["gain"]
    gate = StartCanaryFacts.model_validate(carried["gate_facts"])
    assert (gate.share, gate.concept_changed, gate.slices_compared) == (None, True, True)
    assert gate.candidate_score == carried["candidate_recent"]
    # ... which, rebuilt, the policy judges as the Trainer's gate did (the share aside).
    policy = policy_from_mapping(POLICY)
    share = gate.model_copy(update={"share": policy.release.canary_share})
    again = evaluate(policy, "start_canary", share, Usage())
    assert again.model_dump() == decision["policy_verdicts"][1]
    # The slices compared are those of the model's schema.
    with world.sessions() as session:
        columns = managed.model_schema(managed.get_model(session=session, name=MODEL_NAME)).slice_columns
    assert carried["candidate"]["slices"]
    assert {name.split("=")[0] for name in carried["candidate"]["slices"]} <= set(columns)


def test_a_local_cause_updates_the_output_layer_only(world):
    world.run(world.snapshot(world.train), cause="prior_shift")

    decision = world.last_decision()
    update, rival, _linear = decision["evidence"]["attempts"]
    assert (update["plan"]["mode"], update["plan"]["scope"]) == ("update", "head")
    assert "only the output layer is updated" in " ".join(update["plan"]["reasons"])
    # A full retrain competes with it; the newest labels chose the one in "plan".
    assert rival["plan"]["mode"] == "scratch" and "competes with the update" in rival["plan"]["reasons"][0]
    chosen = max((a for a in decision["evidence"]["attempts"] if a["gate_passed"]), key=lambda a: a["candidate_recent"])
    assert decision["evidence"]["plan"] == chosen["plan"]


def test_the_policy_can_ask_for_full_retrains(world):
    policy = policy_from_mapping(POLICY | {"training": {"strategy": "full"}})
    world.run(world.snapshot(world.train), policy=policy)

    decision = world.last_decision()
    assert decision["evidence"]["plan"]["mode"] == "scratch"
    assert decision["evidence"]["training"]["lr_source"] == "range test"
    assert "full retrain from scratch" in decision["rationale"]


def test_the_gate_blocks_a_candidate_that_forgets(world, monkeypatch):
    real = trainer_module.train_candidate
    old_ids = set(world.old)

    def forgetful(parent, columns, labels, plan, **kwargs):
        candidate = real(parent, columns, labels, plan, **kwargs)
        honest = candidate.predict_proba

        def predict_proba(frame):
            # Right on what it will serve next, wrong on every old-concept row.
            proba = honest(frame)
            if "id" in frame:
                forgot = frame["id"].isin(old_ids).to_numpy()
                proba[forgot] = proba[forgot][:, ::-1]
            return proba

        candidate.predict_proba = predict_proba
        candidate.predict = lambda frame: np.asarray(candidate.classes)[predict_proba(frame).argmax(axis=1)]
        return candidate

    monkeypatch.setattr(trainer_module, "train_candidate", forgetful)
    before = _versions(world)

    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    assert out["outcome"] == decision["outcome"] == "rejected" and out["candidate"] is None
    failed = [v["rule"] for verdict in decision["policy_verdicts"] for v in verdict["verdicts"] if not v["passed"]]
    assert failed == ["forgetting_gate"]
    # The update failed the gate, so the full retrain was tried too, and a linear model; they
    # forgot as well.
    assert [a["plan"]["mode"] for a in decision["evidence"]["attempts"]] == ["update", "scratch", "scratch"]
    assert _versions(world) == [*before, (before[-1][0] + 1, "rejected")]


def test_the_gate_rejects_a_candidate_clearly_worse_than_the_champion(world, monkeypatch):
    real = trainer_module.train_candidate

    def wrong(parent, columns, labels, plan, **kwargs):
        candidate = real(parent, columns, labels, plan, **kwargs)
        honest = candidate.predict_proba

        def predict_proba(frame):
            # Its least likely class on every row: far below the champion everywhere.
            unlikely = 1.0 - honest(frame)
            return unlikely / unlikely.sum(axis=1, keepdims=True)

        candidate.predict_proba = predict_proba
        return candidate

    monkeypatch.setattr(trainer_module, "train_candidate", wrong)
    before = _versions(world)

    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    assert out["outcome"] == decision["outcome"] == "rejected" and out["candidate"] is None
    assert decision["evidence"]["evaluation"]["gain"] <= -CLEAR_GAIN
    failed = {v["rule"] for verdict in decision["policy_verdicts"] for v in verdict["verdicts"] if not v["passed"]}
    assert "offline_gate" in failed
    assert [a["plan"]["mode"] for a in decision["evidence"]["attempts"]] == ["update", "scratch", "scratch"]
    assert "Kept for audit, not released" in decision["rationale"]
    assert _versions(world) == [*before, (before[-1][0] + 1, "rejected")]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda w: ([], []), "cannot train on an empty training set"),
        (lambda w: (w.train[:300], ["online"] * 300), "cannot train on a single class"),
    ],
)
def test_a_set_it_cannot_train_on_fails_clearly_and_registers_nothing(world, make, message):
    ids, labels = make(world)
    before, folders = _versions(world), _folders(world)

    out = world.run(world.snapshot(ids, labels))

    decision = world.last_decision()
    assert out == {"candidate": None, "outcome": "training_failed", "last_decision": decision["id"]}
    assert decision["outcome"] == "failed" and message in decision["rationale"]
    assert _versions(world) == before and _folders(world) == folders


def test_features_that_do_not_match_the_family_fail_clearly(world, monkeypatch):
    champion = world.registry.load(_champion(world))
    stale = TabularMLP([*FEATURES, ("vendor_counter", "number")], CLASSES, epochs=1)
    stale.encoding_, stale.net_, stale.report_ = champion.encoding_, champion.net_, champion.report_
    monkeypatch.setattr(world.registry, "load", lambda version: stale)
    before, folders = _versions(world), _folders(world)

    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    assert out["outcome"] == "training_failed"
    assert "features ['vendor_counter'] of the tabular_mlp schema are missing" in decision["rationale"]
    assert _versions(world) == before and _folders(world) == folders


def _champion(world):
    with world.sessions() as session:
        return versions.champion(session=session, model_id=world.model_id)


def test_a_challenger_no_better_than_the_champion_on_the_newest_labels_is_not_released(world, monkeypatch):
    # Every attempt gives back the champion itself: as good as it on every holdout, so the gate
    # (which lets a retrain give up a little) passes it. A challenger answers no finding: it must
    # be ahead to be released.
    monkeypatch.setattr(trainer_module, "train_candidate", lambda parent, *args, **kwargs: parent)
    context = AgentContext(
        sessions=world.sessions, registry=world.registry, policy=PolicyEngine(policy_from_mapping(POLICY)), seed=0
    )
    runtime = cast(Runtime[AgentContext], SimpleNamespace(context=context))

    def run(challenge):
        state = world.state(world.snapshot(world.train)) | {"challenge": challenge, "diagnosis": None}
        return trainer(cast(LoopState, state), runtime), world.last_decision()

    out, decision = run({"new_labels": 600, "every": 500, "since": START.isoformat()})
    assert out["outcome"] == decision["outcome"] == "rejected" and out["candidate"] is None
    assert decision["evidence"]["evaluation"]["gain"] == 0 and decision["evidence"]["challenger"]["every"] == 500
    assert all(verdict["allowed"] for verdict in decision["policy_verdicts"])
    assert decision["rationale"].startswith("A challenger of the champion.")
    assert decision["rationale"].endswith("a challenger must score higher than the champion on the newest labels.")
    # The same candidate answering a finding goes to canary.
    out, decision = run(None)
    assert out["outcome"] == "candidate" and decision["evidence"]["challenger"] is None


def test_an_earlier_champion_competes_as_it_is_and_wins_when_what_is_trained_is_worse(world, monkeypatch):
    # Runs last: it makes a new champion. Version 1 is archived when a poor model (trained on a
    # handful of rows) is promoted over it; then whatever the Trainer trains is poor too.
    with world.sessions() as session:
        before = _champion(world).number
        rows = world.train[:60]
        frame = events.events_by_ids(session=session, ids=rows)
        poor = TabularMLP(FEATURES, CLASSES, epochs=1, seed=0, hidden=(4,))
        poor.fit(frame, [world.labels[i] for i in rows])
        world.registry.register(
            session=session, model_id=world.model_id, model_name=MODEL_NAME, model=poor, time=START, stage="champion"
        )
    monkeypatch.setattr(trainer_module, "train_candidate", lambda parent, *args, **kwargs: poor)

    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    reused = [a for a in decision["evidence"]["attempts"] if a["plan"]["mode"] == "reuse"]
    assert [a["plan"]["version"] for a in reused] == [before]
    assert out["outcome"] == "candidate" and decision["evidence"]["plan"]["mode"] == "reuse"
    assert f"is version {before} again, as it served before (nothing trained)" in decision["rationale"]
    assert "Settings found for this run" not in decision["rationale"]


def test_under_the_default_metric_candidates_are_trained_for_accuracy_and_chosen_by_it(world):
    # The champion was trained for balanced accuracy (rare classes weighed up); the default
    # policy's metric is accuracy: today's policy decides how candidates are trained.
    out = world.run(world.snapshot(world.train), policy=policy_from_mapping({**POLICY, "evaluation": {}}))

    evidence = world.last_decision()["evidence"]
    assert evidence["evaluation"]["metric"] == "accuracy"
    assert evidence["evaluation"]["candidate_metric"] == evidence["evaluation"]["candidate"]["accuracy"]
    trained = [a for a in evidence["attempts"] if a["plan"]["mode"] != "reuse"]
    chosen = max((a for a in evidence["attempts"] if a["gate_passed"]), key=lambda a: a["candidate_metric"])
    assert evidence["plan"] == chosen["plan"] and len(trained) >= 2
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=evidence["version"])
    assert out["outcome"] == "candidate"
    assert world.registry.load(version).class_weight is None
    assert world.registry.load(_champion(world)).class_weight == "balanced"


def test_rare_classes_make_an_augmented_rival_whose_effect_the_decision_records(world):
    # A snapshot where one failure class is left with a handful of rows: rare by the rule.
    ids = [i for i in world.train if world.labels[i] == "online"][:1500]
    rare = [i for i in world.train if world.labels[i] == "fibre"][:4]
    others = [i for i in world.train if world.labels[i] not in ("online", "fibre")]
    policy = policy_from_mapping({**POLICY, "data": {"augmentation": True}})

    world.run(world.snapshot(ids + rare + others), policy=policy)

    decision = world.last_decision()
    evidence = decision["evidence"]
    augmented = [a for a in evidence["attempts"] if a["plan"]["augment"]]
    plain = [a for a in evidence["attempts"] if not a["plan"]["augment"]]
    assert len(augmented) == 1 and augmented[0]["plan"]["mode"] == plain[0]["plan"]["mode"]
    assert "synthetic rows for the rare classes" in " ".join(augmented[0]["plan"]["reasons"])
    effect = evidence["augmentation"]
    assert effect["added"]["fibre"] > 0 and "fibre +" in effect["summary"]
    assert effect["effect"] == pytest.approx(augmented[0]["candidate_metric"] - plain[0]["candidate_metric"], abs=1e-4)
    if evidence["plan"]["augment"]:
        assert "augmented for its rare classes" in decision["rationale"]


def test_an_accepted_candidate_goes_out_with_an_edge_student_judged_by_the_same_gate(world):
    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    student = decision["evidence"]["student"]
    assert out["outcome"] == "candidate"
    assert student["released"] is True, student["reason"]
    # Distilled on the event's own fields: what the server derives from an entity's history is
    # not something a node sees.
    derived = {f.name for f in schema_of_ont().derived_features}
    assert set(student["features"]) == {name for name, _ in FEATURES} - derived
    assert set(student["features_left_out"]) == {name for name, _ in FEATURES} & derived
    assert student["family"] == "tabular_mlp" and student["training"]["mode"] == "distilled"
    assert student["teacher_agreement"] > 0.9
    assert student["parity"]["passed"] and student["parity"]["agreement"] >= 0.995
    # The champion went out without a student: this first one replaces nothing at the edge, and
    # its comparison with its teacher is recorded (a later one is gated against the champion's).
    assert student["compared_with"] == "its teacher (the first student)"
    assert student["evaluation"]["metric"] == "balanced_accuracy"
    assert student["evaluation"]["champion_metric"] - student["evaluation"]["candidate_metric"] < 0.1
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=out["candidate"])
        assert version.metrics["student"]["teacher_agreement"] == student["teacher_agreement"]
        # A version of its own: stage "student", its teacher as parent, the same decision.
        own = versions.student_of(session=session, version=version)
        assert own is not None and (own.number, own.stage) == (student["version"], "student")
        assert (own.parent_id, own.decision_id, own.metrics["student_of"]) == (
            version.id,
            version.decision_id,
            version.number,
        )
        assert own.metrics["teacher_agreement"] == student["teacher_agreement"]
        assert EDGE_ARTIFACT not in version.artifacts
        path, _ = artifact_file(own, EDGE_ARTIFACT)
    # The node's artifact is the int8 graph on raw fields, its columns in its metadata.
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    columns = json.loads(meta["driftpilot.numbers"]) + json.loads(meta["driftpilot.categories"])
    assert sorted(columns) == sorted(student["features"])


def test_a_student_whose_int8_graph_disagrees_stays_home_and_the_decision_says_why(world, monkeypatch):
    real = trainer_module.distil_student

    def disagreeing(*args, **kwargs):
        made = real(*args, **kwargs)
        made.parity = replace(made.parity, agreement=0.97, disagreements=[{"row": 3}])
        return made

    monkeypatch.setattr(trainer_module, "distil_student", disagreeing)
    out = world.run(world.snapshot(world.train))

    student = world.last_decision()["evidence"]["student"]
    assert out["outcome"] == "candidate"  # the teacher still goes out; the edge keeps its last student
    assert student["released"] is False
    assert "int8 graph agrees with it on 97.00%" in student["reason"]
    assert student["parity"]["disagreements"] == [{"row": 3}]
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=out["candidate"])
        assert versions.student_of(session=session, version=version) is None


def test_the_policy_can_turn_distillation_off(world):
    out = world.run(world.snapshot(world.train), policy=policy_from_mapping(POLICY | {"training": {"distil": False}}))

    assert world.last_decision()["evidence"]["student"] is None
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=out["candidate"])
        assert versions.student_of(session=session, version=version) is None


class _Oracle:
    """An incumbent student that reads the truth off the holdout (or always says one class)."""

    classes = list(CLASSES)

    def __init__(self, constant: str | None = None) -> None:
        self.constant = constant

    def predict_proba(self, frame):
        answer = [self.constant] * len(frame) if self.constant else list(frame["label"])
        return (np.asarray(answer)[:, None] == np.asarray(self.classes)).astype(float)

    def predict(self, frame):
        return np.asarray(self.classes)[self.predict_proba(frame).argmax(axis=1)]

    def size_bytes(self):
        return 1


@pytest.mark.parametrize(("incumbent", "released"), [(_Oracle(), False), (_Oracle("online"), True)])
def test_a_later_student_must_pass_the_gate_against_the_student_the_nodes_run(world, monkeypatch, incumbent, released):
    monkeypatch.setattr(trainer_module, "_champion_student", lambda *args: incumbent)
    out = world.run(world.snapshot(world.train))

    decision = world.last_decision()
    student = decision["evidence"]["student"]
    assert out["outcome"] == "candidate"
    assert student["compared_with"] == "the champion's student"
    assert student["released"] is released
    # The student's own verdict is logged beside the teacher's.
    assert [v["action"] for v in decision["policy_verdicts"]] == ["retrain", "start_canary", "start_canary"]
    assert decision["policy_verdicts"][2]["allowed"] is released
    if not released:
        assert student["reason"].startswith("the gate against the champion's student: ")
    with world.sessions() as session:
        version = versions.get_version(session=session, model_id=world.model_id, number=out["candidate"])
        assert (versions.student_of(session=session, version=version) is not None) is released


def test_a_student_also_learns_from_the_newest_unlabelled_events(world):
    tick = next(iter(OntSimulator(OntScenarioConfig(n_onts=40, days=0.1, seed=9, outages=())).ticks()))
    with world.sessions() as session:
        ingest_events(
            session=session,
            model=MODEL_NAME,
            events=EventBatch(
                keys=[f"unlabelled/{e}" for e in tick.entities],
                times=[world.now - timedelta(minutes=1)] * len(tick),
                entities=list(tick.entities),
                groups=list(tick.groups),
                features=tick.features,
            ),
        )
    out = world.run(world.snapshot(world.train))

    student = world.last_decision()["evidence"]["student"]
    assert out["outcome"] == "candidate" and student["released"] is True
    assert student["rows"] - student["labelled_rows"] == len(tick)


#: Federated rounds over the snapshot's OLT ports as simulated nodes, small enough to be quick.
FEDERATED = {"mode": "simulation", "rounds": 2, "local_epochs": 1, "min_nodes": 4}


def test_a_federated_candidate_competes_and_its_own_decision_records_the_rounds(world):
    policy = policy_from_mapping(POLICY | {"federated": FEDERATED, "training": {"distil": False}})
    before = len(world.decisions("federate"))
    world.run(world.snapshot(world.train), policy=policy, federate=federate)
    federated = world.decisions("federate")[before:]
    assert [d["outcome"] for d in federated] == ["trained"]
    done = federated[0]["evidence"]
    # One node per OLT port of the snapshot (the demo schema's group key), each with its rows.
    assert len(done["nodes"]) >= 8 and all(done["samples"][n] > 0 for n in done["nodes"])
    assert done["rounds_run"] == 2 and len(done["bytes_per_round"]) == 2
    assert done["strategy"] in ("fedavg", "fedprox") and done["reasons"]
    assert {"label_distance", "input_shift", "accuracy_spread"} <= set(done["evidence"])
    assert [v["rule"] for v in federated[0]["policy_verdicts"][0]["verdicts"]] == [
        "autonomy",
        "federated_rounds_budget",
        "federated_min_nodes",
    ]
    retrain = world.last_decision()
    plans = [a["plan"]["mode"] for a in retrain["evidence"]["attempts"]]
    assert plans[:2] == ["update", "federated"]
    summary = retrain["evidence"]["attempts"][1]["federated"]
    assert summary["rounds"] == 2 and summary["nodes"] == done["nodes"]


def test_on_a_federated_trigger_the_federated_candidate_is_the_one_judged_and_registered(world):
    policy = policy_from_mapping(POLICY | {"federated": FEDERATED, "training": {"distil": False}})
    out = world.run(world.snapshot(world.train), policy=policy, federate=federate, trigger="federated")
    retrain = world.last_decision()
    assert [a["plan"]["mode"] for a in retrain["evidence"]["attempts"]] == ["federated"]
    assert retrain["evidence"]["training"]["mode"] == "federated"
    assert "federated training across edge nodes" in retrain["rationale"]
    # Judged by the same gate as every candidate: a verdict on the comparison with the champion.
    assert retrain["policy_verdicts"][1]["action"] == "start_canary"
    assert out["outcome"] in ("candidate", "rejected")
    assert out["candidate"] == (retrain["evidence"]["version"] if out["outcome"] == "candidate" else None)


def test_the_budget_of_federated_rounds_is_kept(world):
    tight = POLICY | {"budgets": {"max_retrains_per_day": 100, "max_federated_rounds_per_day": 1}}
    policy = policy_from_mapping(tight | {"federated": FEDERATED, "training": {"distil": False}})
    before = len(world.decisions("federate"))
    world.run(world.snapshot(world.train), policy=policy, federate=federate)
    denied = world.decisions("federate")[before:]
    assert [d["outcome"] for d in denied] == ["denied"]
    assert "beyond the limit of 1 a day" in denied[0]["rationale"]
    assert [a["plan"]["mode"] for a in world.last_decision()["evidence"]["attempts"]][:2] != ["update", "federated"]


def test_a_loop_started_without_federation_says_so(world):
    policy = policy_from_mapping(POLICY | {"federated": FEDERATED, "training": {"distil": False}})
    before = len(world.decisions("federate"))
    world.run(world.snapshot(world.train), policy=policy)
    said = world.decisions("federate")[before:]
    assert [d["outcome"] for d in said] == ["denied"]
    assert "started without federation" in said[0]["rationale"]
