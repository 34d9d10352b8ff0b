from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.drift import (
    FeatureKind,
    categorical_drift,
    counter_features,
    feature_drift,
    numeric_drift,
    population_stability_index,
    prediction_drift,
    prior_drift,
)


def _normal_pair(shift: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(42)
    return rng.normal(0.0, 1.0, n), rng.normal(shift, 1.0, n)


def test_known_numeric_shift_is_flagged_with_pinned_values() -> None:
    reference, current = _normal_pair(0.5, 2000)

    result = numeric_drift(reference, current, feature="rx_power")

    assert result.drifted
    assert (result.feature, result.kind, result.test) == ("rx_power", "number", "ks")
    assert round(result.statistic, 4) == 0.2355
    assert round(result.psi, 4) == 0.3347
    assert round(result.jensen_shannon, 4) == 0.2394
    assert result.p_value < 1e-40
    assert (result.n_reference, result.n_current) == (2000, 2000)


def test_no_shift_is_not_flagged() -> None:
    reference, current = _normal_pair(0.0, 2000)

    result = numeric_drift(reference, current)

    assert not result.drifted
    assert round(result.statistic, 4) == 0.041
    assert round(result.psi, 4) == 0.0111
    assert round(result.jensen_shannon, 4) == 0.0448
    assert result.p_value > 0.01


def test_tiny_shift_on_a_huge_window_is_significant_but_below_the_psi_floor() -> None:
    reference, current = _normal_pair(0.02, 200_000)

    result = numeric_drift(reference, current)

    assert result.p_value < 0.01
    assert round(result.psi, 4) == 0.0006
    assert not result.drifted


def test_values_outside_a_constant_reference_count_as_a_shift() -> None:
    # A counter that was always 0 and starts moving after a firmware release.
    result = numeric_drift(np.zeros(100), np.arange(100.0))

    assert result.drifted
    assert result.psi > 1


def test_categorical_shift_is_flagged_with_pinned_chi2() -> None:
    rng = np.random.default_rng(42)
    models = ["HG8245H", "F670L", "G-240W"]
    reference = rng.choice(models, 1000, p=[0.6, 0.3, 0.1])
    current = rng.choice([*models, "XS-010X"], 1000, p=[0.35, 0.3, 0.1, 0.25])

    result = categorical_drift(reference, current, feature="device_model")

    assert result.drifted
    assert (result.kind, result.test) == ("category", "chi2")
    assert round(result.statistic, 4) == 339.5338
    assert round(result.psi, 4) == 2.2547
    assert round(result.jensen_shannon, 4) == 0.4


def test_categorical_without_change_is_not_flagged() -> None:
    result = categorical_drift(["a", "b"] * 50, ["b", "a"] * 50)

    assert (result.statistic, result.p_value, result.psi) == (0.0, 1.0, 0.0)
    assert not result.drifted


def test_psi_definition() -> None:
    # sum((c - r) * ln(c / r)), an empty bin counted as 1e-4.
    expected = (0.6 - 0.5) * np.log(0.6 / 0.5) + (0.4 - 0.5) * np.log(0.4 / 0.5)
    assert population_stability_index([0.5, 0.5], [0.6, 0.4]) == pytest.approx(expected)
    assert population_stability_index([1.0, 0.0], [1.0, 0.0]) == 0.0


def _frames(n: int, shift: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame(
        {
            "rx_power": rng.normal(-20.0, 1.5, n),
            "temperature": rng.normal(50.0, 4.0, n),
            "device_model": rng.choice(["HG8245H", "F670L"], n),
        }
    )
    current = pd.DataFrame(
        {
            "rx_power": rng.normal(-20.0 - shift, 1.5, n),
            "temperature": rng.normal(50.0, 4.0, n),
            "device_model": rng.choice(["HG8245H", "F670L"], n),
        }
    )
    return reference, current


FEATURES: list[tuple[str, FeatureKind]] = [
    ("rx_power", "number"),
    ("temperature", "number"),
    ("device_model", "category"),
]


def test_feature_drift_reports_only_the_shifted_feature() -> None:
    reference, current = _frames(1000, 2.0)

    report = feature_drift(reference, current, FEATURES)

    assert report.enough_data
    assert report.drifted == ["rx_power"]
    assert [f.feature for f in report.features] == [
        "rx_power",
        "temperature",
        "device_model",
    ]
    assert (report.n_reference, report.n_current) == (1000, 1000)


def test_feature_drift_applies_bonferroni() -> None:
    reference, current = _frames(1000, 0.0)

    report = feature_drift(reference, current, FEATURES)

    for result in report.features:
        assert result.p_value_adjusted == min(1.0, result.p_value * 3)


def test_not_enough_data_is_reported_not_raised() -> None:
    reference, current = _frames(1000, 2.0)

    report = feature_drift(reference, current.head(29), FEATURES, min_samples=30)

    assert not report.enough_data
    assert report.features == [] and report.drifted == [] and report.untested == []
    assert (report.n_reference, report.n_current) == (1000, 29)


def test_feature_with_too_few_values_is_left_untested() -> None:
    reference, current = _frames(100, 2.0)
    current.loc[current.index[5:], "temperature"] = np.nan

    report = feature_drift(reference, current, FEATURES)

    assert report.untested == ["temperature"]
    assert [f.feature for f in report.features] == ["rx_power", "device_model"]
    assert report.features[0].p_value_adjusted == min(1.0, report.features[0].p_value * 2)
    assert report.drifted == ["rx_power"]


def test_unknown_feature_is_refused_by_name() -> None:
    reference, current = _frames(100, 0.0)

    with pytest.raises(ValueError, match="feature 'snr' is not a column"):
        feature_drift(reference, current, [("snr", "number")])


def test_non_numeric_value_in_number_feature_is_refused_by_name() -> None:
    reference, current = _frames(100, 0.0)
    current["rx_power"] = current["rx_power"].astype(object)
    current.loc[7, "rx_power"] = "n/a"

    with pytest.raises(ValueError, match=r"feature 'rx_power' must be a number, got 'n/a'"):
        feature_drift(reference, current, FEATURES)


def test_unknown_kind_is_refused() -> None:
    reference, current = _frames(100, 0.0)

    with pytest.raises(ValueError, match="feature 'rx_power' has kind 'text'"):
        feature_drift(reference, current, [("rx_power", "text")])  # type: ignore[list-item]


def test_empty_side_is_refused() -> None:
    with pytest.raises(ValueError, match="feature 'x' has no current values"):
        numeric_drift([1.0, 2.0], [np.nan], feature="x")


def test_jensen_shannon_is_zero_for_identical_and_one_for_disjoint_categories() -> None:
    same = categorical_drift(["a", "b"] * 50, ["b", "a"] * 50)
    disjoint = categorical_drift(["a", "b"] * 50, ["c", "d"] * 50)

    assert same.jensen_shannon == 0.0
    assert disjoint.jensen_shannon == pytest.approx(1.0)


def test_constant_on_both_sides_at_the_same_value_is_not_drift_and_says_so() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no scipy warning either
        result = numeric_drift(np.full(100, 3.3), np.full(80, 3.3), feature="supply_voltage")

    assert not result.drifted
    assert (result.statistic, result.p_value, result.psi, result.jensen_shannon) == (0.0, 1.0, 0.0, 0.0)
    assert result.note == "constant on both sides"


@pytest.mark.parametrize("new_value", [2.0, 4.0])
def test_a_constant_that_moves_to_another_constant_is_drift(new_value: float) -> None:
    # Below the old value as well as above it: a lone reference value gets its own bin.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = numeric_drift(np.full(100, 3.0), np.full(100, new_value))

    assert result.drifted
    assert (result.statistic, result.p_value) == (1.0, 0.0)
    assert round(result.psi, 4) == 18.4188
    assert result.jensen_shannon == 1.0
    assert result.note == f"constant on both sides, at different values (3.0 then {new_value})"


def test_a_constant_reference_with_a_moving_current_is_drift_and_says_which_side() -> None:
    result = numeric_drift(np.zeros(100), np.arange(100.0))

    assert result.drifted
    assert round(result.statistic, 2) == 0.99
    assert round(result.psi, 4) == 13.6665
    assert round(result.jensen_shannon, 4) == 0.9796
    assert result.note == "constant in the reference only"


def test_a_current_window_stuck_at_one_value_is_drift() -> None:
    # A sensor that freezes at its last reading.
    result = numeric_drift(np.arange(100.0), np.full(100, 50.0))

    assert result.drifted
    assert result.statistic == 0.5
    assert round(result.psi, 4) == 8.2831
    assert result.note == "constant in the current window only"


def test_one_category_on_both_sides() -> None:
    same = categorical_drift(["O5"] * 40, ["O5"] * 40, feature="pon_state")
    moved = categorical_drift(["O5"] * 40, ["O1"] * 40, feature="pon_state")

    assert not same.drifted and same.note == "one category on both sides"
    assert moved.drifted and moved.note == "one category on both sides, a different one ('O5' then 'O1')"
    assert moved.jensen_shannon == 1.0


def test_constant_feature_in_a_report_is_tested_and_not_flagged() -> None:
    reference, current = _frames(200, 2.0)
    reference["supply_voltage"] = 3.3
    current["supply_voltage"] = 3.3

    report = feature_drift(reference, current, [*FEATURES, ("supply_voltage", "number")])

    voltage = report.features[-1]
    assert (voltage.feature, voltage.drifted, voltage.p_value_adjusted) == ("supply_voltage", False, 1.0)
    assert voltage.note == "constant on both sides"
    assert report.drifted == ["rx_power"]


def test_prediction_drift_is_categorical_drift_under_the_name_prediction() -> None:
    rng = np.random.default_rng(5)
    reference = rng.choice(["online", "offline"], 1000, p=[0.9, 0.1])
    current = rng.choice(["online", "offline"], 1000, p=[0.7, 0.3])

    result = prediction_drift(reference, current, classes=["online", "offline"])

    plain = categorical_drift(reference, current, feature="prediction")
    assert result == plain
    assert (result.feature, result.kind, result.drifted) == ("prediction", "category", True)


def test_prior_drift_on_unchanged_priors_is_not_flagged() -> None:
    reference = [0] * 60 + [1] * 40
    current = [1] * 41 + [0] * 59 + [np.nan] * 5  # unlabelled events are dropped

    result = prior_drift(reference, current, classes=[0, 1])

    assert (result.feature, result.drifted, result.n_current) == ("label", False, 100)
    assert round(result.p_value, 4) == 0.8855


def test_prior_drift_flags_label_shift() -> None:
    result = prior_drift([0] * 80 + [1] * 20, [0] * 50 + [1] * 50)

    assert result.drifted
    assert round(result.statistic, 4) == 19.7802
    assert round(result.psi, 4) == 0.4159


def test_label_outside_the_classes_is_refused_by_value() -> None:
    with pytest.raises(ValueError, match=r"label 2 in current row 3 is not one of the classes \[0, 1\]"):
        prior_drift([0, 1, 0, 1], [0, 1, 1, 2], classes=[0, 1])


def test_prediction_outside_the_classes_is_refused_by_value() -> None:
    with pytest.raises(ValueError, match=r"prediction 'c' in reference row 1 is not one of the classes"):
        prediction_drift(["a", "c"], ["a", "b"], classes=["a", "b"])


def test_empty_current_window_with_the_columns_is_not_enough_data() -> None:
    reference, _ = _frames(100, 0.0)
    empty = pd.DataFrame({"rx_power": [], "temperature": [], "device_model": []})

    report = feature_drift(reference, empty, FEATURES)

    assert not report.enough_data
    assert (report.n_reference, report.n_current) == (100, 0)
    assert report.features == [] and report.drifted == []


def test_empty_frame_without_columns_is_refused_by_the_missing_column() -> None:
    reference, _ = _frames(100, 0.0)

    with pytest.raises(ValueError, match="feature 'rx_power' is not a column of the current data"):
        feature_drift(reference, pd.DataFrame(), FEATURES)


def _fleet(hours: int, *, start_hour: int = 0, seed: int = 0, rx_shift: float = 0.0) -> pd.DataFrame:
    """60 devices read every hour: an uptime that only grows (a reboot now and then), a signal."""
    rng = np.random.default_rng(seed)
    rows = []
    for device in range(60):
        uptime = rng.uniform(0, 500) + start_hour
        for h in range(start_hour, start_hour + hours):
            uptime = 0.0 if rng.random() < 0.01 else uptime + 1.0
            rows.append(
                {
                    "entity": f"d{device}",
                    "time": pd.Timestamp("2026-01-01", tz="UTC") + pd.Timedelta(hours=h),
                    "uptime_hours": uptime,
                    "rx": rng.normal(-20 + rx_shift, 1.0),
                }
            )
    return pd.DataFrame(rows)


def test_a_counter_that_only_grows_is_not_drift_but_what_it_adds_is_tested():
    reference, later = _fleet(24, seed=1), _fleet(12, start_hour=24 * 30, seed=2)
    features = [("uptime_hours", "number"), ("rx", "number")]
    assert counter_features(reference, features) == ["uptime_hours"]
    # A month later every uptime is larger: its level would read as drift at every check.
    assert feature_drift(reference, later, features).drifted == ["uptime_hours"]
    report = feature_drift(reference, later, features, counters=["uptime_hours"])
    assert report.drifted == []
    # What it adds per hour is still watched: devices that reboot every other hour drift.
    rebooting = later.assign(uptime_hours=np.where(later.index % 2 == 0, 0.0, 1.0))
    assert feature_drift(reference, rebooting, features, counters=["uptime_hours"]).drifted == ["uptime_hours"]
    # A signal that moved is drift, counter or not beside it.
    moved = _fleet(12, start_hour=24 * 30, seed=2, rx_shift=-4)
    assert feature_drift(reference, moved, features, counters=["uptime_hours"]).drifted == ["rx"]
    # Without entities read more than once, nothing can be a counter.
    assert counter_features(reference.assign(entity=range(len(reference))), features) == []
