"""river's drift benchmarks as tables: seeded output pinned, and the drifts where they are said to be."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from driftpilot.scenarios.synthetic import (
    SYNTHETIC_STREAMS,
    SyntheticConfig,
    abrupt_width,
    describe,
    synthetic_frame,
)

SMALL = SyntheticConfig(n_rows=3000, seed=4)  # changes at rows 1,000 and 2,000


def _agrees(frame: pd.DataFrame, rule: pd.Series) -> float:
    """Share of rows whose label is what ``rule`` (a boolean per row) says."""
    return float((rule.astype(int).astype(str) == frame["y"]).mean())


def _sea_rule(frame: pd.DataFrame, threshold: float) -> pd.Series:
    return frame["x0"] + frame["x1"] > threshold


def _agrawal_rule(frame: pd.DataFrame, function: int) -> pd.Series:
    """Agrawal et al.'s classification functions 0, 2 and 6, as river numbers them."""
    age = frame["age"]
    elevel = frame["elevel"].str.removeprefix("elevel_").astype(int)
    if function == 0:
        return (age < 40) | (age >= 60)
    if function == 2:
        young = (age < 40) & elevel.isin([0, 1])
        middle = (age >= 40) & (age < 60) & elevel.isin([1, 2, 3])
        old = (age >= 60) & elevel.isin([2, 3, 4])
        return young | middle | old
    disposable = 2 * (frame["salary"] + frame["commission"]) / 3 - frame["loan"] / 5 - 20000
    return ~(disposable > 1)


def test_every_stream_has_identifier_columns_and_text_labels():
    config = SyntheticConfig(n_rows=300, seed=2)

    frames = {name: synthetic_frame(name, config) for name in SYNTHETIC_STREAMS}

    xs = [f"x{i}" for i in range(10)]
    agrawal = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan", "y"]
    assert {name: list(f.columns) for name, f in frames.items()} == {
        "sea_abrupt": ["x0", "x1", "x2", "y"],
        "sea_gradual": ["x0", "x1", "x2", "y"],
        "agrawal_abrupt": agrawal,
        "agrawal_gradual": agrawal,
        "rbf_drift": [*xs, "y"],
        "hyperplane": [*xs, "y"],
        "stationary": ["x0", "x1", "x2", "y"],
        "slow_drift": ["time", *agrawal],
    }
    assert {name: f["y"].value_counts().to_dict() for name, f in frames.items()} == {
        "sea_abrupt": {"1": 185, "0": 115},
        "sea_gradual": {"1": 189, "0": 111},
        "agrawal_abrupt": {"1": 159, "0": 141},
        "agrawal_gradual": {"1": 171, "0": 129},
        "rbf_drift": {"0": 137, "2": 91, "1": 72},
        "hyperplane": {"1": 152, "0": 148},
        "stationary": {"1": 185, "0": 115},
        "slow_drift": {"1": 176, "0": 124},
    }
    assert all(len(f) == 300 and not f.isna().any().any() for f in frames.values())


def test_agrawal_categories_are_written_as_prefixed_text():
    frame = synthetic_frame("agrawal_abrupt", SMALL)

    assert frame.iloc[7].tolist() == [
        120741.5512,
        0.0,
        31,
        "elevel_0",
        "car_2",
        "zipcode_3",
        677250.8182,
        10,
        272890.0872,
        "1",
    ]
    assert set(frame["elevel"]) == {f"elevel_{i}" for i in range(5)}
    assert set(frame["car"]) == {f"car_{i}" for i in range(1, 21)}
    assert set(frame["zipcode"]) == {f"zipcode_{i}" for i in range(9)}


def test_seeded_stream_is_pinned_and_repeatable():
    frame = synthetic_frame("sea_abrupt", SMALL)
    again = synthetic_frame("sea_abrupt", SMALL)
    other = synthetic_frame("sea_abrupt", SyntheticConfig(n_rows=3000, seed=5))

    assert frame["y"].value_counts().to_dict() == {"1": 1823, "0": 1177}
    assert frame.iloc[1234].tolist() == [4.4187, 7.7261, 0.5929, "1"]
    pd.testing.assert_frame_equal(frame, again)
    assert not frame.equals(other)


def test_sea_abrupt_threshold_changes_at_the_change_points():
    frame = synthetic_frame("sea_abrupt", SMALL)
    margin = abrupt_width(1000)  # river's narrowest transition at this position
    phases = [frame.iloc[: 1000 - margin], frame.iloc[1000 + margin : 2000 - margin], frame.iloc[2000 + margin :]]

    agreement = [[round(_agrees(p, _sea_rule(p, t)), 3) for t in (8, 9.5, 7)] for p in phases]

    # Each phase follows its own threshold (up to the 10 % label noise), not the others'.
    assert agreement == [[0.892, 0.799, 0.821], [0.786, 0.901, 0.727], [0.828, 0.735, 0.883]]


