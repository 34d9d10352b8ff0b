"""driftpilot's memory: tables, sessions, repositories, migrations and the audit hash chain.

This is the only part of driftpilot that writes SQL. Every other part reads and writes
through the repository modules here (``ingest``, ``events``, ``versions``, ``decisions``, ...),
each a set of functions taking a keyword-only ``session`` from :func:`driftpilot.memory.db.connect`.

Importing this package does no work: import the module you need.
"""
