"""report.html: the accuracy timeline, marked with drifts, decisions and releases."""

from __future__ import annotations

import html
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from driftpilot.memory.decisions import logged_time


def _chart(
    daily: pd.DataFrame, decisions: list[dict[str, Any]], start: pd.Timestamp, scenario_marks: Mapping[float, str]
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(daily["day"], daily["static"], marker="o", ms=3, label="never updated (static)", color="#999999")
    ax.plot(daily["day"], daily["served"], marker="o", ms=3, label="served by driftpilot", color="#1f6feb")
    for day, text in scenario_marks.items():
        if day <= daily["day"].max():
            ax.axvline(day, color="#d29922", ls="--", lw=1)
            ax.text(day + 0.1, 0.45, text, rotation=90, fontsize=8, color="#9a6700", va="bottom")
    styles = {"promote": ("^", "#1a7f37"), "rollback": ("v", "#cf222e"), "start_canary": ("|", "#8250df")}
    for action, (marker, color) in styles.items():
        days = [(logged_time(d) - start).total_seconds() / 86400 for d in decisions if d["action"] == action]
        if days:
            ax.scatter(days, [0.4] * len(days), marker=marker, color=color, label=action, zorder=3)
    quarantines = [
        (logged_time(d) - start).total_seconds() / 86400
        for d in decisions
        if d["agent"] == "diagnostician" and d["outcome"] == "quarantined"
    ]
    if quarantines:
        ax.scatter(
            quarantines, [0.37] * len(quarantines), marker="x", color="#bc4c00", label="outage: quarantine, no retrain"
        )
    ax.set_ylim(0.35, 1.0)
    ax.set_xlabel("simulated day")
    ax.set_ylabel("balanced accuracy (daily)")
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8, ncol=2, framealpha=0.9)
    return _svg(fig)


