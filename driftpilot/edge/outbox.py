"""The node's outbox: every prediction it made, on its own disk until the server has it.

A node keeps answering while the server is unreachable, so what it predicted must outlive a
restart and a long outage: each record is committed to a local SQLite file (WAL, synchronous
``FULL``) before :meth:`Outbox.put` returns, leaves only when the server has acknowledged it
(:meth:`Outbox.ack`), and is sent oldest first. Records are keyed like the server's events (the
key is the idempotency key of ``POST /models/{name}/events``), so putting or sending one twice
stores it once. The standard library's ``sqlite3`` is enough here: one file, one writer process,
no server; a queue library would add a dependency to every node for the same two statements.

>>> import tempfile, pathlib
>>> box = Outbox(pathlib.Path(tempfile.mkdtemp()) / "outbox.db")
>>> box.put([{"key": "n1/1", "entity": "device-1"}, {"key": "n1/2", "entity": "device-2"}])
2
>>> box.put([{"key": "n1/1", "entity": "device-1"}])  # the same record again: nothing new
0
>>> [record["key"] for _, record in box.oldest(10)], len(box)
(['n1/1', 'n1/2'], 2)
>>> box.ack([seq for seq, _ in box.oldest(1)]); len(box)
1
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["Outbox", "OutboxConflict"]


class OutboxConflict(ValueError):
    """A record whose key is already in the outbox with other content."""


class Outbox:
    """A durable, idempotent first-in first-out queue of JSON records on the node's disk.

    Parameters
    ----------
    path
        The SQLite file (created with its folder if missing). One process owns it; its threads
        (the HTTP handlers that put, the uploader that sends and acknowledges) share this object.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # committed means on disk, power cut or not
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
            "key TEXT NOT NULL UNIQUE, body TEXT NOT NULL)"
        )
        # Records the server refused for what they hold (not for being unreachable): kept, with the
        # server's reason, for a person to read, instead of blocking every record behind them.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS refused (seq INTEGER PRIMARY KEY, key TEXT NOT NULL, "
            "body TEXT NOT NULL, reason TEXT NOT NULL)"
        )

    def put(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Store ``records`` (each with a non-empty string ``key``) in one transaction; return how
        many were new. A key already stored with the same content is skipped.

        Raises
        ------
        ValueError
            When a record has no key or cannot be written as JSON (nothing is stored).
        OutboxConflict
            When a key is already stored with other content (nothing is stored).
        """
        rows = []
        for i, record in enumerate(records):
            key = record.get("key")
            if not isinstance(key, str) or not key:
                raise ValueError(f"record {i}: 'key' must be a non-empty string, got {key!r}")
            try:
                rows.append((key, json.dumps(dict(record), sort_keys=True, allow_nan=False)))
            except (TypeError, ValueError) as exc:
                raise ValueError(f"record {i} ({key}): not JSON: {exc}") from exc
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                new = 0
                for key, body in rows:
                    stored = self._db.execute("SELECT body FROM outbox WHERE key = ?", (key,)).fetchone()
                    if stored is None:
                        self._db.execute("INSERT INTO outbox (key, body) VALUES (?, ?)", (key, body))
                        new += 1
                    elif stored[0] != body:
                        raise OutboxConflict(f"record '{key}' is already in the outbox with other content")
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return new

    def oldest(self, limit: int) -> list[tuple[int, dict[str, Any]]]:
        """Up to ``limit`` records, oldest first, each with its sequence number for :meth:`ack`."""
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM outbox ORDER BY seq LIMIT ?", (int(limit),)).fetchall()
        return [(int(seq), json.loads(body)) for seq, body in rows]

    def ack(self, seqs: Iterable[int]) -> None:
        """Forget the records the server has acknowledged (unknown numbers are ignored)."""
        with self._lock:
            self._db.executemany("DELETE FROM outbox WHERE seq = ?", [(int(s),) for s in seqs])

    def refuse(self, seq: int, reason: str) -> None:
        """Move record ``seq`` out of the queue into the refused records, with ``reason``."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT INTO refused (seq, key, body, reason) SELECT seq, key, body, ? FROM outbox WHERE seq = ?",
                    (reason, int(seq)),
                )
                self._db.execute("DELETE FROM outbox WHERE seq = ?", (int(seq),))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def refused(self) -> list[tuple[dict[str, Any], str]]:
        """The records the server refused, oldest first, each with the server's reason."""
        with self._lock:
            rows = self._db.execute("SELECT body, reason FROM refused ORDER BY seq").fetchall()
        return [(json.loads(body), str(reason)) for body, reason in rows]

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()
