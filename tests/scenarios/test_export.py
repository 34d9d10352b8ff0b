"""Exported streams: the files and manifest a replay reads, written whole or not at all."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import pandas as pd
import pytest

from driftpilot.scenarios import ont
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
        "sea_abrupt",
        "sea_gradual",
        "agrawal_abrupt",
        "agrawal_gradual",
        "rbf_drift",
        "hyperplane",
    )
    assert [s.name for s in specs] == list(STREAMS)
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{name}.csv" for name in STREAMS] + [MANIFEST])
    assert json.loads((out / MANIFEST).read_text(encoding="utf-8")) == [asdict(s) for s in specs]
    assert {s.name: (s.rows, s.warmup, s.label_delay) for s in specs} == {
        "ont": (5142, 1406, 8),
        "offers": (2400, 60, 20),
        "banking77": (238, 48, 10),
        "sea_abrupt": (600, 40, 10),
        "sea_gradual": (600, 40, 10),
        "agrawal_abrupt": (600, 40, 10),
        "agrawal_gradual": (600, 40, 10),
        "rbf_drift": (600, 40, 10),
        "hyperplane": (600, 40, 10),
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


def test_every_stream_replays_under_the_default_policy(exported):
    # No stream carries a policy of its own: what depends on its density the loop derives.
    _, specs = exported
    assert all("policy" not in json.dumps(asdict(spec)) for spec in specs)


def test_same_seed_same_bytes_other_seed_other_data(exported, tmp_path):
    out, _ = exported

    export_streams(tmp_path / "again", ["offers", "sea_gradual"], seed=3, scale=SCALE)
    export_streams(tmp_path / "other", ["offers"], seed=4, scale=SCALE)

    for name in ("offers.csv", "sea_gradual.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (out / name).read_bytes()
    assert (tmp_path / "other" / "offers.csv").read_bytes() != (out / "offers.csv").read_bytes()
    assert [e["name"] for e in json.loads((tmp_path / "again" / MANIFEST).read_text())] == ["offers", "sea_gradual"]


def test_unknown_names_are_refused_before_anything_is_written(tmp_path):
    out = tmp_path / "out"

    with pytest.raises(
        ValueError, match=r"unknown stream\(s\) 'sea', 'ont2'; known: ont, offers, banking77, sea_abrupt"
    ):
        export_streams(out, ["sea_abrupt", "sea", "ont2"])
    with pytest.raises(ValueError, match="scale must be positive, got 0"):
        export_streams(out, scale=0)
    with pytest.raises(FileNotFoundError, match="Banking77 not found"):
        export_streams(out, ["sea_abrupt", "banking77"], banking77_dir=tmp_path / "no-data")
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


def test_spec_is_keyword_only_and_frozen():
    spec = StreamSpec(name="s", file="s.csv", target="y", warmup=20, label_delay=5, rows=100, description="d")

    assert (spec.time_col, spec.entity_col, spec.text_col) == (None, None, None)
    with pytest.raises(AttributeError):
        spec.rows = 3  # type: ignore[misc]
