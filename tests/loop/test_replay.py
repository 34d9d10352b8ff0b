"""`driftpilot replay` on a small seeded stream whose concept flips half-way.

The stream's file is written out of time order on purpose: the replay must put it in order and
still report each prediction under its row in the file. Labels come 60 rows late, for at most
a quarter of the rows; the policy is scaled to the stream so the loop retrains, asks for labels
and releases within its 3,000 rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftpilot import cli
from driftpilot.loop import outbox as outbox_module
from driftpilot.loop.replay import LabelReveal, ReplayConfig, read_stream, run_replay
from driftpilot.memory import db, events, managed

ROWS, WARMUP, DELAY, BUDGET = 5000, 500, 60, 0.25

POLICY = """
name: small-stream
monitor: {check_every_minutes: 30, window_hours: 3, min_labelled: 40}
training: {recent_hours: 3, min_training_labels: 230, replay_share: 0.2}
release: {steps: [0.5], min_shadow_samples: 20, shadow_until: samples, min_step_samples: 10,
          min_canary_samples: 30, max_canary_hours: 3, guards: {min_events: 50}}
budgets: {max_retrains_per_day: 12, max_labels_per_day: 400}
"""


def _stream(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=ROWS), rng.normal(size=ROWS)
    colour = rng.choice(["red", "green", "blue"], size=ROWS)
    flipped = np.arange(ROWS) >= 2000
    # Before the flip the class follows a + b; after it, a - b (a real concept drift), with a
    # little noise so no system is perfect.
    score = np.where(flipped, a - b, a + b) + 0.6 * (colour == "red") + rng.normal(scale=0.3, size=ROWS)
    frame = pd.DataFrame(
        {
            "time": pd.date_range("2026-05-01", periods=ROWS, freq="10s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "device": [f"dev-{i % 300}" for i in range(ROWS)],
            "a": a.round(4),
            "b": b.round(4),
            "colour": colour,
            "outcome": np.where(score > 0.2, "yes", "no"),
        }
    )
    # Written in a shuffled order: the file is not in time order.
    return frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def replay(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("replay")
    data = folder / "stream.csv"
    _stream().to_csv(data, index=False)
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    seen_by_ingest: list[tuple[int, list[dict]]] = []
    latest_event = {"position": -1}
    position = {f"row-{r}": p for p, r in enumerate(_order(data))}
    real_events, real_labels = outbox_module.ingest_events, outbox_module.ingest_labels

    def spy_events(*, session, model, events, **rest):  # noqa: ANN001, ANN003, ANN202
        latest_event["position"] = max(latest_event["position"], max(position[k] for k in events.keys))
        return real_events(session=session, model=model, events=events, **rest)

    def spy_labels(*, session, model, labels):  # noqa: ANN001, ANN202
        seen_by_ingest.append((latest_event["position"], [dict(x) for x in labels]))
        return real_labels(session=session, model=model, labels=labels)

    config = ReplayConfig(
        data=data,
        target="outcome",
        out=folder / "out",
        time_col="time",
        entity_col="device",
        warmup=WARMUP,
        label_delay=DELAY,
        label_budget=BUDGET,
        policy_path=policy,
        seed=5,
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(outbox_module, "ingest_events", spy_events)
        patch.setattr(outbox_module, "ingest_labels", spy_labels)
        result = run_replay(config)
    return result, seen_by_ingest, position, config


def _order(data: Path) -> list[int]:
    """Rows of the file in time order (ties in file order)."""
    frame = pd.read_csv(data)
    return list(frame.assign(row=range(len(frame))).sort_values("time", kind="stable")["row"])


@pytest.mark.slow  # the replay of 5,000 rows (about 35 s on two cores)
def test_outputs_are_the_four_promised_files(replay):
    result, _, _, config = replay
    predictions = pd.read_csv(result.files["predictions"])

    written = {p.name for p in result.out.iterdir()}
    assert written >= {"predictions.csv", "decisions.jsonl", "summary.json", "report.html"}
    assert list(predictions.columns) == [
        "row",
        "time",
        "served_version",
        "prediction",
        "static",
        "periodic",
        "river-arf",
        "logistic",
        "label",
    ]
    assert len(predictions) == ROWS - WARMUP
    # `row` is the row of the data file: the label written beside it is that row's.
    original = pd.read_csv(config.data)
    assert (original["outcome"].to_numpy()[predictions["row"]] == predictions["label"]).all()
    assert pd.to_datetime(predictions["time"]).is_monotonic_increasing
    report = result.files["report"].read_text()
    assert "<svg" in report and "river-arf" in report
    # Every retrain's curve is charted, and its settings tabled, one row per run.
    retrains = [json.loads(line) for line in result.files["decisions"].read_text().splitlines()]
    retrains = [d for d in retrains if d["agent"] == "trainer" and d["action"] == "retrain"]
    assert "<h2>Training runs</h2>" in report and "solid: training loss" in report
    training = report.split("<h2>Training runs</h2>")[1].split("<h2>Decisions")[0]
    settings = ("(range test)", "(half the lineage&#x27;s", "(none: L-BFGS to convergence")
    assert sum(training.count(said) for said in settings) == len(retrains) > 0
    summary = json.loads(result.files["summary"].read_text())
    assert set(summary["scores"]) == {"driftpilot", "static", "periodic", "river-arf", "logistic"}
    assert [t["tenth"] for t in summary["per_tenth"]] == list(range(1, 11))
    assert len(result.files["decisions"].read_text().splitlines()) == summary["decisions"]


@pytest.mark.slow  # the replay of 5,000 rows (about 35 s on two cores)
def test_no_label_arrives_earlier_or_more_often_than_the_flags_allow(replay):
    result, seen_by_ingest, position, _ = replay
    times = pd.to_datetime(result.predictions["time"]).tolist()
    delivered: dict[str, int] = {}
    for latest, labels in seen_by_ingest:
        for label in labels:
            p = position[label["event_key"]]
            delivered[label["event_key"]] = delivered.get(label["event_key"], 0) + 1
            if p < WARMUP:
                assert label["source"] == "system"  # warm-up history, labelled from the start
                continue
            # Never before the stream has reached the row `label_delay` rows after the event...
            assert p + DELAY <= latest
            # ...and stamped with the time of the row that revealed it, never earlier.
            reveal_time = pd.Timestamp(label["time"])
            assert reveal_time >= times[p + DELAY - WARMUP]
            assert reveal_time <= times[latest - WARMUP]
    assert max(delivered.values()) == 1
    after_warmup = sum(1 for k in delivered if position[k] >= WARMUP)
    assert after_warmup <= int(BUDGET * (ROWS - WARMUP))
    revealed = result.summary["labels_revealed"]
    assert after_warmup == revealed["feedback"] + revealed["requested"]


@pytest.mark.slow  # the replay of 5,000 rows (about 35 s on two cores)
def test_memory_holds_exactly_the_labels_the_gate_revealed(replay):
    result, _, position, _ = replay
    sessions = db.connect(f"sqlite:///{result.out / 'driftpilot.sqlite'}")
    with sessions() as session:
        model = managed.get_model(session=session, name="stream")
        stored = events.window(
            session=session,
            model_id=model.id,
            start=pd.Timestamp("2026-01-01", tz="UTC").to_pydatetime(),
            end=pd.Timestamp("2027-01-01", tz="UTC").to_pydatetime(),
            labelled_only=True,
        )
    assert sorted(position[k] for k in stored["key"]) == sorted(result.reveals["position"])
    assert result.reveals["position"].is_unique


@pytest.mark.slow  # the replay of 5,000 rows (about 35 s on two cores)
def test_baselines_learn_exactly_the_labels_the_loop_sees_in_the_same_order(replay):
    result, _, _, _ = replay
    revealed = result.reveals["position"].tolist()

    assert result.baselines["river-arf"].seen == revealed
    assert result.baselines["periodic"].seen == revealed
    assert result.baselines["logistic"].seen == revealed
    assert result.baselines["static"].seen == []


@pytest.mark.slow  # the replay of 5,000 rows (about 35 s on two cores)
def test_the_loop_retrains_asks_for_labels_and_releases(replay):
    # This test used to pin the seeded run: (retrains, releases, promotions, rollbacks) =
    # (2, 2, 2, 0); 913 feedback and 64 requested labels; accuracy 0.7162 for driftpilot, 0.6567
    # static, 0.6991 periodic, 0.8498 river-arf. What comes from the seeded stream and schedules
    # stays exact; what the loop and the learners decide is held to what those figures showed.
    result, _, _, _ = replay
    s = result.summary

    assert s["retrains"] + s["challengers"] >= 1
    assert s["releases"] >= 1
    assert s["promotions"] >= 1
    # Every release is of a training's candidate (a retrain's or a challenger's).
    assert s["promotions"] + s["rollbacks"] <= s["releases"] <= s["retrains"] + s["challengers"]
    revealed = s["labels_revealed"]
    # The warm-up's history, the budget and the natural feedback are seeded and fixed (the
    # budget, 1125, is far from spent, so no feedback label is refused)...
    assert (revealed["history"], revealed["budget"], revealed["feedback"]) == (500, 1125, 913)
    # ...while the Curator's requests depend on what the loop saw: it asks, within the budget.
    assert revealed["requested"] >= 1
    assert revealed["feedback"] + revealed["requested"] <= revealed["budget"]
    assert revealed["refused_over_budget"] == 0
    scores = s["scores"]
    for name, score in scores.items():
        assert set(score) == {"accuracy", "macro_f1"}, name
        # Two classes about equally common: macro F1 stays close to accuracy (within 0.01 when pinned).
        assert abs(score["accuracy"] - score["macro_f1"]) < 0.03, name
    # Over the whole stream the loop beats the never-updated model (6 points when pinned), and
    # river's adaptive forest, which learns every revealed label at once, beats both.
    assert scores["driftpilot"]["accuracy"] - scores["static"]["accuracy"] >= 0.03
    assert scores["river-arf"]["accuracy"] - scores["static"]["accuracy"] >= 0.1
    # After the flip the loop recovers: its last tenth is far above the never-updated model's.
    last = s["per_tenth"][-1]
    assert last["driftpilot"]["accuracy"] - last["static"]["accuracy"] > 0.2
    # The periodic baseline retrains on a fixed schedule of rows: a deterministic count.
    assert s["periodic_retrains"] == 9


def test_the_label_gate_spends_no_more_than_the_budget():
    gate = LabelReveal(n=1100, warmup=100, delay=5, budget=0.1, request_share=0.5, seed=0)
    scheduled = gate.request(list(range(100, 1100)), at=200)  # a greedy Curator asks for everything

    revealed = [r for at in range(1100) for r in gate.due(at)]

    assert gate.budget == 100
    assert len(revealed) == 100
    assert len({r.position for r in revealed}) == 100
    assert all(r.at >= r.position + 5 for r in revealed)
    assert len(scheduled) == 1000 - len(gate.scheduled - set(scheduled))  # feedback rows are not asked twice
    assert gate.over_budget > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"target": "missing"}, "--target 'missing' is not a column of stream.csv"),
        ({"time_col": "colour"}, "--time-col 'colour': row 0 has 'blue', not a time"),
        ({"feature_cols": ["a", "nope"]}, "--feature-cols ['nope'] are not columns"),
        (
            {"slice_cols": ["a"]},
            "--slice-cols 'a' is not a category feature of stream.csv; those are ['device', 'colour']",
        ),
        ({"warmup": 5000}, "--warmup 5000 leaves no rows to replay"),
        ({"label_budget": 1.5}, "--label-budget must be a share between 0 and 1, got 1.5"),
        ({"baselines": ("static", "xgboost")}, "unknown baselines ['xgboost']"),
    ],
)
def test_bad_flags_are_refused_with_what_was_wrong(tmp_path, change, message):
    data = tmp_path / "stream.csv"
    _stream().head(800).to_csv(data, index=False)
    settings = {"data": data, "target": "outcome", "out": tmp_path / "out", "time_col": "time", "warmup": 200}

    with pytest.raises(ValueError, match=re.escape(message)):
        run_replay(ReplayConfig(**(settings | change)))

    assert not (tmp_path / "out" / "predictions.csv").exists()


def test_an_empty_number_cell_is_a_missing_reading_and_an_infinite_one_is_named(tmp_path):
    frame = _stream().head(300)
    frame.loc[7, "a"] = np.nan
    data = tmp_path / "holes.csv"
    frame.to_csv(data, index=False)
    frame.loc[9, "a"] = np.inf
    frame.to_csv(tmp_path / "inf.csv", index=False)

    stream = read_stream(ReplayConfig(data=data, target="outcome", time_col="time"))
    assert np.isnan(stream.features["a"]).sum() == 1
    with pytest.raises(ValueError, match="feature column 'a': row 9 is not a finite number"):
        read_stream(ReplayConfig(data=tmp_path / "inf.csv", target="outcome", time_col="time"))


class _FakeEncoder:
    """Swapped in for all-MiniLM-L6-v2: two numbers a text, from its length and vowels."""

    def encode(self, texts, progress=None):  # noqa: ANN001, ANN201
        if progress:
            progress(len(texts), len(texts))
        return np.asarray([[len(t) / 10, sum(c in "aeiou" for c in t) / 5] for t in texts], dtype=np.float32)


def test_a_text_column_becomes_vector_features(tmp_path):
    rng = np.random.default_rng(1)
    words = np.where(rng.random(600) < 0.5, "short", "a much longer sentence here")
    frame = pd.DataFrame({"text": words, "intent": np.where(words == "short", "greet", "complain")})
    data = tmp_path / "texts.csv"
    frame.to_csv(data, index=False)

    stream = read_stream(ReplayConfig(data=data, target="intent", text_col="text", encoder=_FakeEncoder()))

    assert [s.name for s in stream.specs] == ["text_e000", "text_e001"]
    assert stream.task == "text_classification"
    assert stream.features["text_e000"][:3].tolist() == pytest.approx([2.7, 2.7, 0.5])
    assert stream.classes == ["complain", "greet"]


def test_cli_replay_prints_the_scores_and_refuses_bad_input(tmp_path, capsys):
    data = tmp_path / "stream.csv"
    _stream().head(1200).to_csv(data, index=False)

    code = cli.main(
        [
            "replay",
            str(data),
            "--target",
            "outcome",
            "--time-col",
            "time",
            "--warmup",
            "300",
            "--baselines",
            "static",
            "--out",
            str(tmp_path / "out"),
        ]  # fmt: skip
    )
    printed = capsys.readouterr().out
    bad = cli.main(["replay", str(data), "--target", "nope", "--out", str(tmp_path / "bad")])

    assert code == 0
    assert "driftpilot" in printed and "static" in printed and "rows/s" in printed
    # Into a pipe (no terminal) a bar draws nothing until the end: a line at every tenth instead.
    assert "rows: 1,200 of 1,200 (100%)" in printed and "rows: " in printed.split("(100%)")[0]
    assert "Checks: " in printed and " blind, " in printed
    assert bad == 2
    assert "--target 'nope' is not a column" in capsys.readouterr().err


def test_a_telemetry_stream_gets_rolling_features_and_a_stream_of_one_off_rows_none(tmp_path) -> None:
    data = tmp_path / "stream.csv"
    frame = _stream()
    frame.to_csv(data, index=False)
    config = ReplayConfig(data=data, target="outcome", out=tmp_path / "out", time_col="time", entity_col="device")

    # 300 devices read every 50 minutes: a cadence, so each reading gets its device's history.
    telemetry = read_stream(config)
    # Without an entity column every row is its own entity: nothing to roll over.
    one_off = read_stream(replace(config, entity_col=None))

    assert telemetry.rolling is not None and one_off.rolling is None and one_off.derived == []
    assert [s.name for s in telemetry.derived][:3] == ["a__delta", "a__mean4", "a__std4"]
    ordered = frame.sort_values("time", kind="stable")
    first = ordered.groupby("device").head(2).groupby("device")["a"].agg(list)
    # The second reading of a device: its delta is the change since the first.
    second = {device: values[1] - values[0] for device, values in first.items()}
    rows = {int(r): p for p, r in enumerate(telemetry.rows)}
    deltas = telemetry.features["a__delta"]
    checked = 0
    for device, group in ordered.groupby("device"):
        row = group.index[1]
        assert deltas[rows[row]] == pytest.approx(second[device])
        checked += 1
    assert checked == 300
