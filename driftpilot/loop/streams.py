"""The shipped streams, written out ready to replay: data and command line.

:func:`driftpilot.scenarios.export.export_streams` writes the CSV files and their manifest; this
adds the ``driftpilot replay`` command that backtests each. Every stream replays under the default
policy, whatever its density: the loop derives what depends on it (DESIGN.md, "What the loop is for").
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from driftpilot.loop.replay import ReplayConfig
from driftpilot.scenarios.export import StreamSpec, export_streams


def export(
    out: Path,
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    banking77_dir: Path | None = None,
) -> list[dict[str, Any]]:
    """Write the streams and ``streams.json`` into ``out``; return the manifest."""
    specs = export_streams(out, names, seed=seed, scale=scale, banking77_dir=banking77_dir)
    manifest = []
    for spec in specs:
        entry = dict(spec.__dict__)
        entry["command"] = shlex.join(_command(spec))
        manifest.append(entry)
    (out / "streams.json").write_text(json.dumps(manifest, indent=2, default=str))
    return manifest


def _command(spec: StreamSpec) -> list[str]:
    words = ["driftpilot", "replay", spec.file, "--target", spec.target]
    for flag, value in (("--time-col", spec.time_col), ("--entity-col", spec.entity_col)):
        if value:
            words += [flag, value]
    if spec.text_col:
        words += ["--text-col", spec.text_col]
    if spec.family:
        words += ["--family", spec.family]
    words += ["--warmup", str(spec.warmup), "--label-delay", str(spec.label_delay), "--label-budget", "0.1"]
    return [*words, "--out", f"replay-{spec.name}"]


def replay_config(entry: dict[str, Any], folder: Path, out: Path, **overrides: Any) -> ReplayConfig:
    """The replay a manifest entry describes, on the files in ``folder``."""
    settings: dict[str, Any] = {
        "data": folder / entry["file"],
        "target": entry["target"],
        "out": out,
        "time_col": entry.get("time_col"),
        "entity_col": entry.get("entity_col"),
        "text_col": entry.get("text_col"),
        "family": entry.get("family"),
        "warmup": entry["warmup"],
        "label_delay": entry["label_delay"],
        "label_budget": 0.1,
    }
    return ReplayConfig(**(settings | overrides))
