"""Paired answers and latencies of a release (the tools the Release Manager calls at every look)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.canary import (
    ANSWER_COLUMNS,
    LATENCY_REPEATS,
    LATENCY_ROWS,
    GuardCheck,
    answers_on,
    append_answers,
    label_free_guards,
    latencies,
    paired_answers,
    release_evidence,
    unanswered,
)


class Fixed:
    """A model answering the same probabilities on every row, recording the rows it was asked."""

    def __init__(self, probabilities: Sequence[float], classes: Sequence[str] = ("no", "yes")) -> None:
        self.probabilities = np.asarray(probabilities, dtype=float)
        self.classes = list(classes)
        self.asked: list[int] = []

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        self.asked.append(len(rows))
        return np.tile(self.probabilities, (len(rows), 1))


class PerRow(Fixed):
    """A model answering given probabilities row by row (NaN and inf included)."""

    def __init__(self, rows: list[list[float]]) -> None:
        super().__init__(rows[0])
        self.table = np.asarray(rows, dtype=float)

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        self.asked.append(len(rows))
        return self.table[: len(rows)]


class Raising(Fixed):
    def __init__(self) -> None:
        super().__init__([0.5, 0.5])

    def predict_proba(self, rows: pd.DataFrame) -> np.ndarray:
        raise RuntimeError("the weights did not load")


def _rows(ids: Sequence[int], **columns: Sequence[object]) -> pd.DataFrame:
    return pd.DataFrame({"id": list(ids), "x": np.linspace(0.0, 1.0, len(ids)), **columns})


def test_paired_answers_are_each_versions_top_class_and_probability_by_event_id() -> None:
    rows = _rows([11, 12, 13])

    frame = paired_answers(Fixed([0.3, 0.7]), Fixed([0.6, 0.4]), rows, [])

    assert list(frame.columns) == list(ANSWER_COLUMNS)
    assert frame.index.name == "id" and frame.index.tolist() == [11, 12, 13]
    assert frame["candidate"].tolist() == ["yes", "yes", "yes"]
    assert frame["champion"].tolist() == ["no", "no", "no"]
    assert frame["candidate_confidence"].tolist() == [0.7, 0.7, 0.7]
    assert frame["champion_confidence"].tolist() == [0.6, 0.6, 0.6]


def test_a_model_that_raises_answers_none_everywhere_with_zero_confidence() -> None:
    frame = paired_answers(Raising(), Fixed([0.6, 0.4]), _rows([1, 2]), [])

    assert frame["candidate"].tolist() == [None, None]
    assert frame["candidate_confidence"].tolist() == [0.0, 0.0]
    assert frame["champion"].tolist() == ["no", "no"]


def test_rows_with_non_finite_probabilities_answer_none_and_the_others_answer() -> None:
    candidate = PerRow([[0.2, 0.8], [np.nan, 0.5], [0.9, np.inf], [0.55, 0.45]])

    frame = paired_answers(candidate, Fixed([0.5, 0.5]), _rows([1, 2, 3, 4]), [])

    assert frame["candidate"].tolist() == ["yes", None, None, "no"]
    assert frame["candidate_confidence"].tolist() == [0.8, 0.0, 0.0, 0.55]
    # None stays None (not the NaN of pandas' string dtype): the guards count these as errors.
    assert frame["candidate"].notna().tolist() == [True, False, False, True]
    assert frame["candidate"].dtype == object


def test_slice_columns_are_carried_as_strings_with_none_where_missing() -> None:
    rows = _rows([1, 2, 3], colour=["red", None, "blue"], size=[1, 2, np.nan])

    frame = paired_answers(Fixed([0.3, 0.7]), Fixed([0.6, 0.4]), rows, ["colour", "size", "absent"])

    assert list(frame.columns) == [*ANSWER_COLUMNS, "colour", "size"]
    assert frame["colour"].tolist() == ["red", None, "blue"]
    assert frame["size"].tolist() == ["1.0", "2.0", None]


def test_no_rows_give_an_empty_frame() -> None:
    frame = paired_answers(Fixed([0.3, 0.7]), Fixed([0.6, 0.4]), _rows([]), ["colour"])

    assert len(frame) == 0 and list(frame.columns) == list(ANSWER_COLUMNS)


def test_answers_are_kept_from_look_to_look_and_read_on_the_ids_asked() -> None:
    candidate, champion = Fixed([0.3, 0.7]), Fixed([0.6, 0.4])
    first = paired_answers(candidate, champion, _rows([1, 2]), [])
    known = append_answers(None, first)

    new = unanswered(known, np.array([1, 2, 3, 4]))
    known = append_answers(known, paired_answers(Raising(), champion, _rows(new), []))
    seen = answers_on(known, [4, 1, 3])

    assert new == [3, 4]
    assert seen.index.tolist() == [4, 1, 3]
    assert seen["candidate"].tolist() == [None, "yes", None]
    assert seen["candidate"].notna().tolist() == [False, True, False]
    assert unanswered(known, [1, 2, 3, 4]) == []


def test_nothing_known_reads_as_an_empty_frame() -> None:
    assert unanswered(None, [5, 6]) == [5, 6]
    assert len(answers_on(None, [])) == 0
    assert list(answers_on(None, []).columns) == list(ANSWER_COLUMNS)


def test_an_event_is_answered_once() -> None:
    known = paired_answers(Fixed([0.3, 0.7]), Fixed([0.6, 0.4]), _rows([1, 2]), [])

    with pytest.raises(ValueError, match=r"events \[2\] are answered already"):
        append_answers(known, paired_answers(Fixed([0.3, 0.7]), Fixed([0.6, 0.4]), _rows([2, 3]), []))


def test_failed_answers_reach_the_error_guard() -> None:
    # What the Release Manager does with a look's answers: an unanswered row is an error.
    frame = paired_answers(PerRow([[0.2, 0.8], [np.nan, np.nan]]), Fixed([0.5, 0.5]), _rows([1, 2]), [])
    answered = frame["candidate"].notna().to_numpy()

    (errors,) = label_free_guards(
        candidate=frame["candidate"].to_numpy(dtype=object)[answered],
        champion=frame["champion"].to_numpy(dtype=object)[answered],
        candidate_confidence=frame["candidate_confidence"].to_numpy()[answered],
        champion_confidence=frame["champion_confidence"].to_numpy()[answered],
        candidate_seconds=0.0,
        champion_seconds=0.0,
        errors=int((~answered).sum()),
        min_events=100,
        max_disagreement=1.0,
        max_estimated_drop=1.0,
        max_latency_ratio=10.0,
        max_error_rate=0.0,
    )

    assert (errors.name, errors.observed, errors.passed) == ("errors", 0.5, False)


def test_latency_of_no_rows_is_zero_for_both() -> None:
    candidate, champion = Fixed([0.3, 0.7]), Fixed([0.6, 0.4])

    assert latencies(candidate, champion, _rows([])) == (0.0, 0.0)
    assert candidate.asked == [] and champion.asked == []


def test_latency_is_positive_and_measured_on_the_first_rows_a_few_times_in_turn() -> None:
    candidate, champion = Fixed([0.3, 0.7]), Fixed([0.6, 0.4])

    cand_seconds, champ_seconds = latencies(candidate, champion, _rows(range(LATENCY_ROWS + 50)))

    assert cand_seconds > 0 and champ_seconds > 0
    assert candidate.asked == [LATENCY_ROWS] * LATENCY_REPEATS
    assert champion.asked == [LATENCY_ROWS] * LATENCY_REPEATS


def test_latency_is_not_judged_when_a_version_raises() -> None:
    assert latencies(Raising(), Fixed([0.6, 0.4]), _rows([1, 2, 3])) == (0.0, 0.0)
    assert latencies(Fixed([0.6, 0.4]), Raising(), _rows([1, 2, 3])) == (0.0, 0.0)


def _guard(name: str) -> GuardCheck:
    return GuardCheck(name=name, observed=0.6, limit=0.5, passed=False, reason=f"{name} over its limit")


def test_accuracy_stand_ins_yield_to_labels_that_show_the_candidate_better():
    # After a concept change the champion is right 45 % of the time: any good successor disagrees
    # with it on most events, and it is confidently wrong. Labels decide then, not the stand-ins.
    truth = np.array(["a", "b"] * 100)
    champion = np.where(np.arange(200) % 10 < 5, truth, np.where(truth == "a", "b", "a"))  # right half the time
    for name in ("disagreement", "estimated_accuracy"):
        shown = release_evidence(truth, truth, champion, guards=[_guard(name)])
        assert shown.overall.verdict == "better" and shown.verdict == "better" and shown.failed_guards == []
        unshown = release_evidence(truth[:4], truth[:4], champion[:4], guards=[_guard(name)])
        assert unshown.verdict == "guard_failed"
    # Errors and latency are not about accuracy: they stop a release whatever the labels say.
    for name in ("errors", "latency"):
        assert release_evidence(truth, truth, champion, guards=[_guard(name)]).verdict == "guard_failed"


def test_a_stand_in_that_disagrees_with_labels_putting_the_candidate_ahead_holds_the_release():
    # 20 pairs: the candidate right on all, the champion wrong on 3 of them: ahead, undecided.
    truth = np.array(["a", "b"] * 10)
    champion = truth.copy()
    champion[[0, 5, 9]] = np.where(truth[[0, 5, 9]] == "a", "b", "a")
    for name in ("disagreement", "estimated_accuracy"):
        held = release_evidence(truth, truth, champion, guards=[_guard(name)])
        assert (held.overall.verdict, held.overall.wins, held.overall.losses) == ("undecided", 3, 0)
        assert held.leads and held.verdict == "undecided" and held.failed_guards == []
        assert [g.name for g in held.held_guards] == [name]
        # Behind on the same pairs: the stand-in ends the release.
        behind = release_evidence(truth, champion, truth, guards=[_guard(name)])
        assert not behind.leads and behind.held_guards == [] and behind.verdict == "guard_failed"
    # Beside a guard that is not about accuracy, nothing is held: errors stop a release.
    both = release_evidence(truth, truth, champion, guards=[_guard("estimated_accuracy"), _guard("errors")])
    assert both.verdict == "guard_failed" and both.held_guards == []
    # Passing guards hold nothing.
    assert release_evidence(truth, truth, champion).held_guards == []


def test_prequential_pairs_open_the_evidence_and_are_judged_alone_too():
    truth = np.array(["a", "b"] * 100)
    wrong = np.where(truth == "a", "b", "a")
    # 100 prequential pairs on which the candidate is right and the champion wrong, then 100 live
    # pairs on which they agree.
    candidate = np.concatenate([truth[:100], truth[100:]])
    champion = np.concatenate([wrong[:100], truth[100:]])
    evidence = release_evidence(truth, candidate, champion, prequential=100)
    assert evidence.prequential is not None and evidence.prequential.n == 100
    assert evidence.shown_before and evidence.verdict == "better"
    assert evidence.as_dict()["prequential"]["verdict"] == "better"
    assert release_evidence(truth, candidate, champion).prequential is None
