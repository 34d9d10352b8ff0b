"""Drift bench: does driftpilot's ErrorRateMonitor see a model degrade as soon and as surely as its peers?

Each stream is the 0/1 error of a served model on labelled rows, with known drift points; every
detector reads it (nannyml reads the inputs instead) and is scored the same way.

Streams (five seeds each, 20,000 rows, drifts at rows 5,000 / 10,000 / 15,000):

* ``sea_*``: river's SEA with 10 % label noise (Street & Kim, 2001), concepts = variants 0, 1, 2, 3
  (thresholds 8, 9, 7, 9.5), the inputs drawn from one seed so that only the concept changes.
* ``agrawal_*``: river's Agrawal, concepts = classification functions 1, 3, 4, 7 (pairwise label
  disagreement 20 %, 39 %, 22 %), inputs likewise shared.
* ``*_abrupt``: the concept switches at the drift point. ``*_gradual``: each row comes from the
  new concept with probability ``1 / (1 + exp(-4 (t - drift) / 1000))`` -- river's sigmoid
  mixture of ``ConceptDriftStream`` with width 1,000, mixed here with a seeded generator because
  river 0.26 overflows ``math.exp`` for narrow widths far into a stream. The drift point is the
  centre of the transition.
* The served model: for each concept a scikit-learn ``DecisionTreeClassifier``
  (``min_samples_leaf=20``) trained on 5,000 rows of that concept drawn with another seed. The
  previous concept's model is served until 1,500 rows after each drift, then the new concept's
  (a retrain) -- so the error rises at each drift and falls after the retrain. A fall is no
  drift.
* ``ont``: driftpilot's ONT simulator, 150 ONTs at 15-minute readings for 8 days (about 77,000
  labelled rows after the 2 training days; 150 rows per tick), one port outage at day 1.2 and
  none later, a firmware rollout at day 3 that reaches the fleet within 30 minutes (about 300
  rows), and the new device model from day 5.5 at a replacement share of 48 a day (half the
  fleet within about 20 minutes). The served model is a ``DecisionTreeClassifier`` on the numeric
  features, trained on a separate run of the same scenario (seed + 100): first on its days 0-2,
  and, as on the synthetic streams, replaced 1,500 rows after each change by one trained on the
  1.5 days before the new device model (firmware regime) and then on the last 1.5 days. Error =
  its answer differs from the 6-class label. True drift points: the first reading of the new
  firmware and of the new device model; the error rate before and after each is printed
  (``ont_rise``) -- both raise it. Without the retrains, the new device model leaves the model
  broken with a daily cycle (the hotter optic reads as overheating every afternoon), whose every
  daily rise every detector reports again; the retrains keep the scoring about drift.

Detectors: driftpilot's :class:`~driftpilot.tools.detectors.ErrorRateMonitor` at its default
budget (1.0 false alarm per 10,000 rows; on stationary error streams it raises about 0.3) --
one setting for every stream; river's ADWIN,
Page-Hinkley, KSWIN and DDM through :func:`peer_detectors.degradation_points` (beside this
script) at river's defaults (KSWIN seeded), made one-sided so that a fall after a retrain never
counts against them; nannyml's ``UnivariateDriftCalculator`` on the input features (default methods
and thresholds, chunks of 500 rows, reference = the first concept's rows, for ONT the training
days): a chunk with any alert is a detection at its last row.

Every peer's detections pass through the same 2,000-row cool-down as driftpilot's monitor has
built in (a detection within 2,000 rows of the last one kept is dropped), so that a peer's
repeated detections of one drift are not counted as false alarms against it.

Scoring: a detection is *true* if it is the first detection in ``[drift, drift + 1000]`` of a
true drift; every other detection (before a drift, a second one after it, after a fall) is a
false alarm. Recall = true detections / drifts; false alarms per 10,000 rows over all rows of
the family; mean delay = mean of (detection - drift) over the true detections. For the gradual
families a second, transition-aware table counts detections from ``drift - 1000`` (the onset of
the transition, where the new concept's share reaches 2 %) and measures delay from there: under
the strict rule a detector that sees the transition before its centre is charged a false alarm
*and* usually a miss. The goal of the gradual families is judged on this table.

Best peer per family: the peer with the highest F1 of precision (true / all detections) and
recall, ties broken by the shorter delay (ranking by recall alone would crown a detector that
alarms on every chunk). The goal: driftpilot's recall >= 0.95, false alarms and mean delay no
worse (ratio <= 1) than the best peer's.

Usage::

    .venv/bin/python evals/drift_bench.py            # full run, writes evals/results/drift_bench.{json,md}
    .venv/bin/python evals/drift_bench.py --quick    # one seed, prints only
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from river.datasets import synth
from sklearn.tree import DecisionTreeClassifier

from driftpilot.scenarios.ont import NUMERIC_FEATURES, OntScenarioConfig, OntSimulator, OutageSpec
from driftpilot.tools.detectors import ErrorRateMonitor

# evals/ is a folder of scripts, not a package: the peers' module sits beside this one.
from peer_detectors import PEER_DETECTORS, degradation_points  # isort: skip

HERE = Path(__file__).resolve().parent
N_ROWS = 20_000
DRIFTS = (5_000, 10_000, 15_000)
WIDTH = 1_000
RETRAIN_LAG = 1_500
#: The cool-down of driftpilot's monitor (``ErrorRateMonitor.cooldown``), given to every peer.
REFRACTORY = 2_000
TOLERANCE = 1_000
TRAIN_ROWS = 5_000
CHUNK = 500
SEA_VARIANTS = (0, 1, 2, 3)
AGRAWAL_FUNCTIONS = (1, 3, 4, 7)
DETECTORS = ("driftpilot", *PEER_DETECTORS, "nannyml")
PEERS = DETECTORS[1:]
ONT_DAYS = 8.0
ONT_TRAIN_DAYS = 2.0
ONT_FIRMWARE_DAY = 3.0
ONT_NEW_MODEL_DAY = 5.5
FAMILIES = ("sea_abrupt", "sea_gradual", "agrawal_abrupt", "agrawal_gradual", "ont")


# -- streams ---------------------------------------------------------------------------------
def _river_rows(generator: Iterable[tuple[dict, Any]], n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = list(itertools.islice(generator, n))
    x = np.array([list(features.values()) for features, _ in rows], dtype=float)
    y = np.array([int(label) for _, label in rows])
    return x, y


def _concepts(family: str, seed: int) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray], list[str]]:
    """Shared inputs of the stream, each concept's labels on them, and each concept's served model's answers."""
    if family == "sea":

        def make(concept: int, s: int) -> Iterable[tuple[dict, Any]]:
            return synth.SEA(variant=SEA_VARIANTS[concept], noise=0.1, seed=s)

        names = ["x1", "x2", "x3"]
    else:

        def make(concept: int, s: int) -> Iterable[tuple[dict, Any]]:
            return synth.Agrawal(classification_function=AGRAWAL_FUNCTIONS[concept], seed=s)

        names = ["salary", "commission", "age", "elevel", "car", "zipcode", "hvalue", "hyears", "loan"]
    labels, answers = [], []
    x_stream = None
    for concept in range(len(DRIFTS) + 1):
        x, y = _river_rows(make(concept, 1000 + seed), N_ROWS)
        x_train, y_train = _river_rows(make(concept, 5000 + 10 * seed + concept), TRAIN_ROWS)
        model = DecisionTreeClassifier(min_samples_leaf=20, random_state=seed).fit(x_train, y_train)
        x_stream = x if x_stream is None else x_stream
        labels.append(y)
        answers.append(model.predict(x_stream))
    assert x_stream is not None
    return x_stream, labels, answers, names


