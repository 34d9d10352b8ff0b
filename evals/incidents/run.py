"""Scripted ONT incidents: does the whole loop take the expected path, and does the
Diagnostician name the right cause?

Two parts (``--part paths|diagnosis|both``, default both). ``paths``: the whole-loop incidents
of ``paths/*.yaml`` (see :mod:`paths`), each run through the real loop and compared with the
path it states (agents, actions taken or refused, approvals); the table is written to
``evals/results/incident_paths.{json,md}``. ``diagnosis``, described below: the Diagnostician
alone on a window of each incident.

Each ``*.yaml`` file beside this script is one incident: the simulator's knobs (and, for a
prior shift, the knobs of the window under diagnosis), a fault injected into the readings,
the window the Monitor raised its finding on, and the expected diagnosis.

For every incident, the same steps run: a calm ONT fleet (no rollout, no new model, no ageing,
no outages unless the incident adds them) is simulated; version 1 of the model
(:class:`~driftpilot.models.tabular_mlp.TabularMLP`) is trained on days 0-4; it serves days
4-6 (the reference: what it saw while healthy) and the incident's window; the Monitor's
balanced accuracy is computed on both; then :func:`driftpilot.tools.diagnosis.investigate` —
what the Diagnostician agent calls — diagnoses the window, with the alarms the network raised.
Every incident runs on three seeds of the simulator. Prints a table and writes
``evals/results/incidents.{json,md}`` (full runs only).

Usage::

    .venv/bin/python evals/incidents/run.py [--part paths] [--only unit_change,olt_outage]
                                            [--onts 300] [--seeds 11,12,13]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from driftpilot.loop.demo import schema_of_ont
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies.schema import Monitor
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator, OutageSpec
from driftpilot.tools.diagnosis import Diagnosis, alarm_evidence, investigate
from driftpilot.tools.metrics import balanced_accuracy

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results"
TRAIN_DAYS = (0.0, 4.0)
REFERENCE_DAYS = (4.0, 6.0)
TRAIN_ROWS = 30_000
#: A calm fleet: each incident switches on only what it is about.
CALM = {
    "firmware_rollout_day": None,
    "new_model_day": None,
    "fibre_ageing": False,
    "outages": (),
}


def load_incidents(only: list[str] | None = None) -> list[dict[str, Any]]:
    incidents = []
    for path in sorted(HERE.glob("*.yaml")):
        spec = yaml.safe_load(path.read_text())
        if only and spec["name"] not in only:
            continue
        for key in ("name", "window", "expected"):
            if key not in spec:
                raise ValueError(f"incident {path.name} has no '{key}'")
        incidents.append(spec)
    if only and len(incidents) != len(only):
        known = {yaml.safe_load(p.read_text())["name"] for p in HERE.glob("*.yaml")}
        raise ValueError(f"unknown incidents: {sorted(set(only) - known)}")
    return incidents


def _config(base: OntScenarioConfig, overrides: dict[str, Any], days: float) -> OntScenarioConfig:
    values = dict(CALM) | dict(overrides)
    if "outages" in overrides:
        values["outages"] = tuple(OutageSpec(**o) for o in overrides["outages"])
    return replace(base, days=days, **values)


def simulate(config: OntScenarioConfig) -> tuple[pd.DataFrame, OntSimulator]:
    sim = OntSimulator(config)
    parts = []
    for tick in sim.ticks():
        part = pd.DataFrame(tick.features)
        part.insert(0, "time", pd.Timestamp(tick.time).tz_convert("UTC").tz_localize(None))
        part.insert(1, "entity", tick.entities)
        part.insert(2, "group", tick.groups)
        part["label"] = tick.labels
        parts.append(part)
    return pd.concat(parts, ignore_index=True), sim


def inject(frame: pd.DataFrame, spec: dict[str, Any], start: pd.Timestamp, seed: int) -> pd.DataFrame:
    """Apply the incident's data fault to the readings from ``from_day`` on."""
    frame = frame.copy()
    after = frame["time"] >= start + pd.Timedelta(days=float(spec["from_day"]))
    feature, kind = spec["feature"], spec["kind"]
    if kind == "dbm_to_mw":
        frame.loc[after, feature] = 10 ** (frame.loc[after, feature] / 10)
    elif kind == "scale":
        frame.loc[after, feature] = frame.loc[after, feature] * float(spec["factor"])
    elif kind in ("stuck", "missing"):
        rng = np.random.default_rng(seed)
        entities = frame["entity"].unique()
        chosen = rng.choice(entities, size=int(round(float(spec["share"]) * len(entities))), replace=False)
        hit = after & frame["entity"].isin(chosen)
        if kind == "missing":
            frame.loc[hit, feature] = np.nan
        else:
            first = frame.loc[hit].groupby("entity")[feature].transform("first")
            frame.loc[hit, feature] = first
    else:
        raise ValueError(f"unknown injection kind {kind!r}")
    return frame


_MODELS: dict[tuple[int, int], TabularMLP] = {}


