"""Events and labels gathered by a driver and sent in one ingest call each."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory.ingest import EventBatch, ingest_events, ingest_labels
from driftpilot.memory.rolling import RollingHistory


class Outbox:
    """Pending events and labels of one managed model.

    A gateway relay batches its devices' readings the same way: one transaction (and one
    fsync) a batch instead of one an event keeps drivers fast. :meth:`flush` must run before
    anything reads memory, so the loop never misses what has already arrived.
    """

    def __init__(self, model: str, history: RollingHistory | None = None) -> None:
        self.model = model
        #: The rolling history that derived the features the batches carry: stored with them.
        self.history = history
        self.batches: list[EventBatch] = []
        self.labels: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return sum(len(b) for b in self.batches) + len(self.labels)

    def add_events(self, batch: EventBatch) -> None:
        self.batches.append(batch)

    def add_labels(self, labels: list[dict[str, Any]]) -> None:
        self.labels.extend(labels)

    def flush(self, sessions: sessionmaker[Session]) -> None:
        with sessions() as session:
            if self.batches:
                ingest_events(
                    session=session, model=self.model, events=concat_batches(self.batches), history=self.history
                )
            if self.labels:
                ingest_labels(session=session, model=self.model, labels=self.labels)
        self.batches, self.labels = [], []


def concat_batches(batches: list[EventBatch]) -> EventBatch:
    """One batch holding the events of ``batches`` in order."""
    if len(batches) == 1:
        return batches[0]
    first = batches[0]
    served = [v for b in batches for v in (b.served_version or [None] * len(b))]
    predicted = [p for b in batches for p in (b.prediction or [None] * len(b))]
    widths = {b.probabilities.shape[1] for b in batches if b.probabilities is not None}
    # A batch without probabilities joins with rows of NaN: "not given", as EventBatch reads it.
    probabilities = None
    if widths:
        probabilities = np.vstack(
            [b.probabilities if b.probabilities is not None else np.full((len(b), *widths), np.nan) for b in batches]
        )
    return EventBatch(
        keys=[k for b in batches for k in b.keys],
        times=[t for b in batches for t in b.times],
        entities=[e for b in batches for e in b.entities],
        groups=[g for b in batches for g in (b.groups or [None] * len(b))],
        features={name: np.concatenate([np.asarray(b.features[name]) for b in batches]) for name in first.features},
        served_version=served if any(v is not None for v in served) else None,
        prediction=predicted if any(p is not None for p in predicted) else None,
        probabilities=probabilities,
    )
