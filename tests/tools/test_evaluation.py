"""Evaluation of a candidate against the champion: exact scores on a hand-built holdout."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from driftpilot.policies import Policy, StartCanaryFacts, Usage, evaluate
from driftpilot.tools.evaluation import EvaluationRecord, ScoresRecord, evaluate_candidate

#: The slice columns a model's schema would name (see ModelSchema.slice_columns).
SLICES = ("firmware", "region", "group")


class Guesser:
    """A model that answers the frame's ``guess_column``, 0.8 sure of it, the rest spread evenly."""

    def __init__(self, classes: list[str], guess_column: str, size: int) -> None:
        self.classes = classes
        self.guess_column = guess_column
        self.size = size

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        proba = np.full((len(frame), len(self.classes)), 0.2 / (len(self.classes) - 1))
        proba[np.arange(len(frame)), [self.classes.index(g) for g in frame[self.guess_column]]] = 0.8
        return proba

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(frame).argmax(axis=1)]

    def size_bytes(self) -> int:
        return self.size


# The champion knows offline and ok; the candidate grew a class, dying.
CHAMPION = Guesser(["offline", "ok"], "champion_guess", 800)
CANDIDATE = Guesser(["offline", "ok", "dying"], "candidate_guess", 1000)


def _rows(label: str, n: int, champion: str, candidate: str) -> list[tuple[str, str, str]]:
    return [(label, champion, candidate)] * n


def _frame(rows: list[tuple[str, str, str]], **columns: list[str]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["label", "champion_guess", "candidate_guess"])
    return frame.assign(**columns)


# Firmware 1.0 (30 rows): the candidate finds 5 of 10 offline ONTs, the champion 8.
# Firmware 2.1 (30 rows): the candidate is always right; the champion misses the 4 dying ones.
# Region north holds the first 50 rows, south the last 10 (too few to be a slice).
RECENT = _frame(
    _rows("ok", 20, "ok", "ok")
    + _rows("offline", 5, "offline", "offline")
    + _rows("offline", 3, "offline", "ok")
    + _rows("offline", 2, "ok", "ok")
    + _rows("dying", 4, "ok", "dying")
    + _rows("offline", 6, "offline", "offline")
    + _rows("ok", 20, "ok", "ok"),
    firmware=["1.0"] * 30 + ["2.1"] * 30,
    region=["north"] * 50 + ["south"] * 10,
)
# On older concepts the candidate has forgotten 2 of 5 offline ONTs.
OLD = _frame(
    _rows("ok", 5, "ok", "ok") + _rows("offline", 3, "offline", "offline") + _rows("offline", 2, "offline", "ok")
)
GOLDEN = _frame(_rows("ok", 2, "ok", "ok") + _rows("offline", 2, "offline", "offline"))
EMPTY = _frame([])


def test_scores_recall_slices_and_calibration_of_both_models() -> None:
    result = evaluate_candidate(
        CANDIDATE, CHAMPION, recent=RECENT, old=OLD, golden=GOLDEN, slice_columns=SLICES, min_slice_samples=30
    )

    assert (result.candidate.recent, result.champion.recent) == (pytest.approx(2.6875 / 3), 0.625)
    assert (result.candidate.old, result.champion.old) == (0.8, 1.0)
    assert (result.candidate.golden, result.champion.golden) == (1.0, 1.0)
    # A class the champion does not know counts as missed: recall 0.
    assert result.candidate.recall == {"dying": 1.0, "offline": 0.6875, "ok": 1.0}
    assert result.champion.recall == {"dying": 0.0, "offline": 0.875, "ok": 1.0}
    # Slices are scored by accuracy: 25 and 28 of firmware 1.0's 30 rows right.
    assert result.candidate.slices == {"firmware=1.0": pytest.approx(25 / 30), "firmware=2.1": 1.0, "region=north": 0.9}
    assert result.champion.slices == {
        "firmware=1.0": pytest.approx(28 / 30),
        "firmware=2.1": pytest.approx(26 / 30),
        "region=north": 0.88,
    }
    assert result.worst_slice == ("firmware=1.0", -0.1)
    # Always 0.8 sure: right 55 (candidate) and 54 (champion) times of 60.
    assert (result.candidate.ece, result.champion.ece) == (pytest.approx(55 / 60 - 0.8), pytest.approx(0.1))
    assert (result.candidate.size_bytes, result.champion.size_bytes) == (1000, 800)
    assert result.candidate.ms_per_1000 >= 0 and result.champion.ms_per_1000 >= 0
    assert (result.n_recent, result.n_old, result.n_golden, result.min_slice_samples) == (60, 10, 4, 30)


