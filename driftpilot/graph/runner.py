"""Starting and resuming runs of the loop, one thread per managed model."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from langgraph.types import Command

from driftpilot.agents.context import AgentContext
from driftpilot.agents.state import initial_state
from driftpilot.graph.build import build_graph


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
    another (``<model>:alarms``), so a run that waits for canary evidence is found and resumed
    after a restart from the checkpointer alone.
    """

    #: The threads a model's runs use: scheduled checks, and runs an alarm triggers.
    THREADS = ("main", "alarms")

    def __init__(self, context: AgentContext, checkpointer: Any) -> None:
        self.context = context
        self.graph = build_graph(checkpointer)

    def _config(self, model: str, thread: str = "main") -> dict[str, Any]:
        return {"configurable": {"thread_id": f"{model}:{thread}"}}

    def waiting(self, model: str, thread: str = "main") -> bool:
        return bool(self.graph.get_state(self._config(model, thread)).next)

    def step(self, model: str, now: datetime, trigger: dict[str, Any], thread: str = "main") -> dict[str, Any]:
        """Resume the model's waiting run with the current time, or start a new run."""
        config = self._config(model, thread)
        if self.waiting(model, thread):
            return self.graph.invoke(Command(resume={"now": now.isoformat()}), config, context=self.context)
        run_id = f"{model}/{now.strftime('%Y-%m-%dT%H:%MZ')}/{trigger.get('kind', 'check')}"
        return self.graph.invoke(initial_state(model, now.isoformat(), run_id, trigger), config, context=self.context)

    def release(
        self, model: str, candidate: int, now: datetime, gate_facts: dict[str, Any], run_id: str | None = None
    ) -> dict[str, Any]:
        """Start a run at the Release Manager for a version registered outside the loop (trained
        by hand, or injected by a benchmark), as if the Trainer had just made it with these
        ``gate_facts``; the run then waits for evidence like any other."""
        config = self._config(model)
        self.graph.update_state(
            config,
            {
                "model": model,
                "run_id": run_id or f"{model}/{now.strftime('%Y-%m-%dT%H:%MZ')}/release-v{candidate}",
                "now": now.isoformat(),
                "trigger": {"kind": "release", "candidate": candidate},
                "candidate": candidate,
                "evaluation": {"gate_facts": gate_facts},
            },
            as_node="trainer",
        )
        return self.graph.invoke(None, config, context=self.context)
