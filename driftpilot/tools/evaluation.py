"""Automated evaluation of a candidate against the champion, before any release.

Both models are scored on the same holdouts: the recent one (what they will serve next), the
old-concept one (what the candidate may have forgotten), and the golden set operators pin (cases
that must never get worse). Beside balanced accuracy: per-class recall, accuracy per slice (each
value of the slice columns the caller names, taken from the model's schema), calibration
(top-label ECE), latency and size. The result is stored with the version as a comparison table,
and its :meth:`Evaluation.gate_facts` are what the policy's ``start_canary`` gate judges.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypedDict, cast

import numpy as np
import pandas as pd

from driftpilot.tools.canary import Predictor
from driftpilot.tools.metrics import BY_NAME, accuracy, balanced_accuracy, expected_calibration_error, per_class_recall

__all__ = [
    "Evaluation",
    "EvaluationRecord",
    "GateFacts",
    "Scorable",
    "Scores",
    "ScoresRecord",
    "evaluate_candidate",
    "slice_masks",
]


class Scorable(Predictor, Protocol):
    """What evaluation needs of a model beyond answering: its size (every family in
    :mod:`driftpilot.models` has it)."""

    def size_bytes(self) -> int: ...


@dataclass(frozen=True)
class Scores:
    """One model's scores on the holdouts.

    ``recent``, ``old`` and ``golden`` are balanced accuracies (``None`` for an empty holdout),
    ``accuracy``, ``old_accuracy`` and ``golden_accuracy`` the plain accuracies on the same;
    ``recall`` is per class of the recent holdout and ``slices`` the accuracy of each slice of
    it; ``ece`` its top-label calibration error; ``ms_per_1000`` the median time of
    ``predict_proba`` per 1,000 rows of it, in milliseconds.
    """

    recent: float
    old: float | None
    golden: float | None
    accuracy: float
    old_accuracy: float | None
    golden_accuracy: float | None
    recall: dict[str, float]
    slices: dict[str, float]
    ece: float
    ms_per_1000: float
    size_bytes: int


class ScoresRecord(TypedDict):
    """:class:`Scores` as plain data."""

    recent: float
    old: float | None
    golden: float | None
    accuracy: float
    old_accuracy: float | None
    golden_accuracy: float | None
    recall: dict[str, float]
    slices: dict[str, float]
    ece: float
    ms_per_1000: float
    size_bytes: int


class EvaluationRecord(TypedDict):
    """:class:`Evaluation` as plain data, stored with the version (see :meth:`Evaluation.as_dict`)."""

    candidate: ScoresRecord
    champion: ScoresRecord
    n_recent: int
    n_old: int
    n_golden: int
    min_slice_samples: int
    candidate_recent: float
    champion_recent: float
    candidate_old: float | None
    champion_old: float | None
    gain: float
    worst_slice: str | None
    worst_slice_delta: float | None
    metric: str
    candidate_metric: float
    champion_metric: float


class GateFacts(TypedDict):
    """What the policy's ``start_canary`` gate reads of an evaluation (see :meth:`Evaluation.gate_facts`)."""

    candidate_score: float
    champion_score: float
    candidate_old_score: float | None
    champion_old_score: float | None
    candidate_golden_score: float | None
    champion_golden_score: float | None
    worst_slice: str | None
    worst_slice_delta: float | None


