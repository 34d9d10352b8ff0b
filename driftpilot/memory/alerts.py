"""Alerts for people: raised once per key, kept until delivered, retried with back-off.

An alert is ``pending`` until a sender delivers it (``sent``) or gives up after
:data:`MAX_ATTEMPTS` failed attempts (``failed``, kept with its last error). Each failed attempt
waits longer before the next (:func:`retry_delay`), so an Alertmanager that is down is not
hammered and one that comes back within the hour still gets every alert.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.tables import ALERT_STATUSES, AlertOut, table_of

#: The wait after the first failed attempt; it doubles with each further one ...
FIRST_RETRY = timedelta(seconds=5)
#: ... up to this.
MAX_RETRY = timedelta(minutes=10)
#: Failed attempts after which an alert is given up (``failed``): about 50 minutes of retrying.
MAX_ATTEMPTS = 12


def retry_delay(attempts: int) -> timedelta:
    """The wait before the next attempt after ``attempts`` failed ones: exponential back-off.

    Examples
    --------
    >>> [retry_delay(n).total_seconds() for n in (1, 2, 3, 7, 8, 12)]
    [5.0, 10.0, 20.0, 320.0, 600.0, 600.0]
    """
    if attempts < 1:
        raise ValueError(f"a retry follows at least one failed attempt, got attempts={attempts}")
    # Capping the exponent first keeps 2**n small however many attempts there were.
    return min(FIRST_RETRY * 2 ** min(attempts - 1, 30), MAX_RETRY)


def raise_alert(
    *,
    session: Session,
    key: str,
    name: str,
    severity: str,
    labels: Mapping[str, Any],
    annotations: Mapping[str, Any],
    starts_at: datetime,
    at: datetime,
    ends_at: datetime | None = None,
    model_id: int | None = None,
    decision_id: int | None = None,
) -> AlertOut:
    """Raise the alert ``key``, due to be sent from ``at``; idempotent: raising a key again
    (a decision read twice, a restart) returns the alert raised first and changes nothing.

    Labels and annotations are stored as text (what Alertmanager accepts); those that are None
    are left out.
    """
    if not key or not name or not severity:
        raise ValueError(f"an alert needs a key, a name and a severity, got {key!r}, {name!r}, {severity!r}")
    existing = find_alert(session=session, key=key)
    if existing is not None:
        return existing
    try:
        with committing(session):
            alert = AlertOut(
                key=key,
                model_id=model_id,
                decision_id=decision_id,
                name=name,
                severity=severity,
                labels=_texts(labels),
                annotations=_texts(annotations),
                starts_at=starts_at,
                ends_at=ends_at,
                status="pending",
                attempts=0,
                next_attempt_at=at,
                sent_at=None,
                last_error="",
            )
            session.add(alert)
        return alert
    except IntegrityError:
        # Another writer raised the same key in between: its row is the alert.
        found = find_alert(session=session, key=key)
        if found is None:
            raise
        return found


def _texts(values: Mapping[str, Any]) -> dict[str, str]:
    return {str(name): str(value) for name, value in values.items() if value is not None}


def find_alert(*, session: Session, key: str) -> AlertOut | None:
    """The alert raised with ``key``, or None."""
    return session.scalar(sa.select(AlertOut).where(AlertOut.key == key))


def get_alert(*, session: Session, alert_id: int) -> AlertOut:
    """The alert with this id; LookupError if there is none."""
    alert = session.get(AlertOut, alert_id)
    if alert is None:
        raise LookupError(f"no alert with id {alert_id}")
    return alert


def due_alerts(*, session: Session, now: datetime, limit: int = 50) -> list[AlertOut]:
    """Pending alerts whose next attempt is due at ``now``, the longest waiting first."""
    stmt = (
        sa.select(AlertOut)
        .where(AlertOut.status == "pending", AlertOut.next_attempt_at <= now)
        .order_by(AlertOut.next_attempt_at, AlertOut.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def claim_alert(*, session: Session, alert: AlertOut, until: datetime) -> bool:
    """Take ``alert`` (as :func:`due_alerts` read it) for one delivery attempt: its next attempt
    moves to ``until``, unless another sender took it or recorded an attempt since; False then.
    Senders of loops sharing a database so never deliver one alert at the same time."""
    table = table_of(AlertOut)
    with committing(session):
        result: Any = session.execute(
            sa.update(table)
            .where(
                table.c.id == alert.id, table.c.status == "pending", table.c.next_attempt_at == alert.next_attempt_at
            )
            .values(next_attempt_at=until)
        )
    return bool(result.rowcount)


def mark_sent(*, session: Session, alert_id: int, now: datetime) -> AlertOut:
    """Record that the alert was delivered at ``now``; marking it again changes nothing."""
    with committing(session):
        alert = get_alert(session=session, alert_id=alert_id)
        if alert.status != "sent":
            alert.status = "sent"
            alert.attempts += 1
            alert.sent_at = now
            alert.last_error = ""
    return alert


def mark_failed_attempt(*, session: Session, alert_id: int, error: str, now: datetime) -> AlertOut:
    """Record a failed attempt at ``now`` and why: the next one waits :func:`retry_delay`; after
    :data:`MAX_ATTEMPTS` the alert is ``failed``. An alert no longer pending is left as it is."""
    with committing(session):
        alert = get_alert(session=session, alert_id=alert_id)
        if alert.status == "pending":
            alert.attempts += 1
            alert.last_error = str(error)
            if alert.attempts >= MAX_ATTEMPTS:
                alert.status = "failed"
            else:
                alert.next_attempt_at = now + retry_delay(alert.attempts)
    return alert


def list_alerts(*, session: Session, status: str | None = None, model_id: int | None = None) -> list[AlertOut]:
    """Alerts in the order they were raised, filtered by status and model."""
    stmt = sa.select(AlertOut).order_by(AlertOut.id)
    if status is not None:
        if status not in ALERT_STATUSES:
            raise ValueError(f"an alert's status is one of {', '.join(ALERT_STATUSES)}, got {status!r}")
        stmt = stmt.where(AlertOut.status == status)
    if model_id is not None:
        stmt = stmt.where(AlertOut.model_id == model_id)
    return list(session.scalars(stmt))


def last_alerted_decision(*, session: Session) -> int:
    """The id of the newest decision an alert was raised for (0 when none was): where reading
    the decision log for alerts resumes after a restart."""
    return int(session.scalar(sa.select(sa.func.max(AlertOut.decision_id))) or 0)
