"""A text model brought by its user: registered from labelled queries, then fed raw texts over
HTTP and JetStream's path, stored as the sentence vectors its schema names."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from driftpilot import cli
from driftpilot.api import create_app
from driftpilot.config import Settings
from driftpilot.loop.live import store_message
from driftpilot.memory import db, events, managed
from driftpilot.models.registry import Registry

BANKING = Path(__file__).parents[1] / "data" / "banking77" / "train.csv"
INTENTS = ("card_arrival", "lost_or_stolen_card", "top_up_failed")


@pytest.mark.slow
def test_a_text_model_takes_raw_texts_and_stores_their_vectors(tmp_path, bearer, capsys) -> None:
    queries = pd.read_csv(BANKING)
    history = queries[queries["category"].isin(INTENTS)].groupby("category").head(40).reset_index(drop=True)
    history.rename(columns={"text": "query", "category": "intent"}).to_csv(tmp_path / "queries.csv", index=False)
    home = tmp_path / "home"

    code = cli.main(
        [
            "--home",
            str(home),
            "models",
            "register",
            "support",
            "--data",
            str(tmp_path / "queries.csv"),
            "--target",
            "intent",
            "--text-col",
            "query",
        ]  # fmt: skip
    )

    assert code == 0 and "features: query" in capsys.readouterr().out
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sessions() as session:
        model = managed.get_model(session=session, name="support")
    assert (model.task, model.family) == ("text_classification", "intent_mlp")
    client = TestClient(
        create_app(sessions, Registry(home / "artifacts"), settings=Settings(home=home)),
        headers=bearer(sessions, "ingest"),
    )
    event = {"key": "q-1", "entity": "customer-9", "time": "2026-12-06T10:00:00Z"}

    sent = client.post(
        "/models/support/events", json={"events": [event | {"features": {"query": "where is my card?"}}]}
    )
    empty = client.post("/models/support/events", json={"events": [event | {"key": "q-2", "features": {"query": " "}}]})
    relayed_event = event | {"key": "q-3", "time": "2026-12-06T10:01:00Z", "features": {"query": "top up failed"}}
    relayed = store_message(sessions, "nats", "driftpilot.support.events", json.dumps({"events": [relayed_event]}))

    assert sent.json() == {"inserted": 1, "duplicates": 0}
    assert empty.status_code == 422 and "feature 'query' must be a non-empty text" in empty.json()["detail"]
    assert relayed == "stored"
    with sessions() as session:
        frame = events.window(session=session, model_id=model.id, start=pd.Timestamp("2026-12-06", tz="UTC"), end=None)
    vector = frame[[f"query_e{j:03d}" for j in range(384)]].to_numpy()
    assert vector.shape == (2, 384)
    assert abs(float((vector[0] ** 2).sum()) - 1.0) < 1e-3  # a unit sentence vector, as training saw them
