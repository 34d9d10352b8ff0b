"""The one driver of the loop: what runs when, for demo, replay and the service alike.

Every entry point feeds its source (the ONT simulator, a recorded CSV, the live database) into
memory and keeps its own clock; at each moment it says what is due — the Monitor's scheduled
check, a look at the runs that wait (for labels, canary evidence, a person), an alarm — and the
:class:`Driver` does the rest the same way everywhere: the events and labels gathered so far are
written first, so the loop never misses what has arrived; alarm runs go on their own thread, the
rest in thread order; a check's plan sets the next one's wants; whether any run still waits is
remembered; and what is served is refreshed after any run, the only thing that changes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.graph.runner import LoopRunner
from driftpilot.loop.outbox import Outbox
from driftpilot.loop.schedule import CheckSchedule, last_plan
from driftpilot.serving.routing import Serving

__all__ = ["Driver"]


class Driver:
    """Runs a model's graph for an entry point: see the module's doc.

    ``before_runs(now)`` is called once stored events are flushed and before the first run of a
    look (replay marks the requests its people answered); ``trigger`` is the scheduled trigger.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        runner: LoopRunner,
        model: str,
        model_id: int,
        *,
        trigger: dict[str, Any],
        outbox: Outbox | None = None,
        serving: Serving | None = None,
        schedule: CheckSchedule | None = None,
        before_runs: Callable[[datetime], None] | None = None,
    ) -> None:
        self.sessions = sessions
        self.runner = runner
        self.model = model
        self.model_id = model_id
        self.trigger = trigger
        self.outbox = outbox
        self.serving = serving
        self.schedule = schedule
        self.before_runs = before_runs
        #: Whether a run waited after the last look (an unfinished run needs looking at again).
        self.waiting = False

    def flush(self) -> None:
        if self.outbox is not None:
            self.outbox.flush(self.sessions)

    def alarms(self, now: datetime, keys: Sequence[str]) -> None:
        """Run each alarm's own run now, on the alarms thread, next to any waiting run."""
        if not keys:
            return
        self.flush()
        for key in keys:
            self.runner.step(self.model, now, {"kind": "alarm", "alarm": key}, thread="alarms")
        self._after()

    def look(self, now: datetime, *, check: bool, resume: bool) -> list[str]:
        """Run the scheduled check when ``check``, and resume the waiting runs when ``resume``;
        returns the threads that ran."""
        due = {"main"} if check else set()
        if resume:
            due |= {t for t in LoopRunner.THREADS if self.runner.waiting(self.model, t)}
        if not due:
            return []
        self.flush()
        if self.before_runs is not None:
            self.before_runs(now)
        for thread in sorted(due):
            self.runner.step(self.model, now, self.trigger, thread=thread)
        if "main" in due and self.schedule is not None:
            self.schedule.checked(now, last_plan(self.sessions, self.model_id))
        self._after()
        return sorted(due)

    def _after(self) -> None:
        self.waiting = any(self.runner.waiting(self.model, t) for t in LoopRunner.THREADS)
        if self.serving is not None:
            self.serving.refresh()
