"""Data-quality faults: broken fields are told from drift, with pinned scores on seeded data."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from driftpilot.tools import quality
from driftpilot.tools.drift import FeatureKind
from driftpilot.tools.quality import QualityReport, data_quality

N = 600
FEATURES: list[tuple[str, FeatureKind]] = [("rx_power", "number"), ("temperature", "number")]


def _healthy(seed: int, n: int = N) -> pd.DataFrame:
    """rx_power in dBm around -20, temperature in °C around 50."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"rx_power": rng.normal(-20, 2, n), "temperature": rng.normal(50, 3, n)})


def _kinds(report: QualityReport) -> list[tuple[str, str]]:
    return [(f.feature, f.kind) for f in report.faults]


def _readings(seed: int, *, stuck_share: float = 0.0, entities: int = 50, per_entity: int = 24) -> pd.DataFrame:
    """Consecutive readings per entity (entity by entity, in time order).

    ``stuck_share`` of the entities repeat their first temperature for the whole window;
    ``reboots`` is a counter that is zero nearly always, in every window.
    """
    rng = np.random.default_rng(seed)
    temperature = rng.normal(50, 3, (entities, per_entity)).round(1)
    stuck = int(stuck_share * entities)
    temperature[:stuck, :] = temperature[:stuck, :1]
    return pd.DataFrame(
        {
            "entity": np.repeat([f"ont-{i:02d}" for i in range(entities)], per_entity),
            "temperature": temperature.ravel(),
            "reboots": rng.poisson(0.02, entities * per_entity).astype(float),
        }
    )


# --- unit and scale changes -------------------------------------------------------------------


def test_dbm_reported_as_mw_is_a_unit_change_with_pinned_evidence() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["rx_power"] = 10 ** (current["rx_power"] / 10)  # dBm -> mW upstream

    report = data_quality(reference, current, FEATURES)

    assert report.enough_data
    assert report.unchecked == []
    assert len(report.faults) == 1
    fault = report.faults[0]
    assert (fault.feature, fault.kind) == ("rx_power", "unit_change")
    # The conversion undoes the change exactly: ks_rescaled is the KS of the two healthy windows.
    assert round(stats.ks_2samp(reference["rx_power"], _healthy(2)["rx_power"]).statistic, 4) == 0.0567
    assert fault.score == 0.9433
    assert fault.evidence == {"from": "dBm", "to": "mW", "ks_raw": 1.0, "ks_rescaled": 0.0567}
    assert fault.fix == "convert 'rx_power' back with 10*log10(value)"


def test_mw_reported_as_dbm_is_a_unit_change_the_other_way() -> None:
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"tx_power": 10 ** (rng.normal(-20, 2, N) / 10)})  # mW
    current = pd.DataFrame({"tx_power": rng.normal(-20, 2, N)})  # now dBm

    report = data_quality(reference, current, [("tx_power", "number")])

    assert _kinds(report) == [("tx_power", "unit_change")]
    evidence = report.faults[0].evidence
    assert (evidence["from"], evidence["to"]) == ("mW", "dBm")
    assert evidence["ks_raw"] == 1.0
    assert float(evidence["ks_rescaled"]) < quality.RESCALED_MATCH
    assert report.faults[0].fix == "convert 'tx_power' back with 10**(value/10)"


def test_times_1000_is_a_scale_change_with_pinned_evidence() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["temperature"] = current["temperature"] * 1000  # °C -> m°C

    report = data_quality(reference, current, FEATURES)

    assert len(report.faults) == 1
    fault = report.faults[0]
    assert (fault.feature, fault.kind) == ("temperature", "scale_change")
    assert fault.score == 0.96
    assert fault.evidence == {"factor": 1000.0, "ks_raw": 1.0, "ks_rescaled": 0.04}
    assert fault.fix == "multiply 'temperature' by 0.001 to restore its unit"


def test_divided_by_1000_is_a_scale_change_by_a_thousandth() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["temperature"] = current["temperature"] / 1000

    report = data_quality(reference, current, FEATURES)

    assert _kinds(report) == [("temperature", "scale_change")]
    assert report.faults[0].evidence["factor"] == 0.001
    assert report.faults[0].fix == "multiply 'temperature' by 1000 to restore its unit"


def test_faults_are_sorted_by_score_best_first() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["rx_power"] = 10 ** (current["rx_power"] / 10)
    current["temperature"] = current["temperature"] * 1000

    report = data_quality(reference, current, FEATURES)

    assert _kinds(report) == [("temperature", "scale_change"), ("rx_power", "unit_change")]
    assert [f.score for f in report.faults] == [0.96, 0.9433]


