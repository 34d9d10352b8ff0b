from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.drift import FeatureKind, feature_drift
from driftpilot.tools.multivariate import multivariate_drift

FEATURES: list[tuple[str, FeatureKind]] = [
    ("rx_power", "number"),
    ("bias_current", "number"),
    ("temperature", "number"),
    ("device_model", "category"),
]


def _rounded(value: float | None, digits: int) -> float:
    assert value is not None
    return round(value, digits)


def _window(correlation: float, n: int, seed: int) -> pd.DataFrame:
    """ONT readings whose rx power and bias current have the given correlation.

    Each feature's marginal (normal, same mean and spread) does not depend on it.
    """
    rng = np.random.default_rng(seed)
    covariance = correlation * 1.5 * 2.0
    values = rng.multivariate_normal([-20.0, 10.0], [[2.25, covariance], [covariance, 4.0]], n)
    return pd.DataFrame(
        {
            "rx_power": values[:, 0],
            "bias_current": values[:, 1],
            "temperature": rng.normal(50.0, 4.0, n),
            "device_model": rng.choice(["HG8245H", "F670L"], n),
        }
    )


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _window(0.8, 2000, seed=1)


def test_flipped_correlation_is_missed_per_feature_and_caught_jointly(reference: pd.DataFrame) -> None:
    current = _window(-0.8, 300, seed=2)

    univariate = feature_drift(reference, current, FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nannyml's and its dependencies' warnings are silenced
        result = multivariate_drift(reference, current, FEATURES)

    assert univariate.drifted == []
    assert result.enough_data and result.drifted
    assert _rounded(result.reconstruction_error, 4) == 1.4949
    assert (_rounded(result.lower_threshold, 4), _rounded(result.upper_threshold, 4)) == (0.809, 1.0715)
    assert (result.n_reference, result.n_current) == (2000, 300)
    assert (result.chunk_size, result.reference_chunks) == (200, 10)


def test_unchanged_correlation_is_not_flagged(reference: pd.DataFrame) -> None:
    result = multivariate_drift(reference, _window(0.8, 300, seed=3), FEATURES)

    assert result.enough_data and not result.drifted
    assert _rounded(result.reconstruction_error, 4) == 1.0028
    assert (_rounded(result.lower_threshold, 4), _rounded(result.upper_threshold, 4)) == (0.809, 1.0715)


def test_reference_chunks_match_the_current_window_when_the_reference_is_long(reference: pd.DataFrame) -> None:
    result = multivariate_drift(reference, _window(0.8, 100, seed=4), FEATURES)

    assert (result.chunk_size, result.reference_chunks) == (100, 20)
    assert not result.drifted


def test_too_few_current_rows_is_not_enough_data(reference: pd.DataFrame) -> None:
    result = multivariate_drift(reference, _window(-0.8, 49, seed=5), FEATURES, min_samples=50)

    assert not result.enough_data and not result.drifted
    assert (result.reconstruction_error, result.lower_threshold, result.upper_threshold) == (None, None, None)
    assert (result.n_reference, result.n_current) == (2000, 49)


def test_too_short_a_reference_is_not_enough_data() -> None:
    # Ten chunks of at least 50 rows are needed to set the thresholds.
    result = multivariate_drift(_window(0.8, 499, seed=6), _window(0.8, 300, seed=7), FEATURES)

    assert not result.enough_data


def test_empty_current_window_with_the_columns_is_not_enough_data(reference: pd.DataFrame) -> None:
    result = multivariate_drift(reference, reference.iloc[:0], FEATURES)

    assert not result.enough_data and result.n_current == 0


def test_empty_frame_without_columns_is_refused_by_the_missing_column(reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="feature 'rx_power' is not a column of the current data"):
        multivariate_drift(reference, pd.DataFrame(), FEATURES)


def test_a_single_feature_is_refused(reference: pd.DataFrame) -> None:
    with pytest.raises(ValueError, match="needs at least two features, got 1"):
        multivariate_drift(reference, reference, FEATURES[:1])


def test_text_in_a_number_feature_is_refused_by_name(reference: pd.DataFrame) -> None:
    current = _window(0.8, 300, seed=8)
    current["bias_current"] = current["bias_current"].astype(object)
    current.loc[12, "bias_current"] = "n/a"

    with pytest.raises(ValueError, match=r"feature 'bias_current' must be a number, got 'n/a' in current row 12"):
        multivariate_drift(reference, current, FEATURES)


def test_a_feature_without_any_value_is_refused_by_name(reference: pd.DataFrame) -> None:
    current = _window(0.8, 300, seed=9)
    current["temperature"] = np.nan

    with pytest.raises(ValueError, match="feature 'temperature' has no current values"):
        multivariate_drift(reference, current, FEATURES)


def test_a_constant_feature_does_not_break_the_reconstruction(reference: pd.DataFrame) -> None:
    constant_reference = reference.assign(supply_voltage=3.3)
    current = _window(0.8, 300, seed=10).assign(supply_voltage=3.3)

    result = multivariate_drift(constant_reference, current, [*FEATURES, ("supply_voltage", "number")])

    assert result.enough_data and not result.drifted
    assert result.reconstruction_error is not None and np.isfinite(result.reconstruction_error)


def test_integer_coded_categories_are_treated_as_categories(reference: pd.DataFrame) -> None:
    codes = {"HG8245H": 0, "F670L": 1}
    coded_reference = reference.assign(device_model=reference["device_model"].map(codes))
    current = _window(0.8, 300, seed=3)
    coded_current = current.assign(device_model=current["device_model"].map(codes))

    coded = multivariate_drift(coded_reference, coded_current, FEATURES)
    named = multivariate_drift(reference, current, FEATURES)

    assert coded.reconstruction_error == pytest.approx(named.reconstruction_error)
