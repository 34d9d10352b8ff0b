"""``driftpilot labels`` and ``driftpilot corpus`` on SQLite and PostgreSQL: a person works the
label queue and the corpus from a terminal; bad input is refused naming the row, nothing applied."""

from __future__ import annotations

import json

import pytest

from driftpilot.cli import main
from driftpilot.memory import db, managed
from driftpilot.memory.ingest import ingest_events, ingest_labels
from driftpilot.memory.label_requests import add_label_requests

from .conftest import ONT_SCHEMA
from .helpers import T0, event


@pytest.fixture
def home(memory_url: str, tmp_path):
    sessions = db.connect(memory_url)
    with sessions() as session:
        model = managed.register_model(session=session, name="ont", task="tabular", family="mlp", schema=ONT_SCHEMA)
        ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
        ingest_labels(
            session=session, model="ont", labels=[{"event_key": event(i)["key"], "value": "online"} for i in range(3)]
        )
        add_label_requests(
            session=session, model_id=model.id, event_ids=[1, 2], reasons=["uncertain", "drifted"], time=T0
        )
    sessions.kw["bind"].dispose()
    return ["--home", str(tmp_path), "--database-url", memory_url]


def test_a_person_works_the_queue_and_the_corpus(home, tmp_path, capsys) -> None:
    assert main([*home, "labels", "next", "ont"]) == 0
    queue = capsys.readouterr().out
    assert main([*home, "labels", "answer", "ont", "1", "offline", "--by", "ann"]) == 0
    assert main([*home, "labels", "skip", "ont", "2", "--by", "ann"]) == 0
    assert main([*home, "corpus", "relabel", "ont", "3", "offline", "--by", "ann"]) == 0
    assert main([*home, "corpus", "snapshot", "ont", "--by", "ann"]) == 0
    assert main([*home, "corpus", "delete", "ont", "--events", "2", "--reason", "lab rig", "--by", "ann"]) == 0
    assert main([*home, "corpus", "snapshot", "ont", "--by", "ann"]) == 0
    capsys.readouterr()
    assert main([*home, "corpus", "list", "ont", "--json", "--excluded"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert main([*home, "corpus", "diff", "ont", "1", "2"]) == 0
    diff = capsys.readouterr().out
    exported = tmp_path / "corpus.csv"
    assert main([*home, "corpus", "export", "ont", "--out", str(exported)]) == 0

    assert "request 1: event 1" in queue and "why asked: uncertain" in queue and "why asked: drifted" in queue
    assert [(r["label"], r["source"], bool(r["excluded"])) for r in listed] == [
        ("offline", "person", False),
        ("online", "system", True),
        ("offline", "person", False),
    ]
    assert diff.startswith("snapshot 1 -> 2: 0 added, 1 removed, 0 relabelled, 2 unchanged")
    assert exported.read_text().splitlines()[0].startswith("key,label,time,entity,group,rx_power")
    assert len(exported.read_text().splitlines()) == 3  # the header and the two items in the corpus


def test_a_bad_import_is_refused_naming_the_row_and_nothing_is_applied(home, tmp_path, capsys) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("key,label,rx_power,temperature,firmware\nn1,online,-20,40,v1\nn2,meteor,-20,40,v1\n")
    good = tmp_path / "good.jsonl"
    good.write_text(
        json.dumps({"key": "n1", "label": "offline", "features": {"rx_power": -20, "firmware": "v1"}}) + "\n"
    )

    assert main([*home, "corpus", "import", "ont", str(bad), "--by", "bo"]) == 2
    refused = capsys.readouterr().err
    assert main([*home, "corpus", "relabel", "ont", "1", "meteor"]) == 2
    unknown = capsys.readouterr().err
    assert main([*home, "labels", "answer", "ont", "99", "online"]) == 2
    no_request = capsys.readouterr().err
    assert main([*home, "corpus", "list", "ont", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)
    assert main([*home, "corpus", "import", "ont", str(good), "--by", "bo"]) == 0
    imported = capsys.readouterr().out
    assert main([*home, "corpus", "search", "ont", "n1", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)

    assert "row 3: label 'meteor' is not a class of model 'ont'" in refused
    assert "label 'meteor' is not a class" in unknown
    assert "model 'ont' has no label request 99" in no_request
    assert len(before) == 3
    assert imported.startswith("1 new event, 1 label set (decision #")
    assert [(r["key"], r["label"], r["source"]) for r in found] == [("n1", "offline", "person")]
