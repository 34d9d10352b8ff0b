from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from river import drift
from river.base import BinaryDriftDetector
from scipy import stats

from driftpilot.tools import detectors
from driftpilot.tools.detectors import ErrorRateMonitor, error_rate_change


def _peer_detectors() -> ModuleType:
    # evals/ is a folder of scripts, not a package on the path: load the drift bench's peers by file.
    path = Path(__file__).resolve().parents[2] / "evals" / "peer_detectors.py"
    spec = importlib.util.spec_from_file_location("peer_detectors", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


peers = _peer_detectors()
PEER_DETECTORS: tuple[str, ...] = peers.PEER_DETECTORS
degradation_points: Callable[..., list[int]] = peers.degradation_points


def _step(before: float, after: float, *, at: int = 2000, n: int = 4000, seed: int = 42) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.random(at) < before, rng.random(n - at) < after]).astype(int)


def _run(errors: np.ndarray, monitor: ErrorRateMonitor | None = None, **params: float) -> ErrorRateMonitor:
    monitor = monitor if monitor is not None else ErrorRateMonitor(**params)  # type: ignore[arg-type]
    for error in errors:
        monitor.update(int(error))
    return monitor


def test_update_returns_the_monitor_and_drift_detected_is_true_only_right_after_the_finding() -> None:
    errors = _step(0.1, 0.3)
    monitor = ErrorRateMonitor()

    returned = [monitor.update(int(error)) for error in errors[:2039]]
    assert all(r is monitor for r in returned)
    assert monitor.drift_detected is False and monitor.last_finding is None
    monitor.update(int(errors[2039]))
    at_the_drift = (monitor.drift_detected, monitor.findings)
    monitor.update(int(errors[2040]))

    assert at_the_drift == (True, [2039])
    assert monitor.drift_detected is False
    assert monitor.last_finding is not None and monitor.last_finding.position == 2039


def test_drift_detected_is_read_only_and_reset_forgets_every_row() -> None:
    monitor = _run(_step(0.1, 0.3)[:2040])
    assert monitor.drift_detected is True

    with pytest.raises(AttributeError):
        monitor.drift_detected = False  # type: ignore[misc]
    monitor._reset()

    assert (monitor.drift_detected, monitor.n, monitor.findings, monitor.last_finding) == (False, 0, [], None)
    assert monitor.reference_rate() is None
    # After the reset the same stream gives the same finding: nothing of the first run is left.
    assert _run(_step(0.1, 0.3), monitor=monitor).findings == [2039]


def test_the_monitor_is_a_river_binary_drift_detector_with_its_parameters_kept() -> None:
    monitor = ErrorRateMonitor(false_alarms_per_10k=2.0, cooldown=500)

    assert isinstance(monitor, BinaryDriftDetector)
    assert (monitor.false_alarms_per_10k, monitor.cooldown, monitor.min_rise) == (2.0, 500, 0.02)
    clone = monitor.clone()
    assert (clone.false_alarms_per_10k, clone.cooldown, clone.windows) == (2.0, 500, monitor.windows)


def test_findings_and_details_cannot_be_changed_from_outside() -> None:
    monitor = _run(_step(0.1, 0.3))

    monitor.findings.append(7)
    monitor.details.clear()

    assert monitor.findings == [2039] and len(monitor.details) == 1


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
        degradation_points(errors, "adwin")
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
        monitor.update(2)


def test_error_rate_change_reports_the_rise_and_runs_no_peer() -> None:
    change = error_rate_change(_step(0.1, 0.3))

    assert (change.enough_data, change.changed, change.position, change.n) == (True, True, 2039, 4000)
    assert (round(change.rate_before, 4), round(change.rate_after, 4)) == (0.0925, 0.3100)  # type: ignore[arg-type]
    assert change.findings == [2039]
    # river's detectors are the drift bench's peers (their points on this step are pinned above),
    # not evidence of a check.
    assert not hasattr(change, "peers")


def test_error_rate_change_on_a_stationary_window_is_unchanged() -> None:
    errors = (np.random.default_rng(42).random(5000) < 0.1).astype(int)

    change = error_rate_change(errors)

    assert (change.enough_data, change.changed, change.position, change.rate_before) == (True, False, None, None)


def test_error_rate_change_with_too_few_rows_says_so_instead_of_testing() -> None:
    change = error_rate_change(_step(0.1, 0.3)[:399])

    assert (change.enough_data, change.changed, change.n) == (False, False, 399)


def test_bad_errors_are_refused_with_the_value_and_row_named() -> None:
    with pytest.raises(ValueError, match=r"got 2 at row 2$"):
        detectors.as_errors(np.array([0, 1, 2]))


def test_binary_kswin_detects_where_rivers_kswin_does() -> None:
    rng = np.random.default_rng(42)
    stream = np.concatenate([rng.random(400) < 0.1, rng.random(400) < 0.6, rng.random(400) < 0.1]).astype(int)

    def detections(detector: drift.KSWIN) -> list[int]:
        rows = []
        for row, error in enumerate(stream.tolist()):
            detector.update(error)
            if detector.drift_detected:
                rows.append(row)
        return rows

    ours = detections(peers.BinaryKSWIN(seed=0))

    assert ours == detections(drift.KSWIN(seed=0))
    assert len(ours) >= 2  # the rise and the fall at least: the comparison is not vacuous


def test_importing_and_running_the_detectors_leaves_river_kswin_untouched() -> None:
    # This module imported driftpilot.tools.detectors; run the monitor and the peers, KSWIN among them.
    error_rate_change(_step(0.1, 0.3))
    degradation_points(_step(0.1, 0.6), "kswin")

    assert drift.kswin.stats is stats
    assert not any(value is drift.kswin for value in vars(detectors).values())
    assert not any(value is drift.kswin for value in vars(peers).values())


def test_the_peers_kswin_does_not_go_through_rivers_module(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoKS:
        def __getattr__(self, name: str) -> object:
            raise AssertionError(f"river.drift.kswin.stats.{name} was used")

    monkeypatch.setattr(drift.kswin, "stats", NoKS())

    assert degradation_points(_step(0.1, 0.6), "kswin") == [2019]
