"""Scripted incidents through the whole loop: which agents act, which actions are taken or refused,
which approvals are asked.

Each ``paths/*.yaml`` is one incident: a calm ONT fleet (no rollout, no new model, no ageing, no
outage unless the incident adds one) run through :func:`driftpilot.loop.demo.run_demo` for
:data:`DAYS` days (the first eight are the history version 1 learns from), with the incident's
simulator settings, policy, data fault, poisoned feedback, hand-made release or person answering
approvals. The decision log is then read as a path of ``agent action outcome`` steps and compared
with the expected one: ``path`` must appear in order (other steps may come between), ``never``
must not appear at all, ``approvals`` are the requests asked and their answers, ``counts`` how
often a step may happen. ``crash: fit`` runs the graph in a process killed mid-training and
resumes it (the harness of ``tests/graph/test_crash_resume.py``).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.loop.demo import MODEL_NAME, DemoConfig, run_demo
from driftpilot.memory import approvals, decisions, events, golden, managed, releases, versions
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import StartCanaryFacts
from driftpilot.scenarios.ont import CLASSES, FEATURES

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DAYS = 11.0
ONTS = 150
CALM = {"firmware_rollout_day": None, "new_model_day": None, "fibre_ageing": False, "outages": ()}


def load_paths(only: list[str] | None = None) -> list[dict[str, Any]]:
    specs = [yaml.safe_load(p.read_text()) for p in sorted((HERE / "paths").glob("*.yaml"))]
    return [s for s in specs if not only or s["name"] in only]


def step_of(decision: Any) -> str:
    return f"{decision.agent} {decision.action} {decision.outcome}"


def _fault(spec: dict[str, Any], start: datetime):
    def fault(features: dict[str, np.ndarray], now: datetime) -> dict[str, np.ndarray]:
        if now < start + timedelta(days=float(spec["from_day"])):
            return features
        name = spec["feature"]
        if spec["kind"] == "dbm_to_mw":
            features[name] = 10 ** (np.asarray(features[name], dtype=float) / 10)
        else:
            raise ValueError(f"unknown fault kind {spec['kind']!r}")
        return features

    return fault


def _feedback(spec: dict[str, Any], start: datetime, seed: int):
    rng = np.random.default_rng(seed)

    def feedback(keys: list[str], labels: np.ndarray, now: datetime) -> np.ndarray:
        if now < start + timedelta(days=float(spec["from_day"])):
            return labels
        flipped = labels.copy()
        hit = (labels == spec["from"]) & (rng.random(len(labels)) < float(spec["share"]))
        flipped[hit] = spec["to"]
        return flipped

    return feedback


def _hourly(spec: dict[str, Any], start: datetime, seed: int):
    done: set[str] = set()

    def hourly(context: AgentContext, runner: LoopRunner, now: datetime) -> None:
        with context.sessions() as session:
            model = managed.get_model(session=session, name=MODEL_NAME)
            if spec.get("golden") and "golden" not in done:
                # Operators pinned a sample of the history's labelled readings, checked by hand.
                frame = events.window(
                    session=session, model_id=model.id, start=start, end=now, visible_at=now, labelled_only=True
                )
                chosen = frame.sample(n=min(len(frame), int(spec["golden"])), random_state=seed)
                golden.pin(session=session, model_id=model.id, event_ids=list(chosen["id"]), time=now, note="incident")
                done.add("golden")
            answer = spec.get("approvals")
            if answer:
                for request in approvals.list_approvals(session=session, model_id=model.id, status="pending"):
                    if now - request.requested_at.replace(tzinfo=now.tzinfo) >= timedelta(hours=answer["after_hours"]):
                        approvals.decide_approval(
                            session=session,
                            approval_id=request.id,
                            approve=answer["answer"] == "approve",
                            by="on-call engineer",
                            at=now,
                            comment="scripted incident",
                        )
            harmful = spec.get("harmful")
            due = harmful and "harmful" not in done and now >= start + timedelta(days=float(harmful["day"]))
            # Released by hand once the loop's own release (a challenger's, say) has ended: a model
            # runs one release at a time.
            if due and releases.active_release(session=session, model_id=model.id) is None:
                done.add("harmful")
                frame = events.window(
                    session=session,
                    model_id=model.id,
                    start=now - timedelta(days=1),
                    end=now,
                    visible_at=now,
                    labelled_only=True,
                )
                shuffled = np.random.default_rng(seed).permutation(frame["label"].to_numpy())
                bad = TabularMLP(FEATURES, CLASSES, epochs=3, seed=seed).fit(frame, shuffled)
                champion = versions.champion(session=session, model_id=model.id)
                version = context.registry.register(
                    session=session,
                    model_id=model.id,
                    model_name=MODEL_NAME,
                    model=bad,
                    time=now,
                    parent_id=champion.id,
                    stage="candidate",
                    metrics={"note": "trained by hand on shuffled labels"},
                )
                number = version.number
            else:
                number = None
        if number is not None:
            # Released by hand: the Trainer's offline gate never saw it, the release's checks must.
            runner.release(MODEL_NAME, number, now, StartCanaryFacts(candidate_score=0.9, champion_score=0.9))

    return hourly


def run_path(spec: dict[str, Any], out: Path, seed: int) -> dict[str, Any]:
    """Run one incident; returns its steps, approvals and seconds."""
    started = time.perf_counter()
    if spec.get("crash"):
        return _run_crash(spec, out) | {"seconds": round(time.perf_counter() - started, 1)}
    start = datetime.fromisoformat("2026-03-01T00:00:00+00:00")
    config = DemoConfig(
        out=out,
        onts=ONTS,
        days=float(spec.get("days", DAYS)),
        seed=seed,
        label_share=float(spec.get("label_share", 0.25)),
        scenario=CALM | dict(spec.get("scenario") or {}),
        policy=dict(spec.get("policy") or {}),
        fault=_fault(spec["fault"], start) if spec.get("fault") else None,
        feedback=_feedback(spec["feedback"], start, seed) if spec.get("feedback") else None,
        hourly=_hourly(spec, start, seed),
    )
    run_demo(config)
    from driftpilot.memory import db

    sessions = db.connect(f"sqlite:///{out / 'driftpilot.sqlite'}")
    with sessions() as session:
        log = decisions.list_decisions(session=session)
        asked = [f"{a.action} {a.status}" for a in approvals.list_approvals(session=session)]
    return {"steps": [step_of(d) for d in log], "approvals": asked, "seconds": round(time.perf_counter() - started, 1)}


def _run_crash(spec: dict[str, Any], out: Path) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests" / "graph"))
    import crash_world  # the test's harness: one world, one kill point

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    crash_world.build(out)
    child = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "graph" / "crash_world.py"), str(out), spec["crash"]],
        capture_output=True,
        text=True,
    )
    if child.returncode != -9:
        raise RuntimeError(f"the loop was meant to be killed, it ended with {child.returncode}: {child.stderr[-500:]}")
    context, checkpoints = crash_world.parts(out)
    with sqlite_checkpointer(checkpoints) as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.step(MODEL_NAME, crash_world.NOW + timedelta(minutes=5), {"kind": "schedule"})
        runner.step(MODEL_NAME, crash_world.NOW + timedelta(hours=1), {"kind": "schedule"})
    with context.sessions() as session:
        log = decisions.list_decisions(session=session)
    return {"steps": ["process killed mid-training, restarted", *(step_of(d) for d in log)], "approvals": []}


def judge(spec: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
    """Compare the run with the expected path; each failure says what was missing or extra."""
    expected = spec["expected"]
    steps = result["steps"]
    problems = []
    at = 0
    for want in expected.get("path", []):
        found = next((i for i in range(at, len(steps)) if steps[i].startswith(want)), None)
        if found is None:
            problems.append(f"missing (in order): {want}")
        else:
            at = found + 1
    for banned in expected.get("never", []):
        if any(s.startswith(banned) for s in steps):
            problems.append(f"happened but must not: {banned}")
    for step, count in (expected.get("counts") or {}).items():
        seen = sum(s.startswith(step) for s in steps)
        if seen != count:
            problems.append(f"{step}: {seen} times, expected {count}")
    if "approvals" in expected and result["approvals"] != expected["approvals"]:
        problems.append(f"approvals {result['approvals']}, expected {expected['approvals']}")
    return {"ok": not problems, "problems": problems}


def actual_path(spec: dict[str, Any], steps: list[str]) -> list[str]:
    """The run's steps that the expectation speaks of, in the order each first happened, with how
    often it happened (the monitor's many healthy checks and the canary's waits are left out)."""
    wanted = [*spec["expected"].get("path", []), *spec["expected"].get("never", [])]
    counts: dict[str, int] = {}
    for s in steps:
        if any(s.startswith(w) for w in wanted) or s.startswith("process killed"):
            counts[s] = counts.get(s, 0) + 1
    return [s if n == 1 else f"{s} ×{n}" for s, n in counts.items()]