def synthetic_stream(family: str, mode: str, seed: int, concepts: tuple) -> dict:
    x, labels, answers, names = concepts
    rng = np.random.default_rng([seed, 0 if mode == "abrupt" else 1])
    t = np.arange(N_ROWS)
    concept = np.zeros(N_ROWS, dtype=int)
    for j, d in enumerate(DRIFTS):
        if mode == "abrupt":
            concept = np.where(t >= d, j + 1, concept)
        else:
            new = rng.random(N_ROWS) < 1.0 / (1.0 + np.exp(-4.0 * (t - d) / WIDTH))
            concept = np.where(new, j + 1, concept)
    served = np.zeros(N_ROWS, dtype=int)
    for j, d in enumerate(DRIFTS):
        served = np.where(t >= d + RETRAIN_LAG, j + 1, served)
    y = np.choose(concept, labels)
    answer = np.choose(served, answers)
    return {
        "errors": (answer != y).astype(np.int8),
        "features": pd.DataFrame(x, columns=names),
        "drifts": list(DRIFTS),
        "reference_rows": DRIFTS[0],
    }


def _ont_run(seed: int, days: float) -> tuple[pd.DataFrame, np.ndarray, dict[str, int | None], float]:
    """The ONT readings (numeric features), their labels, the first row of each change, rows a day."""
    config = OntScenarioConfig(
        n_onts=150,
        days=days,
        seed=seed,
        firmware_rollout_day=ONT_FIRMWARE_DAY,
        firmware_rollout_days=0.5 / 24,
        new_model_day=ONT_NEW_MODEL_DAY,
        new_model_share_per_day=48.0,
        outages=(OutageSpec(day=1.2, ports=2),),
    )
    frames, labels = [], []
    first: dict[str, int | None] = {"firmware": None, "device_model": None}
    row = 0
    for tick in OntSimulator(config).ticks():
        for column, value in (("firmware", "v2.0"), ("device_model", "XGS-10")):
            hits = np.flatnonzero(tick.features[column] == value)
            if first[column] is None and hits.size:
                first[column] = row + int(hits[0])
        frames.append(pd.DataFrame({name: tick.features[name] for name in NUMERIC_FEATURES}))
        labels.append(tick.labels)
        row += len(tick)
    y = np.concatenate(labels)
    return pd.concat(frames, ignore_index=True), y, first, len(y) / days


