"""The golden set: pinned idempotently, all or nothing, read back with labels; and its CLI."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot import cli
from driftpilot.memory import db, golden
from driftpilot.memory.ingest import ingest_events, ingest_labels
from driftpilot.memory.managed import register_model
from driftpilot.memory.tables import GoldenEvent, ManagedModel

from .conftest import ONT_SCHEMA
from .helpers import T0, event

HOUR = timedelta(hours=1)
PINNED_AT = T0.replace(tzinfo=UTC) + 3 * HOUR


@pytest.fixture
def four(session: Session, ont: ManagedModel) -> tuple[ManagedModel, ManagedModel]:
    """Events 1-4 of the ONT model (1 labelled at T0 + 1h, 2 at T0 + 2h) and 5-6 of another."""
    other = register_model(session=session, name="other", task="tabular", family="mlp", schema=ONT_SCHEMA)
    ingest_events(session=session, model="ont", events=[event(i) for i in range(4)])
    ingest_events(session=session, model="other", events=[event(i) for i in range(2)])
    ingest_labels(
        session=session,
        model="ont",
        labels=[
            {"event_key": event(0)["key"], "value": "offline", "source": "person", "time": T0 + HOUR},
            {"event_key": event(1)["key"], "value": "online", "source": "person", "time": T0 + 2 * HOUR},
        ],
    )
    return ont, other


def test_pinning_again_is_a_no_op_and_counts_only_new_pins(session: Session, four) -> None:
    ont, _ = four

    first = golden.pin(session=session, model_id=ont.id, event_ids=[1, 2], time=PINNED_AT, note="known outage")
    again = golden.pin(session=session, model_id=ont.id, event_ids=[2, 1, 3], time=PINNED_AT + HOUR)

    assert (first, again) == (2, 1)
    assert golden.golden_ids(session=session, model_id=ont.id) == [1, 2, 3]
    rows = session.execute(sa.select(GoldenEvent.event_id, GoldenEvent.note).order_by(GoldenEvent.event_id)).all()
    assert [tuple(r) for r in rows] == [(1, "known outage"), (2, "known outage"), (3, "")]


def test_golden_frame_holds_the_pinned_events_labelled_by_then(session: Session, four) -> None:
    ont, _ = four
    golden.pin(session=session, model_id=ont.id, event_ids=[1, 2, 3], time=PINNED_AT)

    early = golden.golden_frame(session=session, model_id=ont.id, visible_at=T0 + HOUR)
    late = golden.golden_frame(session=session, model_id=ont.id, visible_at=T0 + 2 * HOUR)

    assert early["id"].tolist() == [1] and early["label"].tolist() == ["offline"]
    assert late["id"].tolist() == [1, 2] and late["label"].tolist() == ["offline", "online"]
    assert late["rx_power"].tolist() == [-20.0, -20.1]
    assert late.index.tolist() == [0, 1]


def test_an_empty_golden_set_gives_an_empty_frame(session: Session, four) -> None:
    frame = golden.golden_frame(session=session, model_id=four[0].id, visible_at=T0)

    assert frame.empty and "label" in frame


def test_unknown_or_foreign_events_refuse_the_whole_request(session: Session, four) -> None:
    ont, other = four

    with pytest.raises(ValueError, match=r"events \[5, 99\] are not events of model 1: nothing was pinned"):
        golden.pin(session=session, model_id=ont.id, event_ids=[1, 5, 99], time=PINNED_AT)
    with pytest.raises(ValueError, match="no event ids to pin"):
        golden.pin(session=session, model_id=ont.id, event_ids=[], time=PINNED_AT)

    assert golden.golden_ids(session=session, model_id=ont.id) == []
    assert golden.pin(session=session, model_id=other.id, event_ids=[5, 6], time=PINNED_AT) == 2
    assert golden.golden_ids(session=session, model_id=ont.id) == []


def test_unpin_removes_only_this_models_pins_and_twice_is_once(session: Session, four) -> None:
    ont, other = four
    golden.pin(session=session, model_id=ont.id, event_ids=[1, 2], time=PINNED_AT)
    golden.pin(session=session, model_id=other.id, event_ids=[5], time=PINNED_AT)

    removed = golden.unpin(session=session, model_id=ont.id, event_ids=[2, 3, 5])
    again = golden.unpin(session=session, model_id=ont.id, event_ids=[2])

    assert (removed, again) == (1, 0)
    assert golden.golden_ids(session=session, model_id=ont.id) == [1]
    assert golden.golden_ids(session=session, model_id=other.id) == [5]


@pytest.fixture
def database(tmp_path: Path) -> list[str]:
    """The CLI's --database-url option for a SQLite database holding the ONT model's four events."""
    url = f"sqlite:///{tmp_path / 'cli.sqlite'}"
    sessions = db.connect(url)
    with sessions() as session:
        register_model(session=session, name="ont", task="tabular", family="mlp", schema=ONT_SCHEMA)
        ingest_events(session=session, model="ont", events=[event(i) for i in range(4)])
    sessions.kw["bind"].dispose()
    return ["--database-url", url]


def test_cli_pins_lists_and_unpins(database: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    pinned = cli.main([*database, "golden", "pin", "--model", "ont", "--events", "1, 2", "--note", "known outage"])
    repinned = cli.main([*database, "golden", "pin", "--model", "ont", "--events", "2,3"])
    listed = cli.main([*database, "golden", "list", "--model", "ont"])
    unpinned = cli.main([*database, "golden", "unpin", "--model", "ont", "--events", "1"])
    relisted = cli.main([*database, "golden", "list", "--model", "ont"])

    assert (pinned, repinned, listed, unpinned, relisted) == (0, 0, 0, 0, 0)
    assert capsys.readouterr().out.splitlines() == [
        "pinned 2 new events to the golden set of 'ont' (2 pinned in all)",
        "pinned 1 new events to the golden set of 'ont' (3 pinned in all)",
        "3 events in the golden set of 'ont': 1,2,3",
        "unpinned 1 events from the golden set of 'ont' (2 pinned in all)",
        "2 events in the golden set of 'ont': 2,3",
    ]


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["pin", "--model", "ont", "--events", "1,x"],
            "driftpilot: error: --events must be comma-separated event ids, got '1,x'",
        ),
        (["pin", "--model", "ont", "--events", " , "], "driftpilot: error: --events names no event id"),
        (
            ["pin", "--model", "ont", "--events", "2,7"],
            "driftpilot: error: events [7] are not events of model 1: nothing was pinned; "
            "check the ids (driftpilot audit, the console) and try again",
        ),
        (
            ["pin", "--model", "nope", "--events", "1"],
            "driftpilot: error: unknown model 'nope': register it first",
        ),
        (["list", "--model", "nope"], "driftpilot: error: unknown model 'nope': register it first"),
    ],
    ids=["not-an-integer", "no-id", "unknown-id", "unknown-model-pin", "unknown-model-list"],
)
def test_cli_refuses_bad_input_in_one_line_and_writes_nothing(
    database: list[str], capsys: pytest.CaptureFixture[str], argv: list[str], error: str
) -> None:
    code = cli.main([*database, "golden", *argv])

    captured = capsys.readouterr()
    assert (code, captured.out, captured.err) == (2, "", error + "\n")
    assert cli.main([*database, "golden", "list", "--model", "ont"]) == 0
    assert capsys.readouterr().out == "0 events in the golden set of 'ont'\n"
