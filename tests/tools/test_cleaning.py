"""Cleaning: planted flips, duplicates, stuck runs, error codes and gaps are found, and no more."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.neighbors import KNeighborsClassifier

from driftpilot.tools import cleaning
from driftpilot.tools.cleaning import clean, duplicates, missing_values, outliers, stuck_runs, suspicious_labels


def _blobs(seed: int, n: int = 600, classes: int = 4, flips: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Well-separated Gaussian classes (centres 6 apart, unit spread) with ``flips`` labels moved
    to the next class. Returns features, noisy labels and the flipped rows."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, classes, n)
    x = rng.normal(size=(n, 5)) + 6.0 * np.eye(classes, 5)[which]
    names = np.array([f"c{k}" for k in range(classes)])
    labels = names[which]
    flipped = np.sort(rng.choice(n, flips, replace=False))
    labels[flipped] = names[(which[flipped] + 1) % classes]
    return x, labels, flipped


# --- labels -----------------------------------------------------------------------------------


def test_planted_flips_in_separable_classes_are_found_with_good_precision() -> None:
    x, labels, flipped = _blobs(0)

    found = suspicious_labels(x, labels)

    caught = set(found.rows) & set(flipped.tolist())
    assert len(caught) >= 0.9 * len(flipped)
    assert len(caught) >= 0.8 * len(found.rows)
    assert found.judged == len(labels) and found.unjudged == []
    assert found.settings["rounds"] == cleaning.ROUNDS and "C" in found.settings


def test_each_issue_names_its_label_the_suggestion_and_why_and_issues_are_ranked() -> None:
    x, labels, flipped = _blobs(1)

    found = suspicious_labels(x, labels)

    confidences = [issue.self_confidence for issue in found.issues]
    assert confidences == sorted(confidences)
    issue = next(i for i in found.issues if i.row in set(flipped.tolist()))
    true = f"c{(int(issue.given[1]) - 1) % 4}"  # the flip moved each label to the next class
    assert issue.given == labels[issue.row]
    assert issue.suggested == true
    assert f"'{issue.given}'" in issue.why and f"'{issue.suggested}'" in issue.why


def test_a_callers_model_factory_is_used() -> None:
    x, labels, flipped = _blobs(2)

    found = suspicious_labels(x, labels, model=lambda: KNeighborsClassifier(15))

    assert "C" not in found.settings  # no strength was chosen: the caller's model judged
    assert len(set(found.rows) & set(flipped.tolist())) >= 0.8 * len(flipped)


def test_a_class_rarer_than_the_folds_is_not_judged_and_the_reason_says_so() -> None:
    x, labels, _ = _blobs(3)
    labels = labels.astype(object)
    labels[[5, 6]] = "new_intent"  # two members, five folds

    found = suspicious_labels(x, labels)

    assert found.unjudged == [5, 6]
    assert not {5, 6} & set(found.rows)
    assert found.judged == len(labels) - 2
    assert "2 rows of 1 class with fewer than 5 members not judged ('new_intent': 2)" in found.reason


def test_one_class_flags_nothing_and_says_why() -> None:
    x = np.random.default_rng(4).normal(size=(100, 3))

    found = suspicious_labels(x, ["a"] * 99 + ["b"])

    assert found.issues == []
    assert found.out_of_fold_accuracy is None
    assert found.reason.startswith("nothing flagged: 1 class with at least 5 members, none to confuse it with")
    assert found.unjudged == [99]


def test_too_few_rows_flag_nothing_and_say_why() -> None:
    x, labels, _ = _blobs(5, n=40, flips=2)

    found = suspicious_labels(x, labels)

    assert found.issues == []
    assert found.reason == f"nothing flagged: 40 rows to judge, fewer than the {cleaning.MIN_LABEL_ROWS} needed"


def test_label_step_errors_name_the_problem() -> None:
    x, labels, _ = _blobs(6, n=100, flips=0)
    holed = x.copy()
    holed[17, 2] = np.nan

    with pytest.raises(ValueError, match=r"missing or infinite values \(first in row 17\): fill them"):
        suspicious_labels(holed, labels)
    with pytest.raises(ValueError, match=r"one row per label: got shape \(100, 5\) for 99 labels"):
        suspicious_labels(x, labels[:99])
    with pytest.raises(ValueError, match="folds must be at least 2"):
        suspicious_labels(x, labels, folds=1)


# --- duplicates -------------------------------------------------------------------------------


def test_exact_duplicates_ignore_case_and_spacing_and_keep_the_first() -> None:
    frame = pd.DataFrame({"text": ["Card lost", "where is my refund", "card  LOST ", "Where is my refund", "hi"]})

    found = duplicates(frame, ["text"], ["lost", "refund", "lost", "refund", "greeting"])

    assert [(g.kind, g.kept, g.dropped, g.conflicting) for g in found.groups] == [
        ("exact", 0, [2], []),
        ("exact", 1, [3], []),
    ]
    assert found.dropped == [2, 3]


def test_exact_duplicates_with_a_tie_of_labels_keep_none() -> None:
    frame = pd.DataFrame({"text": ["top up failed", "top up failed", "other"]})

    found = duplicates(frame, ["text"], ["top_up_failed", "declined_card", "x"])

    group = found.groups[0]
    assert (group.kept, group.dropped, group.conflicting) == (None, [0, 1], [0, 1])
    assert (
        group.why
        == "2 identical rows labelled 'declined_card': 1, 'top_up_failed': 1: no label is most frequent, none is kept"
    )


def test_near_duplicates_group_by_similarity_without_chaining_and_keep_other_labels() -> None:
    def unit(angle: float) -> list[float]:
        return [np.cos(angle), np.sin(angle), 0.0]

    # a-b and b-c are 0.99 similar, a-c only 0.96: b joins a; c is not close enough to a, the leader.
    step = np.arccos(0.99)
    vectors = np.array([unit(0.0), unit(step), unit(2 * step), [0.0, 0.0, 1.0], unit(0.5 * step)])
    frame = pd.DataFrame({"text": ["a", "b", "c", "far", "a2"]})

    found = duplicates(frame, ["text"], ["x", "x", "x", "x", "y"], vectors=vectors)

    assert [(g.kind, g.kept, g.dropped, g.conflicting) for g in found.groups] == [("near", 0, [1], [4])]
    assert found.groups[0].labels == {"x": 2, "y": 1}
    assert "left to the label step" in found.groups[0].why


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "A", "b", " b", "c"]), st.sampled_from(["x", "y"])), max_size=12))
def test_after_dropping_each_text_is_left_at_most_once(rows: list[tuple[str, str]]) -> None:
    frame = pd.DataFrame({"text": [text for text, _ in rows]}, dtype=object)
    labels = [label for _, label in rows]

    found = duplicates(frame, ["text"], labels)

    left = [rows[i][0].strip().lower() for i in range(len(rows)) if i not in set(found.dropped)]
    assert len(left) == len(set(left))
    for group in found.groups:
        assert group.kept is None or group.kept not in group.dropped


# --- outliers ---------------------------------------------------------------------------------


def test_error_codes_are_outliers_and_a_failure_class_is_judged_on_its_own_range() -> None:
    rng = np.random.default_rng(7)
    healthy = rng.normal(50, 2, 300)
    failing = rng.normal(80, 3, 40)  # hot: normal for this class, far out for the healthy one
    frame = pd.DataFrame({"heat": np.r_[healthy, failing].round(2)})
    labels = ["ok"] * 300 + ["overheat"] * 40
    frame.loc[[10, 320], "heat"] = 65535.0

    found = outliers(frame, ["heat"], labels)

    assert [(o.row, o.group) for o in found.findings] == [(10, "ok"), (320, "overheat")]
    assert found.skipped == {}


def test_a_heavy_tailed_count_is_judged_on_the_log_scale_and_rare_classes_not_at_all() -> None:
    rng = np.random.default_rng(8)
    counts = np.round(rng.lognormal(3.0, 1.0, 400))  # spans orders of magnitude
    frame = pd.DataFrame({"errors": counts})
    labels = ["ok"] * 390 + ["rare"] * 10
    raw_q1, raw_q3 = np.quantile(counts[:390], [0.25, 0.75])

    found = outliers(frame, ["errors"], labels)

    # On the raw scale the far-out fence would cut the natural tail; on the log scale it keeps it.
    assert (counts[:390] > raw_q3 + 3 * (raw_q3 - raw_q1)).sum() > 5
    assert found.findings == []
    assert found.skipped == {"errors|rare": "'errors' in class 'rare': 10 values, fewer than 30"}


def test_outliers_refuse_text_in_a_number_field() -> None:
    with pytest.raises(ValueError, match="feature 'level' must hold numbers, got 'n/a' at index 1"):
        outliers(pd.DataFrame({"level": ["1.5", "n/a"]}), ["level"])


# --- stuck runs and missing values ------------------------------------------------------------


def _readings(seed: int, entities: int = 6, per_entity: int = 40) -> pd.DataFrame:
    """Readings of ``entities`` devices, shuffled; ``time`` orders them. ``level`` is continuous,
    ``restarts`` is zero nearly always."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "device": np.repeat([f"d{i}" for i in range(entities)], per_entity),
            "time": np.tile(np.arange(per_entity), entities),
            "level": rng.normal(50, 2, entities * per_entity).round(3),
            "restarts": rng.poisson(0.02, entities * per_entity).astype(float),
        }
    )
    return frame