def test_sea_gradual_moves_over_the_transition_width():
    config = SyntheticConfig(n_rows=30_000, seed=1)
    frame = synthetic_frame("sea_gradual", config)
    # Rows the thresholds 8 and 9.5 disagree on: positive under the old concept, negative under the new.
    total = frame["x0"] + frame["x1"]
    between = frame[(total > 8) & (total <= 9.5)]
    positive = (between["y"] == "1").groupby(between.index // 1000).mean()

    # Old concept before the transition, new after it, and a mixture in between.
    assert positive[5] > 0.85 and positive[14] < 0.15
    assert 0.25 < positive[9] < 0.75
    assert positive[7] > positive[9] > positive[11]


def test_agrawal_abrupt_follows_each_rule_exactly_between_changes():
    frame = synthetic_frame("agrawal_abrupt", SMALL)
    margin = abrupt_width(1000)
    phases = [frame.iloc[: 1000 - margin], frame.iloc[1000 + margin : 2000 - margin], frame.iloc[2000 + margin :]]

    agreement = [[round(_agrees(p, _agrawal_rule(p, f)), 3) for f in (0, 2, 6)] for p in phases]

    # No label noise in Agrawal: the rule in force explains every label.
    assert [row[i] for i, row in enumerate(agreement)] == [1.0, 1.0, 1.0]
    assert max(row[j] for i, row in enumerate(agreement) for j in range(3) if j != i) < 0.75


def _nearest_neighbour_accuracy(train: pd.DataFrame, test: pd.DataFrame) -> float:
    features = [c for c in train.columns if c != "y"]
    a, b = train[features].to_numpy(), test[features].to_numpy()
    distances = ((b[:, None, :] - a[None, :, :]) ** 2).sum(axis=2)
    predicted = train["y"].to_numpy()[distances.argmin(axis=1)]
    return float((predicted == test["y"].to_numpy()).mean())


def test_rbf_centroids_move_then_return():
    frame = synthetic_frame("rbf_drift", SyntheticConfig(n_rows=6000, seed=3))  # changes at 2,000 and 4,000
    reference = frame.iloc[:1500]

    still = _nearest_neighbour_accuracy(reference, frame.iloc[1500:2000])
    moved = _nearest_neighbour_accuracy(reference, frame.iloc[3500:4000])
    back = _nearest_neighbour_accuracy(reference, frame.iloc[4200:4700])

    assert still > 0.8 and back > 0.8
    assert moved < still - 0.3


def test_hyperplane_drifts_incrementally():
    frame = synthetic_frame("hyperplane", SyntheticConfig(n_rows=6000, seed=3))
    features = [f"x{i}" for i in range(10)]

    def accuracy(rows: pd.DataFrame, weights: np.ndarray) -> float:
        inputs = np.c_[rows[features].to_numpy(), np.ones(len(rows))]
        return float(((inputs @ weights > 0).astype(int).astype(str) == rows["y"].to_numpy()).mean())

    start = frame.iloc[:1000]
    weights = np.linalg.lstsq(
        np.c_[start[features].to_numpy(), np.ones(len(start))], np.where(start["y"] == "1", 1.0, -1.0), rcond=None
    )[0]
    scores = [accuracy(frame.iloc[i : i + 1000], weights) for i in range(1000, 6000, 1000)]

    assert scores[0] > 0.85
    assert scores[-1] < scores[0] - 0.1


def test_unknown_stream_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match="unknown synthetic stream 'sea'; known: sea_abrupt, sea_gradual"):
        synthetic_frame("sea")


def test_descriptions_name_the_change_points():
    config = SyntheticConfig(n_rows=3000)

    assert describe("agrawal_gradual", config).endswith("gradual around rows 1,000 and 2,000 (width 400)")
    assert "no change points" in describe("hyperplane", config)


def test_stationary_keeps_one_concept_and_its_class_balance():
    frame = synthetic_frame("stationary", SyntheticConfig(n_rows=10_000, seed=4))
    thirds = [frame.iloc[:3333], frame.iloc[3333:6666], frame.iloc[6666:]]

    positive = (frame["y"] == "1").groupby(frame.index // 1000).mean()
    agreement = [_agrees(p, _sea_rule(p, 8)) for p in thirds]

    # The same share of positives in every tenth (1,000 rows: about 0.015 by chance alone) ...
    assert (positive - (frame["y"] == "1").mean()).abs().max() < 0.05
    # ... and the threshold 8 throughout, up to the 10 % label noise.
    assert all(0.87 < a < 0.93 for a in agreement)


def test_slow_drift_is_agrawal_with_a_row_every_30_minutes():
    frame = synthetic_frame("slow_drift", SMALL)  # changes at rows 1,000 (abrupt) and 2,000 (gradual, 400 rows)
    margin = abrupt_width(1000)
    # The gradual change's sigmoid reaches 2 % of rows 400 rows before its middle, 98 % 400 after.
    phases = [frame.iloc[: 1000 - margin], frame.iloc[1000 + margin : 1400], frame.iloc[2600:]]

    times = pd.to_datetime(frame["time"], utc=True)
    agreement = [round(_agrees(p, _agrawal_rule(p, f)), 3) for p, f in zip(phases, (0, 2, 6), strict=True)]

    assert frame.columns[0] == "time"
    assert (frame["time"].iloc[0], frame["time"].iloc[-1]) == ("2025-01-01T00:00:00+00:00", "2025-03-04T11:30:00+00:00")
    assert set(times.diff().dropna()) == {pd.Timedelta(minutes=30)}
    assert agreement[:2] == [1.0, 1.0]
    assert agreement[2] > 0.97  # the tail of the gradual change's sigmoid
    assert describe("slow_drift", SMALL).startswith("Agrawal loan applicants, one every 30 minutes (62 days)")
