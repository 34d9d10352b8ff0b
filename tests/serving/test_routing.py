"""Serving maps each version's classes onto the managed model's, whatever order or subset."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.serving.routing import Serving


class _Fixed:
    def __init__(self, classes, row):
        self.classes = classes
        self.row = np.asarray(row, dtype=float)

    def predict_proba(self, columns):
        return np.tile(self.row, (len(columns["a"]), 1))


def test_versions_with_other_classes_are_mapped_by_name():
    serving = Serving(None, None, 1, "intents")
    # Version 1 knows two intents; version 2 grew a third, appended after them.
    serving.models = {
        1: _Fixed(["card", "balance"], [0.7, 0.3]),
        2: _Fixed(["card", "balance", "refund"], [0.1, 0.2, 0.7]),
    }

    proba = serving.predict_proba({"a": [1, 2, 3]}, np.array([1, 2, 1]), ["balance", "card", "refund"])

    assert proba.tolist() == [[0.3, 0.7, 0.0], [0.2, 0.1, 0.7], [0.3, 0.7, 0.0]]


def test_a_version_predicting_an_unknown_class_is_refused():
    serving = Serving(None, None, 1, "intents")
    serving.models = {1: _Fixed(["card", "typo"], [0.5, 0.5])}

    with pytest.raises(ValueError, match=r"version 1 predicts classes \['typo'\] the model 'intents' does not have"):
        serving.predict_proba({"a": [1]}, np.array([1]), ["card", "balance"])