def ont_stream(seed: int, days: float = ONT_DAYS) -> dict:
    x, y, first, per_day = _ont_run(seed, days)
    # Each regime's model is trained on a separate run (another seed) of the same scenario:
    # days 0-2 before the firmware, the day before the new device model, and the last 1.5 days.
    x_other, y_other, _, other_per_day = _ont_run(seed + 100, days)

    def model_on(from_day: float, to_day: float) -> DecisionTreeClassifier:
        rows = slice(int(from_day * other_per_day), int(to_day * other_per_day))
        return DecisionTreeClassifier(min_samples_leaf=20, random_state=seed).fit(x_other.iloc[rows], y_other[rows])

    models = [
        model_on(0.0, ONT_TRAIN_DAYS),
        model_on(ONT_NEW_MODEL_DAY - 1.5, ONT_NEW_MODEL_DAY),
        model_on(days - 1.5, days),
    ]
    start = int(ONT_TRAIN_DAYS * per_day)
    drifts = [p - start for p in (first["firmware"], first["device_model"]) if p is not None]
    served = np.zeros(len(y) - start, dtype=int)
    for j, d in enumerate(drifts):
        served[d + RETRAIN_LAG :] = j + 1
    x_stream = x.iloc[start:].reset_index(drop=True)
    answers = np.empty(len(served), dtype=object)
    for j, model in enumerate(models):
        mask = served == j
        if mask.any():
            answers[mask] = model.predict(x_stream[mask])
    return {
        "errors": (answers != y[start:]).astype(np.int8),
        "features": x_stream,
        "reference": x.iloc[:start],
        "drifts": drifts,
        "reference_rows": 0,
    }


# -- detectors -------------------------------------------------------------------------------
def monitor_points(errors: np.ndarray) -> list[int]:
    monitor = ErrorRateMonitor()
    return [row for row, value in enumerate(errors.tolist()) if monitor.update(value).drift_detected]


def nannyml_points(stream: dict) -> list[int]:
    os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")  # no telemetry from an offline bench
    import nannyml  # heavy: imported only here

    features: pd.DataFrame = stream["features"]
    reference = stream.get("reference")
    if reference is None:
        reference = features.iloc[: stream["reference_rows"]]
    calculator = nannyml.UnivariateDriftCalculator(column_names=list(features.columns), chunk_size=CHUNK)
    calculator.fit(reference)
    result = calculator.calculate(features).filter(period="analysis").to_df()
    alerts = result.loc[:, [c for c in result.columns if c[-1] == "alert"]].any(axis=1).to_numpy()
    ends = result.loc[:, [c for c in result.columns if c[0] == "chunk" and c[-1] == "end_index"]].iloc[:, 0]
    return [int(end) for end, alert in zip(ends.to_numpy(), alerts, strict=True) if alert]


def refractory(points: list[int], rows: int = REFRACTORY) -> list[int]:
    """Keep a detection only if it comes ``rows`` or more after the last one kept.

    driftpilot's monitor has this cool-down built in; giving every peer the same one keeps its
    repeated detections of one drift from counting as false alarms against it.

    >>> refractory([100, 900, 2200, 2300, 5000], rows=2000)
    [100, 2200, 5000]
    """
    kept: list[int] = []
    for point in sorted(points):
        if not kept or point - kept[-1] >= rows:
            kept.append(point)
    return kept


