"""Classification metrics the loop judges models by.

Hand-written with numpy on purpose: scikit-learn is importable here only because another
dependency (nannyml) pulls it in, and these few lines are not worth depending on a
transitive package. The definitions follow scikit-learn's
(``balanced_accuracy_score``, ``f1_score(average="macro")``, ``recall_score``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["BY_NAME", "accuracy", "balanced_accuracy", "expected_calibration_error", "macro_f1", "per_class_recall"]


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.ndim != 1 or pred.ndim != 1:
        raise ValueError(f"y_true and y_pred must be one-dimensional, got shapes {true.shape} and {pred.shape}")
    if true.size == 0:
        raise ValueError("y_true is empty: no metric without labelled samples")
    if true.size != pred.size:
        raise ValueError(f"y_true has {true.size} labels but y_pred has {pred.size} predictions")
    return true, pred


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Share of predictions equal to the true label.

    Examples
    --------
    >>> accuracy(["ok", "ok", "offline", "ok"], ["ok", "offline", "offline", "ok"])
    0.75
    """
    true, pred = _pair(y_true, y_pred)
    return float(np.mean(true == pred))


def per_class_recall(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """Recall of each class present in ``y_true``, keyed by the class as text.

    Examples
    --------
    >>> y_true = ["ok", "ok", "offline", "ok"]
    >>> per_class_recall(y_true, ["ok", "offline", "offline", "ok"])
    {'offline': 1.0, 'ok': 0.6666666666666666}
    """
    true, pred = _pair(y_true, y_pred)
    recalls: dict[str, float] = {}
    for label in np.unique(true):
        of_class = true == label
        recalls[str(label)] = float(np.mean(pred[of_class] == label))
    return recalls


def balanced_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean recall over the classes present in ``y_true``.

    Unlike accuracy it does not reward predicting the majority class: doing so for
    every sample scores 1/k with k classes, however rare the others are (Brodersen
    et al., "The balanced accuracy and its posterior distribution", ICPR 2010).

    Examples
    --------
    >>> y_true = ["ok"] * 9 + ["offline"]
    >>> balanced_accuracy(y_true, ["ok"] * 10)
    0.5
    >>> accuracy(y_true, ["ok"] * 10)
    0.9
    """
    return float(np.mean(list(per_class_recall(y_true, y_pred).values())))


#: The metrics models can be trained for and chosen by (the policy's ``evaluation.metric``), by name.
BY_NAME = {"accuracy": accuracy, "balanced_accuracy": balanced_accuracy}


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, labels: Sequence[object] | None = None) -> float:
    """Unweighted mean of the per-class F1 scores.

    ``labels`` defaults to every class seen in ``y_true`` or ``y_pred``. A class with
    no true and no predicted sample scores 0 (scikit-learn's ``zero_division=0``).

    Examples
    --------
    >>> y_true, y_pred = ["a", "a", "b", "c"], ["a", "b", "b", "b"]
    >>> round(macro_f1(y_true, y_pred), 4)
    0.3889
    >>> round(macro_f1(y_true, y_pred, labels=["a", "b"]), 4)
    0.5833
    """
    true, pred = _pair(y_true, y_pred)
    classes = np.unique(np.concatenate([true, pred])) if labels is None else labels
    if len(classes) == 0:
        raise ValueError("labels is empty: macro F1 needs at least one class")
    scores = []
    for label in classes:
        true_positive = int(np.sum((true == label) & (pred == label)))
        false_positive = int(np.sum((true != label) & (pred == label)))
        false_negative = int(np.sum((true == label) & (pred != label)))
        denominator = 2 * true_positive + false_positive + false_negative
        scores.append(2 * true_positive / denominator if denominator else 0.0)
    return float(np.mean(scores))


def expected_calibration_error(
    y_true: ArrayLike, probabilities: ArrayLike, classes: Sequence[object], n_bins: int = 15
) -> float:
    """Top-label expected calibration error (Guo et al., ICML 2017): the gap between confidence
    and accuracy, averaged over ``n_bins`` equal-width bins of confidence in [0, 1], each weighted
    by its share of samples.

    ``probabilities`` has one column per class of ``classes``; a true label outside ``classes``
    counts as a miss.

    Examples
    --------
    >>> expected_calibration_error(["a", "b"], [[0.9, 0.1], [0.2, 0.8]], ["a", "b"])
    0.15
    >>> expected_calibration_error(["a", "a"], [[0.6, 0.4], [0.6, 0.4]], ["a", "b"])
    0.4
    """
    true = np.asarray(y_true)
    proba = np.asarray(probabilities, dtype=np.float64)
    if proba.ndim != 2 or proba.shape != (true.size, len(classes)):
        raise ValueError(f"probabilities must have shape ({true.size}, {len(classes)}), got {proba.shape}")
    if true.size == 0:
        raise ValueError("y_true is empty: no calibration without labelled samples")
    if n_bins < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence = proba.max(axis=1)
    hit = np.asarray(classes, dtype=object)[proba.argmax(axis=1)] == true.astype(object)
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    gap = 0.0
    for b in np.unique(bins):
        members = bins == b
        gap += members.mean() * abs(hit[members].mean() - confidence[members].mean())
    return round(float(gap), 12)
