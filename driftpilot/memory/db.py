"""Engines, migrations, sessions and the write transaction every repository uses.

Repository functions take a keyword-only ``session`` from :func:`connect`. Each *write* function
commits its own transaction (through :func:`committing`) and rolls it back on error, so nothing
is half-written; pass a session without pending changes of your own. Read functions leave the
session as it is.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory.tables import UTCDateTime

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant works: it only has to be the same in every process migrating one database.
_PG_MIGRATION_LOCK = 0x64726966


def make_engine(url: str) -> sa.Engine:
    """Create an engine for a SQLite or PostgreSQL URL.

    For ``sqlite:///path`` the parent folder is created and every connection gets
    ``journal_mode=WAL`` (readers do not block the writer), ``synchronous=FULL`` (a write is
    on disk before it is acknowledged), ``foreign_keys=ON`` and ``busy_timeout=30000`` (wait
    for another writer rather than fail). ``postgresql://`` and ``postgres://`` URLs are sent
    to the psycopg 3 driver.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(parsed)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(parsed, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",
            "foreign_keys=ON",
            "busy_timeout=30000",
        ):
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


def alembic_config() -> Config:
    """An Alembic ``Config`` pointing at the migrations shipped in this package."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def migrate(engine: sa.Engine) -> None:
    """Bring the database to the newest schema (Alembic ``upgrade head``).

    Concurrent callers (an API and a loop starting together) are serialised: PostgreSQL
    through an advisory lock, SQLite through ``BEGIN IMMEDIATE``, which also makes the
    migration all-or-nothing there.
    """
    config = alembic_config()
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            # pysqlite does not open a transaction before DDL by itself.
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        elif connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
        connection.commit()


def connect(url: str) -> sessionmaker[Session]:
    """Create the engine, migrate the database and return a session factory.

    Sessions keep their objects readable after commit (``expire_on_commit=False``), since
    repositories commit their own writes and return the rows they wrote.
    """
    engine = make_engine(url)
    migrate(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


# Re-entrant: a write made of several repository writes (:func:`one_transaction`) holds the turn
# around them all, and each of them takes it again.
_SQLITE_WRITERS: weakref.WeakKeyDictionary[sa.Engine, threading.RLock] = weakref.WeakKeyDictionary()
_SQLITE_WRITERS_LOCK = threading.Lock()


def writer_turn(session: Session) -> AbstractContextManager[Any]:
    """What a bulk write holds from its first insert to its commit: on SQLite, the engine's one
    lock, so that the threads of a process (concurrent API requests, a live source) take turns
    here rather than in SQLite's busy handler, which sleeps up to 100 ms between its tries for the
    database's single write lock (tails of hundreds of ms under a few concurrent writers). Other
    databases take concurrent writers themselves: nothing to hold."""
    engine = session.get_bind()
    if not isinstance(engine, sa.Engine) or engine.dialect.name != "sqlite":
        return nullcontext()
    with _SQLITE_WRITERS_LOCK:
        return _SQLITE_WRITERS.setdefault(engine, threading.RLock())


@contextmanager
def committing(session: Session) -> Iterator[Session]:
    """Commit the session's transaction when the block ends, roll it back on any error.

    Inside :func:`one_transaction` the block only flushes: the outer block commits (or rolls
    back) everything at once.
    """
    if session.info.get(_ONE_TRANSACTION):
        yield session
        session.flush()
        return
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise


_ONE_TRANSACTION = "driftpilot.one_transaction"


@contextmanager
def one_transaction(session: Session) -> Iterator[Session]:
    """Make the repository writes inside the block one transaction: all stored, or none.

    A change that is several writes — a corpus import (events, then their labels, then the
    decision that logs it), a label request's answer (the label, the request closed, the
    decision) — must not be half-applied when one of them fails. The repositories commit their
    own writes (:func:`committing`); inside this block they flush instead, and this block
    commits at its end or rolls everything back on any error. On SQLite it holds the writer's
    turn (:func:`writer_turn`) throughout.
    """
    if session.info.get(_ONE_TRANSACTION):
        yield session  # nested: the outermost block commits
        return
    with writer_turn(session):
        session.info[_ONE_TRANSACTION] = True
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.info.pop(_ONE_TRANSACTION, None)


def _insert_on_conflict_do_nothing(dialect: sa.Dialect, table: sa.Table, unique: Sequence[str]) -> Any:
    if dialect.name == "sqlite":
        return sqlite_dialect.insert(table).on_conflict_do_nothing(index_elements=list(unique))
    if dialect.name == "postgresql":
        return pg_dialect.insert(table).on_conflict_do_nothing(index_elements=list(unique))
    raise NotImplementedError(f"driftpilot's memory supports SQLite and PostgreSQL, not {dialect.name}")


def insert_columns_ignoring_duplicates(
    session: Session,
    table: sa.Table,
    columns: Mapping[str, Sequence[Any]],
    *,
    unique: Sequence[str],
    json_text: Sequence[str] = (),
    constants: Mapping[str, Any] | None = None,
) -> int:
    """Insert rows given as columns (one executemany), skipping those that clash on ``unique``.

    Re-sent rows are how clients retry, not an error: they are skipped, not counted.

    The columns named in ``json_text`` hold JSON text (or None), the others plain values;
    ``constants`` gives the columns whose value is the same in every row. SQLAlchemy's
    per-value processing (several microseconds a row, a large share of ingest time) is done
    here column by column, once for a constant, and the statement goes to the driver's own
    ``executemany``. Returns how many rows were inserted.
    """
    sizes = {len(column) for column in columns.values()}
    if len(sizes) > 1:
        raise ValueError(f"columns differ in length: {sorted(sizes)}")
    size = sizes.pop() if sizes else 0
    if size == 0:
        return 0
    dialect = session.get_bind().dialect
    prepared: dict[str, Sequence[Any]] = {}
    for name, column in columns.items():
        processor = None
        if name not in json_text:
            processor = _bind_processor(table.c[name], dialect)
        if processor is not None and dialect.name == "sqlite" and isinstance(table.c[name].type, UTCDateTime):
            processor = _sqlite_datetime_processor(processor, column)
        prepared[name] = column if processor is None else list(map(processor, column))
    for name, value in (constants or {}).items():
        processor = _bind_processor(table.c[name], dialect)
        prepared[name] = [value if processor is None else processor(value)] * size
    names = list(prepared)
    values = {name: sa.bindparam(name, type_=table.c[name].type) for name in names}
    # inline(): no implicit RETURNING, which executemany does not want.
    stmt = _insert_on_conflict_do_nothing(dialect, table, unique).values(values).inline()
    compiled = stmt.compile(dialect=dialect)
    if dialect.positional:
        order = compiled.positiontup or []
        params: list[Any] = list(zip(*(prepared[name] for name in order), strict=True))
    else:
        params = [dict(zip(names, row, strict=True)) for row in zip(*prepared.values(), strict=True)]
    result = session.connection().exec_driver_sql(compiled.string, params)
    return int(result.rowcount)


def _bind_processor(column: sa.Column[Any], dialect: sa.Dialect) -> Callable[[Any], Any] | None:
    return column.type.dialect_impl(dialect).bind_processor(dialect)


def _sqlite_datetime_processor(processor: Callable[[Any], Any], column: Sequence[Any]) -> Callable[[Any], Any]:
    """SQLAlchemy's text for SQLite datetimes is ``isoformat(" ", "microseconds")``, which
    C code writes several times faster. Used only when both agree on the column's first
    value and every value is already a datetime in UTC, naive or aware (as ingest guarantees)."""

    def fast(value: datetime | None) -> str | None:
        return None if value is None else value.replace(tzinfo=None).isoformat(" ", "microseconds")

    first = next((v for v in column if v is not None), None)
    if first is None:
        return processor
    if not all(v is None or (type(v) is datetime and v.tzinfo in (None, UTC)) for v in column):
        return processor
    return fast if fast(first) == processor(first) else processor


def chunks(values: Sequence[Any], size: int = 900) -> Iterator[Sequence[Any]]:
    """Consecutive slices of at most ``size`` values (SQLite limits bound parameters)."""
    for start in range(0, len(values), size):
        yield values[start : start + size]
