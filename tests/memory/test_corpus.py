"""The corpus and the label queue: every change attributed, logged, idempotent and all-or-nothing."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory import corpus
from driftpilot.memory.audit import verify_chain
from driftpilot.memory.decisions import list_decisions
from driftpilot.memory.events import count_events, window
from driftpilot.memory.ingest import ingest_events, ingest_labels
from driftpilot.memory.label_requests import add_label_requests
from driftpilot.memory.managed import model_schema
from driftpilot.memory.tables import Label, ManagedModel

from .helpers import T0, event


def _labelled(session: Session, n: int = 6) -> list[int]:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(n)])
    ingest_labels(
        session=session,
        model="ont",
        labels=[
            {"event_key": event(i)["key"], "value": "offline" if i % 3 == 0 else "online", "source": "system"}
            for i in range(n)
        ],
    )
    return [int(i) for i in window(session=session, model_id=1, start=None, end=None)["id"]]


def _operator_actions(session: Session, model_id: int) -> list[str]:
    return [d.action for d in list_decisions(session=session, model_id=model_id) if d.agent == "operator"]


def test_a_relabel_is_a_persons_label_logged_once_and_idempotent(session: Session, ont: ManagedModel) -> None:
    ids = _labelled(session)

    first = corpus.relabel(session=session, model="ont", event_id=ids[1], value="offline", by="alice", time=T0)
    again = corpus.relabel(session=session, model="ont", event_id=ids[1], value="offline", by="alice", time=T0)

    item = corpus.corpus_item(session=session, model_id=ont.id, event_id=ids[1])
    assert (first.changed, again.changed, again.decision_id) == (1, 0, None)
    assert (item["label"], item["source"]) == ("offline", "person")
    assert sorted((lb["source"], lb["value"]) for lb in item["labels"]) == [("person", "offline"), ("system", "online")]
    assert _operator_actions(session, ont.id) == ["corpus_relabel"]
    decision = list_decisions(session=session, model_id=ont.id)[-1]
    assert decision.trigger == {"by": "alice"}
    assert decision.evidence["from"] == ["online", "system"] and decision.evidence["to"] == "offline"
    assert verify_chain(session=session).ok


def test_bad_changes_are_refused_naming_what_is_wrong_and_change_nothing(session: Session, ont: ManagedModel) -> None:
    ids = _labelled(session)

    with pytest.raises(corpus.CorpusError, match=r"label 'maybe' is not a class of model 'ont'; its classes are"):
        corpus.relabel(session=session, model="ont", event_id=ids[0], value="maybe", by="alice")
    with pytest.raises(LookupError, match="has no event 999"):
        corpus.relabel(session=session, model="ont", event_id=999, value="online", by="alice")
    with pytest.raises(LookupError, match=r"model 'ont' has no events \[999\]: nothing was changed"):
        corpus.delete_items(session=session, model="ont", event_ids=[ids[0], 999], by="alice")
    with pytest.raises(corpus.CorpusError, match="'by' must be a non-empty name"):
        corpus.delete_items(session=session, model="ont", event_ids=[ids[0]], by=" ")

    assert corpus.excluded_ids(session=session, model_id=ont.id) == set()
    assert _operator_actions(session, ont.id) == []


def test_delete_and_restore_take_items_out_of_training_windows_and_back(session: Session, ont: ManagedModel) -> None:
    ids = _labelled(session)

    deleted = corpus.delete_items(session=session, model="ont", event_ids=ids[:2], by="bob", reason="test rig")
    repeated = corpus.delete_items(session=session, model="ont", event_ids=ids[:2], by="bob")
    in_corpus = window(session=session, model_id=ont.id, start=None, end=None, labelled_only=True, corpus_only=True)
    listed = corpus.corpus_rows(session=session, model_id=ont.id, include_excluded=True)
    restored = corpus.restore_items(session=session, model="ont", event_ids=ids[:1], by="bob")

    assert (deleted.changed, repeated.changed) == (2, 0)
    assert in_corpus["id"].tolist() == ids[2:]
    assert [r["excluded"]["reason"] if r["excluded"] else None for r in listed][:3] == ["test rig", "test rig", None]
    assert restored.changed == 1
    assert corpus.excluded_ids(session=session, model_id=ont.id) == {ids[1]}
    assert _operator_actions(session, ont.id) == ["corpus_delete", "corpus_restore"]


def test_listing_filters_by_label_source_and_search(session: Session, ont: ManagedModel) -> None:
    ids = _labelled(session)
    corpus.relabel(session=session, model="ont", event_id=ids[4], value="offline", by="alice")

    offline = corpus.corpus_rows(session=session, model_id=ont.id, label="offline")
    person = corpus.corpus_rows(session=session, model_id=ont.id, source="person")
    found = corpus.corpus_rows(session=session, model_id=ont.id, search="ONT-2/")
    page = corpus.corpus_rows(session=session, model_id=ont.id, after_id=ids[1], limit=2)

    assert [r["event_id"] for r in offline] == [ids[0], ids[3], ids[4]]
    assert [r["event_id"] for r in person] == [ids[4]]
    assert [r["key"] for r in found] == [event(2)["key"]]
    assert [r["event_id"] for r in page] == ids[2:4]


def test_add_is_all_or_nothing_and_names_the_bad_row(session: Session, ont: ManagedModel) -> None:
    _labelled(session, 2)
    good = {
        "key": "new-1",
        "label": "offline",
        "time": T0.isoformat(),
        "entity": "ont-9",
        "features": event(0)["features"],
    }
    bad_class = {"key": "new-2", "label": "gone", "features": event(0)["features"]}
    bad_feature = {
        "key": "new-3",
        "label": "online",
        "features": {"rx_power": "n/a", "temperature": 1.0, "firmware": "v1"},
    }
    unknown_key = {"key": "nowhere", "label": "online"}

    for rows, message in (
        ([good, bad_class], r"row 2: label 'gone' is not a class"),
        ([good, bad_feature], r"row 2: event 'new-3' \(#0\): feature 'rx_power' must be a number, got 'n/a'"),
        ([good, unknown_key], r"row 2: model 'ont' has no event with key 'nowhere', and the row has no features"),
        ([good, good], r"row 2: key 'new-1' repeats row 1"),
    ):
        with pytest.raises(corpus.CorpusError, match=message):
            corpus.add_examples(session=session, model="ont", rows=rows, by="carol")
        assert count_events(session=session, model_id=ont.id) == 2

    added = corpus.add_examples(
        session=session, model="ont", rows=[good, {"key": event(1)["key"], "label": "offline"}], by="carol"
    )
    again = corpus.add_examples(session=session, model="ont", rows=[good], by="carol")

    assert (added.changed, again.changed) == (2, 0)
    assert count_events(session=session, model_id=ont.id) == 3
    rows = {r["key"]: (r["label"], r["source"]) for r in corpus.corpus_rows(session=session, model_id=ont.id)}
    assert rows["new-1"] == ("offline", "person") and rows[event(1)["key"]] == ("offline", "person")


@pytest.mark.parametrize("fmt", corpus.FORMATS)
def test_export_reads_back_as_the_same_corpus(session: Session, ont: ManagedModel, fmt: str) -> None:
    _labelled(session, 4)
    schema = model_schema(ont)
    # A missing reading travels as a missing reading.
    ingest_events(session=session, model="ont", events=[event(9, features={"rx_power": -21.5, "firmware": "v2"})])
    ingest_labels(session=session, model="ont", labels=[{"event_key": event(9)["key"], "value": "online"}])

    exported = corpus.export_corpus(session=session, model_id=ont.id, fmt=fmt)
    rows, lines = corpus.parse_corpus_file(exported, fmt, schema)
    # Read back, every label becomes a person's label: one change a row, then none.
    same = corpus.add_examples(session=session, model="ont", rows=rows, by="dave", lines=lines)

    assert len(rows) == 5 and same.changed == 5
    assert lines == ([2, 3, 4, 5, 6] if fmt == "csv" else [1, 2, 3, 4, 5])
    assert corpus.add_examples(session=session, model="ont", rows=rows, by="dave").changed == 0
    nine = next(r for r in rows if r["key"] == event(9)["key"])
    assert nine["features"].get("temperature") is None and nine["features"]["rx_power"] == -21.5


def test_bad_files_are_refused_naming_the_line(ont: ManagedModel) -> None:
    schema = model_schema(ont)
    with pytest.raises(corpus.CorpusError, match="line 2: not JSON"):
        corpus.parse_corpus_file('{"key": "a", "label": "online"}\n{oops\n', "jsonl", schema)
    with pytest.raises(corpus.CorpusError, match="lacks the column 'label'"):
        corpus.parse_corpus_file("key,rx_power\na,1\n", "csv", schema)
    with pytest.raises(corpus.CorpusError, match=r"row 3: feature 'rx_power' must be a number, got 'x'"):
        corpus.parse_corpus_file(
            "key,label,rx_power,temperature,firmware\na,online,1,2,v1\nb,online,x,2,v1\n", "csv", schema
        )
    with pytest.raises(corpus.CorpusError, match="format must be one of"):
        corpus.parse_corpus_file("", "xlsx", schema)


def test_snapshots_are_immutable_and_diffed(session: Session, ont: ManagedModel) -> None:
    ids = _labelled(session)
    first = corpus.snapshot_corpus(session=session, model="ont", by="erin")
    corpus.relabel(session=session, model="ont", event_id=ids[1], value="offline", by="erin")
    corpus.delete_items(session=session, model="ont", event_ids=[ids[2]], by="erin")
    corpus.add_examples(
        session=session,
        model="ont",
        rows=[{"key": "x", "label": "online", "features": event(0)["features"]}],
        by="erin",
    )
    second = corpus.snapshot_corpus(session=session, model="ont", by="erin")
    a, b = (int(s["id"]) for s in corpus.list_snapshots(session=session, model_id=ont.id))

    diff = corpus.diff_snapshots(session=session, a=a, b=b)

    assert (first.changed, second.changed) == (6, 6)
    assert (diff["added"], diff["removed"], diff["relabelled"], diff["unchanged"]) == (1, 1, 1, 4)
    assert diff["relabelled_items"] == [{"event_id": ids[1], "from": "online", "to": "offline"}]
    assert diff["removed_items"] == [{"event_id": ids[2], "label": "online"}]
    assert diff["class_counts"]["a"] == {"offline": 2, "online": 4}
    assert diff["class_counts"]["b"] == {"offline": 3, "online": 3}


def test_the_label_queue_answers_once_and_skips(session: Session, ont: ManagedModel) -> None:
    ingest_events(session=session, model="ont", events=[event(i) for i in range(3)])
    ids = [int(i) for i in window(session=session, model_id=ont.id, start=None, end=None)["id"]]
    add_label_requests(session=session, model_id=ont.id, event_ids=ids, reasons=["why 0", "why 1", "why 2"], time=T0)
    queue = corpus.label_queue(session=session, model_id=ont.id)
    r0, r1, r2 = (q["id"] for q in queue)

    answered = corpus.answer_request(session=session, model="ont", request_id=r0, value="offline", by="frank")
    repeated = corpus.answer_request(session=session, model="ont", request_id=r0, value="offline", by="frank")
    skipped = corpus.skip_request(session=session, model="ont", request_id=r1, by="frank")

    assert [q["reason"] for q in queue] == ["why 0", "why 1", "why 2"]
    assert (answered.changed, repeated.changed, skipped.changed) == (1, 0, 1)
    assert [q["id"] for q in corpus.label_queue(session=session, model_id=ont.id)] == [r2]
    with pytest.raises(corpus.CorpusConflict, match=f"request {r0} is answered by frank with 'offline'"):
        corpus.answer_request(session=session, model="ont", request_id=r0, value="online", by="gina")
    with pytest.raises(corpus.CorpusError, match="label 'meh' is not a class"):
        corpus.answer_request(session=session, model="ont", request_id=r2, value="meh", by="gina")
    with pytest.raises(LookupError, match="model 'ont' has no label request 999"):
        corpus.answer_request(session=session, model="ont", request_id=999, value="online", by="gina")
    person = session.scalars(sa.select(Label.event_id).where(Label.source == "person")).all()
    assert person == [ids[0]]
    assert _operator_actions(session, ont.id) == ["label", "label_skip"]


def test_a_failure_inside_a_change_leaves_nothing_behind(session: Session, ont: ManagedModel, monkeypatch) -> None:
    ids = _labelled(session)

    def broken(**kwargs: object) -> None:
        raise RuntimeError("the log is down")

    monkeypatch.setattr(corpus, "record_decision", broken)
    with pytest.raises(RuntimeError, match="the log is down"):
        corpus.relabel(
            session=session, model="ont", event_id=ids[0], value="online", by="alice", time=T0 + timedelta(1)
        )
    with pytest.raises(RuntimeError, match="the log is down"):
        corpus.add_examples(
            session=session,
            model="ont",
            rows=[{"key": "z", "label": "online", "features": event(0)["features"]}],
            by="a",
        )

    assert session.scalars(sa.select(Label).where(Label.source == "person")).all() == []
    assert count_events(session=session, model_id=ont.id) == len(ids)


def test_pseudo_labels_are_learnt_from_never_judged_by(session: Session, ont: ManagedModel) -> None:
    from driftpilot.memory.events import arrivals, label_flow
    from driftpilot.memory.labels import add_pseudo_labels, count_labels

    ids = _labelled(session, 2)
    ingest_events(session=session, model="ont", events=[event(i) for i in range(2, 4)])
    unlabelled = [int(i) for i in window(session=session, model_id=ont.id, start=None, end=None)["id"]][2:]
    _, labels_before, _, mark = arrivals(session=session, model_id=ont.id, after_event=0, after_label=0)

    added = add_pseudo_labels(
        session=session,
        model_id=ont.id,
        event_ids=unlabelled,
        values=["online"] * 2,
        confidences=[0.995, 0.999],
        time=T0,
    )
    again = add_pseudo_labels(
        session=session, model_id=ont.id, event_ids=unlabelled, values=["online"] * 2, confidences=[0.9, 0.9], time=T0
    )

    frame = window(session=session, model_id=ont.id, start=None, end=None, labelled_only=True)
    assert (added, again) == (2, 0)
    assert frame["id"].tolist() == ids  # a pseudo-label is no label to judge by
    assert count_labels(session=session, model_id=ont.id) == 2
    assert count_labels(session=session, model_id=ont.id, source="pseudo") == 2
    assert label_flow(session=session, model_id=ont.id, start=T0 - timedelta(1), end=T0 + timedelta(1))[0] == 0
    assert arrivals(session=session, model_id=ont.id, after_event=0, after_label=mark)[1] == 0
    listed = corpus.corpus_rows(session=session, model_id=ont.id, source="pseudo")
    assert [r["event_id"] for r in listed] == unlabelled  # audited, and deletable, in the corpus
