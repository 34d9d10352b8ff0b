"""Alembic environment of driftpilot's memory.

:func:`driftpilot.memory.db.migrate` passes an open connection in
``config.attributes["connection"]``; without one (the ``alembic`` command with a
``sqlalchemy.url``), an engine is made from the URL.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from driftpilot.memory.tables import Base

target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    """Run the migrations on ``connection``."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: later migrations copy-and-move tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    """Migrate through the shared connection, or one made from the configured URL."""
    config = context.config
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with(connection)
        return
    from driftpilot.memory.db import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url") or "")
    with engine.begin() as own_connection:
        run_with(own_connection)
    engine.dispose()


def _offline() -> bool | None:
    """Alembic's mode, or None when this file is imported outside Alembic (pytest's doctest
    collection, say): then it only defines functions."""
    try:
        return context.is_offline_mode()
    except NameError:
        return None


if _offline():
    raise RuntimeError("driftpilot's migrations run online only: use driftpilot.memory.db.migrate")
if _offline() is False:
    main()
