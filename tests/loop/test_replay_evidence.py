"""A replay under the default policy on a stream the policy knows nothing about: a slow one (a row
every 30 minutes, its label a day late, a tenth of them revealed), and inputs that make no sense.

The loop must judge it as often as its evidence allows (never calling "healthy" a check that saw
no label), spend label budget to restore its sight when it is blind, derive what depends on the
stream and write how, and say before it starts when the time column cannot be a time.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftpilot.loop.replay import ReplayConfig, run_replay

ROWS, WARMUP, DELAY = 4000, 1000, 48


def _slow_stream(seed: int = 0, *, time: str = "iso") -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=ROWS), rng.normal(size=ROWS)
    # The concept turns slowly: by the end the class follows a - b rather than a + b.
    turn = np.clip((np.arange(ROWS) - 2000) / 1000, 0, 1)
    score = (1 - turn) * (a + b) + turn * (a - b) + rng.normal(scale=0.3, size=ROWS)
    times = pd.date_range("2026-01-01", periods=ROWS, freq="30min", tz="UTC")
    column = times.strftime("%Y-%m-%dT%H:%M:%SZ") if time == "iso" else np.linspace(0, 1, ROWS).round(6)
    return pd.DataFrame({"time": column, "a": a.round(4), "b": b.round(4), "y": np.where(score > 0, "up", "down")})


def _replay(folder: Path, frame: pd.DataFrame, **changes) -> tuple[dict, list[dict], list[str]]:
    data = folder / "slow.csv"
    frame.to_csv(data, index=False)
    said: list[str] = []
    settings = {
        "data": data,
        "target": "y",
        "time_col": "time",
        "out": folder / "out",
        "warmup": WARMUP,
        "label_delay": DELAY,
        "label_budget": 0.1,
        "baselines": (),
        "family": "tabular_mlp",
    }
    result = run_replay(ReplayConfig(**(settings | changes)), warn=said.append)
    logged = [json.loads(line) for line in result.files["decisions"].read_text().splitlines()]
    return result.summary, logged, said


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[dict], list[str]]:
    return _replay(tmp_path_factory.mktemp("slow"), _slow_stream())


def test_a_slow_stream_is_checked_on_its_evidence_not_every_clock_tick(slow):
    summary, logged, said = slow
    checks = [d for d in logged if d["agent"] == "monitor" and d["action"] == "check"]
    # 3,000 rows of 30 minutes after the warm-up: the clock (every 2 h) would check 750 times;
    # the evidence (a quarter of a window's labels or rows anew) allows far fewer.
    assert 5 <= len(checks) <= 150
    assert sum(summary["checks"].values()) == len(checks)
    assert said == [] and summary["warnings"] == [] or summary["retrains"] == 0


def test_no_check_without_labels_is_called_healthy(slow):
    _, logged, _ = slow
    for d in logged:
        if d["agent"] == "monitor" and d["action"] == "check" and d["outcome"] == "healthy":
            assert d["evidence"]["balanced_accuracy"] is not None
            assert d["evidence"]["labelled"] >= d["evidence"]["plan"]["min_labelled"]
        if d["agent"] == "monitor" and d["outcome"] == "blind":
            assert d["rationale"].startswith("Blind") and d["evidence"]["missing"]


def test_each_check_writes_the_plan_it_derived_from_the_rates_it_observed(slow):
    _, logged, _ = slow
    last = [d for d in logged if d["agent"] == "monitor"][-1]["evidence"]
    rates, plan = last["rates"], last["plan"]
    # A row every 30 minutes, and a tenth of their labels a day late.
    assert rates["events_per_hour"] == pytest.approx(2.0, rel=0.05)
    assert 0.05 < rates["labels_per_hour"] < 0.4
    assert rates["label_delay_hours"] == pytest.approx(24.0, abs=1.0)
    # The window reaches back beyond the 12 hours of the policy, as far as its labels need.
    assert plan["max_window_hours"] > 24 and "max_window_hours" in plan["why"]
    assert 50 <= plan["min_labelled"] <= 200


def test_the_loop_judges_the_slow_stream_and_asks_for_labels_when_it_cannot(slow):
    summary, logged, _ = slow
    judged = [d for d in logged if d["agent"] == "monitor" and d["evidence"].get("balanced_accuracy") is not None]
    assert judged, "no check ever judged accuracy"
    for d in logged:
        if d["agent"] == "curator" and d["outcome"] == "monitoring_sample":
            assert d["evidence"]["asked"] > 0
    if summary["checks"]["blind"]:
        assert any(d["agent"] == "curator" and d["action"] == "request_labels" for d in logged)


def test_a_time_column_of_numbers_is_warned_about_before_the_replay_starts(tmp_path):
    summary, _, said = _replay(tmp_path, _slow_stream(time="fraction"), baselines=())
    assert said and "holds numbers (0 to 1), not times" in said[0]
    assert any("less than one check interval" in m for m in said)
    assert summary["warnings"][: len(said)] == said
    assert "the loop never checked the model" in summary["warnings"][-1]
    assert sum(summary["checks"].values()) == 0


def test_a_time_column_out_of_order_is_warned_about(tmp_path):
    frame = _slow_stream()
    frame.iloc[[10, 11]] = frame.iloc[[11, 10]].to_numpy()
    summary, _, said = _replay(tmp_path, frame.iloc[:1500], warmup=1000)
    assert len(said) == 1 and "is not increasing (1 rows earlier than the row before, the first at row 11)" in said[0]
