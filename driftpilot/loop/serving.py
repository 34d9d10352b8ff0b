"""What a managed model serves right now: its champion, and a canary with its share.

Drivers (the demo, replay) route each event the way a serving layer does: the canary's share
of entities, chosen by a salted hash of the entity id, goes to the candidate; the rest to the
champion. Only a run of the loop changes what is served, so :meth:`Serving.refresh` is called
after each run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory import releases, versions
from driftpilot.models.registry import Registry
from driftpilot.tools.cohort import canary_mask


class Serving:
    """The live versions of one managed model and their loaded artifacts."""

    def __init__(self, sessions: sessionmaker[Session], registry: Registry, model_id: int, model_name: str) -> None:
        self.sessions = sessions
        self.registry = registry
        self.model_id = model_id
        self.model_name = model_name
        self.champion: int | None = None
        self.canary: int | None = None
        self.share = 0.0
        self.models: dict[int, Any] = {}

    def refresh(self) -> None:
        """Read the champion and the active release from memory; load what is new."""
        with self.sessions() as session:
            champ = versions.champion(session=session, model_id=self.model_id)
            release = releases.active_release(session=session, model_id=self.model_id)
            live = [champ] if champ else []
            self.champion = champ.number if champ else None
            self.canary, self.share = None, 0.0
            if release is not None:
                candidate = versions.get_version_by_id(session=session, version_id=release.version_id)
                self.canary, self.share = candidate.number, release.share
                live.append(candidate)
            # Loaded artifacts are kept while their version stays live: a refresh that changes
            # nothing loads nothing.
            self.models = {v.number: self.models.get(v.number) or self.registry.load(v) for v in live}

    def route(self, entities: list[str]) -> np.ndarray:
        """The version number serving each entity."""
        if self.champion is None:
            raise LookupError(f"model '{self.model_name}' has no champion to serve")
        served = np.full(len(entities), self.champion)
        if self.canary is not None:
            served[canary_mask(entities, self.share, salt=self.model_name)] = self.canary
        return served

    def predict_proba(self, features: Mapping[str, Any], served: np.ndarray, classes: Sequence[str]) -> np.ndarray:
        """Class probabilities of each event from the version serving it, one column per class
        of ``classes`` (the managed model's). A version that has not learnt a class yet (version
        1 before a new intent appeared) gives it probability 0."""
        position = {c: i for i, c in enumerate(classes)}
        probabilities = np.zeros((len(served), len(classes)))
        for number in np.unique(served):
            rows = served == number
            model = self.models[int(number)]
            unknown = [c for c in model.classes if c not in position]
            if unknown:
                raise ValueError(
                    f"version {number} predicts classes {unknown} the model '{self.model_name}' does not have"
                )
            subset = {k: np.asarray(v)[rows] for k, v in features.items()}
            columns = [position[c] for c in model.classes]
            probabilities[np.ix_(rows, columns)] = model.predict_proba(subset)
        return probabilities
