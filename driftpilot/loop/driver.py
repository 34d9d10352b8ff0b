"""The one driver of the loop: what runs when, for demo, replay and the service alike.

An entry point is a **source** and a few lines: the source (the ONT simulator, a recorded CSV,
the live database) feeds memory and keeps the clock, and at each :class:`Moment` says what is
due — the Monitor's scheduled check, a look at the runs that wait (for labels, canary evidence, a
person), the alarms that arrived. The :class:`Driver` does the rest the same way everywhere: the
events and labels gathered so far are written first, so the loop never misses what has arrived;
alarm runs go on alarm threads of their own (a few, so that one alarm's waiting run does not
hold up the next), the rest in thread order; a check's plan sets the next one's
wants; whether any run still waits is remembered (a source may pace itself by it); and what is
served is refreshed after any run, the only thing that changes it.

A source is a function of the driver giving its moments: ``demo`` and ``replay`` write theirs
as generators (:func:`driftpilot.loop.demo.run_demo`, :func:`driftpilot.loop.replay.run_replay`)
and :meth:`Driver.run` them; the service's loop makes one moment a model at each pass
(:class:`driftpilot.loop.service.ServiceLoop`) and hands it to :meth:`Driver.step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.graph.runner import LoopRunner
from driftpilot.loop.outbox import Outbox
from driftpilot.loop.schedule import CheckSchedule, last_plan
from driftpilot.serving.routing import Serving

__all__ = ["Driver", "Moment", "Source"]


@dataclass(frozen=True)
class Moment:
    """A point of a source's clock: what is due then, and what the source does once runs ran."""

    now: datetime
    #: The Monitor's scheduled check is due.
    check: bool = False
    #: Look at the runs that wait, and resume them.
    resume: bool = False
    #: Keys of the alarms that arrived, each run on a free alarm thread.
    alarms: Sequence[str] = ()
    #: Called after a look that ran anything (replay: the people behind the queue take the
    #: Curator's new requests).
    after_runs: Callable[[], None] | None = None


#: A source: given the driver (whose ``waiting`` it may pace itself by), its moments in time order.
Source = Callable[["Driver"], Iterator[Moment]]


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
        #: Alarms that arrived while every alarm thread held a waiting run, in arrival order.
        self._queued: list[str] = []

    def run(self, source: Source) -> None:
        """Drive the loop through every moment of ``source``."""
        for moment in source(self):
            self.step(moment)

    def step(self, moment: Moment) -> list[tuple[str, dict[str, Any]]]:
        """Run what is due at ``moment``: its alarms, then the check and the waiting runs; returns
        the runs it made, as (thread, trigger)."""
        alarmed = self.alarms(moment.now, moment.alarms)
        ran = self.look(moment.now, check=moment.check, resume=moment.resume)
        if ran and moment.after_runs is not None:
            moment.after_runs()
        return [(thread, {"kind": "alarm", "alarm": key}) for key, thread in alarmed] + [
            (thread, self.trigger) for thread in ran
        ]

    def flush(self) -> None:
        if self.outbox is not None:
            self.outbox.flush(self.sessions)

    def free_alarm_threads(self, now: datetime) -> list[str]:
        """The alarm threads a new alarm's run may start on, in order.

        A run a crash stopped is finished first: starting another run on its thread would abandon
        it, and its alarm, whose mark has moved, would never be run. A run that waits at an
        interrupt keeps its thread until it ends.
        """
        free = []
        for thread in LoopRunner.ALARM_THREADS:
            if self.runner.waiting(self.model, thread) and not self.runner.at_interrupt(self.model, thread):
                self.runner.step(self.model, now, {"kind": "alarm"}, thread=thread)
            if not self.runner.waiting(self.model, thread):
                free.append(thread)
        return free

    def alarms(self, now: datetime, keys: Sequence[str]) -> list[tuple[str, str]]:
        """Start each alarm's own run now, each on a free alarm thread, next to any waiting run;
        returns the (alarm, thread) started. Alarms for which no thread is free (every alarm
        thread holds a run that waits) are kept, in order, and started first at a later call."""
        keys = [*self._queued, *keys]
        if not keys:
            return []
        free = self.free_alarm_threads(now)
        started = list(zip(keys, free, strict=False))
        self._queued = keys[len(started) :]
        if started:
            self.flush()
            for key, thread in started:
                self.runner.step(self.model, now, {"kind": "alarm", "alarm": key}, thread=thread)
        self._after()
        return started

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