@dataclass(frozen=True)
class Evaluation:
    """A candidate's scores beside the champion's, on the same rows."""

    candidate: Scores
    champion: Scores
    n_recent: int
    n_old: int
    n_golden: int
    min_slice_samples: int
    #: What the models are trained for and chosen by (the policy's ``evaluation.metric``).
    metric: str = "balanced_accuracy"

    @property
    def candidate_recent(self) -> float:
        return self.candidate.recent

    @property
    def candidate_metric(self) -> float:
        """The candidate's score on the recent holdout in :attr:`metric`: what a choice between
        candidates, and a challenger's case against the champion, rest on."""
        return _in_metric(self.candidate, self.metric, "recent")

    @property
    def champion_metric(self) -> float:
        return _in_metric(self.champion, self.metric, "recent")

    @property
    def champion_recent(self) -> float:
        return self.champion.recent

    @property
    def candidate_old(self) -> float | None:
        return self.candidate.old

    @property
    def champion_old(self) -> float | None:
        return self.champion.old

    @property
    def worst_slice(self) -> tuple[str, float] | None:
        """The slice where the candidate falls furthest behind the champion, and by how much."""
        deltas = {k: self.candidate.slices[k] - self.champion.slices[k] for k in self.candidate.slices}
        if not deltas:
            return None
        name = min(deltas, key=lambda k: (deltas[k], k))
        return name, round(deltas[name], 12)

    def gate_facts(self) -> GateFacts:
        """What the policy's ``start_canary`` rules judge of this evaluation.

        ``candidate_score``/``champion_score`` (recent), ``candidate_old_score``/
        ``champion_old_score``, ``candidate_golden_score``/``champion_golden_score`` (``None``
        for an empty holdout), each in :attr:`metric`, ``worst_slice`` and ``worst_slice_delta`` (``None`` when no slice
        is large enough). The share of cohorts asked for and whether the concept changed (the
        diagnosis's to say) are the caller's to add.
        """
        worst = self.worst_slice
        return GateFacts(
            candidate_score=_in_metric(self.candidate, self.metric, "recent"),
            champion_score=_in_metric(self.champion, self.metric, "recent"),
            candidate_old_score=_in_metric(self.candidate, self.metric, "old"),
            champion_old_score=_in_metric(self.champion, self.metric, "old"),
            candidate_golden_score=_in_metric(self.candidate, self.metric, "golden"),
            champion_golden_score=_in_metric(self.champion, self.metric, "golden"),
            worst_slice=worst[0] if worst else None,
            worst_slice_delta=worst[1] if worst else None,
        )

    def table(self) -> list[dict[str, Any]]:
        """The comparison a person reads: one row per measure, candidate, champion and delta."""
        rows = []

        def add(measure: str, new: float | None, old: float | None, digits: int = 4) -> None:
            if new is None and old is None:
                return
            delta = None if new is None or old is None else round(new - old, digits)
            rows.append(
                {
                    "measure": measure,
                    "candidate": None if new is None else round(new, digits),
                    "champion": None if old is None else round(old, digits),
                    "delta": delta,
                }
            )

        add("balanced accuracy (recent)", self.candidate.recent, self.champion.recent)
        add("accuracy (recent)", self.candidate.accuracy, self.champion.accuracy)
        add("balanced accuracy (old concepts)", self.candidate.old, self.champion.old)
        add("balanced accuracy (golden set)", self.candidate.golden, self.champion.golden)
        add("accuracy (old concepts)", self.candidate.old_accuracy, self.champion.old_accuracy)
        add("accuracy (golden set)", self.candidate.golden_accuracy, self.champion.golden_accuracy)
        worst = self.worst_slice
        if worst:
            add(f"worst slice: {worst[0]}", self.candidate.slices[worst[0]], self.champion.slices[worst[0]])
        add("calibration error (ECE)", self.candidate.ece, self.champion.ece)
        add("latency (ms per 1,000 rows)", self.candidate.ms_per_1000, self.champion.ms_per_1000, 2)
        add("size (bytes)", float(self.candidate.size_bytes), float(self.champion.size_bytes), 0)
        for name in sorted(self.candidate.recall):
            add(f"recall: {name}", self.candidate.recall[name], self.champion.recall.get(name, 0.0))
        return rows

    def as_dict(self) -> EvaluationRecord:
        """Everything, JSON-serialisable, to store with the version."""
        worst = self.worst_slice
        return EvaluationRecord(
            candidate=cast(ScoresRecord, asdict(self.candidate)),
            champion=cast(ScoresRecord, asdict(self.champion)),
            n_recent=self.n_recent,
            n_old=self.n_old,
            n_golden=self.n_golden,
            min_slice_samples=self.min_slice_samples,
            candidate_recent=self.candidate.recent,
            champion_recent=self.champion.recent,
            candidate_old=self.candidate.old,
            champion_old=self.champion.old,
            gain=self.candidate.recent - self.champion.recent,
            worst_slice=worst[0] if worst else None,
            worst_slice_delta=worst[1] if worst else None,
            metric=self.metric,
            candidate_metric=self.candidate_metric,
            champion_metric=self.champion_metric,
        )