def detect(stream: dict) -> dict[str, list[int]]:
    errors = stream["errors"]
    points = {"driftpilot": monitor_points(errors)}
    for name in PEER_DETECTORS:
        points[name] = refractory(degradation_points(errors, name))
    points["nannyml"] = refractory(nannyml_points(stream))
    return points


# -- scoring ---------------------------------------------------------------------------------
def score(points: list[int], drifts: list[int], early: int = 0) -> tuple[int, int, list[int]]:
    """(true detections, false alarms, delays) under the rule in the module docstring.

    ``early`` > 0 is the transition-aware rule for gradual drift: a detection counts from
    ``drift - early`` (the transition's onset) and its delay is measured from there.
    """
    remaining = sorted(points)
    delays = []
    for d in drifts:
        hits = [p for p in remaining if d - early <= p <= d + TOLERANCE]
        if hits:
            delays.append(hits[0] - (d - early))
            remaining.remove(hits[0])
    return len(delays), len(remaining), delays


def summarise(per_stream: list[dict], rule: str = "strict") -> dict[str, dict[str, float | None]]:
    out: dict[str, dict[str, float | None]] = {}
    for name in DETECTORS:
        scores = [s["scores"][rule][name] for s in per_stream]
        hits = sum(c["hits"] for c in scores)
        false = sum(c["false_alarms"] for c in scores)
        delays = [d for c in scores for d in c["delays"]]
        drifts = sum(len(s["drifts"]) for s in per_stream)
        rows = sum(s["rows"] for s in per_stream)
        recall = hits / drifts
        precision = hits / (hits + false) if hits + false else 0.0
        out[name] = {
            "recall": recall,
            "false_alarms_per_10k": 1e4 * false / rows,
            "mean_delay": float(np.mean(delays)) if delays else None,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        }
    return out


def best_peer(summary: dict[str, dict[str, float | None]]) -> str:
    """The peer with the highest F1 (precision = true / all detections), then the shorter delay."""

    def key(name: str) -> tuple[float, float]:
        s = summary[name]
        delay = s["mean_delay"] if s["mean_delay"] is not None else float("inf")
        return (-round(s["f1"] or 0.0, 3), delay)

    return min(PEERS, key=key)


def _ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    if b == 0:
        return 1.0 if a == 0 else float("inf")
    return a / b


def run(seeds: list[int], families: list[str], ont_days: float) -> dict:
    per_family: dict[str, list[dict]] = {f: [] for f in families}
    timings: dict[str, float] = {}
    ont_rise: list[dict] = []
    for seed in seeds:
        for base in ("sea", "agrawal"):
            wanted = [f for f in families if f.startswith(base)]
            if not wanted:
                continue
            started = time.perf_counter()
            concepts = _concepts(base, seed)
            for family in wanted:
                stream = synthetic_stream(base, family.split("_")[1], seed, concepts)
                points = detect(stream)
                per_family[family].append(_record(stream, points, seed, family.endswith("_gradual")))
            timings[base] = timings.get(base, 0.0) + time.perf_counter() - started
        if "ont" in families:
            started = time.perf_counter()
            stream = ont_stream(seed, ont_days)
            points = detect(stream)
            per_family["ont"].append(_record(stream, points, seed, False))
            ont_rise.append(_rise(stream))
            timings["ont"] = timings.get("ont", 0.0) + time.perf_counter() - started
    tables = {"strict": _table(per_family, families, "strict")}
    gradual = [f for f in families if f.endswith("_gradual")]
    if gradual:
        tables["transition"] = _table(per_family, gradual, "transition")
    return {"tables": tables, "streams": per_family, "ont_rise": ont_rise, "seconds": timings}


def _table(per_family: dict[str, list[dict]], families: list[str], rule: str) -> list[dict]:
    table = []
    for family in families:
        summary = summarise(per_family[family], rule)
        best = best_peer(summary)
        dp = summary["driftpilot"]
        bp = summary[best]
        table.append(
            {
                "family": family,
                "streams": len(per_family[family]),
                "drifts": sum(len(s["drifts"]) for s in per_family[family]),
                "rows": sum(s["rows"] for s in per_family[family]),
                "detectors": summary,
                "best_peer": best,
                "ratio_recall": _ratio(dp["recall"], bp["recall"]),
                "ratio_false_alarms": _ratio(dp["false_alarms_per_10k"], bp["false_alarms_per_10k"]),
                "ratio_delay": _ratio(dp["mean_delay"], bp["mean_delay"]),
                "goal_met": bool(
                    (dp["recall"] or 0.0) >= 0.95
                    and (dp["false_alarms_per_10k"] or 0.0) <= (bp["false_alarms_per_10k"] or 0) + 1e-12
                    and _or_inf(dp["mean_delay"]) <= _or_inf(bp["mean_delay"])
                ),
            }
        )
    return table


