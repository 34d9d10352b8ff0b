"""The edge node's outbox: durable, idempotent, oldest first, nothing half-stored."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from driftpilot.edge.outbox import Outbox, OutboxConflict


def _record(i: int, **extra) -> dict:
    return {"key": f"node-1/{i}", "entity": f"ont-{i % 3}", "prediction": "ok", "served_version": 2} | extra


def test_records_leave_only_when_acknowledged_and_in_the_order_put(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    assert box.put([_record(i) for i in range(5)]) == 5
    first = box.oldest(2)
    assert [r["key"] for _, r in first] == ["node-1/0", "node-1/1"]
    assert box.oldest(2) == first  # reading does not take them out: a failed upload loses nothing
    box.ack([seq for seq, _ in first])
    assert [r["key"] for _, r in box.oldest(10)] == ["node-1/2", "node-1/3", "node-1/4"]
    box.ack([10_000])  # an unknown number changes nothing
    assert len(box) == 3


def test_the_same_record_twice_is_stored_once_and_another_under_its_key_is_refused_whole(tmp_path):
    box = Outbox(tmp_path / "outbox.db")
    box.put([_record(0), _record(1)])
    assert box.put([_record(1), _record(2)]) == 1
    with pytest.raises(OutboxConflict, match="'node-1/1' is already in the outbox with other content"):
        box.put([_record(3), _record(1, prediction="offline")])
    assert [r["key"] for _, r in box.oldest(10)] == ["node-1/0", "node-1/1", "node-1/2"]  # node-1/3 not half-stored


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"entity": "x"}, "record 1: 'key' must be a non-empty string, got None"),
        ({"key": "k", "score": float("nan")}, r"record 1 \(k\): not JSON"),
    ],
)
def test_bad_records_are_refused_naming_the_record_and_nothing_is_stored(tmp_path, bad, message):
    box = Outbox(tmp_path / "outbox.db")
    with pytest.raises(ValueError, match=message):
        box.put([_record(0), bad])
    assert len(box) == 0


def test_what_was_put_survives_the_process_that_put_it(tmp_path):
    path = tmp_path / "node" / "outbox.db"
    script = (
        "import os, sys; from driftpilot.edge.outbox import Outbox; "
        f"Outbox({str(path)!r}).put([{{'key': 'a'}}, {{'key': 'b'}}]); os._exit(0)"  # no clean shutdown
    )
    subprocess.run([sys.executable, "-c", script], check=True)
    assert [r["key"] for _, r in Outbox(path).oldest(10)] == ["a", "b"]


def test_threads_putting_at_once_lose_nothing(tmp_path):
    box = Outbox(tmp_path / "outbox.db")

    def put(start: int) -> None:
        for i in range(start, start + 50):
            box.put([_record(i)])

    threads = [threading.Thread(target=put, args=(n * 50,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(box) == 200 and len({r["key"] for _, r in box.oldest(500)}) == 200
