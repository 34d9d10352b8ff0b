"""The server's side of federated training (Flower's ``ServerApp``): rounds of local training on
the nodes, their updates checked, screened and combined (:mod:`driftpilot.edge.strategy`), and
a model out at the end, which the Trainer then evaluates, gates and releases like any other
candidate.

:func:`run_rounds` does the work on any Flower ``Grid``: the in-process one of
:mod:`driftpilot.edge.simulation` (the embedded default), or the SuperLink's, when
``flower-superlink`` runs this app (``app`` below) for ``driftpilot fl start``. There the run's
configuration names the starting model's folder and the folder the result is written to
(``model-dir`` and ``out-dir``); the result appears whole or not at all.
"""

from __future__ import annotations

import copy
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping

from driftpilot.edge import strategy as strategies
from driftpilot.edge.task import load_model as rebuild
from driftpilot.edge.task import read_rows
from driftpilot.models.base import TorchClassifier
from driftpilot.models.families import load_model

#: The file a deployed run writes its record to, beside the model folder ``model``.
RECORD_FILE = "federated.json"


@dataclass(frozen=True)
class FederatedSettings:
    """How a federated training runs (the policy's ``federated`` section gives them)."""

    rounds: int = 3
    local_epochs: int = 2
    strategy: str = "auto"
    #: Fewest nodes a round needs; a run waits up to ``wait_seconds`` for them to connect.
    min_nodes: int = 2
    wait_seconds: float = 60.0
    #: Seconds a round waits for replies (None: until every node answers).
    round_timeout: float | None = 300.0
    seed: int = 0
    target: str = "label"
    #: Gaussian noise (times the clipping norm) added to the aggregate; 0 turns DP off.
    dp_noise: float = 0.0
    dp_clip: float = 1.0
    dp_delta: float = 1e-5

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"a federated run needs at least one round, got {self.rounds}")
        if self.local_epochs < 1:
            raise ValueError(f"local_epochs must be at least 1, got {self.local_epochs}")
        if self.strategy not in strategies.STRATEGIES:
            raise ValueError(f"unknown federated strategy {self.strategy!r}; known: {', '.join(strategies.STRATEGIES)}")
        if self.min_nodes < 1:
            raise ValueError(f"min_nodes must be at least 1, got {self.min_nodes}")
        if self.dp_noise < 0 or self.dp_clip <= 0:
            raise ValueError("dp_noise must be at least 0 and dp_clip above 0")


@dataclass
class FederatedOutcome:
    """The model a federated run made and what it did, for the decision log."""

    model: TorchClassifier
    record: dict[str, Any] = field(default_factory=dict)


def run_rounds(
    grid: Grid,
    start: TorchClassifier,
    settings: FederatedSettings,
    check: tuple[pd.DataFrame, np.ndarray] | None = None,
) -> FederatedOutcome:
    """Train ``start`` over the nodes of ``grid`` for ``settings.rounds`` rounds.

    ``check`` is labelled rows the server holds (the Trainer's holdout): each round's updates are
    screened on them (see :func:`driftpilot.edge.strategy.flag_outliers`).

    Raises ``RuntimeError`` when fewer than ``settings.min_nodes`` nodes connect in time or no
    round had an update to aggregate.
    """
    started = time.perf_counter()
    node_ids = _wait_for_nodes(grid, settings)
    meta = json.dumps(start.meta())
    description = ConfigRecord({"meta": meta})
    arrays = ArrayRecord(start.weights())
    config: dict[str, Any] = {"target": settings.target, "local-epochs": settings.local_epochs}
    names, first = _first_look(grid, node_ids, arrays, description, config, settings)
    choice = strategies.choose(settings.strategy, first)
    pooled = np.sum([np.asarray(m.get("class-counts", []), dtype=float) for m in first.values()], axis=0)
    if np.ndim(pooled) == 1 and len(pooled) == len(start.classes):
        # Every node weighs the classes as training on the union of their rows would.
        config["class-weights"] = [float(w) for w in start.class_loss_weights(pooled)]
    screened = strategies.Screened(
        choice,
        model=description,
        names=lambda i: names.get(i, f"node-{i}"),
        seed=settings.seed,
        check=_checker(start, check),
    )
    runner: Any = screened
    dp = None
    if settings.dp_noise > 0:
        runner = DifferentialPrivacyServerSideFixedClipping(
            screened,
            noise_multiplier=settings.dp_noise,
            clipping_norm=settings.dp_clip,
            num_sampled_clients=len(node_ids),
        )
        epsilon = strategies.dp_epsilon(settings.dp_noise, settings.rounds, settings.dp_delta)
        dp = {
            "noise_multiplier": settings.dp_noise,
            "clipping_norm": settings.dp_clip,
            "delta": settings.dp_delta,
            "epsilon": round(epsilon, 3),
        }
    result = runner.start(
        grid=grid,
        initial_arrays=arrays,
        num_rounds=settings.rounds,
        timeout=settings.round_timeout,
        train_config=ConfigRecord(config),
        evaluate_config=ConfigRecord(config),
    )
    if not any(r.nodes for r in screened.records) or result.arrays is None or not len(result.arrays):
        raise RuntimeError("no round of the federated run had an update to aggregate: " + _why_none(screened.records))
    trained = rebuild(meta, result.arrays.to_numpy_ndarrays())
    evaluated = {
        int(r): round(float(m["accuracy"]), 4) for r, m in result.evaluate_metrics_clientapp.items() if "accuracy" in m
    }
    record = _record(choice, screened.records, first, evaluated, dp, time.perf_counter() - started)
    return FederatedOutcome(trained, record)