def _or_inf(delay: float | None) -> float:
    return float("inf") if delay is None else delay


def _record(stream: dict, points: dict[str, list[int]], seed: int, gradual: bool) -> dict:
    scores: dict[str, dict] = {"strict": {}, "transition": {}}
    for name, found in points.items():
        for rule, early in (("strict", 0), ("transition", WIDTH if gradual else 0)):
            hits, false, delays = score(found, stream["drifts"], early)
            scores[rule][name] = {"hits": hits, "false_alarms": false, "delays": delays}
    return {
        "seed": seed,
        "rows": int(len(stream["errors"])),
        "drifts": stream["drifts"],
        "points": points,
        "scores": scores,
    }


def _rise(stream: dict) -> dict:
    """Error rate in the 2,000 rows before and the 1,000 after each true ONT drift."""
    e = stream["errors"]
    return {
        str(d): (round(float(e[max(0, d - 2000) : d].mean()), 4), round(float(e[d : d + 1000].mean()), 4))
        for d in stream["drifts"]
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def markdown(result: dict) -> str:
    lines = []
    titles = {
        "strict": "Detections within [drift, drift + 1000] (the drift point of a gradual drift is its centre)",
        "transition": "Gradual families, transition-aware: detections within [drift - 1000, drift + 1000], "
        "delay from drift - 1000 (the goal of the gradual families is judged here)",
    }
    for rule, table in result["tables"].items():
        lines += [
            f"### {titles[rule]}",
            "",
            "| family | detector | recall | false alarms / 10k rows | mean delay (rows) | F1 |",
            "| --- | --- | ---: | ---: | ---: | ---: |",
        ]
        for row in table:
            for name in DETECTORS:
                s = row["detectors"][name]
                label = f"**{name}**" if name == "driftpilot" else name
                label += " (best peer)" if name == row["best_peer"] else ""
                lines.append(
                    f"| {row['family']} | {label} | {_fmt(s['recall'])} | {_fmt(s['false_alarms_per_10k'])} "
                    f"| {_fmt(s['mean_delay'], 0)} | {_fmt(s['f1'])} |"
                )
        lines += [
            "",
            "| family | best peer | driftpilot recall | recall ratio | false alarms ratio | delay ratio | goal met |",
            "| --- | --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for row in table:
            dp = row["detectors"]["driftpilot"]
            lines.append(
                f"| {row['family']} | {row['best_peer']} | {_fmt(dp['recall'])} | {_fmt(row['ratio_recall'])} "
                f"| {_fmt(row['ratio_false_alarms'])} | {_fmt(row['ratio_delay'])} "
                f"| {'yes' if row['goal_met'] else 'no'} |"
            )
        lines.append("")
    return "\n".join(lines)


def _small(points: dict[str, list[int]]) -> dict[str, object]:
    return {name: len(found) if name == "nannyml" else found for name, found in points.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, print only")
    parser.add_argument("--families", help=f"comma-separated subset of {','.join(FAMILIES)}")
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    families = [f.strip() for f in args.families.split(",")] if args.families else list(FAMILIES)
    seeds = list(range(1 if args.quick else args.seeds))
    started = time.perf_counter()
    result = run(seeds, families, ont_days=ONT_DAYS)
    result["seconds"]["total"] = time.perf_counter() - started
    text = markdown(result)
    print(text)
    print("ONT error rate before/after each true drift:", result["ont_rise"])
    print("seconds:", {k: round(v, 1) for k, v in result["seconds"].items()})
    if not args.quick and args.families is None and args.seeds == 5:
        out = HERE / "results"
        out.mkdir(exist_ok=True)
        record = {k: v for k, v in result.items() if k != "streams"}
        record["detections"] = {
            # nannyml alarms on most chunks of some streams: its count only, to keep the record small.
            family: [{"seed": s["seed"], "drifts": s["drifts"], **_small(s["points"])} for s in streams]
            for family, streams in result["streams"].items()
        }
        (out / "drift_bench.json").write_text(json.dumps(record, indent=1) + "\n")
        (out / "drift_bench.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
