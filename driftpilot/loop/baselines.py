"""The alternatives a replay runs beside the loop, on the same rows and the same revealed labels.

* ``static``: the warm-up model, never updated (what happens when nobody looks after a model);
* ``periodic``: the same model family retrained from scratch on a fixed schedule, on the last
  ``window`` labels revealed so far (the usual cron-job retraining);
* ``river-arf``: River's adaptive random forest (Gomes et al., 2017), learning from each label
  the moment it is revealed (the streaming learner of the drift literature);
* ``logistic``: scikit-learn's logistic regression on the same features (numbers standardised,
  categories one-hot, a text as its sentence vectors), retrained from scratch on the schedule and
  label window of ``periodic`` (what a careful engineer tries first).

Every baseline sees the stream through one interface: :meth:`Baseline.run` gets a chunk of
rows and, for each row of the chunk, the positions of the labels revealed right after that row
was predicted; it returns its predictions of the chunk. Labels revealed at a row are learnt only
after that row is predicted, as the loop gets them. ``seen`` records the positions of every
label a baseline was given, so a test can hold it against what the loop saw.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from driftpilot.models.base import TorchClassifier

if TYPE_CHECKING:
    import pandas as pd
    from sklearn.pipeline import Pipeline

#: Baselines by the name ``--baselines`` takes.
BASELINES = ("static", "periodic", "river-arf", "logistic")


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


class PeriodicLogistic(Baseline):
    """scikit-learn's ``LogisticRegression`` retrained from scratch every ``every`` rows on the
    last ``window`` revealed labels: the schedule and window of :class:`Periodic`, another model.

    Numbers are standardised and categories one-hot encoded (a category unseen in training
    encodes as all zeros); a text arrives as its sentence vectors, numbers like any other.
    :meth:`fit` gives it its first model, from the warm-up's labels. Retraining happens at each
    scheduled row whatever the chunks :meth:`run` is given, and only on labels revealed before
    that row. Labels of one class teach it to answer that class (``LogisticRegression`` needs
    two); a class absent from the labels it trained on is never predicted.
    """

    name = "logistic"

    def __init__(self, *, start: int, every: int, window: int) -> None:
        super().__init__()
        if every < 1 or window < 2:
            raise ValueError(f"periodic retraining needs every >= 1 and window >= 2, got {every} and {window}")
        self.every = every
        self.window = window
        self.next_retrain = start + every
        self.recent: deque[int] = deque(maxlen=window)
        self.retrains = 0
        self.model: Pipeline | _OneClass | None = None

    def learn(self, stream: Stream, positions: Sequence[int]) -> None:
        """Take the labels of ``positions`` (kept until the next retrain; ``stream`` holds them)."""
        self.recent.extend(positions)
        self.seen.extend(positions)

    def fit(self, stream: Stream, positions: Sequence[int]) -> PeriodicLogistic:
        """Train the first model on the labels of ``positions``, all of them given by :meth:`learn`."""
        unseen = sorted(set(positions) - set(self.seen))
        if unseen:
            raise ValueError(
                f"the logistic baseline was asked to fit on {len(unseen)} labels it was never given "
                f"(the first at position {unseen[0]}); pass them to learn() first"
            )
        self.model = _fit_logistic(stream, positions)
        return self

    def run(self, stream: Stream, start: int, end: int, revealed: Mapping[int, list[int]]) -> np.ndarray:
        if self.model is None:
            raise ValueError("the logistic baseline has no model yet: fit() it on the warm-up's labels first")
        parts = []
        at = start
        while at < end:
            if at >= self.next_retrain:
                self._retrain(stream)
                while self.next_retrain <= at:
                    self.next_retrain += self.every
            # A chunk is cut at the next retrain, so the schedule holds however the replay chunks.
            stop = min(end, self.next_retrain)
            parts.append(self.model.predict(_frame(stream, stream.columns(at, stop))))
            for position in range(at, stop):
                self.learn(stream, revealed.get(position, []))
            at = stop
        return np.asarray(np.concatenate(parts) if parts else [], dtype=object)

    def _retrain(self, stream: Stream) -> None:
        rows = list(self.recent)
        if not rows:
            return  # no label yet: keep the current model
        self.model = _fit_logistic(stream, rows)
        self.retrains += 1


class _OneClass:
    """What labels of a single class teach: that class, whatever the row."""

    def __init__(self, label: Any) -> None:
        self.label = label

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.full(len(frame), self.label, dtype=object)


def _fit_logistic(stream: Stream, positions: Sequence[int]) -> Pipeline | _OneClass:
    """A fresh pipeline (scaler and one-hot encoder, then logistic regression) fitted on ``positions``."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    y = stream.labels[np.asarray(positions, dtype=np.int64)]
    if len(set(y.tolist())) == 1:
        return _OneClass(y[0])
    unknown = [(name, kind) for name, kind in stream.kinds if kind not in ("number", "category")]
    if unknown:
        raise ValueError(
            f"the logistic baseline reads number and category features, got {unknown}; "
            "give a text as its sentence vectors (numbers)"
        )
    numbers = [name for name, kind in stream.kinds if kind == "number"]
    categories = [name for name, kind in stream.kinds if kind == "category"]
    encoders: list[tuple[str, Any, list[str]]] = []
    if numbers:
        # A missing reading (or a rolling feature not known yet) is imputed as the loop's model
        # imputes it: by the training median.
        imputer = SimpleImputer(strategy="median", keep_empty_features=True)
        encoders.append(("numbers", make_pipeline(imputer, StandardScaler()), numbers))
    if categories:
        encoders.append(("categories", OneHotEncoder(handle_unknown="ignore"), categories))
    pipeline = Pipeline([("features", ColumnTransformer(encoders)), ("classify", LogisticRegression(max_iter=1000))])
    return pipeline.fit(_frame(stream, stream.take(positions)), y)


def _frame(stream: Stream, columns: Mapping[str, np.ndarray]) -> pd.DataFrame:
    """The feature columns as scikit-learn's column transformer reads them, by name."""
    import pandas as pd

    return pd.DataFrame({name: columns[name] for name, _ in stream.kinds})


def _rows_as_dicts(stream: Stream, positions: Sequence[int] | range) -> list[dict[Hashable, Any]]:
    """River reads one dict a row: numbers as floats, categories as strings."""
    index = np.asarray(positions, dtype=np.int64)
    columns = []
    for name, kind in stream.kinds:
        values = stream.features[name][index]
        columns.append((name, values.astype(float).tolist() if kind == "number" else values.astype(str).tolist()))
    names = [name for name, _ in columns]
    # A missing number is left out of the row: river's learners take absent keys as missing.
    return [
        {name: value for name, value in zip(names, row, strict=True) if value == value}
        for row in zip(*(v for _, v in columns), strict=True)
    ]
