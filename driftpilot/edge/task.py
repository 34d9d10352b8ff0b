"""What a federated round trains and how, on one node: the model rebuilt from what the server
sent, the node's own labelled rows, a few local epochs, and the metrics it reports.

Flower lays an app out as ``task.py`` (the model and the data), ``client_app.py`` (a node's
side), ``server_app.py`` (the rounds) and ``strategy.py`` (how updates are combined); this module
is the first. A node's rows never leave it: only weights and a few counts travel.

A node's rows are a CSV or Parquet file (``data-path`` in the node's configuration, as
``flower-supernode --node-config`` gives it): the model's features and a column holding the label
(the run's ``target``, ``label`` by default). A fixed share of them (:data:`HOLDOUT_SHARE`, chosen
by the run's seed) is held out of local training: the node reports the round's model's accuracy
on it, so that the server sees how the nodes differ without seeing their data.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftpilot.models.base import TorchClassifier
from driftpilot.models.families import model_from_meta

#: Share of a node's rows held out of its local training, to evaluate the round's model on.
HOLDOUT_SHARE = 0.2
#: Local epochs per round unless the run says otherwise.
LOCAL_EPOCHS = 2


@dataclass(frozen=True)
class NodeData:
    """One node's labelled rows, split into what it trains on and what it evaluates on."""

    train: pd.DataFrame
    train_labels: np.ndarray
    holdout: pd.DataFrame
    holdout_labels: np.ndarray


def read_rows(path: str | Path, target: str) -> tuple[pd.DataFrame, np.ndarray]:
    """A node's labelled rows from ``path`` (CSV or Parquet) and their labels (column ``target``).

    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` naming the problem for a
    file without the target column or without rows.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"the node's data file {path} does not exist")
    frame = pd.read_parquet(path) if path.suffix in (".parquet", ".pq") else pd.read_csv(path)
    if target not in frame.columns:
        raise ValueError(f"the node's data {path} has no column {target!r} holding the labels")
    labelled = frame[frame[target].notna()]
    if labelled.empty:
        raise ValueError(f"the node's data {path} has no labelled rows")
    return labelled.drop(columns=[target]).reset_index(drop=True), labelled[target].astype(str).to_numpy()


def split(frame: pd.DataFrame, labels: np.ndarray, seed: int) -> NodeData:
    """Hold :data:`HOLDOUT_SHARE` of the rows out (at least one when there are two or more)."""
    order = np.random.default_rng(seed).permutation(len(labels))
    n_out = int(len(labels) * HOLDOUT_SHARE) if len(labels) >= 2 else 0
    n_out = max(n_out, 1) if len(labels) >= 2 else 0
    out, keep = np.sort(order[:n_out]), np.sort(order[n_out:])
    return NodeData(
        frame.iloc[keep].reset_index(drop=True),
        labels[keep],
        frame.iloc[out].reset_index(drop=True),
        labels[out],
    )


def load_model(meta: str | Mapping[str, Any], arrays: list[np.ndarray]) -> TorchClassifier:
    """The round's model: its description (JSON, as the server sends it) and its weights."""
    return model_from_meta(json.loads(meta) if isinstance(meta, str) else meta, arrays)


def accuracy(model: TorchClassifier, frame: pd.DataFrame, labels: np.ndarray) -> float:
    """Share of ``labels`` the model gets right (NaN on no rows)."""
    if len(labels) == 0:
        return float("nan")
    return float(np.mean(model.predict(frame) == labels))


def class_counts(model: TorchClassifier, labels: np.ndarray) -> list[int]:
    """How many rows of each of the model's classes (in its order) ``labels`` hold."""
    return [int(np.sum(labels == c)) for c in model.classes]


def train(
    model: TorchClassifier,
    data: NodeData,
    *,
    epochs: int,
    proximal_mu: float,
    seed: int,
    class_weights: list[float] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on the node's rows; the metrics the node reports with its weights.

    ``accuracy-before`` is the round's model on the node's held-out rows, before the node trained
    it: how well the model the others made serves this node.
    """
    before = accuracy(model, data.holdout, data.holdout_labels)
    fit = model.train_locally(
        data.train, data.train_labels, epochs=epochs, proximal_mu=proximal_mu, class_weights=class_weights, seed=seed
    )
    return {
        "num-examples": len(data.train_labels),
        "train-loss": fit["train_loss"],
        "accuracy-before": before,
        "accuracy-after": accuracy(model, data.holdout, data.holdout_labels),
        "class-counts": class_counts(model, data.train_labels),
    }


def evaluate(model: TorchClassifier, data: NodeData, *, describe: bool = False) -> dict[str, Any]:
    """The round's model on the node's held-out rows. With ``describe`` (the server's first look,
    before any training) also the node's label counts and input means, for the server to judge
    how the nodes' data differ: every node of a round is asked alike, so their replies agree."""
    metrics: dict[str, Any] = {
        "num-examples": len(data.holdout_labels),
        "accuracy": accuracy(model, data.holdout, data.holdout_labels),
    }
    if describe:
        rows = pd.concat([data.train, data.holdout], ignore_index=True)
        metrics |= {
            "num-rows": len(rows),
            "class-counts": class_counts(model, np.concatenate([data.train_labels, data.holdout_labels])),
            # Means of the model's inputs as it encodes them (standardised numbers, one-hot
            # shares): how far this node's data are from the others', without a row leaving it.
            "input-means": [float(v) for v in model.encoding_.transform(rows).mean(axis=0)],
        }
    return metrics
