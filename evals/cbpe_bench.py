"""CBPE benchmark: label-free accuracy estimates on ONT windows with covariate shift only.

A tabular MLP (``driftpilot.models.tabular_mlp``) is trained on the first days of a simulated
ONT fleet; the days after it are its labelled reference; every later window (one day by
default) is then estimated by :func:`driftpilot.tools.performance.estimate_performance` from
the model's probabilities alone, and compared with the window's true accuracy. For contrast,
the naive estimate carries the reference accuracy forward.

The scenarios keep the shifts that leave P(label | inputs) as it was and drop the one that
does not:

* fibre ageing (kept): Rx power falls slowly and fibre faults become likelier on weak lines,
  but the hazard is a fixed function of the Rx level the model sees: only the inputs move;
* OLT port outages (kept, the scripted ones, all alarmed): the same precursor mechanism on
  every day; whether an alarm is raised changes no reading and no label, so alarmed and
  unalarmed outages are the same case here;
* new device model ``XGS-10`` (kept): other baselines (hotter optic, stronger Tx, higher bias
  current) and new ``device_model``/``firmware`` values, under the same failure mechanisms as a
  function of the readings and the model name;
* firmware rollout (dropped, ``firmware_rollout_day=None``): v2.0 reports CRC and FEC counters
  per second instead of per interval and changes the crash pattern, so the same readings
  mean something else afterwards: concept drift, which CBPE cannot see by design.

Three scenarios:

* ``xgs10-in-training`` (goal judged here): the XGS-10 rollout starts on day 0, so the
  training days already hold a few XGS-10 units and their share then grows from about 10 % to
  about 50 %: covariate shift inside the support of the training data, what CBPE assumes. The
  model's accuracy barely moves, though, so this scenario cannot tell CBPE from the naive
  estimate;
* ``heatwave`` (goal judged here): no XGS-10; from the day after the reference ends (day 7)
  power adapters fail ``k`` times as often, ``k`` set per day by ``Plan.heatwave`` (rising, then
  alternating: x2 ... x8). Each power failure shows the same precursors as before (the supply
  sags, the bias current drops), only more ONTs show them, so the inputs shift towards readings
  the model finds harder and its accuracy falls. Strictly this is prior (label) shift:
  P(readings | label) is fixed and the share of ``power`` grows. P(label | readings) stays the
  same where the readings tell a failing ONT from a healthy one (the early, still-``online``
  readings of a failure grow with the late, ``power`` ones) and moves only where a weak sag
  overlaps a healthy ONT's noise. The hazards of :class:`OntScenarioConfig` are constants for a
  run, so each multiplier is a second simulation of the same fleet (same seed and config but
  ``power_hazard``) whose day is spliced in after the unshifted days (the trick of
  ``evals/incidents/run.py``'s ``current_simulator``);
* ``xgs10-after-training`` (for contrast): the XGS-10 rollout starts the day after the
  reference ends (day 7), so the model meets a device it never saw. P(label | readings, model
  name) is the same function, but the model has no data on that part of it and is confidently
  wrong there: for the model this is concept drift, and no label-free estimate can see how
  wrong it is.

Usage::

    .venv/bin/python evals/cbpe_bench.py [--quick] [--scenarios NAME,...] [--window-hours 24] [--seed 7]

Only full default runs (no ``--quick`` or other option) write ``evals/results/cbpe_bench.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from driftpilot.tools.performance import estimate_performance

HERE = Path(__file__).resolve().parent
GOAL_MAE_POINTS = 3.0
# The scenarios with covariate shift only (the input distribution moves, P(label | inputs) does not).
GOAL_SCENARIOS = ("xgs10-in-training", "heatwave")
SCENARIOS = ("xgs10-in-training", "heatwave", "xgs10-after-training")


@dataclass(frozen=True)
class Plan:
    n_onts: int
    days: float
    train_days: float
    reference_days: float
    window_hours: float
    epochs: int
    seed: int
    # heatwave: the power-hazard multiplier of each day after the reference (its length sets the days).
    heatwave: tuple[float, ...]


FULL = Plan(
    n_onts=300,
    days=22,
    train_days=4,
    reference_days=3,
    window_hours=24,
    epochs=8,
    seed=7,
    heatwave=(2, 4, 6, 8, 4, 8, 2, 8),
)
QUICK = Plan(n_onts=100, days=10, train_days=3, reference_days=2, window_hours=24, epochs=8, seed=7, heatwave=(2, 8, 4))


def new_model_day(plan: Plan, scenario: str) -> float | None:
    """Day the XGS-10 rollout starts in ``scenario`` (see the module's docstring)."""
    if scenario == "heatwave":
        return None
    return 0.0 if scenario == "xgs10-in-training" else plan.train_days + plan.reference_days


def scenario_days(plan: Plan, scenario: str) -> float:
    """Days simulated for ``scenario``: the heatwave stops after its last scheduled day."""
    if scenario == "heatwave":
        return plan.train_days + plan.reference_days + len(plan.heatwave)
    return plan.days


def power_multiplier(plan: Plan, scenario: str, day: np.ndarray) -> np.ndarray:
    """The power-hazard multiplier in force at each ``day`` (1 outside the heatwave)."""
    out = np.ones(len(day))
    if scenario != "heatwave":
        return out
    start = plan.train_days + plan.reference_days
    index = np.floor(day - start).astype(int)
    inside = (index >= 0) & (index < len(plan.heatwave))
    out[inside] = np.asarray(plan.heatwave, dtype=float)[index[inside]]
    return out


def simulate_once(
    plan: Plan, days: float, new_model_day: float | None, power_factor: float = 1.0
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every reading of one run of the fleet: feature columns, labels, and the day of each row."""
    default = OntScenarioConfig.__dataclass_fields__["power_hazard"].default
    config = OntScenarioConfig(
        n_onts=plan.n_onts,
        days=days,
        seed=plan.seed,
        firmware_rollout_day=None,
        new_model_day=new_model_day,
        fibre_ageing=True,
        power_hazard=default * power_factor,
    )
    sim = OntSimulator(config)
    columns: dict[str, list[np.ndarray]] = {name: [] for name, _kind in FEATURES}
    labels, day = [], []
    for tick in sim.ticks():
        for name, _kind in FEATURES:
            columns[name].append(tick.features[name])
        labels.append(tick.labels)
        day.append(np.full(len(tick), tick.index / (24 * sim.ticks_per_hour)))
    return (
        {name: np.concatenate(parts) for name, parts in columns.items()},
        np.concatenate(labels),
        np.concatenate(day),
    )


def simulate(plan: Plan, scenario: str) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Every reading of the scenario; the heatwave splices each day in from the run with its multiplier."""
    days = scenario_days(plan, scenario)
    columns, labels, day = simulate_once(plan, days, new_model_day(plan, scenario))
    if scenario != "heatwave":
        return columns, labels, day
    keep = power_multiplier(plan, scenario, day) == 1.0
    parts = [(columns, labels, day, keep)]
    for factor in sorted(set(plan.heatwave) - {1.0}):
        # Same fleet (same seed and config), only the power hazard differs.
        c, y, d = simulate_once(plan, days, None, float(factor))
        parts.append((c, y, d, power_multiplier(plan, scenario, d) == factor))
    day = np.concatenate([d[k] for _c, _y, d, k in parts])
    order = np.argsort(day, kind="stable")
    return (
        {name: np.concatenate([c[name][k] for c, _y, _d, k in parts])[order] for name in columns},
        np.concatenate([y[k] for _c, y, _d, k in parts])[order],
        day[order],
    )


def run(plan: Plan, scenario: str) -> dict[str, Any]:
    """Train, take the reference, and estimate every later window of one scenario."""
    started = time.perf_counter()
    columns, labels, day = simulate(plan, scenario)
    simulate_seconds = time.perf_counter() - started
    multiplier = power_multiplier(plan, scenario, day)

    train = day < plan.train_days
    reference = (day >= plan.train_days) & (day < plan.train_days + plan.reference_days)

    def rows(mask: np.ndarray) -> dict[str, np.ndarray]:
        return {name: values[mask] for name, values in columns.items()}

    model = TabularMLP(FEATURES, CLASSES, epochs=plan.epochs, seed=0).fit(rows(train), labels[train])
    train_seconds = time.perf_counter() - started - simulate_seconds
    probabilities = model.predict_proba(columns)
    predicted = np.asarray(CLASSES)[probabilities.argmax(axis=1)]
    correct = predicted == labels
    reference_accuracy = float(correct[reference].mean())

    windows = []
    start = plan.train_days + plan.reference_days
    width = plan.window_hours / 24
    end = scenario_days(plan, scenario)
    while start + width <= end + 1e-9:
        mask = (day >= start) & (day < start + width)
        result = estimate_performance(
            probabilities[reference],
            labels[reference],
            probabilities[mask],
            classes=CLASSES,
            metric="accuracy",
        )
        true = float(correct[mask].mean())
        power = mask & (labels == "power")
        assert result.estimated is not None and result.lower is not None and result.upper is not None
        windows.append(
            {
                "start_day": round(start, 3),
                "rows": int(mask.sum()),
                "power_hazard_x": float(np.mean(multiplier[mask])),
                "xgs10_share": float(np.mean(columns["device_model"][mask] == "XGS-10")),
                "offline_share": float(np.mean(labels[mask] != "online")),
                "power_share": float(power.sum() / mask.sum()),
                "power_recall": float(correct[power].mean()) if power.any() else None,
                "true": true,
                "estimated": result.estimated,
                "lower": result.lower,
                "upper": result.upper,
                "naive": reference_accuracy,
                "error_points": 100 * (result.estimated - true),
                "naive_error_points": 100 * (reference_accuracy - true),
                "in_band": result.lower <= true <= result.upper,
            }
        )
        start += width

    mae = float(np.mean([abs(w["error_points"]) for w in windows]))
    naive_mae = float(np.mean([abs(w["naive_error_points"]) for w in windows]))
    return {
        "new_model_day": new_model_day(plan, scenario),
        "power_hazard_x": list(plan.heatwave) if scenario == "heatwave" else None,
        "rows": {"train": int(train.sum()), "reference": int(reference.sum())},
        "xgs10_share": {
            "train": float(np.mean(columns["device_model"][train] == "XGS-10")),
            "reference": float(np.mean(columns["device_model"][reference] == "XGS-10")),
        },
        "power_share_reference": float(np.mean(labels[reference] == "power")),
        "reference_accuracy": reference_accuracy,
        "windows": windows,
        "true_range": [float(min(w["true"] for w in windows)), float(max(w["true"] for w in windows))],
        "mae_points": mae,
        "naive_mae_points": naive_mae,
        "max_abs_error_points": float(max(abs(w["error_points"]) for w in windows)),
        "band_coverage": float(np.mean([w["in_band"] for w in windows])),
        "seconds": {
            "simulate": round(simulate_seconds, 1),
            "train": round(train_seconds, 1),
            "total": round(time.perf_counter() - started, 1),
        },
    }


def table(name: str, result: dict[str, Any]) -> str:
    if result["power_hazard_x"] is not None:
        title = (
            f"### {name} (no XGS-10; power hazard x1 up to day {result['windows'][0]['start_day']:g}, then per day "
            f"{', '.join(f'x{k:g}' for k in result['power_hazard_x'])}; power share "
            f"{100 * result['power_share_reference']:.1f} % in the reference)"
        )
    else:
        title = (
            f"### {name} (XGS-10 from day {result['new_model_day']:g}; share "
            f"{100 * result['xgs10_share']['train']:.1f} % in training, "
            f"{100 * result['xgs10_share']['reference']:.1f} % in the reference)"
        )
    lines = [
        title,
        "",
        "| window (day) | rows | power hazard | XGS-10 | offline | power | power recall | true acc | CBPE est "
        "| CBPE band | naive est | CBPE err (pts) | naive err (pts) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for w in result["windows"]:
        recall = "–" if w["power_recall"] is None else f"{100 * w['power_recall']:.0f} %"
        lines.append(
            f"| {w['start_day']:g} | {w['rows']} | x{w['power_hazard_x']:g} | {100 * w['xgs10_share']:.1f} % "
            f"| {100 * w['offline_share']:.1f} % | {100 * w['power_share']:.1f} % | {recall} "
            f"| {100 * w['true']:.2f} | {100 * w['estimated']:.2f} | {100 * w['lower']:.1f}–{100 * w['upper']:.1f} "
            f"| {100 * w['naive']:.2f} | {w['error_points']:+.2f} | {w['naive_error_points']:+.2f} |"
        )
    lines += [
        "",
        f"Reference accuracy {100 * result['reference_accuracy']:.2f} % on {result['rows']['reference']} rows "
        f"(trained on {result['rows']['train']}).",
    ]
    return "\n".join(lines)


def summary(results: dict[str, dict[str, Any]]) -> str:
    lines = [
        "| scenario | goal judged | windows | true acc (min–max) | CBPE MAE (pts) | naive MAE (pts) | CBPE / naive "
        "| max CBPE error (pts) | in band |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in results.items():
        ratio = f"{r['mae_points'] / r['naive_mae_points']:.2f}" if r["naive_mae_points"] > 0 else "n/a"
        lines.append(
            f"| {name} | {'yes' if name in GOAL_SCENARIOS else 'no (contrast)'} | {len(r['windows'])} "
            f"| {100 * r['true_range'][0]:.2f}–{100 * r['true_range'][1]:.2f} "
            f"| {r['mae_points']:.2f} | {r['naive_mae_points']:.2f} | {ratio} "
            f"| {r['max_abs_error_points']:.2f} | {100 * r['band_coverage']:.0f} % |"
        )
    judged = [name for name in GOAL_SCENARIOS if name in results]
    if judged:
        verdicts = ", ".join(
            f"{name} {'met' if results[name]['mae_points'] <= GOAL_MAE_POINTS else 'NOT met'}" for name in judged
        )
        lines += [
            "",
            f"Goal, CBPE MAE ≤ {GOAL_MAE_POINTS:g} points on the scenarios with covariate shift only: {verdicts}.",
        ]
    return "\n".join(lines)


def reading(results: dict[str, dict[str, Any]]) -> str:
    """What each scenario shows, with this run's figures."""
    inside, heat, after = (results[name] for name in ("xgs10-in-training", "heatwave", "xgs10-after-training"))

    def drop(r: dict[str, Any]) -> float:
        return 100 * (r["reference_accuracy"] - r["true_range"][0])

    beats = heat["mae_points"] < heat["naive_mae_points"]
    worst = max(after["windows"], key=lambda w: w["naive_error_points"])
    followed = 100 * (after["reference_accuracy"] - worst["estimated"])
    return (
        "Reading. *xgs10-in-training*: the inputs shift (the XGS-10 share grows from "
        f"{100 * inside['xgs10_share']['reference']:.0f} % to {100 * inside['windows'][-1]['xgs10_share']:.0f} %) but "
        f"the model's accuracy stays within {100 * inside['true_range'][0]:.1f}–{100 * inside['true_range'][1]:.1f} %, "
        f"so CBPE meets the goal (MAE {inside['mae_points']:.2f} points) and so does the naive estimate "
        f"({inside['naive_mae_points']:.2f}): this scenario shows CBPE does no harm, not that it helps. "
        "*heatwave*: power adapters fail 2–8 times as often with the same precursors, so the share of power "
        f"failures rises from {100 * heat['power_share_reference']:.1f} % of the readings to up to "
        f"{100 * max(w['power_share'] for w in heat['windows']):.1f} % and the accuracy falls by up to "
        f"{drop(heat):.1f} points; CBPE's MAE is {heat['mae_points']:.2f} points against the naive "
        f"{heat['naive_mae_points']:.2f} ("
        + ("CBPE follows the fall from the probabilities alone" if beats else "CBPE does not beat the naive estimate")
        + "). It is prior shift, strictly: P(label | readings) holds only where a failing adapter's readings stand out "
        "from a healthy one's noise, and CBPE's calibration on the reference carries over only as far as that holds. "
        f"*xgs10-after-training* (contrast, concept drift for the model): accuracy falls by up to {drop(after):.0f} "
        f"points and CBPE follows only about {followed:.0f} of them: the model is confidently wrong on a device it "
        "never saw, which no label-free estimate can detect. The Monitor must pair CBPE with drift tests (an unseen "
        "category is a finding in itself)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small fleet and few days; writes nothing")
    parser.add_argument("--scenarios", help=f"comma-separated, of {list(SCENARIOS)} (default: all)")
    parser.add_argument("--window-hours", type=float, help="width of each estimated window")
    parser.add_argument("--seed", type=int, help="scenario seed")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    changes: dict[str, float] = {}
    if args.window_hours is not None:
        changes["window_hours"] = args.window_hours
    if args.seed is not None:
        changes["seed"] = args.seed
    plan = Plan(**{**asdict(plan), **changes})
    names = [n.strip() for n in args.scenarios.split(",")] if args.scenarios else list(SCENARIOS)
    unknown = sorted(set(names) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {list(SCENARIOS)}")

    results = {name: run(plan, name) for name in names}
    text = "\n\n".join([summary(results)] + [table(name, r) for name, r in results.items()])
    print(text)
    print("\nseconds:", {name: r["seconds"] for name, r in results.items()})
    if args.quick or args.scenarios or changes:
        print("\n(partial or quick run: evals/results/ left as it was)")
        return
    record = {
        "plan": asdict(plan),
        "scenario": "ONT without the firmware rollout (no concept drift): fibre ageing, scripted outages; XGS-10 "
        "(from day 0 or from day 7) or a heatwave (power hazard x2–x8 from day 7)",
        "model": f"TabularMLP (64, 32), {plan.epochs} epochs, seed 0; probabilities calibrated by CBPE itself "
        "(isotonic, per class, on the reference)",
        "metric": "accuracy",
        "goal": {
            "scenarios": list(GOAL_SCENARIOS),
            "mae_points": GOAL_MAE_POINTS,
            "met": {name: results[name]["mae_points"] <= GOAL_MAE_POINTS for name in GOAL_SCENARIOS},
        },
        "scenarios": results,
    }
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "cbpe_bench.json").write_text(json.dumps(record, indent=2) + "\n")
    header = (
        "# CBPE on ONT windows with covariate shift only\n\n"
        f"{record['scenario']}. {record['model']}. Plan: `{json.dumps(record['plan'])}`.\n\n{reading(results)}\n\n"
    )
    (out / "cbpe_bench.md").write_text(header + text + "\n")


if __name__ == "__main__":
    main()
