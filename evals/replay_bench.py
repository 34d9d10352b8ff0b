"""Replay benchmark: every shipped stream through driftpilot and its baselines.

Each stream is exported by ``driftpilot scenarios export`` and replayed with the label delay
its manifest gives (500 rows for the synthetic streams, one simulated hour for ONT, a day for
``slow_drift``) and a 10 % label budget. Prints one table — accuracy of driftpilot and of each
baseline (static, periodic, River ARF and, where the replay has it, logistic) per stream,
driftpilot's ratio to the best baseline, its retrains / challengers / promotions / rollbacks, the share of
blind checks, its speed, and which of the goals below hold — and writes it as JSON and Markdown
under ``evals/results/``.

The goals, each checked where it applies:

* ratio to the best baseline ≥ 1.00 on every stream, ≥ 1.02 on the drifting tabular ones
  (every tabular stream but ``stationary``);
* no retrain on ``stationary``, the stream without drift;
* at most 2 trainings (retrains and challengers) per promotion;
* ≥ 2,000 rows/s loop only (the baselines' time left out) on tabular streams, ≥ 300 on text;
* accuracy ≥ 0.85 on the text streams whose intents emerge (``banking77``, ``intents_oos``).

A stream whose replay fails is reported as failed and the others still run; the run then exits
with status 1.

Usage::

    .venv/bin/python evals/replay_bench.py [--streams sea_abrupt,offers] [--scale 1.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from driftpilot.config import Settings
from driftpilot.loop.replay import run_replay
from driftpilot.loop.streams import export, replay_config
from driftpilot.scenarios.export import STREAMS

HERE = Path(__file__).resolve().parent
#: The baselines reported, in the table's order; one a replay did not run is left out of "best".
BASELINES = ("static", "periodic", "river-arf", "logistic")

#: The stream without drift: any retrain on it is a false alarm.
STATIONARY = ("stationary",)
#: Text streams whose intents emerge: driftpilot must keep up with them.
EMERGING_INTENTS = ("banking77", "intents_oos")
MIN_RATIO = 1.00
MIN_RATIO_DRIFTING_TABULAR = 1.02
MAX_RETRAINS_PER_PROMOTION = 2
MIN_ROWS_PER_SECOND = {"tabular": 2000, "text": 300}
MIN_ACCURACY_EMERGING = 0.85


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", help="comma-separated stream names (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="shrink every stream (quick looks)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=str(HERE / ".work"), help="folder for streams and replay outputs")
    args = parser.parse_args()
    names = [n.strip() for n in args.streams.split(",")] if args.streams else list(STREAMS)
    work = Path(args.work)
    streams_dir = work / "streams"
    streams_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    settings = Settings()
    manifest = export(streams_dir, names, seed=args.seed, scale=args.scale, banking77_dir=settings.banking77_dir)
    export_seconds = time.perf_counter() - started

    rows = []
    failed = []
    for entry in manifest:
        out = work / f"replay-{entry['name']}"
        config = replay_config(entry, streams_dir, out, seed=args.seed, embedding_cache=settings.embedding_cache_dir)
        try:
            result = run_replay(config)
        except Exception:  # one stream's failure must not cost the others' figures
            traceback.print_exc()
            failed.append(entry["name"])
            print(f"{entry['name']:<18} FAILED (traceback above)", flush=True)
            continue
        rows.append(_row(entry, result.summary))
        print(_line(rows[-1]), flush=True)

    table = _markdown(rows)
    print()
    print(table)
    print()
    print(_goals_held(rows))
    if failed:
        print(f"\nfailed: {', '.join(failed)} (evals/results/ left as it was)")
        sys.exit(1)
    if names != list(STREAMS) or args.scale != 1.0:
        # A partial or shrunk run is a quick look: it must not overwrite the recorded figures.
        print("\n(partial run: evals/results/ left as it was)")
        return
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    record = {
        "benchmark": "replay",
        "seed": args.seed,
        "scale": args.scale,
        "label_budget": 0.1,
        "cpus": os.cpu_count(),
        "export_seconds": round(export_seconds, 1),
        "goals": {
            "min_ratio": MIN_RATIO,
            "min_ratio_drifting_tabular": MIN_RATIO_DRIFTING_TABULAR,
            "retrains_on_stationary": 0,
            "max_retrains_per_promotion": MAX_RETRAINS_PER_PROMOTION,
            "min_rows_per_second_loop": MIN_ROWS_PER_SECOND,
            "min_accuracy_emerging_intents": MIN_ACCURACY_EMERGING,
        },
        "streams": rows,
        "table": table,
    }
    (results / "replay_bench.json").write_text(json.dumps(record, indent=2))
    (results / "replay_bench.md").write_text(table + "\n")


def _row(entry: dict[str, Any], s: dict[str, Any]) -> dict[str, Any]:
    """One stream's figures from its manifest entry and its replay's summary."""
    scores = s["scores"]
    accuracy = {
        system: scores[system]["accuracy"] if system in scores else None for system in ("driftpilot", *BASELINES)
    }
    ran = {b: a for b in BASELINES if (a := accuracy[b]) is not None}
    best = max(ran, key=ran.__getitem__)
    row = {
        "stream": entry["name"],
        "kind": "text" if entry.get("text_col") else "tabular",
        "rows": s["rows"],
        "label_delay": s["label_delay"],
        **accuracy,
        "best_baseline": best,
        "ratio_to_best": round(scores["driftpilot"]["accuracy"] / ran[best], 4) if ran[best] else None,
        "macro_f1": {system: scores[system]["macro_f1"] for system in scores},
        "labels": s["labels_revealed"],
        "retrains": s["retrains"],
        "challengers": s.get("challengers", 0),
        "releases": s["releases"],
        "promotions": s["promotions"],
        "rollbacks": s["rollbacks"],
        "blind_share": s.get("blind_share"),
        "wall_seconds": s["wall_seconds"],
        "rows_per_second": s["rows_per_second"],
        "rows_per_second_without_baselines": s["rows_per_second_without_baselines"],
        "rows_per_second_loop": s["rows_per_second_without_baselines"],
    }
    row["goals"] = _goals(row)
    return row


def _goals(row: dict[str, Any]) -> dict[str, bool]:
    """Whether each goal that applies to the stream of ``row`` holds, by the goal's words."""
    stream, kind = row["stream"], row["kind"]
    drifting_tabular = kind == "tabular" and stream not in STATIONARY
    least = MIN_RATIO_DRIFTING_TABULAR if drifting_tabular else MIN_RATIO
    ratio = row["ratio_to_best"]
    goals = {f"ratio ≥ {least:.2f}": ratio is not None and ratio >= least}
    if stream in STATIONARY:
        goals["no retrain"] = row["retrains"] == 0
    # Challengers count: a training with nothing to show is one whatever made it.
    goals[f"≤ {MAX_RETRAINS_PER_PROMOTION} retrains/promotion"] = (
        row["retrains"] + row["challengers"] <= MAX_RETRAINS_PER_PROMOTION * row["promotions"]
    )
    goals[f"≥ {MIN_ROWS_PER_SECOND[kind]:,} rows/s"] = row["rows_per_second_loop"] >= MIN_ROWS_PER_SECOND[kind]
    if stream in EMERGING_INTENTS:
        goals[f"accuracy ≥ {MIN_ACCURACY_EMERGING:.2f}"] = row["driftpilot"] >= MIN_ACCURACY_EMERGING
    return goals


