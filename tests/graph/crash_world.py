"""A loop run killed while it trains or releases, for tests/graph/test_crash_resume.py.

``build(folder)`` writes a world (memory, a champion, a snapshot to train on) into ``folder``;
``python crash_world.py FOLDER WHERE`` then starts a run at the Trainer in a process of its own
and kills that process (SIGKILL: no cleanup, no last checkpoint) at ``WHERE``:

- ``fit``: in the middle of training, before anything is registered;
- ``registered``: after the version and the Trainer's decision are written, before the graph
  checkpoints the step;
- ``before_release``: as the Release Manager starts, before it writes anything (the Trainer's
  step must be found checkpointed: LangGraph's default durability would still be writing it);
- ``release``: after the release started, before its decision is written.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ParamSpec, TypeVar

import numpy as np

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, managed, snapshots
from driftpilot.memory.ingest import EventBatch, ingest_events, ingest_labels
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import PolicyEngine
from driftpilot.policies.loader import policy_from_mapping
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator

START = datetime(2026, 3, 1, tzinfo=UTC)
NOW = START + timedelta(hours=13)
RUN_ID = f"{MODEL_NAME}/crash-test"
#: Lenient gates: the test is about what a restart does, not about the candidate's quality.
POLICY = {
    "name": "crash-test",
    "budgets": {"max_retrains_per_day": 100},
    "training": {"min_training_labels": 100},
    "evaluation": {"max_forgetting": 0.5, "max_slice_regression": 0.5},
    "release": {"max_regression": 0.5},
}


def parts(folder: Path, url: str | None = None) -> tuple[AgentContext, Path]:
    """The world's context (memory at ``url``, default SQLite in ``folder``) and its SQLite
    checkpoint file (see :func:`driftpilot.graph.runner.open_checkpointer` for PostgreSQL)."""
    sessions = db.connect(url or f"sqlite:///{folder / 'memory.sqlite'}")
    context = AgentContext(
        sessions=sessions,
        registry=Registry(folder / "artifacts"),
        policy=PolicyEngine(policy_from_mapping(POLICY)),
        seed=0,
    )
    return context, folder / "checkpoints.sqlite"


def build(folder: Path, url: str | None = None) -> None:
    context, _ = parts(folder, url)
    ticks = list(OntSimulator(OntScenarioConfig(n_onts=80, days=0.5, seed=3, outages=())).ticks())
    features = {k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features}
    labels = np.concatenate([t.labels for t in ticks])
    n = len(labels)
    with context.sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
        keys = []
        for t in ticks:
            batch = [f"{e}/{t.index}" for e in t.entities]
            keys += batch
            ingest_events(
                session=session,
                model=MODEL_NAME,
                events=EventBatch(
                    keys=batch,
                    times=[t.time] * len(t),
                    entities=list(t.entities),
                    groups=list(t.groups),
                    features=dict(t.features),
                    served_version=[1] * len(t),
                    prediction=list(t.labels),
                ),
            )
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[
                {"event_key": k, "value": str(v), "time": NOW - timedelta(hours=1)}
                for k, v in zip(keys, labels, strict=True)
            ],
        )
        half = n // 2
        champion = TabularMLP(FEATURES, CLASSES, epochs=3, seed=0).fit(
            {k: v[:half] for k, v in features.items()}, labels[:half]
        )
        context.registry.register(
            session=session, model_id=model.id, model_name=MODEL_NAME, model=champion, time=START, stage="champion"
        )
        ids = np.arange(1, n + 1)
        recent, train = ids[-n // 10 :], ids[half : -n // 10]
        snapshots.create_snapshot(
            session=session,
            model_id=model.id,
            event_ids=[int(i) for i in train],
            labels=[str(labels[i - 1]) for i in train],
            time=NOW,
            stats={"recent_holdout_ids": [int(i) for i in recent], "old_holdout_ids": [int(i) for i in ids[:300]]},
        )


def start_run(runner: LoopRunner) -> None:
    """Start a run at the Trainer, as if the Curator had just made snapshot 1."""
    config = {"configurable": {"thread_id": f"{MODEL_NAME}:main"}}
    runner.graph.update_state(
        config,
        {
            "model": MODEL_NAME,
            "run_id": RUN_ID,
            "now": NOW.isoformat(),
            "trigger": {"kind": "test"},
            "diagnosis": {"cause": "covariate_drift"},
            "snapshot_id": 1,
            "candidate": None,
            "release_id": None,
            "approval_id": None,
            "outcome": "snapshot",
        },
        as_node="curator",
    )
    runner.invoke(None, config)


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


P = ParamSpec("P")
R = TypeVar("R")


def _then_die(call: Callable[P, R]) -> Callable[P, R]:
    """``call``, then the process dies before its caller sees the result."""

    def wrapped(*args: P.args, **kwargs: P.kwargs) -> R:
        result = call(*args, **kwargs)
        _die()
        return result

    return wrapped


def main(folder: Path, where: str) -> None:
    import driftpilot.agents.release_manager as release_manager
    import driftpilot.agents.trainer as trainer

    context, checkpoints = parts(folder)
    if where == "fit":
        context.on_epoch = lambda point: _die() if point.get("epoch", 0) >= 2 else None
    elif where == "registered":
        trainer.versions.set_decision = _then_die(trainer.versions.set_decision)
    elif where == "before_release":
        release_manager.releases.release_started_by = lambda **kw: _die()
    elif where == "release":
        release_manager.releases.start_release = _then_die(release_manager.releases.start_release)
    else:
        raise SystemExit(f"unknown kill point {where!r}: fit, registered, before_release or release")
    with sqlite_checkpointer(checkpoints) as checkpointer:
        start_run(LoopRunner(context, checkpointer))


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
