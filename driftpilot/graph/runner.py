"""Starting and resuming runs of the loop, one thread per managed model."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.types import Command

from driftpilot.agents.context import AgentContext
from driftpilot.agents.state import initial_state
from driftpilot.graph.build import build_graph
from driftpilot.memory import decisions, managed
from driftpilot.memory.times import to_utc
from driftpilot.policies import StartCanaryFacts


@contextmanager
def open_checkpointer(database_url: str | None, sqlite_path: Path) -> Iterator[Any]:
    """PostgreSQL's checkpointer in the memory's own database when that is PostgreSQL (runs then
    survive the loss of the machine with the rest of the memory), else SQLite at ``sqlite_path``."""
    if database_url and database_url.startswith(("postgresql", "postgres:")):
        with postgres_checkpointer(database_url) as saver:
            yield saver
    else:
        with sqlite_checkpointer(sqlite_path) as saver:
            yield saver


@contextmanager
def postgres_checkpointer(database_url: str) -> Iterator[Any]:
    """LangGraph's PostgreSQL checkpointer on ``database_url`` (a SQLAlchemy or libpq URL); its
    tables are created on first use."""
    import psycopg
    from langgraph.checkpoint.postgres import PostgresSaver

    # SQLAlchemy's "postgresql+psycopg://" is not a libpq URL.
    url = database_url.replace("postgresql+psycopg://", "postgresql://").replace(
        "postgresql+psycopg2://", "postgresql://"
    )
    with PostgresSaver.from_conn_string(url) as saver:
        # Loop processes starting together would race to create the tables (setup() is not safe
        # to run concurrently): one at a time, under a session-level advisory lock. It is polled,
        # not waited for: setup() builds indexes CONCURRENTLY, which wait for every open
        # transaction, a blocked lock request included.
        lock = "hashtext('driftpilot:checkpoint-setup')"
        connection = saver.conn
        assert isinstance(connection, psycopg.Connection)  # from_conn_string: one connection, dict rows
        with connection.cursor() as cursor:
            while not (cursor.execute(f"SELECT pg_try_advisory_lock({lock}) AS taken").fetchone() or {}).get("taken"):
                time.sleep(0.05)
            try:
                saver.setup()
            finally:
                cursor.execute(f"SELECT pg_advisory_unlock({lock})")
        yield saver


@contextmanager
def sqlite_checkpointer(path: Path) -> Iterator[Any]:
    """LangGraph's SQLite checkpointer on ``path`` (created if missing)."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(str(path), check_same_thread=False)
    try:
        yield SqliteSaver(connection)
    finally:
        connection.close()