def _goals_cell(goals: dict[str, bool]) -> str:
    return ", ".join(f"{goal} {'✓' if held else '✗'}" for goal, held in goals.items())


def _goals_held(rows: list[dict[str, Any]]) -> str:
    held = sum(sum(r["goals"].values()) for r in rows)
    total = sum(len(r["goals"]) for r in rows)
    missed = [f"{r['stream']}: {goal}" for r in rows for goal, ok in r["goals"].items() if not ok]
    return f"goals held: {held} of {total}" + (f" (missed: {'; '.join(missed)})" if missed else "")


def _accuracy(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _line(row: dict[str, Any]) -> str:
    baselines = "  ".join(f"{b} {_accuracy(row[b])}" for b in BASELINES)
    blind = "–" if row["blind_share"] is None else f"{row['blind_share']:.0%}"
    ratio = "–" if row["ratio_to_best"] is None else f"{row['ratio_to_best']:.3f}"
    return (
        f"{row['stream']:<18} driftpilot {row['driftpilot']:.4f}  {baselines}  ratio {ratio}  "
        f"retrains/challengers/promotions/rollbacks {row['retrains']}/{row['challengers']}/{row['promotions']}/"
        f"{row['rollbacks']}  blind {blind}  "
        f"{row['rows_per_second_loop']:,.0f} rows/s (loop)"
    )


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| stream | rows | label delay | driftpilot | "
        + " | ".join(BASELINES)
        + " | ratio to best baseline | retrains / challengers / promotions / rollbacks | blind checks | rows/s (all) "
        "| rows/s (loop only) | goals |\n"
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in BASELINES) + " | ---: | ---: | ---: | ---: | ---: "
        "| --- |"
    )
    body = []
    for r in rows:
        ratio = "–" if r["ratio_to_best"] is None else f"{r['ratio_to_best']:.3f} ({r['best_baseline']})"
        blind = "–" if r["blind_share"] is None else f"{r['blind_share']:.0%}"
        body.append(
            f"| {r['stream']} | {r['rows']:,} | {r['label_delay']:,} | {r['driftpilot']:.4f} | "
            + " | ".join(_accuracy(r[b]) for b in BASELINES)
            + f" | {ratio} | {r['retrains']} / {r['challengers']} / {r['promotions']} / {r['rollbacks']} | {blind} "
            f"| {r['rows_per_second']:,.0f} | {r['rows_per_second_loop']:,.0f} | {_goals_cell(r['goals'])} |"
        )
    return "\n".join([head, *body])


if __name__ == "__main__":
    main()
