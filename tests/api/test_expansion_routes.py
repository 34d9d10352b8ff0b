"""Corpus expansion over HTTP: the queries a text model does not know, clustered and shown with
suggested names; a person names one as a new intent, the model's classes grow and the queries
around it are asked for labels, all logged; bad names and proposals are refused, nothing half-done."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from driftpilot import cli
from driftpilot.api import create_app
from driftpilot.config import Settings
from driftpilot.memory import db, decisions, managed
from driftpilot.memory.tokens import create_token
from driftpilot.models.registry import Registry

BANKING = Path(__file__).parents[1] / "data" / "banking77" / "train.csv"
KNOWN = ("card_arrival", "lost_or_stolen_card", "top_up_failed")
#: Intents the first model never saw, arriving as unlabelled queries.
NEW = ("exchange_rate", "pin_blocked")
URL = "/models/support"


@pytest.fixture(scope="module")
def support(tmp_path_factory):
    """The service with a text model of three intents that has met queries of two others."""
    tmp = tmp_path_factory.mktemp("expansion")
    queries = pd.read_csv(BANKING)
    history = queries[queries["category"].isin(KNOWN)].groupby("category").head(40).reset_index(drop=True)
    history.rename(columns={"text": "query", "category": "intent"}).to_csv(tmp / "queries.csv", index=False)
    home = tmp / "home"
    args = ["--home", str(home), "models", "register", "support", "--data", str(tmp / "queries.csv")]
    assert cli.main([*args, "--target", "intent", "--text-col", "query"]) == 0
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    app = create_app(sessions, Registry(home / "artifacts"), settings=Settings(home=home))
    headers = {role: _bearer(sessions, role) for role in ("ingest", "operator", "auditor")}
    client = TestClient(app)
    later = queries[queries["category"].isin(NEW + KNOWN)].groupby("category").tail(25).reset_index(drop=True)
    sent = [
        {
            "key": f"q-{i}",
            "entity": f"customer-{i}",
            "time": f"2026-12-06T10:{i // 60:02d}:{i % 60:02d}Z",
            "features": {"query": text},
        }
        for i, text in enumerate(later["text"])
    ]
    stored = client.post(f"{URL}/events", json={"events": sent}, headers=headers["ingest"])
    assert stored.status_code == 200, stored.text
    truth = dict(zip((e["key"] for e in sent), later["category"], strict=True))
    return client, sessions, headers, truth


def _bearer(sessions, role: str) -> dict[str, str]:
    # The conftest's bearer fixture is per test; the service here is built once for the module.
    with sessions() as session:
        _, secret = create_token(session=session, name=f"{role}-1", role=role)
    return {"Authorization": f"Bearer {secret}"}


def _classes_and_decisions(sessions) -> tuple[list[str], int]:
    with sessions() as session:
        model = managed.get_model(session=session, name="support")
        return managed.model_schema(model).classes, len(decisions.list_decisions(session=session, model_id=model.id))


def _keys(sessions, ids) -> list[str]:
    from driftpilot.memory.tables import Event

    with sessions() as session:
        return [session.get(Event, i).key for i in ids]


def test_unknown_queries_are_clustered_named_as_a_new_intent_and_asked_around(support) -> None:
    client, sessions, headers, truth = support

    shown = client.post(f"{URL}/clusters", headers=headers["operator"])
    auditor = client.post(f"{URL}/clusters", headers=headers["auditor"])

    assert shown.status_code == 200, shown.text
    assert auditor.status_code == 403  # proposing writes a decision: operators only
    proposal, clusters = shown.json()["proposal"], shown.json()["clusters"]
    assert clusters, "two unseen intents of 25 queries each make at least one cluster"
    # The biggest cluster is mostly one unseen intent, and its name and examples say so.
    members = [truth[k] for k in _keys(sessions, clusters[0]["event_ids"])]
    intent = max(set(members), key=members.count)
    assert intent in NEW and members.count(intent) / len(members) >= 0.8
    assert clusters[0]["suggested_name"] and len(clusters[0]["examples"]) >= 3

    named = client.post(
        f"{URL}/clusters/{proposal}/0/name", json={"label": intent, "around": 10}, headers=headers["operator"]
    )
    again = client.post(
        f"{URL}/clusters/{proposal}/0/name", json={"label": intent, "around": 10}, headers=headers["operator"]
    )
    renamed = client.post(f"{URL}/clusters/{proposal}/0/name", json={"label": "other"}, headers=headers["operator"])

    assert named.status_code == 200 and named.json()["changed"] == 11  # a new class and 10 requests
    assert again.json()["changed"] == 0 and again.json()["decision"] is None
    assert renamed.status_code == 422 and f"named {intent!r} already" in renamed.json()["detail"]
    with sessions() as session:
        model = managed.get_model(session=session, name="support")
        assert managed.model_schema(model).classes[-1] == intent
        logged = [d for d in decisions.list_decisions(session=session, model_id=model.id) if d.agent == "operator"]
    assert [d.action for d in logged][-2:] == ["corpus_clusters", "corpus_name_cluster"]
    assert logged[-1].trigger == {"by": "operator-1"} and logged[-1].evidence["new_class"] is True
    # The requests around it: mostly the new intent, each saying why; a person answers with it.
    requests = client.get(f"{URL}/label-requests", params={"limit": 100}, headers=headers["auditor"]).json()
    around = [r for r in requests if f"named {intent!r}" in r["reason"]]
    assert len(around) == 10
    asked = [truth[r["key"]] for r in around]
    assert asked.count(intent) >= 7
    answered = client.post(
        f"{URL}/label-requests/{around[0]['id']}/answer", json={"label": intent}, headers=headers["operator"]
    )
    assert answered.status_code == 200, answered.text


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/clusters/999999/0/name", {"label": "x"}, "is not a proposal of clusters"),
        ("/clusters/{proposal}/99/name", {"label": "x"}, "not 99"),
        ("/clusters/{proposal}/0/name", {"label": "  "}, "non-empty class name"),
    ],
)
def test_a_bad_proposal_cluster_or_name_is_refused_and_changes_nothing(support, path, body, message) -> None:
    client, sessions, headers, _ = support
    proposal = client.post(f"{URL}/clusters", headers=headers["operator"]).json()["proposal"]
    with sessions() as session:
        model = managed.get_model(session=session, name="support")
        before = (
            managed.model_schema(model).classes,
            len(decisions.list_decisions(session=session, model_id=model.id)),
        )

    refused = client.post(URL + path.format(proposal=proposal), json=body, headers=headers["operator"])

    assert refused.status_code == 422 and message in refused.json()["detail"]
    assert _classes_and_decisions(sessions) == before