def test_a_scale_change_confined_to_80_percent_of_rows_is_not_a_fault(monkeypatch: pytest.MonkeyPatch) -> None:
    # One firmware slice (80 % of the fleet) reports ×1000: drift of that slice, not a broken field.
    reference = _healthy(1)
    current = _healthy(2)
    current.loc[: int(0.8 * N) - 1, "temperature"] *= 1000

    report = data_quality(reference, current, FEATURES)

    assert report.faults == []
    # It is the fleet-share rule that spares it: with a laxer share the same data is a fault.
    monkeypatch.setattr(quality, "FLEET_SHARE", 0.75)
    lax = data_quality(reference, current, FEATURES)
    assert _kinds(lax) == [("temperature", "scale_change")]


# --- stuck sensors --------------------------------------------------------------------------


def test_forty_percent_of_entities_repeating_one_value_is_a_stuck_sensor() -> None:
    reference = _readings(10)
    current = _readings(11, stuck_share=0.4)

    report = data_quality(reference, current, [("temperature", "number"), ("reboots", "number")])

    assert _kinds(report) == [("temperature", "stuck")]
    fault = report.faults[0]
    assert fault.score == 0.4
    assert fault.evidence == {"stuck_share_reference": 0.0, "stuck_share_current": 0.4, "runs": 150}


def test_stuck_check_needs_the_entity_column() -> None:
    reference = _readings(10)
    current = _readings(11, stuck_share=0.4)

    without_name = data_quality(reference, current, [("temperature", "number")], entity=None)
    without_column = data_quality(reference, current.drop(columns="entity"), [("temperature", "number")])

    assert without_name.faults == []
    assert without_column.faults == []


def test_a_counter_constant_in_both_windows_is_not_stuck() -> None:
    reference = _readings(10)
    current = _readings(11)
    # The counter really is flat in most runs of readings, in both windows.
    assert quality._stuck_share(reference, "entity", "reboots")[0] > 0.8
    assert quality._stuck_share(current, "entity", "reboots")[0] > 0.8

    report = data_quality(reference, current, [("temperature", "number"), ("reboots", "number")])

    assert report.faults == []


# --- missing fields --------------------------------------------------------------------------


def test_a_field_all_nan_now_is_missing() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["rx_power"] = np.nan

    report = data_quality(reference, current, FEATURES)

    assert _kinds(report) == [("rx_power", "missing")]
    assert report.faults[0].score == 1.0
    assert report.faults[0].evidence == {"missing_reference": 0.0, "missing_current": 1.0}


def test_a_field_absent_from_current_is_missing() -> None:
    reference = _healthy(1)
    current = _healthy(2).drop(columns="rx_power")

    report = data_quality(reference, current, FEATURES)

    assert _kinds(report) == [("rx_power", "missing")]
    assert report.faults[0].evidence == {"missing_reference": 0.0, "missing_current": 1.0}


def test_a_field_always_half_missing_is_not_a_fault_but_a_new_gap_is() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    reference.loc[::2, "temperature"] = np.nan
    current.loc[::2, "temperature"] = np.nan

    assert data_quality(reference, current, FEATURES).faults == []

    current.loc[1::4, "temperature"] = np.nan  # 75 % missing now against 50 % before
    report = data_quality(reference, current, FEATURES)
    assert _kinds(report) == [("temperature", "missing")]
    assert report.faults[0].evidence == {"missing_reference": 0.5, "missing_current": 0.75}


def test_a_category_gone_missing_is_missing() -> None:
    rng = np.random.default_rng(4)
    reference = pd.DataFrame({"model": rng.choice(["HG8245", "F670L"], N)})
    current = pd.DataFrame({"model": [None] * N})

    report = data_quality(reference, current, [("model", "category")])

    assert _kinds(report) == [("model", "missing")]


# --- what is not a fault ----------------------------------------------------------------------


def test_a_mean_shift_of_one_sd_is_drift_not_a_fault() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["rx_power"] += 2.0  # one sd
    current["temperature"] += 3.0  # one sd

    report = data_quality(reference, current, FEATURES)

    assert report == QualityReport(faults=[], unchecked=[], enough_data=True)


def test_too_few_rows_checks_nothing() -> None:
    broken = _healthy(2, n=20)
    broken["rx_power"] = np.nan

    report = data_quality(_healthy(1), broken, FEATURES)

    assert report == QualityReport(faults=[], unchecked=[], enough_data=False)
    assert data_quality(_healthy(1, n=29), _healthy(2), FEATURES).enough_data is False
    assert data_quality(_healthy(1, n=30), _healthy(2), FEATURES).enough_data is True


def test_a_feature_with_too_few_reference_values_is_unchecked() -> None:
    reference = _healthy(1)
    reference.loc[20:, "temperature"] = np.nan
    current = _healthy(2)
    current["temperature"] = np.nan

    report = data_quality(reference, current, FEATURES)

    assert report.unchecked == ["temperature"]
    assert report.faults == []