def version_one(n_onts: int, seed: int) -> TabularMLP:
    """The model every incident starts from: trained on days 0-4 of the calm fleet (cached)."""
    if (n_onts, seed) not in _MODELS:
        base = OntScenarioConfig(n_onts=n_onts, seed=seed)
        frame, _ = simulate(_config(base, {}, TRAIN_DAYS[1]))
        # A seeded sample of the training days: plenty for this model, and fast.
        training = frame.sample(n=min(len(frame), TRAIN_ROWS), random_state=seed)
        _MODELS[n_onts, seed] = TabularMLP(FEATURES, CLASSES, seed=seed).fit(
            {name: training[name].to_numpy() for name, _ in FEATURES}, training["label"].to_numpy()
        )
    return _MODELS[n_onts, seed]


def serve(model: TabularMLP, frame: pd.DataFrame) -> pd.DataFrame:
    # A missing field is served as the model's preprocessing serves it (NaN is imputed there).
    probabilities = model.predict_proba({name: frame[name].to_numpy() for name, _ in FEATURES})
    served = frame.copy()
    served["prediction"] = np.asarray(model.classes)[probabilities.argmax(axis=1)]
    served["confidence"] = probabilities.max(axis=1)
    return served


def run_incident(spec: dict[str, Any], *, n_onts: int, seed: int) -> dict[str, Any]:
    window = spec["window"]
    end_day = float(window["day"]) + float(window["hours"]) / 24
    base = OntScenarioConfig(n_onts=n_onts, seed=seed)
    frame, sim = simulate(_config(base, spec.get("simulator", {}), end_day))
    start = _naive(base.start)
    window_start = start + pd.Timedelta(days=float(window["day"]))
    if "current_simulator" in spec:
        # The window comes from the same fleet under other conditions (e.g. a heatwave).
        shifted, _ = simulate(_config(base, spec.get("simulator", {}) | spec["current_simulator"], end_day))
        frame = pd.concat([frame[frame["time"] < window_start], shifted[shifted["time"] >= window_start]])
    if "inject" in spec:
        frame = inject(frame, spec["inject"], start, seed)

    def days(a: float, b: float) -> pd.DataFrame:
        return frame[(frame["time"] >= start + pd.Timedelta(days=a)) & (frame["time"] < start + pd.Timedelta(days=b))]

    model = version_one(n_onts, seed)
    reference = serve(model, days(*REFERENCE_DAYS))
    # The Monitor's window: readings up to now, the outage's hour included (it sees the silence).
    current = serve(model, frame[frame["time"] >= window_start])
    policy = Monitor()  # the shipped defaults
    alarms = [
        alarm_evidence(
            frame[frame["time"] >= _naive(a.starts_at) - pd.Timedelta(hours=1)],
            key=a.key,
            name=a.name,
            groups=a.groups,
            starts_at=_naive(a.starts_at),
        )
        for a in sim.alarms()
        if window_start <= _naive(a.starts_at) < frame["time"].max()
    ]
    accuracy = balanced_accuracy(current["label"].to_numpy(), current["prediction"].to_numpy())
    reference_accuracy = balanced_accuracy(reference["label"].to_numpy(), reference["prediction"].to_numpy())
    # The features and slices as the Diagnostician gets them: from the managed model's schema.
    schema = schema_of_ont()
    diagnosis = investigate(
        reference,
        current,
        features=[(f.name, f.kind) for f in schema.features],
        known_classes=CLASSES,
        accuracy=accuracy,
        reference_accuracy=reference_accuracy,
        max_accuracy_drop=policy.max_accuracy_drop,
        alarms=alarms,
        slice_columns=schema.slice_columns,
        p_threshold=policy.drift_p_value,
        psi_threshold=policy.psi_threshold,
        quality_reference=reference,
    )
    return {
        "incident": spec["name"],
        "expected": spec["expected"],
        "cause": diagnosis.cause,
        "remedy": diagnosis.remedy,
        "detail": detail(diagnosis),
        "right": is_right(spec["expected"], diagnosis),
        "accuracy": round(accuracy, 4),
        "reference_accuracy": round(reference_accuracy, 4),
        "rows": len(current),
        "rationale": diagnosis.rationale,
    }


def _naive(moment: object) -> pd.Timestamp:
    """A UTC time as the naive timestamp the frames hold."""
    return pd.Timestamp(moment).tz_convert("UTC").tz_localize(None)


def detail(diagnosis: Diagnosis) -> str:
    if diagnosis.slice:
        return f"{diagnosis.slice['column']}={diagnosis.slice['value']}"
    for hypothesis in diagnosis.hypotheses:
        if hypothesis.cause == diagnosis.cause and hypothesis.cause == "data_quality":
            fault = hypothesis.evidence["faults"][0]  # type: ignore[index]
            return f"{fault['feature']}: {fault['kind']}"
        if hypothesis.cause == diagnosis.cause and hypothesis.cause == "covariate_drift":
            return ", ".join(hypothesis.evidence["drifted_features"])  # type: ignore[arg-type]
    if diagnosis.quarantine_groups:
        return "quarantine " + ", ".join(diagnosis.quarantine_groups)
    return ""