def _checker(
    start: TorchClassifier, check: tuple[pd.DataFrame, np.ndarray] | None
) -> Callable[[list[np.ndarray]], float] | None:
    """Accuracy on the server's rows of the starting model with other weights (or None)."""
    if check is None or len(check[1]) == 0:
        return None
    frame, labels = check
    probe = copy.deepcopy(start)
    labels = np.asarray(labels).astype(str)

    def accuracy(arrays: list[np.ndarray]) -> float:
        probe.set_weights(arrays)
        return float(np.mean(probe.predict(frame) == labels))

    return accuracy


def _wait_for_nodes(grid: Grid, settings: FederatedSettings) -> list[int]:
    deadline = time.monotonic() + settings.wait_seconds
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= settings.min_nodes:
            return nodes
        if time.monotonic() > deadline:
            waited = f"{settings.wait_seconds:g} s"
            raise RuntimeError(
                f"only {len(nodes)} node(s) connected within {waited}; the run needs {settings.min_nodes}"
            )
        time.sleep(0.5)


def _first_look(
    grid: Grid,
    node_ids: list[int],
    arrays: ArrayRecord,
    model: ConfigRecord,
    config: dict[str, Any],
    settings: FederatedSettings,
) -> tuple[dict[int, str], dict[str, dict[str, Any]]]:
    """Evaluate the starting model on every node before training: their names, label mixes and
    how well it serves each (what :func:`strategies.choose` reads)."""
    content = RecordDict({"arrays": arrays, "config": ConfigRecord(config | {"server-round": 0}), "model": model})
    messages = [Message(content=content, message_type=MessageType.EVALUATE, dst_node_id=n) for n in node_ids]
    names: dict[int, str] = {}
    seen: dict[str, dict[str, Any]] = {}
    for reply in grid.send_and_receive(messages, timeout=settings.round_timeout):
        node = reply.metadata.src_node_id
        if reply.has_error():
            continue
        if "node" in reply.content.config_records:
            names[node] = str(reply.content["node"]["name"])
        metrics = reply.content["metrics"]
        seen[names.get(node, f"node-{node}")] = {k: metrics[k] for k in metrics}
    return names, seen


def _why_none(records: list[strategies.RoundRecord]) -> str:
    dropped = {n: r for rec in records for n, r in rec.dropped.items()}
    return "; ".join(f"{n}: {r}" for n, r in dropped.items()) or "no node answered"


def _record(
    choice: strategies.Choice,
    rounds: list[strategies.RoundRecord],
    first: dict[str, dict[str, Any]],
    evaluated: dict[int, float],
    dp: dict[str, Any] | None,
    seconds: float,
) -> dict[str, Any]:
    taking_part = sorted({n for r in rounds for n in r.nodes})
    # An outlier is a node flagged in most of the rounds it took part in: one odd round of a
    # node whose data differ is not a pattern.
    flagged = sorted(
        n for n in taking_part if 2 * sum(n in r.outliers for r in rounds) > sum(n in r.nodes for r in rounds)
    )
    last = next(r for r in reversed(rounds) if r.nodes)
    return {
        "strategy": choice.strategy,
        "final_strategy": rounds[-1].strategy,
        "reasons": choice.reasons,
        "evidence": choice.evidence,
        "nodes": taking_part,
        "samples": {n: int(last.nodes[n]["num-examples"]) for n in last.nodes},
        "start_accuracy": {n: round(float(m.get("accuracy", math.nan)), 4) for n, m in first.items()},
        "outliers": flagged,
        "dropped": {f"round {r.round}": r.dropped for r in rounds if r.dropped},
        "bytes_per_round": [{"sent": r.bytes_sent, "received": r.bytes_received} for r in rounds],
        "federated_accuracy": evaluated,
        "dp": dp,
        "secure_aggregation": False,
        "rounds": [r.as_dict() for r in rounds],
        "seconds": round(seconds, 3),
    }


# -- Flower's ServerApp, as flower-superlink runs it -----------------------------------------------
app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Run the rounds on the SuperLink's nodes; write the model and the record to ``out-dir``."""
    config = context.run_config
    start = load_model(Path(str(config["model-dir"])))
    settings = settings_from_run_config(config)
    check_path = str(config.get("check-path", "") or "")
    check = read_rows(check_path, settings.target) if check_path else None
    outcome = run_rounds(grid, start, settings, check)
    write_outcome(outcome, Path(str(config["out-dir"])))


def run_config_key(field_name: str) -> str:
    """The run-config key of a :class:`FederatedSettings` field (``local_epochs``: ``local-epochs``)."""
    return field_name.replace("_", "-")


def settings_from_run_config(config: Mapping[str, Any]) -> FederatedSettings:
    """The settings a run configuration gives, each field's default where it gives none."""
    given: dict[str, Any] = {}
    for f in fields(FederatedSettings):
        key = run_config_key(f.name)
        if key in config:
            # Every field has a default, whose type says how to read the value (None: a number).
            kind: Callable[[Any], Any] = float if f.default is None else type(f.default)
            given[f.name] = kind(config[key])
    return FederatedSettings(**given)


def write_outcome(outcome: FederatedOutcome, out: Path) -> None:
    """Write the model (``model/``) and the record (:data:`RECORD_FILE`) under ``out``, whole or
    not at all: into a sibling folder first, renamed into place."""
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    outcome.model.save(staging / "model")
    (staging / RECORD_FILE).write_text(json.dumps(outcome.record, indent=2, sort_keys=True, default=float))
    with open(staging / RECORD_FILE, "rb") as written:
        os.fsync(written.fileno())
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)


def read_outcome(out: Path) -> FederatedOutcome:
    """What :func:`write_outcome` wrote."""
    if not (out / RECORD_FILE).exists():
        raise FileNotFoundError(f"no federated result under {out}")
    return FederatedOutcome(load_model(out / "model"), json.loads((out / RECORD_FILE).read_text()))