# --- bad input -------------------------------------------------------------------------------


def test_an_unknown_kind_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"feature 'rx_power' has kind 'float'; expected 'number' or 'category'"):
        data_quality(_healthy(1), _healthy(2), [("rx_power", "float")])  # type: ignore[list-item]


def test_a_feature_not_in_reference_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"feature 'snr' is not a column of the reference data"):
        data_quality(_healthy(1), _healthy(2), [("snr", "number")])


def test_a_feature_listed_twice_is_refused() -> None:
    with pytest.raises(ValueError, match=r"feature 'rx_power' is listed twice"):
        data_quality(_healthy(1), _healthy(2), [("rx_power", "number"), ("rx_power", "number")])


@pytest.mark.parametrize("side", ["reference", "current"])
def test_text_in_a_number_column_is_refused_naming_the_value_and_row(side: str) -> None:
    frames = {"reference": _healthy(1), "current": _healthy(2)}
    frames[side]["rx_power"] = frames[side]["rx_power"].astype(object)
    frames[side].loc[3, "rx_power"] = "n/a"

    with pytest.raises(ValueError, match=rf"feature 'rx_power' must be a number, got 'n/a' in {side} row 3"):
        data_quality(frames["reference"], frames["current"], FEATURES)


def test_numeric_looking_text_is_refused_too() -> None:
    current = _healthy(2)
    current["rx_power"] = current["rx_power"].map(lambda v: f"{v:.1f}")

    with pytest.raises(ValueError, match=r"feature 'rx_power' must be a number, got '-\d+\.\d' in current row 0"):
        data_quality(_healthy(1), current, FEATURES)


def test_text_in_the_reference_is_refused_even_when_current_lacks_the_column() -> None:
    reference = _healthy(1)
    reference["rx_power"] = "n/a"
    current = _healthy(2).drop(columns="rx_power")

    with pytest.raises(ValueError, match=r"feature 'rx_power' must be a number"):
        data_quality(reference, current, FEATURES)


def test_a_feature_listed_twice_is_refused_even_when_current_lacks_it() -> None:
    current = _healthy(2).drop(columns="rx_power")

    with pytest.raises(ValueError, match=r"feature 'rx_power' is listed twice"):
        data_quality(_healthy(1), current, [("rx_power", "number"), ("rx_power", "number")])


def test_inputs_are_not_mutated() -> None:
    reference = _healthy(1)
    current = _healthy(2)
    current["temperature"] = current["temperature"] * 1000
    before = (reference.copy(), current.copy())

    data_quality(reference, current, FEATURES)

    pd.testing.assert_frame_equal(reference, before[0])
    pd.testing.assert_frame_equal(current, before[1])


def _fleet_readings(hours: int, *, start_hour: int = 0, seed: int = 0) -> pd.DataFrame:
    """120 devices read every 10 minutes: an uptime counter, an error count that is mostly zero
    but large when not, and a change per hour that swings around zero."""
    rng = np.random.default_rng(seed)
    steps = hours * 6
    rows = {
        "entity": np.repeat([f"d{i}" for i in range(120)], steps),
        "time": np.tile(
            pd.Timestamp("2026-01-01", tz="UTC") + pd.to_timedelta(start_hour * 60 + 10 * np.arange(steps), unit="min"),
            120,
        ),
    }
    start = rng.uniform(0, 900, 120)[:, None] + start_hour
    rows["uptime"] = (start + np.arange(steps)[None, :] / 6).ravel()
    rows["errors"] = np.where(rng.random(120 * steps) < 0.7, 0.0, rng.poisson(40, 120 * steps).astype(float))
    rows["delta"] = rng.normal(0, 0.8, 120 * steps)
    return pd.DataFrame(rows)


FLEET = [("uptime", "number"), ("errors", "number"), ("delta", "number")]


@pytest.mark.parametrize("name", ["uptime", "errors", "delta"])
@pytest.mark.parametrize("factor", [1000.0, 0.001])
def test_a_scale_change_is_found_on_every_kind_of_number(name, factor):
    # A counter (its level grows by nature: the unit shows in what it adds per hour), a count
    # that is mostly zero (zeros carry no unit), a change that swings around zero (shrunk, it
    # stays inside its signed range): each is found rescaled, and nothing is on clean readings.
    reference, later = _fleet_readings(12, seed=1), _fleet_readings(6, start_hour=48, seed=2)
    assert data_quality(reference, later, FLEET).faults == []
    broken = later.assign(**{name: later[name] * factor})
    faults = data_quality(reference, broken, FLEET).faults
    assert [(f.feature, f.kind) for f in faults] == [(name, "scale_change")]
    assert faults[0].evidence["factor"] == pytest.approx(factor)
