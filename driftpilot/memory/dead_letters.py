"""Dead letters: messages a live source could not store, kept with the reason.

A message from MQTT or JetStream that is malformed, names an unknown model or is refused by
ingest is acknowledged to its broker only once it is stored here, so nothing a client sent is
dropped silently and an operator can read, fix and re-send it.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.tables import DeadLetter
from driftpilot.memory.times import utcnow


def payload_text(payload: bytes | str) -> str:
    """The payload as text; bytes that are not UTF-8 are kept as ``\\xNN`` escapes.

    >>> payload_text(b'{"events": []}')
    '{"events": []}'
    >>> payload_text(b"ok \\xff")
    'ok \\\\xff'
    """
    if isinstance(payload, str):
        return payload
    return payload.decode("utf-8", errors="backslashreplace")


def record_dead_letter(*, session: Session, source: str, subject: str, payload: bytes | str, reason: str) -> DeadLetter:
    """Store a message that could not be ingested, with why, in one transaction."""
    with committing(session):
        letter = DeadLetter(
            source=source,
            subject=subject,
            payload=payload_text(payload),
            reason=reason,
            received_at=utcnow(),
        )
        session.add(letter)
    return letter


def list_dead_letters(*, session: Session, source: str | None = None, limit: int = 100) -> list[DeadLetter]:
    """The newest dead letters first, of one ``source`` (``"mqtt"``, ``"nats"``) or of all."""
    stmt = sa.select(DeadLetter).order_by(DeadLetter.id.desc()).limit(limit)
    if source is not None:
        stmt = stmt.where(DeadLetter.source == source)
    return list(session.scalars(stmt))
