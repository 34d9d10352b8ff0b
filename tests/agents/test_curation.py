"""The Curator's data work before a snapshot: cleaning kept out of the corpus with why, and
pseudo-labels only where the champion has earned them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from driftpilot.agents.curation import cleaned, cleaning_evidence, keep_out, pseudo_labelled
from driftpilot.memory import corpus, db, events, labels, managed
from driftpilot.memory.ingest import ingest_events, ingest_labels
from driftpilot.memory.schemas import FeatureSpec, ModelSchema
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import load_policy

T0 = datetime(2026, 3, 1, tzinfo=UTC)
SCHEMA = ModelSchema(
    features=[FeatureSpec(name="rx", kind="number"), FeatureSpec(name="temp", kind="number")],
    target="state",
    classes=["ok", "bad"],
    entity_key="device",
)


@pytest.fixture
def world(tmp_path):
    """Six devices, 40 readings each; device d0 reports one stuck rx from reading 10 on, and
    reading 5 of d1 arrives twice under two keys (a relay's repeat)."""
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    rng = np.random.default_rng(0)
    rows, given = [], []
    for d in range(6):
        for i in range(40):
            rx = float(rng.normal(-20, 2))
            temp = float(rng.normal(50, 3))
            if d == 0 and i >= 10:
                rx = -21.25
            key = f"d{d}-{i}"
            time = T0 + timedelta(minutes=15 * i, seconds=d)
            rows.append({"key": key, "time": time, "entity": f"d{d}", "features": {"rx": rx, "temp": temp}})
            given.append({"event_key": key, "value": "bad" if rx < -22 else "ok", "source": "system"})
    repeat = next(r for r in rows if r["key"] == "d1-5")
    rows.append({**repeat, "key": "d1-5-again"})
    given.append({"event_key": "d1-5-again", "value": given[45]["value"], "source": "system"})
    with sessions() as session:
        model = managed.register_model(session=session, name="m", task="tabular", family="tabular_mlp", schema=SCHEMA)
        ingest_events(session=session, model="m", events=rows)
        ingest_labels(session=session, model="m", labels=given)
    yield sessions, model
    sessions.kw["bind"].dispose()


def test_cleaning_keeps_stuck_and_repeated_readings_out_of_training_and_the_corpus(world) -> None:
    sessions, model = world
    policy = load_policy()
    with sessions() as session:
        recent = events.window(session=session, model_id=model.id, start=None, end=None, labelled_only=True)
        kept, report = cleaned(session, model, recent, policy, seed=0)
        added = keep_out(session, model, report, decision_id=None, now=T0)  # type: ignore[arg-type]
        in_corpus = events.window(
            session=session, model_id=model.id, start=None, end=None, labelled_only=True, corpus_only=True
        )
        out = corpus.corpus_rows(session=session, model_id=model.id, include_excluded=True, limit=None)

    evidence = cleaning_evidence(report)
    kinds = {r["key"]: r["excluded"]["kind"] for r in out if r["excluded"]}
    stuck = {f"d0-{i}" for i in range(11, 40)}  # the first stuck reading is a reading like any
    assert report is not None and added == len(report.quarantine)
    assert stuck <= {k for k, kind in kinds.items() if kind == "stuck"}
    assert kinds.get("d1-5-again") == "duplicate" and "d1-5" not in kinds
    assert len(kept) == len(in_corpus) == len(recent) - len(kinds)
    assert evidence["steps"]["stuck"]["kept_out"] >= len(stuck)
    assert all("repeats -21.25" in r["excluded"]["reason"] for r in out if r["key"] in stuck)


def test_no_cleaning_step_when_the_policy_asks_for_none(world) -> None:
    sessions, model = world
    policy = load_policy().model_copy(update={"data": load_policy().data.model_copy(update={"cleaning": []})})
    with sessions() as session:
        recent = events.window(session=session, model_id=model.id, start=None, end=None, labelled_only=True)
        kept, report = cleaned(session, model, recent, policy, seed=0)
    assert report is None and len(kept) == len(recent)


def test_pseudo_labels_come_only_where_the_champion_earned_them(world) -> None:
    sessions, model = world
    off = load_policy()
    policy = off.model_copy(update={"data": off.data.model_copy(update={"pseudo_label_share": 0.2})})
    with sessions() as session:
        frame = events.window(session=session, model_id=model.id, start=None, end=None)
    labelled, pool = frame.iloc[:200], frame.iloc[200:].assign(label=None)
    sure = TabularMLP([("rx", "number"), ("temp", "number")], ["ok", "bad"], epochs=30, seed=0).fit(
        labelled, labelled["label"].to_numpy()
    )
    with sessions() as session:
        pseudo, evidence = pseudo_labelled(
            session, model, sure, labelled, pool, policy, n_train=200, changed=False, now=T0 + timedelta(days=1)
        )
        refused, why = pseudo_labelled(
            session, model, sure, labelled, pool, policy, n_train=200, changed=True, now=T0 + timedelta(days=1)
        )
        stored = labels.count_labels(session=session, model_id=model.id, source="pseudo")
        _, default = pseudo_labelled(
            session, model, sure, labelled, pool, off, n_train=200, changed=False, now=T0 + timedelta(days=1)
        )

    truth = frame.set_index("id")["label"]
    assert 0 < len(pseudo) <= 50  # a fifth of the snapshot at most: 0.2 / 0.8 × 200
    assert evidence["precision_on_labelled"] >= 0.99 and evidence["judged"] >= 50
    assert (pseudo["label"].to_numpy() == truth.loc[pseudo["id"]].to_numpy()).mean() >= 0.95
    assert stored == len(pseudo)  # kept, for audit, with source "pseudo"
    assert refused.empty and why["reason"].startswith("the concept changed")
    assert default == {"used": 0, "reason": "pseudo-labels are off"}  # the shipped policy's default