def test_a_stuck_run_is_found_in_time_order_and_its_first_reading_kept() -> None:
    frame = _readings(9)
    frozen = (frame["device"] == "d2") & frame["time"].between(10, 21)  # 12 readings
    frame.loc[frozen, "level"] = frame.loc[frozen & (frame["time"] == 10), "level"].iloc[0]
    short = (frame["device"] == "d4") & frame["time"].between(3, 8)  # 6 readings: below STUCK_RUN
    frame.loc[short, "level"] = 1.0
    shuffled = frame.sample(frac=1.0, random_state=0).reset_index(drop=True)

    found = stuck_runs(shuffled, ["level", "restarts"], entity="device", order="time")

    assert len(found.runs) == 1
    run = found.runs[0]
    assert (run.entity, run.feature, len(run.repeats)) == ("d2", "level", 11)
    assert shuffled.loc[run.first, "time"] == 10
    assert sorted(shuffled.loc[run.repeats, "time"]) == list(range(11, 22))
    assert found.rows == sorted(run.repeats)
    assert found.checked == ["level"]
    assert found.skipped["restarts"].endswith("runs are its normal state")


def test_stuck_runs_errors_name_the_problem() -> None:
    frame = _readings(10)
    with pytest.raises(ValueError, match="column 'entity' is not in the data"):
        stuck_runs(frame, ["level"], entity="entity")
    with pytest.raises(ValueError, match="run must be at least 2 readings"):
        stuck_runs(frame, ["level"], entity="device", run=1)


