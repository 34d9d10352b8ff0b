"""The alternatives a replay runs beside the loop, on the same rows and the same revealed labels.

* ``static``: the warm-up model, never updated (what happens when nobody looks after a model);
* ``periodic``: the same model family retrained from scratch on a fixed schedule, on the last
  ``window`` labels revealed so far (the usual cron-job retraining);
* ``river-arf``: River's adaptive random forest (Gomes et al., 2017), learning from each label
  the moment it is revealed (the streaming learner of the drift literature).

Every baseline sees the stream through one interface: :meth:`Baseline.run` gets a chunk of
rows and, for each row of the chunk, the positions of the labels revealed right after that row
was predicted; it returns its predictions of the chunk. Labels revealed at a row are learnt only
after that row is predicted, as the loop gets them. ``seen`` records the positions of every
label a baseline was given, so a test can hold it against what the loop saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from driftpilot.models.base import TorchClassifier

#: Baselines by the name ``--baselines`` takes.
BASELINES = ("static", "periodic", "river-arf")


class Stream:
    """The rows a replay feeds, by position: features (columns), labels, feature kinds."""

    def __init__(self, features: Mapping[str, np.ndarray], labels: np.ndarray, kinds: Sequence[tuple[str, str]]):
        self.features = features
        self.labels = labels
        self.kinds = list(kinds)

    def columns(self, start: int, end: int) -> dict[str, np.ndarray]:
        return {name: values[start:end] for name, values in self.features.items()}

    def take(self, positions: Sequence[int] | np.ndarray) -> dict[str, np.ndarray]:
        index = np.asarray(positions, dtype=np.int64)
        return {name: values[index] for name, values in self.features.items()}


class Baseline:
    """A system predicting the stream beside the loop."""

    name = "baseline"

    def __init__(self) -> None:
        self.seen: list[int] = []

    def run(self, stream: Stream, start: int, end: int, revealed: Mapping[int, list[int]]) -> np.ndarray:
        raise NotImplementedError


class Static(Baseline):
    """The warm-up model, never updated."""

    name = "static"

    def __init__(self, model: TorchClassifier) -> None:
        super().__init__()
        self.model = model

    def run(self, stream: Stream, start: int, end: int, revealed: Mapping[int, list[int]]) -> np.ndarray:
        return self.model.predict(stream.columns(start, end))


class Periodic(Baseline):
    """Retrained from scratch every ``every`` rows on the last ``window`` revealed labels.

    Retraining happens at the start of the first chunk at or past each scheduled row; the
    replay cuts its chunks at the schedule, so it happens exactly on it.
    """

    name = "periodic"

    def __init__(self, model: TorchClassifier, *, start: int, every: int, window: int) -> None:
        super().__init__()
        if every < 1 or window < 2:
            raise ValueError(f"periodic retraining needs every >= 1 and window >= 2, got {every} and {window}")
        self.model = model
        self.every = every
        self.window = window
        self.next_retrain = start + every
        self.recent: deque[int] = deque(maxlen=window)
        self.retrains = 0

    def learn(self, stream: Stream, positions: Sequence[int]) -> None:
        """Take the labels of ``positions`` (kept until the next retrain; ``stream`` holds them)."""
        self.recent.extend(positions)
        self.seen.extend(positions)

    def run(self, stream: Stream, start: int, end: int, revealed: Mapping[int, list[int]]) -> np.ndarray:
        if start >= self.next_retrain:
            self._retrain(stream)
            while self.next_retrain <= start:
                self.next_retrain += self.every
        prediction = self.model.predict(stream.columns(start, end))
        for position in range(start, end):
            self.learn(stream, revealed.get(position, []))
        return prediction

    def _retrain(self, stream: Stream) -> None:
        rows = list(self.recent)
        y = stream.labels[rows]
        if len(set(y)) < 2:
            return  # one class only: nothing a classifier can learn; keep the current model
        fresh = type(self.model).from_config(self.model.config())
        self.model = fresh.fit(stream.take(rows), y, new_classes="grow")
        self.retrains += 1


class RiverARF(Baseline):
    """River's ``ARFClassifier``, learning one label at a time as labels are revealed."""

    name = "river-arf"

    def __init__(self, fallback: str, *, seed: int = 0) -> None:
        from river.forest import ARFClassifier

        super().__init__()
        self.model = ARFClassifier(seed=seed)
        # The answer before the forest has learnt anything (the warm-up's commonest class).
        self.fallback = fallback

    def learn(self, stream: Stream, positions: Sequence[int]) -> None:
        """Learn the labels of ``positions``, in order."""
        if not positions:
            return
        xs = _rows_as_dicts(stream, positions)
        for position, x in zip(positions, xs, strict=True):
            self.model.learn_one(x, str(stream.labels[position]))
        self.seen.extend(positions)

    def run(self, stream: Stream, start: int, end: int, revealed: Mapping[int, list[int]]) -> np.ndarray:
        xs = _rows_as_dicts(stream, range(start, end))
        out = []
        for position, x in zip(range(start, end), xs, strict=True):
            guess = self.model.predict_one(x)
            out.append(self.fallback if guess is None else guess)
            self.learn(stream, revealed.get(position, []))
        return np.asarray(out, dtype=object)


def _rows_as_dicts(stream: Stream, positions: Sequence[int] | range) -> list[dict[Hashable, Any]]:
    """River reads one dict a row: numbers as floats, categories as strings."""
    index = np.asarray(positions, dtype=np.int64)
    columns = []
    for name, kind in stream.kinds:
        values = stream.features[name][index]
        columns.append((name, values.astype(float).tolist() if kind == "number" else values.astype(str).tolist()))
    names = [name for name, _ in columns]
    return [dict(zip(names, row, strict=True)) for row in zip(*(v for _, v in columns), strict=True)]
