from __future__ import annotations

import numpy as np
import pytest

from driftpilot.tools.metrics import (
    accuracy,
    balanced_accuracy,
    macro_f1,
    per_class_recall,
)


def test_majority_class_scores_one_over_k() -> None:
    y_true = ["ok"] * 97 + ["offline"] * 2 + ["degraded"]

    score = balanced_accuracy(y_true, ["ok"] * 100)

    assert score == pytest.approx(1 / 3)
    assert accuracy(y_true, ["ok"] * 100) == 0.97


def test_balanced_accuracy_is_mean_recall_of_classes_present() -> None:
    y_true = [0, 0, 0, 0, 1, 1]
    y_pred = [0, 0, 0, 1, 1, 2]  # class 2 is predicted but not present

    assert per_class_recall(y_true, y_pred) == {"0": 0.75, "1": 0.5}
    assert balanced_accuracy(y_true, y_pred) == 0.625


def test_perfect_predictions() -> None:
    y = np.array(["a", "b", "c", "a"])

    assert balanced_accuracy(y, y) == 1.0
    assert macro_f1(y, y) == 1.0
    assert accuracy(y, y) == 1.0


def test_macro_f1_pinned() -> None:
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "b"]

    # a: 2/3, b: 1/2, c: 0 -> 7/18
    assert macro_f1(y_true, y_pred) == pytest.approx(7 / 18)
    assert macro_f1(y_true, y_pred, labels=["a", "b"]) == pytest.approx(7 / 12)
    assert macro_f1(y_true, y_pred, labels=["a", "b", "z"]) == pytest.approx(7 / 18)


@pytest.mark.parametrize("metric", [accuracy, balanced_accuracy, macro_f1, per_class_recall])
def test_bad_inputs_are_refused(metric) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="empty"):
        metric([], [])
    with pytest.raises(ValueError, match="3 labels but y_pred has 2"):
        metric([1, 2, 3], [1, 2])