def test_the_metric_the_policy_trains_for_is_the_one_candidates_are_chosen_and_gated_by() -> None:
    # Recent: right 55 (candidate) and 54 (champion) times of 60; balanced 0.8958 against 0.625.
    kwargs = dict(recent=RECENT, old=OLD, golden=GOLDEN, slice_columns=SLICES, min_slice_samples=30)

    by_accuracy = evaluate_candidate(CANDIDATE, CHAMPION, metric="accuracy", **kwargs)
    balanced = evaluate_candidate(CANDIDATE, CHAMPION, **kwargs)

    assert (by_accuracy.candidate_metric, by_accuracy.champion_metric) == (pytest.approx(55 / 60), 0.9)
    assert (balanced.candidate_metric, balanced.champion_metric) == (pytest.approx(2.6875 / 3), 0.625)
    # Every score is computed either way; the gate reads those of the metric.
    assert by_accuracy.candidate.recent == balanced.candidate.recent
    assert by_accuracy.candidate.old_accuracy == balanced.candidate.old_accuracy is not None
    gate, gate_balanced = by_accuracy.gate_facts(), balanced.gate_facts()
    assert (gate["candidate_score"], gate["champion_score"]) == (pytest.approx(55 / 60), 0.9)
    assert gate["candidate_old_score"] == by_accuracy.candidate.old_accuracy
    assert (gate_balanced["candidate_score"], gate_balanced["candidate_old_score"]) == (
        balanced.candidate.recent,
        balanced.candidate.old,
    )
    assert by_accuracy.as_dict()["metric"] == "accuracy"
    with pytest.raises(ValueError, match="metric must be one of .*'f1'"):
        evaluate_candidate(CANDIDATE, CHAMPION, metric="f1", **kwargs)


def test_the_table_a_person_reads() -> None:
    result = evaluate_candidate(
        CANDIDATE, CHAMPION, recent=RECENT, old=OLD, golden=GOLDEN, slice_columns=SLICES, min_slice_samples=30
    )

    table = result.table()

    latency = [row for row in table if row["measure"] == "latency (ms per 1,000 rows)"]
    assert len(latency) == 1 and isinstance(latency[0]["candidate"], float)
    assert [tuple(row.values()) for row in table if row not in latency] == [
        ("balanced accuracy (recent)", 0.8958, 0.625, 0.2708),
        ("accuracy (recent)", 0.9167, 0.9, 0.0167),
        ("balanced accuracy (old concepts)", 0.8, 1.0, -0.2),
        ("balanced accuracy (golden set)", 1.0, 1.0, 0.0),
        # Old concepts: the candidate right 8 of 10 times (balanced: 0.8 too), the champion always.
        ("accuracy (old concepts)", 0.8, 1.0, -0.2),
        ("accuracy (golden set)", 1.0, 1.0, 0.0),
        ("worst slice: firmware=1.0", 0.8333, 0.9333, -0.1),
        ("calibration error (ECE)", 0.1167, 0.1, 0.0167),
        ("size (bytes)", 1000.0, 800.0, 200.0),
        ("recall: dying", 1.0, 0.0, 1.0),
        ("recall: offline", 0.6875, 0.875, -0.1875),
        ("recall: ok", 1.0, 1.0, 0.0),
    ]


