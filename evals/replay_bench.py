"""Replay benchmark: every shipped stream through driftpilot and its baselines.

Each stream is exported by ``driftpilot scenarios export`` and replayed with the label delay
its manifest gives (500 rows for the synthetic streams, one simulated hour for ONT) and a 10 %
label budget. Prints one table — accuracy of driftpilot, static, periodic and River ARF per
stream, and driftpilot's ratio to the best baseline — and writes it as JSON and Markdown
under ``evals/results/``.

Usage::

    .venv/bin/python evals/replay_bench.py [--streams sea_abrupt,offers] [--scale 1.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from driftpilot.config import Settings
from driftpilot.loop.replay import run_replay
from driftpilot.loop.streams import export, replay_config
from driftpilot.scenarios.export import STREAMS

HERE = Path(__file__).resolve().parent
BASELINES = ("static", "periodic", "river-arf")


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
    for entry in manifest:
        out = work / f"replay-{entry['name']}"
        config = replay_config(entry, streams_dir, out, seed=args.seed, embedding_cache=settings.embedding_cache_dir)
        result = run_replay(config)
        s = result.summary
        accuracy = {system: s["scores"][system]["accuracy"] for system in s["scores"]}
        best = max(BASELINES, key=lambda b: accuracy[b])
        rows.append(
            {
                "stream": entry["name"],
                "rows": s["rows"],
                "label_delay": s["label_delay"],
                "driftpilot": accuracy["driftpilot"],
                **{b: accuracy[b] for b in BASELINES},
                "best_baseline": best,
                "ratio_to_best": round(accuracy["driftpilot"] / accuracy[best], 4),
                "macro_f1": {system: s["scores"][system]["macro_f1"] for system in s["scores"]},
                "labels": s["labels_revealed"],
                "retrains": s["retrains"],
                "releases": s["releases"],
                "promotions": s["promotions"],
                "rollbacks": s["rollbacks"],
                "wall_seconds": s["wall_seconds"],
                "rows_per_second": s["rows_per_second"],
                "rows_per_second_without_baselines": s["rows_per_second_without_baselines"],
            }
        )
        print(_line(rows[-1]), flush=True)

    table = _markdown(rows)
    print()
    print(table)
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
        "streams": rows,
    }
    (results / "replay_bench.json").write_text(json.dumps(record, indent=2))
    (results / "replay_bench.md").write_text(table + "\n")


def _line(row: dict) -> str:
    return (
        f"{row['stream']:<18} driftpilot {row['driftpilot']:.4f}  static {row['static']:.4f}  "
        f"periodic {row['periodic']:.4f}  arf {row['river-arf']:.4f}  ratio {row['ratio_to_best']:.3f}  "
        f"{row['rows_per_second_without_baselines']:,.0f} rows/s (loop)"
    )


def _markdown(rows: list[dict]) -> str:
    head = (
        "| stream | rows | label delay | driftpilot | static | periodic | river-arf | ratio to best baseline "
        "| retrains / releases / rollbacks | rows/s (all) | rows/s (loop only) |\n"
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    )
    body = [
        f"| {r['stream']} | {r['rows']:,} | {r['label_delay']:,} | {r['driftpilot']:.4f} | {r['static']:.4f} "
        f"| {r['periodic']:.4f} | {r['river-arf']:.4f} | {r['ratio_to_best']:.3f} ({r['best_baseline']}) "
        f"| {r['retrains']} / {r['releases']} / {r['rollbacks']} | {r['rows_per_second']:,.0f} "
        f"| {r['rows_per_second_without_baselines']:,.0f} |"
        for r in rows
    ]
    return "\n".join([head, *body])


if __name__ == "__main__":
    main()