def evaluate_candidate(
    candidate: Scorable,
    champion: Scorable,
    *,
    recent: pd.DataFrame,
    old: pd.DataFrame,
    golden: pd.DataFrame,
    slice_columns: Sequence[str],
    min_slice_samples: int = 100,
    metric: str = "balanced_accuracy",
) -> Evaluation:
    """Score ``candidate`` and ``champion`` on the same holdouts, each with a ``label`` column.

    ``recent`` is what the models will serve next; ``old`` (older concepts, for forgetting) and
    ``golden`` (the operators' pinned cases) may be empty, their scores are then ``None``. Slices
    are the values of those ``slice_columns`` (the model schema's
    :attr:`~driftpilot.memory.schemas.ModelSchema.slice_columns`) present in ``recent`` that
    hold at least ``min_slice_samples`` rows, keyed ``"column=value"``; smaller slices are too
    noisy to judge.
    The two models may know different classes (a candidate that grew new ones): each is scored on
    the labels as they are, a class it lacks counting as missed (recall 0). ``metric``
    (``"balanced_accuracy"`` or ``"accuracy"``) is the one :attr:`Evaluation.candidate_metric`
    reads; every score is computed either way.

    Raises
    ------
    ValueError
        If ``recent`` is empty, or a non-empty holdout has no ``label`` column, or ``metric``
        is neither.
    """
    if metric not in BY_NAME:
        raise ValueError(f"metric must be one of {tuple(BY_NAME)}, got {metric!r}")
    if recent.empty:
        raise ValueError("the recent holdout is empty: nothing to judge the candidate on")
    for name, frame in (("recent", recent), ("old", old), ("golden", golden)):
        if not frame.empty and "label" not in frame:
            raise ValueError(f"the {name} holdout has no 'label' column: evaluation needs the true labels")
    slices = slice_masks(recent, slice_columns, min_slice_samples)
    return Evaluation(
        candidate=_score(candidate, recent, old, golden, slices),
        champion=_score(champion, recent, old, golden, slices),
        n_recent=len(recent),
        n_old=len(old),
        n_golden=len(golden),
        min_slice_samples=min_slice_samples,
        metric=metric,
    )


def slice_masks(frame: pd.DataFrame, columns: Sequence[str], minimum: int = 1) -> dict[str, np.ndarray]:
    """A boolean mask per ``"column=value"`` of ``columns`` holding at least ``minimum`` rows."""
    found = {}
    for column in columns:
        if column not in frame:
            continue
        known = frame[column].notna().to_numpy()
        values = frame[column].astype(str).to_numpy()
        for value, count in zip(*np.unique(values[known], return_counts=True), strict=True):
            if count >= minimum:
                found[f"{column}={value}"] = known & (values == value)
    return found


def _score(
    model: Scorable, recent: pd.DataFrame, old: pd.DataFrame, golden: pd.DataFrame, slices: dict[str, np.ndarray]
) -> Scores:
    truth = recent["label"].astype(str).to_numpy()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        proba = model.predict_proba(recent)
        timings.append(time.perf_counter() - started)
    predicted = _top_label(model, proba, len(recent))
    old_scores, golden_scores = _both(model, old), _both(model, golden)
    return Scores(
        recent=balanced_accuracy(truth, predicted),
        old=old_scores[0],
        golden=golden_scores[0],
        accuracy=accuracy(truth, predicted),
        old_accuracy=old_scores[1],
        golden_accuracy=golden_scores[1],
        recall=per_class_recall(truth, predicted),
        # Accuracy, not balanced accuracy, per slice: a slice holds a handful of a rare class at
        # most, and one of them missed would swing its balanced accuracy by tens of points.
        slices={name: accuracy(truth[rows], predicted[rows]) for name, rows in slices.items()},
        ece=expected_calibration_error(truth, proba, model.classes),
        ms_per_1000=round(1000 * 1000 * float(np.median(timings)) / len(recent), 4),
        size_bytes=int(model.size_bytes()),
    )


def _in_metric(scores: Scores, metric: str, holdout: str) -> Any:
    """The score on ``holdout`` (``recent``, ``old`` or ``golden``) in ``metric``."""
    if metric == "accuracy":
        return scores.accuracy if holdout == "recent" else getattr(scores, f"{holdout}_accuracy")
    return getattr(scores, holdout)


def _both(model: Scorable, frame: pd.DataFrame) -> tuple[float | None, float | None]:
    """Balanced accuracy and accuracy on ``frame`` (``None`` for an empty one)."""
    if frame.empty:
        return None, None
    predicted = _top_label(model, model.predict_proba(frame), len(frame))
    truth = frame["label"].astype(str).to_numpy()
    return balanced_accuracy(truth, predicted), accuracy(truth, predicted)


def _top_label(model: Scorable, proba: np.ndarray, rows: int) -> np.ndarray:
    proba = np.asarray(proba)
    if proba.shape != (rows, len(model.classes)):
        raise ValueError(
            f"predict_proba returned shape {proba.shape} for {rows} rows, expected ({rows}, {len(model.classes)}): "
            "one column per class of the model's .classes"
        )
    return np.asarray(model.classes, dtype=object)[proba.argmax(axis=1)].astype(str)
