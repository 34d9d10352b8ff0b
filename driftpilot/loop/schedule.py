"""When a driver runs the Monitor: on the clock's cadence, once the evidence is new enough.

A check looks at most every ``check_every_minutes``, and only when at least the number of new
labels or new events its last plan asked for (:class:`driftpilot.policies.auto.MonitorPlan`)
arrived since the check before: a busy fleet is checked on the clock, a slow stream as often as
its evidence grows, and a check never repeats another on the same evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import decisions

__all__ = ["CheckSchedule", "last_plan"]


class CheckSchedule:
    """Counts the evidence a driver feeds in and says when the next check is due.

    >>> from datetime import UTC
    >>> t0 = datetime(2026, 1, 1, tzinfo=UTC)
    >>> schedule = CheckSchedule(t0, timedelta(hours=2))
    >>> schedule.saw(rows=10, labels=0); schedule.due(t0 + timedelta(hours=2))
    True
    >>> schedule.checked(t0 + timedelta(hours=2), {"check_every_rows": 100, "check_every_labels": 5})
    >>> schedule.saw(rows=50, labels=4); schedule.due(t0 + timedelta(hours=9))
    False
    >>> schedule.next_check == t0 + timedelta(hours=10)  # the clock moved on without a check
    True
    >>> schedule.saw(rows=0, labels=1); schedule.due(t0 + timedelta(hours=9)), schedule.due(t0 + timedelta(hours=10))
    (False, True)
    """

    def __init__(self, start: datetime, every: timedelta) -> None:
        self.every = every
        self.next_check = start + every
        self.rows = self.labels = 0
        # Before the first plan: any new evidence will do.
        self.rows_wanted = self.labels_wanted = 1

    def saw(self, *, rows: int, labels: int) -> None:
        """New events and labels have entered memory."""
        self.rows += rows
        self.labels += labels

    def due(self, now: datetime) -> bool:
        """Whether a check should run at ``now``. When the cadence passed without enough new
        evidence, the next look moves on by whole cadences (the evidence counted so far stays)."""
        if now < self.next_check:
            return False
        if self.rows >= self.rows_wanted or self.labels >= self.labels_wanted:
            return True
        self._advance(now)
        return False

    def checked(self, now: datetime, plan: Mapping[str, Any] | None) -> None:
        """A check ran at ``now`` under ``plan`` (its logged plan; None keeps the last one's wants)."""
        self._advance(now)
        self.rows = self.labels = 0
        if plan:
            self.rows_wanted = int(plan.get("check_every_rows", self.rows_wanted))
            self.labels_wanted = int(plan.get("check_every_labels", self.labels_wanted))

    def _advance(self, now: datetime) -> None:
        while self.next_check <= now:
            self.next_check += self.every


def last_plan(sessions: sessionmaker[Session], model_id: int) -> dict[str, Any] | None:
    """The plan the Monitor's last check ran under (None before the first)."""
    with sessions() as session:
        last = decisions.last_decision(session=session, model_id=model_id, agent="monitor", outcome=None)
    return (last.evidence or {}).get("plan") if last is not None else None
