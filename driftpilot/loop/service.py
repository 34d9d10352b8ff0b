"""The service's background loop: the live database as the source, the wall clock as the clock
(at each pass, a :class:`~driftpilot.loop.driver.Moment` a model for the one driver).

Every ``tick`` seconds it looks at each managed model whose lease it holds (several loop
processes may share one PostgreSQL: each model's runs are taken by one of them at a time, see
:mod:`driftpilot.memory.leases`) and, as the drivers of ``demo`` and ``replay`` do:

- runs the Monitor when a check is due (:class:`~driftpilot.loop.schedule.CheckSchedule`: on the
  policy's cadence, once enough new evidence arrived),
- runs an alarm's own thread at once for a new firing alarm that concerns the model,
- resumes a waiting run (labels, canary evidence, a person's answer) every ``resume_every``.

Each model is judged by its own policy file (or the service's, or the shipped default). The
runs are LangGraph threads checkpointed in the memory's database (PostgreSQL) or beside it
(SQLite): a loop killed mid-run resumes where it stopped, in whichever process takes the lease.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, open_checkpointer
from driftpilot.loop.driver import Driver, Moment
from driftpilot.loop.federation import federate
from driftpilot.loop.metrics import LoopMetrics
from driftpilot.loop.schedule import CheckSchedule
from driftpilot.memory import events, managed
from driftpilot.memory.leases import alarm_mark, move_alarm_mark, release_leases, take_lease
from driftpilot.memory.tables import Alarm, ManagedModel
from driftpilot.memory.times import utcnow
from driftpilot.models.registry import Registry
from driftpilot.policies import PolicyEngine, load_policy, model_policy_path

__all__ = ["Run", "ServiceLoop"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Run:
    """One run of a model's graph that a pass of the loop made."""

    model: str
    thread: str
    trigger: dict[str, Any]


@dataclass
class _Model:
    """What the loop keeps of one model between passes."""

    driver: Driver
    marks: tuple[int, int] = (0, 0)
    next_resume: datetime | None = None

    @property
    def schedule(self) -> CheckSchedule:
        """The driver's check schedule (every model of the service has one)."""
        assert self.driver.schedule is not None
        return self.driver.schedule


