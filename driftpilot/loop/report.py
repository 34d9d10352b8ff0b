"""report.html: the accuracy timeline, marked with drifts, decisions and releases."""

from __future__ import annotations

import html
import io
from pathlib import Path
from typing import Any

import pandas as pd

#: The scripted events of the ONT scenario, drawn on the timeline.
SCENARIO_MARKS = {10: "firmware v2.0 rollout", 18: "new device model", 24: "OLT port outage"}


def _chart(daily: pd.DataFrame, decisions: list[dict[str, Any]], start: pd.Timestamp) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 4.5))
    ax.plot(daily["day"], daily["static"], marker="o", ms=3, label="never updated (static)", color="#999999")
    ax.plot(daily["day"], daily["served"], marker="o", ms=3, label="served by driftpilot", color="#1f6feb")
    for day, text in SCENARIO_MARKS.items():
        if day <= daily["day"].max():
            ax.axvline(day, color="#d29922", ls="--", lw=1)
            ax.text(day + 0.1, 0.45, text, rotation=90, fontsize=8, color="#9a6700", va="bottom")
    styles = {"promote": ("^", "#1a7f37"), "rollback": ("v", "#cf222e"), "start_canary": ("|", "#8250df")}
    for action, (marker, color) in styles.items():
        days = [
            (pd.Timestamp(d["time"]).tz_localize(None) - start).total_seconds() / 86400
            for d in decisions
            if d["action"] == action
        ]
        if days:
            ax.scatter(days, [0.4] * len(days), marker=marker, color=color, label=action, zorder=3)
    quarantines = [
        (pd.Timestamp(d["time"]).tz_localize(None) - start).total_seconds() / 86400
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
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def write_report(path: Path, daily: pd.DataFrame, decisions: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    """Write a self-contained HTML page (inline SVG chart, no scripts, no network)."""
    start = pd.Timestamp(daily.attrs.get("start", "2026-03-01")).tz_localize(None)
    chart = _chart(daily, decisions, start)
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
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1200px}}
table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ddd;padding:3px 6px;vertical-align:top}}th{{background:#f6f8fa}}</style></head><body>
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
<h2>Decisions (checks left out)</h2><table>
<tr><th>time</th><th>agent</th><th>action</th><th>outcome</th><th>rationale</th></tr>{rows}</table>
</body></html>"""
    path.write_text(page)
