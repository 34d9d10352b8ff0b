"""What the Trainer calls to federate (``AgentContext.federate``): Flower's rounds, over nodes
simulated on this machine or over the real nodes of a SuperLink, as the policy says.

The loop wires it in because agents do not import the edge (DESIGN.md's layers); it is the one
place that knows both the policy's ``federated`` section and :mod:`driftpilot.edge`.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from driftpilot.models.base import TorchClassifier
from driftpilot.policies.schema import Federated

if TYPE_CHECKING:
    from driftpilot.edge.server_app import FederatedSettings


def settings_of(policy: Federated, seed: int = 0) -> FederatedSettings:
    """The run's settings from the policy's ``federated`` section."""
    from driftpilot.edge.server_app import FederatedSettings

    return FederatedSettings(
        rounds=policy.rounds,
        local_epochs=policy.local_epochs,
        strategy=policy.strategy,
        min_nodes=policy.min_nodes,
        seed=seed,
        dp_noise=policy.dp_noise_multiplier,
        dp_clip=policy.dp_clipping_norm,
    )


def federate(
    start: TorchClassifier,
    nodes: dict[str, tuple[pd.DataFrame, np.ndarray]] | None,
    check: tuple[pd.DataFrame, np.ndarray] | None,
    policy: Federated,
) -> tuple[TorchClassifier, dict[str, Any]]:
    """Federated training of ``start``: over ``nodes`` in-process (``simulation``), or over the
    SuperLink's own nodes (``superlink``; ``nodes`` is then None: their rows stay on them)."""
    # Flower is imported when a run federates, not with every loop.
    from driftpilot.edge.simulation import simulate

    settings = settings_of(policy)
    if policy.mode == "simulation":
        if not nodes or len(nodes) < settings.min_nodes:
            raise ValueError(f"{len(nodes or {})} simulated node(s), the run needs {settings.min_nodes}")
        done = simulate(start, nodes, settings, check=check)
        return done.model, done.record
    if policy.mode == "superlink":
        from driftpilot.edge.deployment import run_on_superlink

        with tempfile.TemporaryDirectory(prefix="driftpilot-fl-") as tmp:
            folder = Path(tmp)
            start.save(folder / "start")
            rows = None
            if check is not None:
                rows = folder / "check.parquet"
                check[0].assign(**{settings.target: np.asarray(check[1]).astype(str)}).to_parquet(rows, index=False)
            done = run_on_superlink(
                folder / "start",
                settings,
                control_address=str(policy.superlink),
                out_dir=folder / "out",
                check=rows,
            )
        return done.model, done.record
    raise ValueError(f"federated.mode {policy.mode!r} trains nothing")


def start_federated_run(
    sessions: Any,
    settings: Any,
    *,
    model: str,
    superlink: str | None = None,
    rounds: int | None = None,
    strategy: str | None = None,
    min_nodes: int | None = None,
    policy_path: Path | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """One run of the loop for ``model`` on a federated trigger (``driftpilot fl start``): the
    Curator's snapshot, a candidate trained over the SuperLink's nodes from the champion, judged
    by the Trainer's gate and, when it passes, released by the Release Manager as any candidate
    (its canary is then watched by the service's loop, on the model's ``federated`` thread).

    Raises ``LookupError`` for an unknown model and ``ValueError`` when no SuperLink is named.
    """
    from driftpilot.agents.context import AgentContext
    from driftpilot.graph.runner import LoopRunner, open_checkpointer
    from driftpilot.memory import decisions, managed
    from driftpilot.models.registry import Registry
    from driftpilot.policies import PolicyEngine, load_policy, model_policy_path

    with sessions() as session:
        row = managed.get_model(session=session, name=model)
        stored = row.policy
    path = policy_path or model_policy_path(stored)
    policy = load_policy(path)
    federated = policy.federated.model_copy(
        update={"mode": "superlink"}
        | ({"superlink": superlink} if superlink else {})
        | ({"rounds": rounds} if rounds else {})
        | ({"strategy": strategy} if strategy else {})
        | ({"min_nodes": min_nodes} if min_nodes else {})
    )
    if not federated.superlink:
        raise ValueError("no SuperLink to train on: pass --superlink HOST:PORT or set the policy's federated.superlink")
    engine = PolicyEngine(policy.model_copy(update={"federated": federated}))
    context = AgentContext(
        sessions=sessions, registry=Registry(settings.artifact_dir), policy=engine, federate=federate
    )
    moment = now or datetime.now(UTC)
    with open_checkpointer(
        settings.db_url if settings.database_url else None, settings.home / "checkpoints.sqlite"
    ) as saver:
        out = LoopRunner(context, saver).step(
            model, moment, {"kind": "federated", "superlink": federated.superlink}, thread="federated"
        )
    with sessions() as session:
        run = [
            decisions.decision_as_dict(d)
            for d in decisions.list_decisions(session=session, model_id=row.id, since=moment)
            if d.run_id == out.get("run_id")
        ]
    return {
        "outcome": out.get("outcome"),
        "candidate": out.get("candidate"),
        "run_id": out.get("run_id"),
        "decisions": run,
    }