def is_right(expected: dict[str, Any], diagnosis: Diagnosis) -> bool:
    if diagnosis.cause != expected["cause"]:
        return False
    if "column" in expected and diagnosis.slice != {"column": expected["column"], "value": expected["value"]}:
        return False
    if "fault" in expected:
        faults = next(h.evidence["faults"] for h in diagnosis.hypotheses if h.cause == "data_quality")
        top = faults[0]  # type: ignore[index]
        return top["feature"] == expected["feature"] and top["kind"] == expected["fault"]
    if "feature" in expected and expected["cause"] == "covariate_drift":
        drifted = next(h.evidence["drifted_features"] for h in diagnosis.hypotheses if h.cause == "covariate_drift")
        return expected["feature"] in drifted  # type: ignore[operator]
    return True


def markdown(rows: list[dict[str, Any]]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    lines = [
        "| incident | expected | diagnosed | remedy | detail | balanced acc. (ref → now) | right |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['incident']} (seed {r['seed']}) | {r['expected']['cause']} | {r['cause']} | {r['remedy']} "
            f"| {r['detail']} | {r['reference_accuracy']:.3f} → {r['accuracy']:.3f} "
            f"| {'yes' if r['right'] else '**no**'} |"
        )
    right = sum(r["right"] for r in rows)
    incidents = len({r["incident"] for r in rows})
    which = f"{incidents} incidents × seeds {', '.join(map(str, seeds))}"
    lines.append(f"\n{right} of {len(rows)} diagnosed right ({which}).")
    return "\n".join(lines)


def run_paths(only: list[str] | None, seed: int, work: Path) -> None:
    """The whole-loop incidents of ``paths/`` (see :mod:`paths`): expected path against actual."""
    sys.path.insert(0, str(HERE))
    from paths import actual_path, judge, load_paths, run_path

    rows = []
    for spec in load_paths(only):
        result = run_path(spec, work / spec["name"], seed)
        verdict = judge(spec, result)
        rows.append(
            {
                "incident": spec["name"],
                "expected": spec["expected"],
                "actual": actual_path(spec, result["steps"]),
                "approvals": result["approvals"],
                "ok": verdict["ok"],
                "problems": verdict["problems"],
                "seconds": result["seconds"],
            }
        )
        print(
            f"{spec['name']}: {'as expected' if verdict['ok'] else '; '.join(verdict['problems'])} "
            f"({result['seconds']:.0f} s)",
            flush=True,
        )
    lines = [
        "| incident | expected path | actual path (steps the expectation names) | approvals | as expected |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        want = " → ".join(r["expected"].get("path", []))
        never = "; never: " + ", ".join(r["expected"]["never"]) if r["expected"].get("never") else ""
        lines.append(
            f"| {r['incident']} | {want}{never} | {' → '.join(r['actual'])} | {', '.join(r['approvals']) or '-'} "
            f"| {'yes' if r['ok'] else 'NO: ' + '; '.join(r['problems'])} |"
        )
    table = "\n".join(lines)
    print(table)
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} incidents took the expected path")
    if only is None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "incident_paths.json").write_text(json.dumps({"seed": seed, "rows": rows}, indent=2) + "\n")
        (RESULTS / "incident_paths.md").write_text(table + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated incident names (default: all)")
    parser.add_argument("--onts", type=int, default=300)
    parser.add_argument("--seeds", default="11,12,13", help="comma-separated simulator seeds")
    parser.add_argument(
        "--part",
        choices=("diagnosis", "paths", "both"),
        default="both",
        help="the Diagnostician's incidents, the whole-loop paths, or both",
    )
    parser.add_argument("--work", default=".driftpilot/incidents", help="where the whole-loop runs keep their files")
    args = parser.parse_args()
    torch.set_num_threads(1)  # small batches: threads only contend on these shared cores
    only = [n.strip() for n in args.only.split(",")] if args.only else None
    if args.part in ("paths", "both"):
        run_paths(only, seed=7, work=Path(args.work))
        if args.part == "paths":
            return
    rows = []
    started = time.perf_counter()
    seeds = [int(s) for s in args.seeds.split(",")]
    for seed in seeds:
        for spec in load_incidents(only):
            began = time.perf_counter()
            rows.append(run_incident(spec, n_onts=args.onts, seed=seed) | {"seed": seed})
            took = time.perf_counter() - began
            print(f"{spec['name']} (seed {seed}): {rows[-1]['cause']} ({took:.0f} s)", flush=True)
    table = markdown(rows)
    print(table)
    for r in rows:
        print(f"- {r['incident']} (seed {r['seed']}): {r['rationale']}")
    if only is None and seeds == [11, 12, 13]:
        RESULTS.mkdir(exist_ok=True)
        payload = {"onts": args.onts, "seeds": seeds, "seconds": round(time.perf_counter() - started), "rows": rows}
        (RESULTS / "incidents.json").write_text(json.dumps(payload, indent=2) + "\n")
        (RESULTS / "incidents.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
