"""What a managed model serves: routing each entity to the version its cohort is on.

The champion serves everyone but the running release's canary cohort: the entities (or, with
``cohort: group``, the groups: edge nodes, OLT ports) whose salted hash falls below the step's
share. In shadow the candidate serves no one. Drivers (the demo, replay) and the API route the
same way, and an edge node asks :func:`assignment` for the same answer.

Only a serving change (a release step, a promotion, a rollback) changes the routing; each
appends to the model's serving history, so :meth:`Serving.refresh_if_changed` (one indexed
query) is enough to notice a rollback on the very next request.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import events, managed, releases, versions
from driftpilot.memory.ingest import EventBatch, ingest_events
from driftpilot.memory.rolling import load_history
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import ServingChange
from driftpilot.memory.times import to_utc
from driftpilot.models.edge_export import EDGE_ARTIFACT
from driftpilot.models.registry import Registry
from driftpilot.tools.cohort import canary_mask, in_canary


@dataclass(frozen=True)
class Route:
    """The routing in force: champion, candidate and the candidate's cohort."""

    champion: int | None
    candidate: int | None = None
    phase: str | None = None
    share: float = 0.0
    cohort: str = "entity"
    salt: str = ""
    change_id: int = 0

    def version_for(self, entity: str, group: str | None = None) -> int | None:
        """The version serving ``entity`` (in ``group``)."""
        if self.candidate is not None and self.share > 0:
            key = group if self.cohort == "group" else entity
            if key is not None and in_canary(str(key), self.share, salt=self.salt):
                return self.candidate
        return self.champion


def _route_of(change: ServingChange | None) -> Route:
    if change is None:
        return Route(champion=None)
    return Route(
        champion=change.champion,
        candidate=change.candidate,
        phase=change.phase,
        share=change.share,
        cohort=change.cohort,
        salt=change.salt,
        change_id=change.id,
    )


def current_route(session: Session, model_id: int) -> Route:
    """The routing in force now: the newest serving change (or, for a model registered before
    serving history existed, its champion serving everyone)."""
    change = releases.latest_change(session=session, model_id=model_id)
    if change is not None:
        return _route_of(change)
    champ = versions.champion(session=session, model_id=model_id)
    return Route(champion=champ.number if champ else None)