class LoopRunner:
    """Runs the loop for managed models: resumes a waiting run, or starts a new one.

    A model's scheduled runs share one thread (``<model>:main``) and its alarm-triggered runs
    a few others (``<model>:alarms``, ``<model>:alarms-2``, ...), so a run that waits for canary
    evidence is found and resumed after a restart from the checkpointer alone, and an alarm's run
    never has to wait behind another alarm's run that waits.
    """

    #: The threads alarm-triggered runs use: a new alarm's run starts on one that holds no
    #: unfinished run (see :meth:`driftpilot.loop.driver.Driver.free_alarm_threads`). Their number
    #: bounds the alarm runs of a model that wait at once; a further alarm waits until one ends.
    ALARM_THREADS = ("alarms", "alarms-2", "alarms-3", "alarms-4")
    #: The threads a model's runs use: scheduled checks, and runs an alarm triggers.
    #: ... and the one a federated training asked for runs on (``driftpilot fl start``).
    THREADS = ("main", *ALARM_THREADS, "federated")

    def __init__(self, context: AgentContext, checkpointer: Any) -> None:
        self.context = context
        self.graph = build_graph(checkpointer)

    def _config(self, model: str, thread: str = "main") -> dict[str, Any]:
        return {"configurable": {"thread_id": f"{model}:{thread}"}}

    def invoke(self, value: Any, config: dict[str, Any]) -> dict[str, Any]:
        """Run the graph from ``value`` (a fresh state, a resume, or None: go on from the last
        checkpoint) until it ends or waits.

        Each step's checkpoint is written before the next step starts (LangGraph's ``sync``
        durability; its default writes it meanwhile): a process killed in the middle of a step
        then always finds the step before it finished in the checkpointer, and resumes there.
        """
        return self.graph.invoke(value, config, context=self.context, durability="sync")

    def forget(self, model: str) -> None:
        """Drop whatever the checkpointer holds of the model's threads: a model registered anew
        (a demo or replay on a database used before) must not resume an old model's runs."""
        for thread in self.THREADS:
            self.graph.checkpointer.delete_thread(f"{model}:{thread}")

    def waiting(self, model: str, thread: str = "main") -> bool:
        """Whether the thread holds an unfinished run: one waiting at an interrupt (labels, canary
        evidence, a person), or one a crash stopped between two agents."""
        return bool(self.graph.get_state(self._config(model, thread)).next)

    def at_interrupt(self, model: str, thread: str = "main") -> bool:
        """Whether the thread's unfinished run waits at an interrupt (labels, canary evidence, a
        person), rather than having been stopped by a crash between two agents."""
        snapshot = self.graph.get_state(self._config(model, thread))
        return bool(snapshot.next) and any(task.interrupts for task in snapshot.tasks)

    def step(self, model: str, now: datetime, trigger: dict[str, Any], thread: str = "main") -> dict[str, Any]:
        """Resume the model's unfinished run, or start a new run.

        A run waiting at an interrupt is resumed with the current time; a run a crash stopped is
        finished from its last checkpoint (the agent that was running runs again, and finds in
        memory what it already did: see the Trainer and the Release Manager). The policy file is
        read again first if it changed. ``now`` without a zone is UTC; the state carries it aware.
        """
        now = to_utc(now, what="now")
        self._reload_policy(model, now)
        config = self._config(model, thread)
        snapshot = self.graph.get_state(config)
        if snapshot.next:
            if any(task.interrupts for task in snapshot.tasks):
                return self.invoke(Command(resume={"now": now.isoformat()}), config)
            return self.invoke(None, config)
        run_id = self._run_id(model, now, trigger, thread, snapshot.values.get("run_id"))
        return self.invoke(initial_state(model, now.isoformat(), run_id, trigger), config)

    @staticmethod
    def _run_id(model: str, now: datetime, trigger: dict[str, Any], thread: str, previous: str | None) -> str:
        """A run's id, unique: side effects are found again by it after a crash, so two runs must
        never share one (two alarms in a minute, a thread run twice in a minute)."""
        run_id = f"{model}/{now.strftime('%Y-%m-%dT%H:%MZ')}/{thread}/{trigger.get('kind', 'check')}"
        if trigger.get("alarm"):
            run_id += f"/{trigger['alarm']}"
        if previous is not None and previous.split("#")[0] == run_id:
            run_id += f"#{int(previous.split('#')[1]) + 1 if '#' in previous else 2}"
        return run_id

    def _reload_policy(self, model: str, now: datetime) -> None:
        """Put a changed policy file in force, or refuse it whole; either way it is a decision."""
        reload = self.context.policy.reload_if_changed()
        if reload is None:
            return
        with self.context.sessions() as session:
            model_id = managed.get_model(session=session, name=model).id
            decisions.record_decision(
                session=session,
                model_id=model_id,
                run_id=f"{model}/{now.strftime('%Y-%m-%dT%H:%MZ')}/policy",
                agent="policy",
                time=now,
                trigger={"kind": "policy_file", "source": reload.source, "sha256": reload.digest},
                evidence={"fields": list(reload.fields), "error": reload.error},
                diagnosis={},
                policy_verdicts=[],
                action="reload_policy",
                outcome="applied" if reload.applied else "refused",
                rationale=(
                    f"Policy file {reload.source} changed and is now in force"
                    + (f" (changed: {', '.join(reload.fields)})." if reload.fields else " (no field changed).")
                    if reload.applied
                    else f"Policy file {reload.source} changed but was refused as a whole; the policy in force "
                    f"stays: {reload.error}"
                ),
            )

    def release(
        self,
        model: str,
        candidate: int,
        now: datetime,
        gate_facts: StartCanaryFacts,
        run_id: str | None = None,
    ) -> dict[str, Any]:
        """Start a run at the Release Manager for a version registered outside the loop (trained
        by hand, or injected by a benchmark), as if the Trainer had just made it with these
        ``gate_facts``; the run then waits for evidence like any other."""
        now = to_utc(now, what="now")
        config = self._config(model)
        self.graph.update_state(
            config,
            {
                "model": model,
                "run_id": run_id or f"{model}/{now.strftime('%Y-%m-%dT%H:%MZ')}/release-v{candidate}",
                "now": now.isoformat(),
                "trigger": {"kind": "release", "candidate": candidate},
                "candidate": candidate,
                "evaluation": {"gate_facts": gate_facts.model_dump()},
            },
            as_node="trainer",
        )
        return self.invoke(None, config)
