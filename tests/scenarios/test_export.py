"""Exported streams: the files and manifest a replay reads, written whole or not at all."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftpilot.scenarios import banking, ont
from driftpilot.scenarios.export import MANIFEST, STREAMS, StreamSpec, export_streams

SCALE = 0.02
#: The repository's copy of Banking77 (CC BY 4.0), so the tests run wherever it is checked out.
BANKING77 = Path(__file__).resolve().parents[1] / "data" / "banking77"


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("streams")
    return out, export_streams(out, seed=3, scale=SCALE, banking77_dir=BANKING77)


def test_every_stream_is_written_with_its_manifest(exported):
    out, specs = exported

    assert STREAMS == (
        "ont",
        "offers",
        "banking77",
        "intents_oos",
        "sea_abrupt",
        "sea_gradual",
        "agrawal_abrupt",
        "agrawal_gradual",
        "rbf_drift",
        "hyperplane",
        "stationary",
        "slow_drift",
    )
    assert [s.name for s in specs] == list(STREAMS)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{name}.csv" for name in STREAMS] + [MANIFEST])
    assert json.loads((out / MANIFEST).read_text(encoding="utf-8")) == [asdict(s) for s in specs]
    assert {s.name: (s.rows, s.warmup, s.label_delay) for s in specs} == {
        "ont": (5142, 1406, 8),
        "offers": (2400, 60, 20),
        "banking77": (238, 48, 10),
        "intents_oos": (276, 55, 10),
        "sea_abrupt": (600, 40, 10),
        "sea_gradual": (600, 40, 10),
        "agrawal_abrupt": (600, 40, 10),
        "agrawal_gradual": (600, 40, 10),
        "rbf_drift": (600, 40, 10),
        "hyperplane": (600, 40, 10),
        "stationary": (600, 40, 10),
        # One row every 30 minutes: 400 rows are 8 days; 30 days of warm-up and a day's delay, scaled.
        "slow_drift": (400, 29, 1),
    }


def test_each_file_holds_what_its_spec_says(exported):
    out, specs = exported

    for spec in specs:
        frame = pd.read_csv(out / spec.file, dtype=str, keep_default_na=False)
        named = [c for c in (spec.target, spec.time_col, spec.entity_col, spec.text_col) if c]
        assert len(frame) == spec.rows, spec.name
        assert set(named) <= set(frame.columns), spec.name
        assert frame[spec.target].nunique() >= 2, spec.name
        assert frame.iloc[: spec.warmup][spec.target].nunique() >= 2, spec.name
        if spec.time_col:
            times = pd.to_datetime(frame[spec.time_col], utc=True)
            assert times.is_monotonic_increasing, spec.name


def test_ont_is_one_row_per_reading(exported):
    out, specs = exported
    spec = next(s for s in specs if s.name == "ont")
    frame = pd.read_csv(out / spec.file)

    assert list(frame.columns) == [
        "time",
        "ont_id",
        "olt_port",
        *(name for name, _ in ont.FEATURES),
        "offline_within_1h",
    ]
    assert frame["ont_id"].nunique() == 2  # 60 ONTs at scale 0.02 would be 1; two at least
    assert set(frame["offline_within_1h"]) <= set(ont.CLASSES)
    # The warm-up ends with the eighth simulated day; the label delay is one hour of readings.
    assert frame["time"].iloc[spec.warmup - 1] < "2026-03-09" <= frame["time"].iloc[spec.warmup]
    assert spec.label_delay == 4 * 2


def test_banking_keeps_line_breaks_inside_quotes(exported):
    out, _ = exported

    frame = pd.read_csv(out / "banking77.csv")

    assert list(frame.columns) == ["text", "intent"]
    assert frame["intent"].nunique() > 50
    assert not frame["text"].isna().any()


def test_stationary_keeps_its_class_balance_in_every_tenth(exported):
    out, _ = exported
    frame = pd.read_csv(out / "stationary.csv", dtype={"y": str})

    positive = (frame["y"] == "1").groupby(np.arange(len(frame)) * 10 // len(frame)).mean()

    assert list(frame.columns) == ["x0", "x1", "x2", "y"]
    assert len(positive) == 10
    # 60 rows a tenth: a share moves by about 0.06 by chance alone; a drift would move it more.
    assert (positive - (frame["y"] == "1").mean()).abs().max() < 0.15


def test_slow_drift_has_a_row_every_30_minutes(exported):
    out, specs = exported
    spec = next(s for s in specs if s.name == "slow_drift")
    frame = pd.read_csv(out / spec.file)

    times = pd.to_datetime(frame["time"], utc=True)

    assert spec.time_col == "time" and frame.columns[0] == "time"
    assert frame["time"].iloc[0] == "2025-01-01T00:00:00+00:00"
    assert set(times.diff().dropna()) == {pd.Timedelta(minutes=30)}
    assert times.iloc[-1] - times.iloc[0] == pd.Timedelta(minutes=30 * (spec.rows - 1))


def test_intents_oos_has_out_of_scope_queries_throughout_and_intents_emerging(exported):
    out, specs = exported
    spec = next(s for s in specs if s.name == "intents_oos")
    frame = pd.read_csv(out / spec.file)

    tenths = frame["intent"].groupby(np.arange(len(frame)) * 10 // len(frame))

    assert (spec.text_col, spec.target, spec.time_col) == ("text", "intent", None)
    assert list(frame.columns) == ["text", "intent"]
    assert tenths.apply(lambda intents: (intents == banking.OUT_OF_SCOPE).any()).all()
    # 42 intents and out-of-scope at first; 20 more emerge over the middle third (a small copy
    # loses a few of them: an intent's only query may come before the intent does).
    early = set(frame["intent"].iloc[: len(frame) // 3])
    later = set(frame["intent"].iloc[len(frame) // 3 :])
    assert len(early) <= 43
    assert len(later - early) >= 15


def test_every_stream_replays_under_the_default_policy(exported):
    # No stream carries a policy of its own: what depends on its density the loop derives.
    _, specs = exported
    assert all("policy" not in json.dumps(asdict(spec)) for spec in specs)


def test_same_seed_same_bytes_other_seed_other_data(exported, tmp_path):
    out, _ = exported

    names = ["offers", "sea_gradual", "stationary", "slow_drift", "intents_oos"]
    export_streams(tmp_path / "again", names, seed=3, scale=SCALE, banking77_dir=BANKING77)
    export_streams(tmp_path / "other", names, seed=4, scale=SCALE, banking77_dir=BANKING77)

    for name in names:
        assert (tmp_path / "again" / f"{name}.csv").read_bytes() == (out / f"{name}.csv").read_bytes(), name
        assert (tmp_path / "other" / f"{name}.csv").read_bytes() != (out / f"{name}.csv").read_bytes(), name
    assert [e["name"] for e in json.loads((tmp_path / "again" / MANIFEST).read_text())] == names


def test_unknown_names_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"

    with pytest.raises(
        ValueError, match=r"unknown stream\(s\) 'sea', 'ont2'; known: ont, offers, banking77, intents_oos, sea_abrupt"
    ):
        export_streams(out, ["sea_abrupt", "sea", "ont2"])
    with pytest.raises(ValueError, match="scale must be positive, got 0"):
        export_streams(out, scale=0)
    with pytest.raises(FileNotFoundError, match="Banking77 not found"):
        export_streams(out, ["sea_abrupt", "banking77"], banking77_dir=tmp_path / "no-data")
    with pytest.raises(FileNotFoundError, match="Banking77 not found"):
        export_streams(out, ["intents_oos"], banking77_dir=tmp_path / "no-data")
    assert not out.exists()


def test_a_failed_write_leaves_the_old_file_and_no_debris(tmp_path, monkeypatch):
    export_streams(tmp_path, ["sea_abrupt"], scale=0.01)
    before = (tmp_path / "sea_abrupt.csv").read_bytes()

    def fail_half_way(self, handle, **kwargs):
        handle.write("x0,x1,x2,y\n1.0,")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        export_streams(tmp_path, ["sea_abrupt"], seed=9, scale=0.01)

    assert (tmp_path / "sea_abrupt.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sea_abrupt.csv", "streams.json"]


def test_spec_is_keyword_only_and_frozen() -> None:
    spec = StreamSpec(name="s", file="s.csv", target="y", warmup=20, label_delay=5, rows=100, description="d")

    assert (spec.time_col, spec.entity_col, spec.text_col) == (None, None, None)
    with pytest.raises(AttributeError):
        spec.rows = 3  # type: ignore[misc]