class Serving:
    """The live versions of one managed model and their loaded artifacts; safe to share between
    threads (a refresh swaps the routing and the loaded models in one assignment)."""

    def __init__(self, sessions: sessionmaker[Session], registry: Registry, model_id: int, model_name: str) -> None:
        self.sessions = sessions
        self.registry = registry
        self.model_id = model_id
        self.model_name = model_name
        self._state: tuple[Route, dict[int, Any]] = (Route(champion=None), {})
        # The model's schema (features, classes): fixed once registered, read at the first refresh.
        self._schema: ModelSchema | None = None
        self._lock = threading.Lock()

    @property
    def route_in_force(self) -> Route:
        return self._state[0]

    @property
    def champion(self) -> int | None:
        return self._state[0].champion

    @property
    def canary(self) -> int | None:
        route = self._state[0]
        return route.candidate if route.share > 0 else None

    @property
    def models(self) -> dict[int, Any]:
        return self._state[1]

    @models.setter
    def models(self, loaded: dict[int, Any]) -> None:
        self._state = (self._state[0], dict(loaded))

    def refresh(self) -> None:
        """Read the routing in force from memory; load the versions that are new."""
        with self._lock, self.sessions() as session:
            route = current_route(session, self.model_id)
            if self._schema is None:
                self._schema = managed.model_schema(managed.get_model_by_id(session=session, model_id=self.model_id))
            live = {n for n in (route.champion, route.candidate) if n is not None}
            loaded = self._state[1]
            # Loaded artifacts are kept while their version stays live: a refresh that changes
            # nothing loads nothing.
            fresh = {
                n: loaded.get(n)
                or self.registry.load(versions.get_version(session=session, model_id=self.model_id, number=n))
                for n in live
            }
            self._state = (route, fresh)

    def refresh_if_changed(self) -> bool:
        """Refresh when the serving history has moved on since the last refresh (one indexed
        query); True when it did."""
        with self.sessions() as session:
            latest = releases.latest_change_id(session=session, model_id=self.model_id)
        if latest != self._state[0].change_id or not self._state[1]:
            self.refresh()
            return True
        return False

    def route(self, entities: Sequence[str], groups: Sequence[str | None] | None = None) -> np.ndarray:
        """The version number serving each entity."""
        route = self._state[0]
        if route.champion is None:
            raise LookupError(f"model '{self.model_name}' has no champion to serve")
        served = np.full(len(entities), route.champion)
        if route.candidate is not None and route.share > 0:
            if route.cohort == "group":
                if groups is None:
                    raise ValueError(f"model '{self.model_name}' routes its canary by group: give each entity's group")
                keys = ["" if g is None else str(g) for g in groups]
            else:
                keys = [str(e) for e in entities]
            served[canary_mask(keys, route.share, salt=route.salt)] = route.candidate
        return served

    def predict_proba(self, features: Mapping[str, Any], served: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Class probabilities of each event from the version serving it, one column per class
        of ``classes`` (the managed model's). A version that has not learnt a class yet (version
        1 before a new intent appeared) gives it probability 0."""
        position = {c: i for i, c in enumerate(classes)}
        probabilities = np.zeros((len(served), len(classes)))
        loaded = self._state[1]
        for number in np.unique(served):
            rows = served == number
            model = loaded[int(number)]
            unknown = [c for c in model.classes if c not in position]
            if unknown:
                raise ValueError(
                    f"version {number} predicts classes {unknown} the model '{self.model_name}' does not have"
                )
            subset = {k: np.asarray(v)[rows] for k, v in features.items()}
            columns = [position[c] for c in model.classes]
            probabilities[np.ix_(rows, columns)] = model.predict_proba(subset)
        return probabilities

    def predict(
        self,
        *,
        keys: Sequence[str],
        times: Sequence[datetime],
        entities: Sequence[str],
        groups: Sequence[str | None],
        features: Mapping[str, Sequence[Any]],
    ) -> list[dict[str, Any]]:
        """Serve a batch: route each event to its cohort's version, predict, and record the events
        with the version that served them before answering (durable, idempotent by key: a key
        seen before gets the answer stored for it, not a new one)."""
        if not len(keys) == len(times) == len(entities) == len(groups):
            raise ValueError(
                f"keys, times, entities and groups differ in length: {len(keys)}, {len(times)}, "
                f"{len(entities)}, {len(groups)}"
            )
        if not self.refresh_if_changed() and self._schema is None:
            self.refresh()
        schema = self._schema
        assert schema is not None  # every refresh reads it
        classes = schema.classes
        missing = sorted({f.name for f in schema.features if f.kind != "number"} - set(features))
        if missing:
            # Refused before any version is asked: no model should guess a category.
            raise ValueError(f"events of '{self.model_name}' lack the features {missing}")
        # A number that did not come is served: the version imputes it as it did at training.
        absent = [f.name for f in schema.features if f.kind == "number" and f.name not in features]
        served_features: dict[str, Any] = {**features, **{name: [None] * len(keys) for name in absent}}
        history = None
        if schema.rolling is not None:
            # Derived from the entities' stored readings, and stored with the events (ingest).
            with self.sessions() as session:
                history = load_history(session, self.model_id, schema, [str(e) for e in entities])
            numbers = {name: served_features[name] for name in schema.rolling_numbers}
            served_features.update(history.derive([str(e) for e in entities], times, numbers))
        served = self.route(entities, groups)
        probabilities = self.predict_proba(served_features, served, classes)
        prediction = [classes[i] for i in probabilities.argmax(axis=1)]
        batch = EventBatch(
            keys=list(keys),
            times=list(times),
            entities=[str(e) for e in entities],
            groups=list(groups),
            features={k: list(v) for k, v in served_features.items()},
            served_version=[int(v) for v in served],
            prediction=prediction,
            probabilities=probabilities,
            answered_by=["server"] * len(keys),
        )
        with self.sessions() as session:
            result = ingest_events(session=session, model=self.model_name, events=batch, history=history)
            stored = (
                events.stored_answers(session=session, model_id=self.model_id, keys=list(keys))
                if result.duplicates
                else {}
            )
        answers = []
        for i, key in enumerate(keys):
            fresh = (int(served[i]), prediction[i], dict(zip(classes, probabilities[i].tolist(), strict=True)))
            version, label, probs = stored.get(key, fresh)
            answers.append({"key": key, "version": version, "prediction": label, "probabilities": probs})
        return answers


@dataclass(frozen=True)
class ServedAnswer:
    """Which version served an entity at a time, in what role, since when, and why."""

    model: str
    entity: str
    at: str
    version: int | None
    role: str
    since: str | None
    reason: str
    decision_id: int | None
    release_id: int | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def who_served(session: Session, *, model: str, entity: str, at: datetime, group: str | None = None) -> ServedAnswer:
    """What was serving ``entity`` of ``model`` at ``at``, and why: from the serving history
    (one indexed lookup) and the cohort hash. With group cohorts the entity's group is that of
    its last event at or before ``at`` unless ``group`` is given.

    ``at`` without a zone is UTC; the answer's times are ISO 8601 in UTC, with their offset."""
    # The one place a client's time (the CLI's --at, the API's query) is read as UTC: the answer
    # repeats it, and should name the same zone as the serving history's times.
    at = to_utc(at, what="at")
    row = managed.get_model(session=session, name=model)
    change = releases.serving_at(session=session, model_id=row.id, at=at)
    if change is None:
        return ServedAnswer(model, entity, at.isoformat(), None, "none", None, "nothing was served yet", None, None)
    route = _route_of(change)
    if route.cohort == "group" and group is None and route.share > 0:
        group = events.last_group(session=session, model_id=row.id, entity=entity, at=at)
    version = route.version_for(entity, group)
    if version is None:
        role = "none"
    elif version == route.candidate:
        role = "canary"
    else:
        role = "champion" + (" (candidate in shadow beside it)" if route.phase == "shadow" else "")
    decision = releases.decision_of(session=session, change=change)
    return ServedAnswer(
        model=model,
        entity=entity,
        at=at.isoformat(),
        version=version,
        role=role,
        since=change.at.isoformat(),
        reason=change.reason,
        decision_id=decision.id if decision else None,
        release_id=change.release_id,
    )


def assignment(session: Session, *, model: str, entity: str, group: str | None = None) -> dict[str, Any]:
    """The version an edge node (``entity`` in ``group``) must run now, with its artifacts'
    checksums: what the edge runtime pulls, so a rollback reaches edge cohorts too."""
    row = managed.get_model(session=session, name=model)
    route = current_route(session, row.id)
    number = route.version_for(entity, group)
    if number is None:
        raise LookupError(f"model '{model}' has no version to serve")
    version = versions.get_version(session=session, model_id=row.id, number=number)
    student = versions.student_of(session=session, version=version)
    return {
        "model": model,
        "entity": entity,
        "version": number,
        "stage": version.stage,
        "artifacts": {name: meta.get("sha256") for name, meta in (version.artifacts or {}).items()},
        # What a node runs: the version's student (a version of its own), or why it has none (the
        # node then keeps the last one it ran).
        "edge": (
            {"version": student.number, "artifact": EDGE_ARTIFACT, "sha256": student.artifacts[EDGE_ARTIFACT]["sha256"]}
            if student is not None and EDGE_ARTIFACT in (student.artifacts or {})
            else {
                "artifact": None,
                "reason": ((version.metrics or {}).get("student") or {}).get("reason")
                or f"version {number} has no student",
            }
        ),
        "serving_change": route.change_id,
    }