def _svg(fig: Any) -> str:
    """The figure as inline SVG text; the figure is closed."""
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def training_runs(decisions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Trainer's runs in the decision log: version, plan, settings, curve and verdict."""
    runs = []
    for d in decisions:
        evidence = d.get("evidence") or {}
        training = evidence.get("training")
        if d["agent"] != "trainer" or d["action"] != "retrain" or not isinstance(training, dict):
            continue
        runs.append(
            {
                "time": d["time"],
                "version": evidence.get("version"),
                "plan": (evidence.get("plan") or {}).get("mode", training.get("mode")),
                "scope": training.get("scope"),
                "penalty": training.get("penalty"),
                "lr": training.get("lr"),
                "lr_source": training.get("lr_source"),
                "batch_size": training.get("batch_size"),
                "epochs": training.get("epochs"),
                "best_epoch": training.get("best_epoch"),
                "seconds": training.get("seconds"),
                "outcome": d["outcome"],
                "curves": training.get("curves") or [],
            }
        )
    return runs


def _curves_chart(runs: list[dict[str, Any]]) -> str:
    """Training and validation loss per epoch of every run, one colour a run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.5))
    colours = plt.get_cmap("viridis")
    for i, run in enumerate(runs):
        colour = colours(i / max(len(runs) - 1, 1))
        epochs = [c["epoch"] for c in run["curves"]]
        label = f"v{run['version']} ({run['plan']}, {run['scope']})"
        ax.plot(epochs, [c["train_loss"] for c in run["curves"]], color=colour, lw=1.4, label=label)
        val = [(c["epoch"], c["val_loss"]) for c in run["curves"] if c.get("val_loss") is not None]
        if val:
            ax.plot(*zip(*val, strict=True), color=colour, lw=1.0, ls="--")
    ax.set_xlabel("epoch (solid: training loss, dashed: validation loss)")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=4, framealpha=0.9)
    return _svg(fig)


def training_section(decisions: list[dict[str, Any]]) -> str:
    """The report's training part: the curves chart and a table of each run's settings."""
    runs = training_runs(decisions)
    if not runs:
        return "<h2>Training runs</h2><p>No retrain happened.</p>"
    rows = "".join(
        f"<tr><td>{html.escape(str(r['time']))}</td><td>{r['version']}</td><td>{html.escape(str(r['plan']))}</td>"
        f"<td>{html.escape(str(r['scope']))}</td><td>{html.escape(str(r['penalty']))}</td>"
        f"<td>{r['lr']:.2g} ({html.escape(str(r['lr_source']))})</td><td>{r['batch_size']}</td>"
        f"<td>{r['epochs']} (best {r['best_epoch']})</td><td>{r['seconds']:.2f}</td>"
        f"<td>{html.escape(r['outcome'])}</td></tr>"
        for r in runs
    )
    return f"""<h2>Training runs</h2>
{_curves_chart(runs)}
<table><tr><th>time</th><th>version</th><th>plan</th><th>scope</th><th>penalty</th><th>learning rate</th>
<th>batch</th><th>epochs</th><th>seconds</th><th>outcome</th></tr>{rows}</table>"""


#: The pages' shared look: plain, printable, no scripts.
_STYLE = """<style>body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}
table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ddd;padding:3px 6px;vertical-align:top}th{background:#f6f8fa}</style>"""


def write_report(
    path: Path,
    daily: pd.DataFrame,
    decisions: list[dict[str, Any]],
    summary: dict[str, Any],
    *,
    scenario_marks: Mapping[float, str] | None = None,
) -> None:
    """Write a self-contained HTML page (inline SVG chart, no scripts, no network).

    ``scenario_marks`` are the scripted changes of the stream, by day from its start, drawn as
    dashed lines on the timeline (the scenario that scripted them names them; none by default).
    """
    start = pd.Timestamp(daily.attrs.get("start", "2026-03-01T00:00Z"))
    chart = _chart(daily, decisions, start, scenario_marks or {})
    acts = [d for d in decisions if d["action"] not in ("check",)]
    rows = "".join(
        f"<tr><td>{html.escape(str(d['time']))}</td><td>{html.escape(d['agent'])}</td>"
        f"<td>{html.escape(d['action'])}</td><td>{html.escape(d['outcome'])}</td>"
        f"<td>{html.escape(d['rationale'])}</td></tr>"
        for d in acts
    )
    days = "".join(
        f"<tr><td>{r.day}</td><td>{r.static:.3f}</td><td>{r.served:.3f}</td><td>{r.offline_share:.1%}</td>"
        f"<td>{html.escape(r.decisions)}</td></tr>"
        for r in daily.itertuples()
    )
    bacc = summary["balanced_accuracy"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>driftpilot demo report</title>
{_STYLE}</head><body>
<h1>driftpilot demo: {html.escape(summary["model"])}</h1>
<p>{summary["onts"]} ONTs, {summary["days"]} simulated days, {summary["events"]:,} events;
{summary["retrains"]} retrains, {summary["promotions"]} promotions, {summary["rollbacks"]} rollbacks;
{summary["wall_seconds"]} s.</p>
<p>Balanced accuracy, days 0–9 → days 11–30: never-updated model
{bacc["static_days_0_9"]:.3f} → {bacc["static_days_11_30"] or 0:.3f};
served {bacc["served_days_0_9"]:.3f} → {bacc["served_days_11_30"] or 0:.3f}.</p>
{chart}
<h2>Per day</h2><table>
<tr><th>day</th><th>static</th><th>served</th><th>offline share</th><th>decisions</th></tr>{days}</table>
{training_section(decisions)}
<h2>Decisions (checks left out)</h2><table>
<tr><th>time</th><th>agent</th><th>action</th><th>outcome</th><th>rationale</th></tr>{rows}</table>
</body></html>"""
    path.write_text(page)


#: Colours of the systems a replay compares, driftpilot first.
SYSTEM_COLOURS = {"driftpilot": "#1f6feb", "static": "#999999", "periodic": "#d29922", "river-arf": "#1a7f37"}


def _replay_chart(
    predictions: pd.DataFrame, systems: list[str], column: dict[str, str], marks: list[dict[str, Any]]
) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(50, len(predictions) // 40)
    fig, ax = plt.subplots(figsize=(11, 4.5))
    for system in systems:
        hit = (predictions[column[system]].astype(str) == predictions["label"].astype(str)).astype(float)
        rolling = hit.rolling(window, min_periods=window // 2).mean()
        colour = SYSTEM_COLOURS.get(system)
        width = 2.0 if system == "driftpilot" else 1.2
        ax.plot(predictions["row"], rolling, label=system, color=colour, lw=width)
    styles = {
        "retrain": ("o", "#6e7781", 0.06),
        "start_canary": ("|", "#8250df", 0.04),
        "promote": ("^", "#1a7f37", 0.02),
        "rollback": ("v", "#cf222e", 0.02),
    }
    for action, (marker, colour, y) in styles.items():
        rows = [m["row"] for m in marks if m["action"] == action]
        if rows:
            ax.scatter(rows, [y] * len(rows), marker=marker, color=colour, label=action, zorder=3, clip_on=False)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("row of the data file")
    ax.set_ylabel(f"accuracy (rolling, {window} rows)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8, ncol=4, framealpha=0.9)
    return _svg(fig)


def write_replay_report(
    path: Path,
    predictions: pd.DataFrame,
    systems: list[str],
    column: dict[str, str],
    marks: list[dict[str, Any]],
    summary: dict[str, Any],
) -> None:
    """Write a replay's report: rolling accuracy of every system, the loop's decisions on it."""
    chart = _replay_chart(predictions, systems, column, marks)
    scores = "".join(
        f"<tr><td>{html.escape(s)}</td><td>{summary['scores'][s]['accuracy']:.4f}</td>"
        f"<td>{summary['scores'][s]['macro_f1']:.4f}</td></tr>"
        for s in systems
    )
    tenths = "".join(
        f"<tr><td>{t['tenth']}</td><td>{t['positions'][0]:,}–{t['positions'][1]:,}</td>"
        + "".join(f"<td>{t[s]['accuracy']:.3f}</td>" for s in systems)
        + "</tr>"
        for t in summary["per_tenth"]
    )
    acts = "".join(
        f"<tr><td>{m['row']}</td><td>{html.escape(str(m['time']))}</td><td>{html.escape(m['agent'])}</td>"
        f"<td>{html.escape(m['action'])}</td><td>{html.escape(m['outcome'])}</td>"
        f"<td>{html.escape(m['rationale'])}</td></tr>"
        for m in marks
    )
    labels = summary["labels_revealed"]
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>driftpilot replay report</title>
{_STYLE}</head><body>
<h1>driftpilot replay: {html.escape(summary["model"])}</h1>
<p>{summary["rows"]:,} rows of {html.escape(summary["data"])}, the first {summary["warmup"]:,} as labelled warm-up;
label delay {summary["label_delay"]} rows, budget {summary["label_budget"]:.0%}
({labels["feedback"]:,} feedback + {labels["requested"]:,} requested labels of {labels["budget"]:,} allowed).
{summary["retrains"]} retrains, {summary["releases"]} canaries, {summary["promotions"]} promotions,
{summary["rollbacks"]} rollbacks; {summary["wall_seconds"]} s ({summary["rows_per_second"]:,} rows/s).</p>
{chart}
<h2>Scores after the warm-up</h2><table><tr><th>system</th><th>accuracy</th><th>macro-F1</th></tr>{scores}</table>
<h2>Accuracy per tenth of the stream</h2><table><tr><th>tenth</th><th>positions (time order)</th>
{"".join(f"<th>{html.escape(s)}</th>" for s in systems)}</tr>{tenths}</table>
{training_section(marks)}
<h2>Decisions (checks left out)</h2><table>
<tr><th>row</th><th>time</th><th>agent</th><th>action</th><th>outcome</th><th>rationale</th></tr>{acts}</table>
</body></html>"""
    path.write_text(page)