def test_missing_values_are_counted_filled_and_mostly_empty_rows_quarantined() -> None:
    frame = pd.DataFrame(
        {
            "level": [1.0, np.nan, 3.0, np.nan, 5.0],
            "kind": ["u", "v", "", None, "v"],
            "band": ["b1", "b2", "b2", None, "b1"],
        }
    )

    found = missing_values(frame, [("level", "number"), ("kind", "category"), ("band", "category"), ("gone", "number")])

    assert found.counts == {"level": 2, "kind": 2, "band": 1, "gone": 5}
    assert found.rows["kind"] == [2, 3]
    assert found.fill == {"level": 3.0, "kind": "v", "band": "b1", "gone": None}
    assert found.quarantine == [3]  # four of its four features missing; row 1 misses two


# --- the whole pass ---------------------------------------------------------------------------


def _table(seed: int) -> tuple[pd.DataFrame, np.ndarray, list[int]]:
    """Six devices × 100 readings; the class follows ``level`` (< 50: low, else high) with a
    margin; 20 labels flipped; device d3's ``level`` frozen for readings 40-59; 10 gaps."""
    rng = np.random.default_rng(seed)
    n = 600
    level = np.where(rng.random(n) < 0.5, rng.normal(40, 2, n), rng.normal(60, 2, n))
    frame = pd.DataFrame(
        {
            "device": np.repeat([f"d{i}" for i in range(6)], 100),
            "time": np.tile(np.arange(100), 6),
            "level": level,
            "band": rng.choice(["b1", "b2"], n),
        }
    )
    labels = np.where(level < 50, "low", "high")
    flipped = sorted(rng.choice(np.flatnonzero(frame["device"] != "d3"), 20, replace=False).tolist())
    labels[flipped] = np.where(labels[flipped] == "low", "high", "low")
    stuck = (frame["device"] == "d3") & frame["time"].between(40, 59)
    frame.loc[stuck, "level"] = frame.loc[stuck, "level"].iloc[0]
    labels[stuck.to_numpy()] = labels[stuck.to_numpy()][0]  # the class follows the stuck value
    frame.loc[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "band"] = None
    return frame, labels, flipped


def test_clean_reports_every_step_in_the_callers_ids() -> None:
    frame, labels, flipped = _table(11)
    ids = [1000 + i for i in range(len(frame))]

    report = clean(frame, labels, [("level", "number"), ("band", "category")], ids=ids, entity="device", order="time")

    assert [s.step for s in report.steps] == list(cleaning.STEPS)
    stuck = report.ids("stuck")
    assert stuck == [1000 + 300 + t for t in range(41, 60)]  # d3's readings 41-59; reading 40 was real
    assert report.ids("missing", "impute") == [1001 + i for i in range(10)]
    assert report.imputed == {"band": 10} and set(report.fill) == {"band"}
    caught = set(report.ids("labels")) & {1000 + i for i in flipped}
    assert len(caught) >= 16
    assert set(report.quarantine) == set(stuck) | set(report.ids("labels"))
    assert report.step("outliers").quarantined == 0
    assert report.step("stuck").quarantined == 19


def test_clean_refuses_what_it_cannot_do() -> None:
    frame, labels, _ = _table(12)
    features = [("level", "number"), ("band", "category")]

    with pytest.raises(ValueError, match="the stuck step needs the entity column"):
        clean(frame, labels, features)
    with pytest.raises(ValueError, match=r"the stuck step reads columns \['ont'\], which the data lacks"):
        clean(frame, labels, features, entity="ont")
    with pytest.raises(ValueError, match=r"unknown cleaning steps \['dedupe'\]"):
        clean(frame, labels, features, steps=("dedupe",))
    with pytest.raises(ValueError, match="ids must be unique"):
        clean(frame, labels, features, ids=[0] * len(frame), steps=("missing",))
    with pytest.raises(ValueError, match="pass vectors= for 'query'"):
        clean(frame.assign(query="x"), labels, [("query", "text")], steps=("labels",))
    with pytest.raises(ValueError, match=r"feature kinds must be .* not \['level \(float\)'\]"):
        clean(frame, labels, [("level", "float")], steps=("missing",))
