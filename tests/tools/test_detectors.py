from __future__ import annotations

import numpy as np
import pytest

from driftpilot.tools.detectors import (
    PEER_DETECTORS,
    ErrorRateMonitor,
    degradation_points,
    error_rate_change,
)


def _step(before: float, after: float, *, at: int = 2000, n: int = 4000, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(at) < before, rng.random(n - at) < after]).astype(int)


def _run(errors: np.ndarray, **params: float) -> ErrorRateMonitor:
    monitor = ErrorRateMonitor(**params)  # type: ignore[arg-type]
    for error in errors:
        monitor.update(int(error))
    return monitor


def test_a_step_from_ten_to_thirty_percent_is_found_40_rows_after_it() -> None:
    errors = _step(0.1, 0.3)

    monitor = _run(errors)

    assert monitor.findings == [2039]
    finding = monitor.details[0]
    assert finding.window == 50
    assert round(finding.rate_before, 4) == 0.0925
    assert finding.rate_recent == 0.32
    assert finding.p_value < monitor.alpha


def test_a_stationary_stream_of_20000_rows_raises_no_finding() -> None:
    errors = (np.random.default_rng(42).random(20_000) < 0.1).astype(int)

    monitor = _run(errors)

    assert monitor.findings == []


def test_a_fall_in_error_raises_no_finding_and_becomes_the_reference() -> None:
    errors = _step(0.3, 0.1)

    monitor = _run(errors)

    assert monitor.findings == []
    assert monitor.reference_rate() == pytest.approx(errors[2000:].mean())


def test_a_rise_after_a_fall_is_measured_from_the_new_level() -> None:
    rng = np.random.default_rng(42)
    # 30 % -> 10 % (a retrain) -> 20 %: 20 % is still below the first level.
    errors = np.concatenate([rng.random(2000) < 0.3, rng.random(2000) < 0.1, rng.random(2000) < 0.2]).astype(int)

    monitor = _run(errors)

    assert monitor.findings == [4229]


def test_one_drift_raises_one_finding_also_when_it_rises_in_stages() -> None:
    rng = np.random.default_rng(42)
    before = rng.random(2000) < 0.1
    stages = [rng.random(300) < rate for rate in (0.15, 0.2, 0.25, 0.3)]
    errors = np.concatenate([before, *stages, rng.random(2000) < 0.35]).astype(int)

    monitor = _run(errors)

    assert monitor.findings == [2199]


def test_one_gradual_drift_raises_one_finding() -> None:
    rng = np.random.default_rng(42)
    rows = np.arange(8000)
    rate = 0.05 + 0.25 / (1 + np.exp(-4 * (rows - 4000) / 1000))
    errors = (rng.random(8000) < rate).astype(int)

    monitor = _run(errors)

    assert monitor.findings == [3839]


def test_alpha_is_the_budget_over_the_tests_in_10000_rows() -> None:
    monitor = ErrorRateMonitor(false_alarms_per_10k=1.0, windows=(50, 100), check_every=10)

    # Both windows are tested every 10 rows (50 // 5 and 100 // 5 round to 10 and 20).
    assert monitor.alpha == pytest.approx(1.0 / (1000 + 500))


@pytest.mark.parametrize(
    ("detector", "expected"),
    [("adwin", [2079]), ("page_hinkley", [2208]), ("kswin", []), ("ddm", [2500])],
)
def test_degradation_points_of_each_peer_on_a_seeded_step(detector: str, expected: list[int]) -> None:
    assert degradation_points(_step(0.1, 0.3), detector) == expected


@pytest.mark.parametrize(
    ("detector", "expected"),
    [("adwin", [2047]), ("page_hinkley", [2079]), ("kswin", [2019]), ("ddm", [2169])],
)
def test_degradation_points_of_each_peer_on_a_large_step(detector: str, expected: list[int]) -> None:
    assert degradation_points(_step(0.1, 0.6), detector) == expected


@pytest.mark.parametrize("detector", PEER_DETECTORS)
def test_no_peer_reports_a_fall_as_a_degradation(detector: str) -> None:
    assert degradation_points(_step(0.6, 0.1), detector) == []


@pytest.mark.parametrize(
    ("errors", "message"),
    [
        ([0, 1, 2], "must be 0 or 1"),
        ([0.0, float("nan"), 1.0], "NaN"),
        (["0", "1"], "must be numbers"),
        ([[0, 1], [1, 0]], "one-dimensional"),
    ],
)
def test_bad_errors_are_refused_with_the_problem_named(errors: list[object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        degradation_points(errors, "adwin")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        error_rate_change(errors)  # type: ignore[arg-type]


def test_an_empty_window_is_not_enough_data_for_a_check_but_no_stream_for_a_detector() -> None:
    change = error_rate_change([])

    assert (change.enough_data, change.changed, change.n) == (False, False, 0)
    with pytest.raises(ValueError, match="empty"):
        degradation_points([], "adwin")


def test_an_unknown_detector_is_refused_with_the_known_ones_listed() -> None:
    with pytest.raises(ValueError, match="unknown detector 'cusum': choose one of adwin, page_hinkley, kswin, ddm"):
        degradation_points([0, 1, 0], "cusum")


def test_the_monitor_refuses_a_value_other_than_0_or_1() -> None:
    monitor = ErrorRateMonitor()
    monitor.update(1)

    with pytest.raises(ValueError, match="got 2 at row 1"):
        monitor.update(2)  # type: ignore[arg-type]


def test_error_rate_change_reports_the_rise_and_the_peers() -> None:
    change = error_rate_change(_step(0.1, 0.3))

    assert (change.enough_data, change.changed, change.position, change.n) == (True, True, 2039, 4000)
    assert (round(change.rate_before, 4), round(change.rate_after, 4)) == (0.0925, 0.3100)  # type: ignore[arg-type]
    assert change.peers == {"adwin": [2079], "page_hinkley": [2208], "kswin": [], "ddm": [2500]}


def test_error_rate_change_on_a_stationary_window_is_unchanged() -> None:
    errors = (np.random.default_rng(42).random(5000) < 0.1).astype(int)

    change = error_rate_change(errors)

    assert (change.enough_data, change.changed, change.position, change.rate_before) == (True, False, None, None)


def test_error_rate_change_with_too_few_rows_says_so_instead_of_testing() -> None:
    change = error_rate_change(_step(0.1, 0.3)[:399])

    assert (change.enough_data, change.changed, change.n, change.peers) == (False, False, 399, {})
