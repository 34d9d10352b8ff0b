"""Alembic migrations of driftpilot's memory (run by :func:`driftpilot.memory.db.migrate`)."""