class ServiceLoop:
    """Runs the loop of every managed model against the live database.

    ``run_once(now)`` is one pass (what tests drive); :meth:`run` repeats it until :meth:`stop`.
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        registry: Registry,
        checkpointer: Any,
        *,
        policy_path: str | Path | None = None,
        metrics: LoopMetrics | None = None,
        holder: str | None = None,
        tick: float = 5.0,
        lease: timedelta = timedelta(minutes=2),
        resume_every: timedelta = timedelta(minutes=15),
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.registry = registry
        self.checkpointer = checkpointer
        self.policy_path = policy_path
        self.metrics = metrics
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.tick = tick
        self.lease = lease
        self.resume_every = resume_every
        self.clock = clock
        self.models: dict[str, _Model] = {}
        self._stopped = threading.Event()
        self._woken = threading.Event()
        #: The models whose lease this loop holds, by id, with when the lease lapses; renewed by
        #: :meth:`_heartbeat` (a run, a training, can take minutes), and by a pass only when less
        #: than half of it is left (renewing is a write: not one a model at every tick).
        self._held: dict[int, datetime] = {}

    def wake(self, models: list[str | None]) -> None:
        """An alarm arrived for ``models`` (None: any): pass now, not at the next tick (the pass
        finds the alarm in memory, whichever loop process the hook's request reached)."""
        self._woken.set()

    def stop(self) -> None:
        """Finish the run in progress, then stop (SIGTERM); the leases are given back."""
        self._stopped.set()
        self._woken.set()

    def run(self) -> None:
        """Pass after pass until :meth:`stop`; a failing pass is logged, and the next one tries again."""
        heartbeat = threading.Thread(target=self._heartbeat, name="driftpilot-leases", daemon=True)
        heartbeat.start()
        try:
            while not self._stopped.is_set():
                self._woken.clear()
                try:
                    self.run_once(self.clock())
                except Exception:
                    log.exception("a pass of the loop failed; the next one tries again")
                self._woken.wait(self.tick)
        finally:
            self._stopped.set()
            heartbeat.join()
            with self.sessions() as session:
                release_leases(session=session, holder=self.holder)
            self._held.clear()

    def _renew(self, model_id: int, now: datetime) -> bool:
        """Take or renew the model's lease; whether this loop holds it now."""
        with self.sessions() as session:
            kept = take_lease(session=session, model_id=model_id, holder=self.holder, now=now, ttl=self.lease)
        if kept:
            self._held[model_id] = now + self.lease
        else:
            self._held.pop(model_id, None)
        return kept

    def _heartbeat(self) -> None:
        """Renew the held leases every third of their length, so that none expires during a run."""
        while not self._stopped.wait(self.lease.total_seconds() / 3):
            for model_id in list(self._held):
                try:
                    if not self._renew(model_id, self.clock()):
                        log.error("the lease of model %d was taken by another loop", model_id)
                except Exception:
                    log.exception("renewing the lease of model %d failed; the next beat tries again", model_id)

    def run_once(self, now: datetime) -> list[Run]:
        """One pass over the models; returns the runs it made."""
        with self.sessions() as session:
            rows = managed.list_models(session=session)
        done: list[Run] = []
        for row in rows:
            if self._stopped.is_set():
                break
            lapses = self._held.get(row.id, now)
            if lapses - now > self.lease / 2 or self._renew(row.id, now):
                done += self._pass(row, now)
            else:
                self.models.pop(row.name, None)  # another process runs it; start afresh if it comes back
        return done

    def _model(self, row: ManagedModel, now: datetime) -> _Model:
        if row.name not in self.models:
            path = model_policy_path(row.policy, self.policy_path)
            engine = PolicyEngine.from_file(path) if path else PolicyEngine(load_policy())
            context = AgentContext(sessions=self.sessions, registry=self.registry, policy=engine, federate=federate)
            every = engine.policy.monitor.check_every_minutes
            schedule = CheckSchedule(now, timedelta(minutes=every))
            driver = Driver(
                self.sessions,
                LoopRunner(context, self.checkpointer),
                row.name,
                row.id,
                trigger={"kind": "schedule", "every_minutes": every},
                schedule=schedule,
            )
            state = _Model(driver=driver)
            with self.sessions() as session:
                state.marks = events.arrivals(session=session, model_id=row.id, after_event=0, after_label=0)[2:]
            # Evidence already in memory counts as new: a model registered with history is checked
            # on the first cadence.
            state.schedule.saw(rows=state.marks[0], labels=state.marks[1])
            self.models[row.name] = state
        return self.models[row.name]

    def _pass(self, row: ManagedModel, now: datetime) -> list[Run]:
        state = self._model(row, now)
        with self.sessions() as session:
            n_events, n_labels, *marks = events.arrivals(
                session=session, model_id=row.id, after_event=state.marks[0], after_label=state.marks[1]
            )
            # Firing alarms that concern the model and have no run yet (past the lease's mark).
            alarms = list(
                session.execute(
                    sa.select(Alarm.id, Alarm.key)
                    .where(
                        Alarm.id > alarm_mark(session=session, model_id=row.id),
                        Alarm.status == "firing",
                        # driftpilot's own alerts, handed back by Alertmanager, are kept, not run on.
                        Alarm.name.not_like("Driftpilot%"),
                        sa.or_(Alarm.model_id.is_(None), Alarm.model_id == row.id),
                    )
                    .order_by(Alarm.id)
                )
            )
        state.marks = (marks[0], marks[1])
        state.schedule.saw(rows=n_events, labels=n_labels)
        if alarms:
            # Only as many as there are alarm threads free; the mark stays before the rest, which
            # the next passes find again (in whichever process then holds the model).
            free = state.driver.free_alarm_threads(now)
            if len(free) < len(alarms):
                log.info("%d alarms of model %s wait for an alarm run to end", len(alarms) - len(free), row.name)
            alarms = alarms[: len(free)]
        if alarms:
            with self.sessions() as session:
                if not move_alarm_mark(session=session, model_id=row.id, holder=self.holder, mark=alarms[-1][0]):
                    return []  # the model was taken over meanwhile
        keys = [key for _, key in alarms]
        due_at = state.schedule.next_check
        check = state.schedule.due(now)
        if check and self.metrics is not None:
            self.metrics.loop_lag.labels(row.name).set(max(0.0, (now - due_at).total_seconds()))
        resume = state.next_resume is None or now >= state.next_resume
        if resume:
            state.next_resume = now + self.resume_every
        ran = state.driver.step(Moment(now, check=check, resume=resume, alarms=keys))
        return [Run(row.name, thread, trigger) for thread, trigger in ran]


@contextmanager
def service_loop(
    sessions: sessionmaker[Session],
    registry: Registry,
    *,
    database_url: str | None,
    home: Path,
    **options: Any,
) -> Iterator[ServiceLoop]:
    """A :class:`ServiceLoop` with its checkpointer open (in PostgreSQL when the memory is there,
    else ``home/checkpoints.sqlite``)."""
    with open_checkpointer(database_url, home / "checkpoints.sqlite") as checkpointer:
        yield ServiceLoop(sessions, registry, checkpointer, **options)
