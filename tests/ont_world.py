"""The simulated ONT fleet stored as a managed model's events, as several test worlds build it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import managed
from driftpilot.memory.ingest import EventBatch, ingest_events
from driftpilot.memory.tables import ManagedModel


def register_ont(session: Session) -> ManagedModel:
    """The ONT model as the demo registers it."""
    return managed.register_model(
        session=session, name=MODEL_NAME, task="tabular_classification", family="tabular_mlp", schema=schema_of_ont()
    )


def ingest_ticks(session: Session, ticks: Sequence[Any]) -> list[str]:
    """Every reading of ``ticks`` as an event served by version 1 (which answered the truth);
    returns the events' keys, in order."""
    keys: list[str] = []
    for t in ticks:
        batch = [f"{e}/{t.index}" for e in t.entities]
        keys += batch
        events = EventBatch(
            keys=batch,
            times=[t.time] * len(t),
            entities=list(t.entities),
            groups=list(t.groups),
            features=t.features,
            served_version=[1] * len(t),
            prediction=list(t.labels),
        )
        ingest_events(session=session, model=MODEL_NAME, events=events)
    return keys
