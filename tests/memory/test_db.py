"""Engines, migrations and the schema they create."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.orm import Session

from driftpilot.memory.db import make_engine, migrate
from driftpilot.memory.tables import Base

TABLES = {
    "alarm",
    "alert",
    "api_token",
    "approval",
    "alembic_version",
    "corpus_exclusion",
    "entity_state",
    "dead_letter",
    "hook_signature",
    "loop_lease",
    "decision",
    "event",
    "golden_event",
    "label",
    "label_request",
    "managed_model",
    "quarantine",
    "release",
    "serving_change",
    "snapshot",
    "snapshot_item",
    "version",
}


def test_migrate_creates_every_table_and_matches_the_models(session: Session) -> None:
    engine = session.get_bind()
    migrate(engine)  # a second run is a no-op

    with engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
        version = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()

    assert tables == TABLES
    assert differences == []
    assert version == "0008"


def test_sqlite_connections_are_durable_and_enforce_foreign_keys(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.sqlite'}")
    with engine.connect() as connection:
        pragmas = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    engine.dispose()

    assert pragmas == {
        "journal_mode": "wal",
        "synchronous": 2,
        "foreign_keys": 1,
        "busy_timeout": 30000,
    }
    assert (tmp_path / "a" / "b" / "x.sqlite").exists()


def test_postgres_urls_use_psycopg_3() -> None:
    for url in ("postgresql://u@h/db", "postgres://u@h/db"):
        engine = make_engine(url)
        assert engine.url.drivername == "postgresql+psycopg"
        engine.dispose()
