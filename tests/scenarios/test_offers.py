"""The offers simulator: seeded output pinned, and its timeline of drifts visible in the data."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

from driftpilot.scenarios.offers import (
    CLASSES,
    COLUMNS,
    OFFER_CATEGORIES,
    OffersScenarioConfig,
    OffersSimulator,
    acceptance_rate,
)

CONFIG = OffersScenarioConfig(offers_per_day=100, seed=5)  # the full 120-day timeline, a tenth as dense


@pytest.fixture(scope="module")
def offers() -> pd.DataFrame:
    frame = OffersSimulator(CONFIG).frame()
    frame["day"] = (pd.to_datetime(frame["time"]) - pd.Timestamp(CONFIG.start)).dt.days
    return frame


def _rate(frame: pd.DataFrame, first_day: int, last_day: int) -> float:
    return acceptance_rate(frame[(frame["day"] >= first_day) & (frame["day"] < last_day)])


def test_seeded_stream_is_pinned_and_repeatable(offers):
    again = OffersSimulator(CONFIG).frame()
    other = OffersSimulator(OffersScenarioConfig(offers_per_day=100, seed=6)).frame()

    assert offers.shape == (12000, 12)
    assert list(again.columns) == list(COLUMNS)
    assert int((offers["accepted"] == "yes").sum()) == 1918
    assert offers.iloc[0, :11].astype(str).tolist() == [
        "2026-08-10T06:05:03+00:00",
        "c-30492",
        "family",
        "android",
        "8",
        "922.7",
        "email",
        "6",
        "mobile_bundle",
        "mid",
        "no",
    ]
    pd.testing.assert_frame_equal(offers.drop(columns="day"), again)
    assert not again.equals(other)


def test_offers_are_in_time_order_and_every_day_is_as_dense(offers):
    times = pd.to_datetime(offers["time"])

    assert offers["time"].is_monotonic_increasing
    assert times.dt.tz is not None and str(times.dt.tz) == "UTC"
    assert (times.dt.hour == offers["hour"]).all()
    assert offers["day"].value_counts().eq(100).all() and offers["day"].nunique() == 120
    assert set(offers["accepted"]) == set(CLASSES)


def test_base_acceptance_is_a_minority(offers):
    assert 0.10 <= _rate(offers, 0, 7) <= 0.25
    assert 0.10 <= acceptance_rate(offers) <= 0.25


def test_back_to_school_lifts_students(offers):
    students = offers[offers["segment"] == "student"]

    in_season = _rate(students, 10, 32)
    out_of_season = _rate(students, 38, 56)

    assert round(in_season, 3) == 0.356
    assert in_season > 1.8 * out_of_season


def test_competitor_campaign_collapses_high_prices_in_its_segments(offers):
    hit = offers[
        offers["price_band"].isin(["high", "premium"]) & offers["segment"].isin(["family", "professional", "smb"])
    ]
    spared = offers[offers["price_band"].isin(["low", "mid"])]

    before, during, after = _rate(hit, 35, 56), _rate(hit, 58, 75), _rate(hit, 79, 84)

    assert (round(before, 3), round(during, 3)) == (0.088, 0.017)
    assert during < before / 3 and during < after / 3
    # Low prices hold up: the competitor undercuts the expensive plans only.
    assert _rate(spared, 58, 75) > 0.8 * _rate(spared, 35, 56)


def test_new_product_appears_at_launch_and_cannibalises_speed_upgrades(offers):
    before, after = offers[offers["day"] < 84], offers[offers["day"] >= 94]
    fibre = after[after["offer_category"] == "fibre_2g"]

    assert "fibre_2g" not in set(before["offer_category"])
    assert set(after["offer_category"]) == set(OFFER_CATEGORIES)
    assert 0.12 < len(fibre) / len(after) < 0.3
    # Its own pattern: businesses and professionals take it, seniors hardly.
    assert acceptance_rate(fibre[fibre["segment"].isin(["professional", "smb"])]) > 3 * acceptance_rate(
        fibre[fibre["segment"] == "senior"]
    )
    recent = before[before["day"] >= 56]
    speed_before = recent[recent["offer_category"] == "speed_upgrade"]
    speed_after = after[after["offer_category"] == "speed_upgrade"]
    assert len(speed_after) / len(after) < 0.5 * len(speed_before) / len(recent)
    assert acceptance_rate(speed_after) < 0.5 * acceptance_rate(speed_before)


def test_without_its_phases_the_stream_does_not_drift():
    config = OffersScenarioConfig(
        days=60, offers_per_day=100, seed=5, back_to_school=None, competitor_campaign=(20, 40), launch_day=None
    )
    calm = OffersScenarioConfig(
        days=60, offers_per_day=100, seed=5, back_to_school=None, competitor_campaign=None, launch_day=None
    )

    def high_prices(frame: pd.DataFrame) -> pd.DataFrame:
        day = (pd.to_datetime(frame["time"]) - pd.Timestamp(config.start)).dt.days
        chosen = frame["price_band"].isin(["high", "premium"]) & frame["segment"].isin(["family", "professional"])
        return frame[chosen & (day >= 22) & (day < 38)]

    assert acceptance_rate(high_prices(OffersSimulator(config).frame())) < 0.03
    assert acceptance_rate(high_prices(OffersSimulator(calm).frame())) > 0.06
    assert "fibre_2g" not in set(OffersSimulator(calm).frame()["offer_category"])


def test_bad_config_is_refused_with_the_reason():
    with pytest.raises(ValueError, match="offers_per_day must be at least 1, got 0"):
        OffersScenarioConfig(offers_per_day=0)
    with pytest.raises(ValueError, match="start must be timezone-aware"):
        OffersScenarioConfig(start=datetime(2026, 8, 10))
    assert OffersScenarioConfig(days=3, offers_per_day=7, start=datetime(2026, 1, 1, tzinfo=UTC)).n_rows == 21
