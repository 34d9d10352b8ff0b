"""What the Trainer calls to federate (``AgentContext.federate``): Flower's rounds, over nodes
simulated on this machine or over the real nodes of a SuperLink, as the policy says.

The loop wires it in because agents do not import the edge (DESIGN.md's layers); it is the one
place that knows both the policy's ``federated`` section and :mod:`driftpilot.edge`.
"""

from __future__ import annotations

import tempfile
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
            done = run_on_superlink(
                folder / "start", settings, control_address=str(policy.superlink), out_dir=folder / "out"
            )
        return done.model, done.record
    raise ValueError(f"federated.mode {policy.mode!r} trains nothing")