def test_gate_facts_feed_the_policy_which_refuses_the_forgetful_candidate() -> None:
    result = evaluate_candidate(
        CANDIDATE, CHAMPION, recent=RECENT, old=OLD, golden=GOLDEN, slice_columns=SLICES, min_slice_samples=30
    )

    facts = result.gate_facts()
    gate = StartCanaryFacts(**facts, share=0.1, slices_compared=True, concept_changed=False)
    verdict = evaluate(Policy(name="t"), "start_canary", gate, Usage())

    assert facts == {
        "candidate_score": pytest.approx(2.6875 / 3),
        "champion_score": 0.625,
        "candidate_old_score": 0.8,
        "champion_old_score": 1.0,
        "candidate_golden_score": 1.0,
        "champion_golden_score": 1.0,
        "worst_slice": "firmware=1.0",
        "worst_slice_delta": -0.1,
    }
    assert [(v.rule, v.passed) for v in verdict.verdicts] == [
        ("autonomy", True),
        ("canary_share", True),
        ("offline_gate", True),
        ("forgetting_gate", False),
        ("slice_gate", False),
        ("golden_gate", True),
    ]


def test_as_dict_is_json_and_holds_both_models() -> None:
    result = evaluate_candidate(
        CANDIDATE, CHAMPION, recent=RECENT, old=EMPTY, golden=EMPTY, slice_columns=SLICES, min_slice_samples=30
    )

    stored = json.loads(json.dumps(result.as_dict()))

    assert stored["candidate"]["recall"] == {"dying": 1.0, "offline": 0.6875, "ok": 1.0}
    assert (stored["candidate"]["old"], stored["champion"]["golden"]) == (None, None)
    assert (stored["worst_slice"], stored["worst_slice_delta"]) == ("firmware=1.0", -0.1)
    assert stored["gain"] == pytest.approx(2.6875 / 3 - 0.625)
    # The plain form is the typed record the graph's state and the version's metrics carry.
    assert set(stored) == EvaluationRecord.__required_keys__
    assert set(stored["candidate"]) == set(stored["champion"]) == ScoresRecord.__required_keys__


def test_only_the_slice_columns_named_are_sliced() -> None:
    result = evaluate_candidate(
        CANDIDATE, CHAMPION, recent=RECENT, old=EMPTY, golden=EMPTY, slice_columns=["region"], min_slice_samples=30
    )

    assert result.candidate.slices == {"region=north": 0.9}
    assert result.worst_slice == ("region=north", 0.02)


def test_empty_holdouts_and_small_slices_are_left_out() -> None:
    result = evaluate_candidate(
        CANDIDATE,
        CHAMPION,
        recent=RECENT,
        old=EMPTY,
        golden=EMPTY,
        slice_columns=("region", "olt"),
        min_slice_samples=51,
    )

    assert (result.candidate.old, result.champion.golden, result.n_old, result.n_golden) == (None, None, 0, 0)
    assert result.candidate.slices == {} and result.worst_slice is None
    assert result.gate_facts()["worst_slice_delta"] is None
    assert [row["measure"] for row in result.table()][:3] == [
        "balanced accuracy (recent)",
        "accuracy (recent)",
        "calibration error (ECE)",
    ]


def test_an_empty_recent_holdout_is_refused() -> None:
    with pytest.raises(ValueError, match="the recent holdout is empty: nothing to judge the candidate on"):
        evaluate_candidate(CANDIDATE, CHAMPION, recent=EMPTY, old=OLD, golden=GOLDEN, slice_columns=SLICES)


def test_a_holdout_without_labels_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="the golden holdout has no 'label' column"):
        evaluate_candidate(
            CANDIDATE, CHAMPION, recent=RECENT, old=OLD, golden=GOLDEN.drop(columns="label"), slice_columns=SLICES
        )


def test_probabilities_that_do_not_match_the_classes_are_refused() -> None:
    class Liar(Guesser):
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return super().predict_proba(frame)[:, :2]

    liar = Liar(["offline", "ok", "dying"], "candidate_guess", 1)

    with pytest.raises(ValueError, match=r"predict_proba returned shape \(60, 2\) for 60 rows, expected \(60, 3\)"):
        evaluate_candidate(liar, CHAMPION, recent=RECENT, old=OLD, golden=GOLDEN, slice_columns=SLICES)
