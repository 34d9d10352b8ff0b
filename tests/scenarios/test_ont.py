"""The ONT simulator: seeded output pinned, and the scripted timeline visible in the data."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from driftpilot.scenarios.ont import CLASSES, OntScenarioConfig, OntSimulator, OutageSpec, class_balance


def _all(sim: OntSimulator):
    ticks = list(sim.ticks())
    labels = np.concatenate([t.labels for t in ticks])
    return ticks, labels


def test_seeded_stream_is_pinned_and_repeatable():
    config = OntScenarioConfig(n_onts=200, days=2, seed=3)

    ticks, labels = _all(OntSimulator(config))
    again, labels_again = _all(OntSimulator(config))

    assert len(labels) == 34893
    assert {c: int((labels == c).sum()) for c in CLASSES} == {
        "online": 32186,
        "fibre": 676,
        "power": 666,
        "overheating": 667,
        "firmware_crash": 698,
        "upstream_outage": 0,
    }
    assert np.array_equal(labels, labels_again)
    assert np.array_equal(ticks[50].features["rx_power"], again[50].features["rx_power"])


def test_offline_cases_are_not_a_vanishing_minority():
    _, labels = _all(OntSimulator(OntScenarioConfig(n_onts=200, days=2, seed=3)))

    balance = class_balance(labels)

    assert 0.06 < 1 - balance["online"] < 0.12
    assert min(balance[c] for c in ("fibre", "power", "overheating", "firmware_crash")) > 0.015


def test_firmware_rollout_reports_counters_per_second():
    sim = OntSimulator(OntScenarioConfig(n_onts=300, days=14, seed=5, new_model_day=None, outages=()))

    ticks = list(sim.ticks())
    before, after = ticks[9 * 96], ticks[13 * 96 + 50]

    assert set(before.features["firmware"]) == {"v1.2", "v1.3", "v1.4"}
    upgraded = after.features["firmware"] == "v2.0"
    assert 0.6 < upgraded.mean() < 0.95
    # Per-interval counts (tens) against per-second rates (well under one).
    assert np.median(after.features["fec_corrected"][~upgraded]) > 10
    assert np.median(after.features["fec_corrected"][upgraded]) < 0.2


def test_new_device_model_has_hotter_baseline():
    sim = OntSimulator(OntScenarioConfig(n_onts=300, days=26, seed=5, firmware_rollout_day=None, outages=()))

    last = list(sim.ticks())[-1]
    new = last.features["device_model"] == "XGS-10"
    healthy = last.labels == "online"

    assert 0.12 < new.mean() < 0.30  # ~3 % of the fleet replaced a day since day 18
    assert last.features["temperature"][new & healthy].mean() > last.features["temperature"][~new & healthy].mean() + 8


def test_outage_takes_its_ports_offline_together_and_raises_an_alarm():
    config = OntScenarioConfig(n_onts=400, days=2, seed=2, outages=(OutageSpec(day=1.0, ports=1, hours=2),))
    sim = OntSimulator(config)

    ticks = list(sim.ticks())
    (alarm,) = sim.alarms()
    port = alarm.groups[0]
    at = int((alarm.starts_at - config.start) / timedelta(minutes=15))

    before = ticks[at - 1]
    assert (before.groups == port).sum() > 5
    assert set(before.labels[before.groups == port]) == {"upstream_outage"}
    assert (ticks[at].groups == port).sum() == 0
    assert (ticks[at + 12].groups == port).sum() > 5  # back after the outage


@pytest.mark.parametrize("bad", [{"n_onts": 0}, {"days": 0}, {"interval_minutes": 7}])
def test_bad_config_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        OntScenarioConfig(**bad)


def test_marks_are_the_scripted_changes_of_the_config():
    assert OntSimulator().marks() == {10.0: "firmware v2.0 rollout", 18.0: "new device model", 24.0: "OLT port outage"}

    # They follow the config: moved, turned off, or past the last day.
    moved = OntScenarioConfig(firmware_rollout_day=4.0, new_model_day=None, outages=(OutageSpec(day=2.5, ports=2),))
    assert OntSimulator(moved).marks() == {2.5: "OLT port outage", 4.0: "firmware v2.0 rollout"}
    assert OntSimulator(OntScenarioConfig(days=15)).marks() == {10.0: "firmware v2.0 rollout"}
    calm = OntScenarioConfig(firmware_rollout_day=None, new_model_day=None, outages=())
    assert OntSimulator(calm).marks() == {}


def test_the_demo_report_draws_the_marks_it_is_given(tmp_path):
    from driftpilot.loop.report import write_report

    daily = pd.DataFrame(
        {
            "day": range(20),
            "static": [0.9] * 10 + [0.7] * 10,
            "served": [0.9] * 20,
            "offline_share": [0.08] * 20,
            "decisions": [""] * 20,
        }
    )
    bacc = {"static_days_0_9": 0.9, "static_days_11_30": 0.7, "served_days_0_9": 0.9, "served_days_11_30": 0.9}
    summary = {
        "model": "m",
        "onts": 10,
        "days": 20,
        "events": 100,
        "retrains": 0,
        "promotions": 0,
        "rollbacks": 0,
        "wall_seconds": 1.0,
        "balanced_accuracy": bacc,
    }

    marked, plain = tmp_path / "marked.html", tmp_path / "plain.html"
    # A mark after the last day is left off the chart.
    write_report(marked, daily, [], summary, scenario_marks={10.0: "a scripted change", 25.0: "too late"})
    write_report(plain, daily, [], summary)

    assert "a scripted change" in marked.read_text()
    assert "too late" not in marked.read_text()
    assert "a scripted change" not in plain.read_text()
    assert "firmware" not in plain.read_text()
