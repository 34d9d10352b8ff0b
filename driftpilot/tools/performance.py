"""Performance of a classifier estimated without labels, by confidence-based performance estimation.

When labels are missing or arrive late, the model's own probabilities still say how often it
should be right: if they are calibrated, a prediction made with probability 0.8 is right 80 % of
the time, so the mean top probability of a window estimates its accuracy (and the expected
confusion matrix estimates precision, recall, F1, ...). This is CBPE, as NannyML implements it
(NannyML, "Confidence-based Performance Estimation", 2022): it calibrates the probabilities on a
labelled reference window (isotonic regression, one class against the rest) and estimates the
metric on the current window. The estimate holds under covariate shift (the inputs move,
P(label | inputs) stays) and fails under concept drift, which no label-free method can see.

NannyML is slow to import and pulls many dependencies, so it is imported inside
:func:`estimate_performance` only.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict

__all__ = ["METRICS", "ROW_SUM_TOLERANCE", "PerformanceEstimate", "estimate_performance"]

#: Metrics CBPE estimates. For two classes ``f1``, ``precision``, ``recall`` and
#: ``specificity`` are those of the positive class (``classes[1]``); for more they are
#: macro averages (so multiclass ``recall`` is the balanced accuracy). ``roc_auc`` is
#: one-vs-rest, macro-averaged, for more than two classes.
METRICS: tuple[str, ...] = ("accuracy", "f1", "precision", "recall", "specificity", "roc_auc")

#: How far a row of probabilities may sum from 1 (rounding in transport, float32 softmax).
ROW_SUM_TOLERANCE = 1e-3

_TRUE, _PRED = "y_true", "y_pred"


class PerformanceEstimate(BaseModel):
    """A metric estimated on a window without labels, beside its value on the reference.

    ``estimated``, ``lower`` and ``upper`` are ``None`` when a window holds fewer rows than
    asked for (``enough_data`` false). ``lower`` and ``upper`` are NannyML's confidence band:
    the estimate plus or minus three standard errors of the metric on a window of that size,
    clipped to [0, 1]. ``reference_estimated`` is CBPE's estimate on the reference window itself:
    a drop is judged from it (not from the realised ``reference_value``), so that the bias of
    CBPE's calibration on this model cancels out.
    """

    model_config = ConfigDict(frozen=True)

    metric: str
    estimated: float | None
    lower: float | None
    upper: float | None
    reference_value: float
    reference_estimated: float | None = None
    n_reference: int
    n_current: int
    enough_data: bool
    method: str = "cbpe"


def estimate_performance(
    reference_probabilities: pd.DataFrame | ArrayLike,
    reference_labels: ArrayLike,
    current_probabilities: pd.DataFrame | ArrayLike,
    *,
    classes: Sequence[str],
    metric: str = "accuracy",
    min_rows: int = 100,
) -> PerformanceEstimate:
    """Estimate ``metric`` on the current window from the model's probabilities alone.

    CBPE is fitted on the labelled reference window (where it learns how to calibrate the
    probabilities and the metric's sampling error) and estimates the current window as one
    chunk. The model's prediction is taken to be the most probable class.

    Parameters
    ----------
    reference_probabilities, current_probabilities
        One row per prediction and one column per class, in the order of ``classes``. A
        DataFrame whose columns are exactly the class names is reordered by name.
    reference_labels
        The true class of each reference row.
    classes
        The class names. With two classes, ``classes[1]`` is the positive one.
    metric
        One of :data:`METRICS`.
    min_rows
        Fewest rows each window needs for an estimate; with fewer, the result says
        ``enough_data=False`` and carries no estimate.

    Raises
    ------
    ValueError
        When a window is empty, has the wrong number of columns, holds probabilities that
        are missing, infinite, outside [0, 1] or whose rows do not sum to 1; when a reference
        label is not among ``classes`` or the reference holds a single class; or when
        ``metric`` or ``classes`` are not usable.
    RuntimeError
        When NannyML returns no estimate (it logs its reasons; they are in the message).

    Examples
    --------
    Perfectly calibrated probabilities (the tests pin these figures; NannyML's import
    takes seconds, too long for a doctest):

    >>> rng = np.random.default_rng(0)
    >>> def window(n):
    ...     p1 = rng.beta(2, 2, n)
    ...     return np.column_stack([1 - p1, p1]), np.where(rng.random(n) < p1, "down", "up")
    >>> (ref, ref_y), (cur, _) = window(2000), window(1000)
    >>> result = estimate_performance(ref, ref_y, cur, classes=["up", "down"])  # doctest: +SKIP
    >>> round(result.estimated, 4), round(result.reference_value, 4), result.enough_data  # doctest: +SKIP
    (0.6851, 0.6845, True)
    """
    class_names = _check_classes(classes)
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {list(METRICS)}, got {metric!r}")
    if min_rows < 1:
        raise ValueError(f"min_rows must be at least 1, got {min_rows}")
    reference = _probabilities(reference_probabilities, class_names, "reference")
    current = _probabilities(current_probabilities, class_names, "current")
    labels = _labels(reference_labels, class_names, len(reference))

    binary = len(class_names) == 2
    # Internal column names: the class names may be anything, NannyML's columns may not.
    proba_columns = {name: f"proba_{i}" for i, name in enumerate(class_names)}
    reference_frame = _frame(reference, class_names, proba_columns, binary)
    reference_frame[_TRUE] = _encode(labels, class_names, binary)
    current_frame = _frame(current, class_names, proba_columns, binary)
    enough_data = len(reference) >= min_rows and len(current) >= min_rows

    with _quiet_nannyml() as nannyml_errors:
        import nannyml
        import nannyml.exceptions

        estimator = nannyml.CBPE(
            problem_type="classification_binary" if binary else "classification_multiclass",
            y_pred_proba=proba_columns[class_names[1]] if binary else proba_columns,
            y_pred=_PRED,
            y_true=_TRUE,
            metrics=[metric],
            # One chunk a window: the estimate is for the window as a whole.
            chunk_number=1,
        )
        try:
            estimator.fit(reference_frame)
        except nannyml.exceptions.NannyMLException as error:
            # E.g. its calibration's cross-validation needs two reference rows of every class.
            raise ValueError(f"nannyml could not fit CBPE on the reference window: {error}") from error
        reference_value = _reference_value(estimator, metric)
        if not enough_data:
            return PerformanceEstimate(
                metric=metric,
                estimated=None,
                lower=None,
                upper=None,
                reference_value=reference_value,
                n_reference=len(reference),
                n_current=len(current),
                enough_data=False,
            )
        row = estimator.estimate(current_frame).filter(period="analysis").data.iloc[0]
        # CBPE's own estimate on the reference: the baseline its estimate on the window is
        # compared with, so that its calibration's bias cancels out of the difference.
        on_reference = estimator.estimate(reference_frame).filter(period="analysis").data.iloc[0]

    estimated = float(row[(metric, "value")])
    if math.isnan(estimated):
        reasons = "; ".join(nannyml_errors) or "no reason given"
        raise RuntimeError(f"nannyml returned no estimate of {metric} for the current window: {reasons}")
    return PerformanceEstimate(
        metric=metric,
        estimated=estimated,
        reference_estimated=float(on_reference[(metric, "value")]),
        lower=_number_or_none(row[(metric, "lower_confidence_boundary")]),
        upper=_number_or_none(row[(metric, "upper_confidence_boundary")]),
        reference_value=reference_value,
        n_reference=len(reference),
        n_current=len(current),
        enough_data=True,
    )


def _check_classes(classes: Sequence[str]) -> list[str]:
    names = [str(name) for name in classes]
    if len(names) < 2:
        raise ValueError(f"classes must name at least two classes, got {names}")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"classes must be unique, got {duplicates} more than once")
    return names


def _probabilities(values: pd.DataFrame | ArrayLike, classes: list[str], side: str) -> np.ndarray:
    """The probabilities as a float matrix with columns in ``classes`` order, checked."""
    if isinstance(values, pd.DataFrame) and set(map(str, values.columns)) == set(classes):
        values = values.rename(columns=str)[classes]
    try:
        matrix = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{side} probabilities must be numbers: {exc}") from None
    if matrix.size == 0:
        raise ValueError(f"{side} probabilities are empty: a window needs at least one row")
    if matrix.ndim != 2 or matrix.shape[1] != len(classes):
        raise ValueError(
            f"{side} probabilities need one column per class ({len(classes)}: {classes}), got shape {matrix.shape}"
        )
    bad = ~np.isfinite(matrix)
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        raise ValueError(f"{side} probabilities hold NaN or infinite values, first in row {row}: {matrix[row]}")
    outside = (matrix < 0.0) | (matrix > 1.0)
    if outside.any():
        row = int(np.argwhere(outside)[0][0])
        raise ValueError(f"{side} probabilities must lie in [0, 1], row {row} is {matrix[row]}")
    sums = matrix.sum(axis=1)
    off = np.abs(sums - 1.0) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"{side} probabilities must sum to 1 in each row, row {row} sums to {sums[row]:.6g} "
            f"({int(off.sum())} rows off by more than {ROW_SUM_TOLERANCE})"
        )
    return matrix


def _labels(values: ArrayLike, classes: list[str], n_rows: int) -> np.ndarray:
    labels = np.asarray(values).astype(str)
    if labels.ndim != 1 or len(labels) != n_rows:
        raise ValueError(f"reference labels need one label per reference row ({n_rows}), got shape {labels.shape}")
    unknown = sorted(set(labels.tolist()) - set(classes))
    if unknown:
        raise ValueError(f"reference labels {unknown[:5]} are not among the classes {classes}")
    if len(set(labels.tolist())) < 2:
        raise ValueError(
            f"the reference holds a single class ({str(labels[0])!r}): CBPE needs labelled examples "
            "of at least two classes to calibrate on"
        )
    return labels


def _frame(matrix: np.ndarray, classes: list[str], columns: dict[str, str], binary: bool) -> pd.DataFrame:
    # Ties go to the first class, as numpy's argmax (and the models' `predict`) does.
    predicted = np.asarray(classes)[matrix.argmax(axis=1)]
    frame = pd.DataFrame({columns[name]: matrix[:, i] for i, name in enumerate(classes)})
    frame[_PRED] = _encode(predicted, classes, binary)
    return frame


def _encode(labels: np.ndarray, classes: list[str], binary: bool) -> np.ndarray:
    # NannyML's binary metrics want 0/1 with 1 the positive class; multiclass ones the names.
    return (labels == classes[1]).astype(int) if binary else labels


def _reference_value(estimator: Any, metric: str) -> float:
    reference = estimator.result.filter(period="reference").data
    return float(reference[(metric, "realized")].iloc[0])


def _number_or_none(value: object) -> float | None:
    number = float(value)  # type: ignore[arg-type]
    return None if math.isnan(number) else number


@contextmanager
def _quiet_nannyml() -> Iterator[list[str]]:
    """Silence NannyML's warnings and log records; yield the error messages it logs.

    With one chunk a window NannyML warns that there are too few chunks for its alert
    thresholds (which are not used here), and it logs metric failures instead of raising
    them: they are collected so that a failure can say why.
    """
    import nannyml.usage_logging

    # NannyML sends usage analytics to a third party unless this opt-out (an environment
    # variable, its only switch) is set; a monitoring tool must not phone home.
    nannyml.usage_logging.disable_usage_logging()
    errors: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                errors.append(record.getMessage())

    logger = logging.getLogger("nannyml")
    handler = _Collect()
    propagate = logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield errors
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
