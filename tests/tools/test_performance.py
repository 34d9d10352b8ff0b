from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.performance import PerformanceEstimate, estimate_performance

BINARY = ["up", "down"]
THREE = ["online", "fibre", "power"]


def _calibrated_binary(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities whose labels are drawn from them: perfectly calibrated by construction."""
    p_down = rng.beta(2, 2, n)
    labels = np.where(rng.random(n) < p_down, "down", "up")
    return np.column_stack([1 - p_down, p_down]), labels


def _calibrated_three(n: int, rng: np.random.Generator, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    probabilities = rng.dirichlet(np.full(3, concentration), n)
    drawn = (rng.random(n)[:, None] > probabilities.cumsum(axis=1)).sum(axis=1)
    return probabilities, np.asarray(THREE)[np.minimum(drawn, 2)]


def _accuracy(probabilities: np.ndarray, labels: np.ndarray, classes: list[str]) -> float:
    return float(np.mean(np.asarray(classes)[probabilities.argmax(axis=1)] == labels))


@pytest.fixture(scope="module")
def binary_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    reference, reference_labels = _calibrated_binary(2000, rng)
    current, current_labels = _calibrated_binary(1000, rng)
    return reference, reference_labels, current, current_labels


@pytest.fixture(scope="module")
def three_class_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    reference, reference_labels = _calibrated_three(3000, rng, concentration=1.0)
    # Covariate shift: the current window is more confident, so its accuracy is higher.
    current, current_labels = _calibrated_three(1500, rng, concentration=0.4)
    return reference, reference_labels, current, current_labels


def _band(result: PerformanceEstimate) -> tuple[float, float, float]:
    """The estimate and its band, which a result on enough rows always has."""
    assert result.estimated is not None and result.lower is not None and result.upper is not None
    return result.estimated, result.lower, result.upper


def test_binary_accuracy_is_estimated_within_the_band(binary_windows) -> None:
    # The estimate, its band and the realised accuracy used to be pinned to four places (0.6863
    # in 0.6422-0.7304; realised 0.692). CBPE's isotonic calibration rounds differently on other
    # CPUs, so the estimate is held to what those figures showed: on probabilities calibrated by
    # construction, with no shift, it lands within two points of the realised accuracy (0.6 of a
    # point off when pinned), inside a band of three standard errors around it.
    reference, reference_labels, current, current_labels = binary_windows

    result = estimate_performance(reference, reference_labels, current, classes=BINARY)

    true = _accuracy(current, current_labels, BINARY)
    assert isinstance(result, PerformanceEstimate)
    assert (result.metric, result.method, result.enough_data) == ("accuracy", "cbpe", True)
    assert (result.n_reference, result.n_current) == (2000, 1000)
    assert result.reference_value == pytest.approx(_accuracy(reference, reference_labels, BINARY))
    assert round(true, 4) == 0.692  # the fixture itself: seeded numpy, no learning
    estimated, lower, upper = _band(result)
    assert abs(estimated - true) < 0.02
    assert lower <= true <= upper
    # The band is symmetric about the estimate, and three standard errors of an accuracy on 1000
    # rows wide on each side (sqrt(0.69 * 0.31 / 1000) * 3 = 0.044).
    assert upper - estimated == pytest.approx(estimated - lower)
    assert 0.03 < upper - estimated < 0.06
    # Without a shift the estimate stays where it was on the reference.
    assert result.reference_estimated is not None
    assert abs(estimated - result.reference_estimated) < 0.02


@pytest.fixture(scope="module")
def skewed_binary_windows() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Calibrated probabilities where "down" (the positive class) is the rarer one, so that its F1
    is far from the negative class's and from accuracy: an estimate of the wrong one shows."""
    rng = np.random.default_rng(2)

    def window(n: int) -> tuple[np.ndarray, np.ndarray]:
        p_down = rng.beta(2, 4, n)
        return np.column_stack([1 - p_down, p_down]), np.where(rng.random(n) < p_down, "down", "up")

    reference, reference_labels = window(3000)
    current, current_labels = window(1500)
    return reference, reference_labels, current, current_labels


def _f1_of(name: str, probabilities: np.ndarray, labels: np.ndarray) -> float:
    predicted = np.asarray(BINARY)[probabilities.argmax(axis=1)] == name
    actual = labels == name
    precision = np.sum(predicted & actual) / np.sum(predicted)
    recall = np.sum(predicted & actual) / np.sum(actual)
    return float(2 * precision * recall / (precision + recall))


def test_binary_f1_is_that_of_the_positive_class(binary_windows, skewed_binary_windows) -> None:
    # The estimate used to be pinned (0.6768) on windows where both classes' F1 are alike. It is
    # now held within three points of the realised F1 (one point off when pinned), and what the
    # pin guarded, that F1 means the positive class's (classes[1]), is asserted on skewed windows
    # too: the realised reference value is exactly the positive class's, and the estimate lies
    # near the positive class's realised F1 and far from the negative class's.
    reference, reference_labels, current, current_labels = binary_windows

    result = estimate_performance(reference, reference_labels, current, classes=BINARY, metric="f1")

    assert result.reference_value == pytest.approx(_f1_of("down", reference, reference_labels))
    assert abs(_band(result)[0] - _f1_of("down", current, current_labels)) < 0.03

    reference, reference_labels, current, current_labels = skewed_binary_windows
    skewed = estimate_performance(reference, reference_labels, current, classes=BINARY, metric="f1")

    positive, negative = _f1_of("down", current, current_labels), _f1_of("up", current, current_labels)
    assert negative - positive > 0.2  # the fixture keeps the two far apart
    assert skewed.reference_value == pytest.approx(_f1_of("down", reference, reference_labels))
    estimated, lower, upper = _band(skewed)
    assert abs(estimated - positive) < 0.05
    assert lower <= positive <= upper


def test_three_class_accuracy_follows_a_covariate_shift(three_class_windows) -> None:
    # The estimate used to be pinned (0.7486); the realised figures of the seeded fixture still
    # are. What the pin showed is kept: the estimate follows the shift (+12 points) to within a
    # point of the truth (0.2 of a point off when pinned).
    reference, reference_labels, current, current_labels = three_class_windows

    result = estimate_performance(reference, reference_labels, current, classes=THREE)

    true = _accuracy(current, current_labels, THREE)
    assert round(result.reference_value, 4) == 0.6293
    assert round(true, 4) == 0.7467
    estimated, lower, upper = _band(result)
    assert estimated - result.reference_value > 0.1
    assert abs(estimated - true) < 0.01
    assert lower <= true <= upper


def test_dataframe_columns_are_matched_by_class_name(three_class_windows) -> None:
    reference, reference_labels, current, _ = three_class_windows
    shuffled = ["power", "online", "fibre"]
    order = [THREE.index(name) for name in shuffled]

    by_name = estimate_performance(
        pd.DataFrame(reference[:, order], columns=shuffled),
        reference_labels,
        pd.DataFrame(current[:, order], columns=shuffled),
        classes=THREE,
    )

    assert by_name == estimate_performance(reference, reference_labels, current, classes=THREE)


def test_too_few_rows_give_no_estimate(three_class_windows) -> None:
    reference, reference_labels, current, _ = three_class_windows

    result = estimate_performance(reference, reference_labels, current[:99], classes=THREE, min_rows=100)

    assert not result.enough_data
    assert (result.estimated, result.lower, result.upper) == (None, None, None)
    assert (result.n_reference, result.n_current) == (3000, 99)
    assert round(result.reference_value, 4) == 0.6293


def test_a_small_reference_is_also_not_enough(binary_windows) -> None:
    reference, reference_labels, current, _ = binary_windows

    result = estimate_performance(reference[:60], reference_labels[:60], current, classes=BINARY)

    assert not result.enough_data
    assert result.estimated is None


def _bad(rows: list[list[float]]) -> np.ndarray:
    good = np.tile([0.7, 0.3], (200, 1))
    good[: len(rows)] = rows
    return good


@pytest.mark.parametrize(
    ("current", "message"),
    [
        (np.empty((0, 2)), "current probabilities are empty"),
        (pd.DataFrame(columns=BINARY), "current probabilities are empty"),
        (np.tile([0.2, 0.3, 0.5], (200, 1)), r"one column per class \(2"),
        (_bad([[np.nan, 0.5]]), "NaN or infinite values, first in row 0"),
        (_bad([[0.5, 0.5], [np.inf, 0.0]]), "NaN or infinite values, first in row 1"),
        (_bad([[0.5, 0.5], [0.5, 0.5], [1.2, -0.2]]), r"must lie in \[0, 1\], row 2"),
        (_bad([[0.5, 0.4]]), "must sum to 1 in each row, row 0 sums to 0.9"),
        (np.full((200, 2), "x"), "current probabilities must be numbers"),
    ],
)
def test_bad_probabilities_are_refused(binary_windows, current: np.ndarray, message: str) -> None:
    reference, reference_labels, _, _ = binary_windows

    with pytest.raises(ValueError, match=message):
        estimate_performance(reference, reference_labels, current, classes=BINARY)


def test_bad_reference_probabilities_are_named(binary_windows) -> None:
    reference, reference_labels, current, _ = binary_windows

    with pytest.raises(ValueError, match="reference probabilities must sum to 1"):
        estimate_performance(reference * 0.5, reference_labels, current, classes=BINARY)


def test_a_label_outside_the_classes_is_refused(binary_windows) -> None:
    reference, reference_labels, current, _ = binary_windows
    labels = reference_labels.astype(object)
    labels[5] = "sideways"

    with pytest.raises(ValueError, match=r"reference labels \['sideways'\] are not among the classes"):
        estimate_performance(reference, labels, current, classes=BINARY)


def test_a_single_class_reference_is_refused(binary_windows) -> None:
    reference, reference_labels, current, _ = binary_windows

    with pytest.raises(ValueError, match="the reference holds a single class \\('up'\\)"):
        estimate_performance(reference, np.full(len(reference_labels), "up"), current, classes=BINARY)


@pytest.mark.parametrize(
    ("labels_length", "classes", "metric", "message"),
    [
        (1999, BINARY, "accuracy", r"one label per reference row \(2000\)"),
        (2000, ["up"], "accuracy", "at least two classes"),
        (2000, ["up", "up"], "accuracy", r"classes must be unique, got \['up'\]"),
        (2000, BINARY, "balanced_accuracy", "metric must be one of"),
    ],
)
def test_bad_arguments_are_refused(binary_windows, labels_length: int, classes, metric: str, message: str) -> None:
    reference, reference_labels, current, _ = binary_windows

    with pytest.raises(ValueError, match=message):
        estimate_performance(reference, reference_labels[:labels_length], current, classes=classes, metric=metric)
