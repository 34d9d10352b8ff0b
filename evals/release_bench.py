"""Release bench: four candidates released into the live ONT stream, judged by the Release Manager.

A champion trained on days 0-9 of the ONT scenario (before the firmware v2.0 rollout) serves
the fleet from day 11, when the rollout has degraded it. Four candidates, each of which passed
the offline gate, are released into that stream, one at a time, through the real path: the
loop's graph (``release_manager`` then ``canary_judge``, resumed every hour), the default
policy's plan (shadow, 5 %, 25 %, promotion), predictions served and recorded through
:meth:`driftpilot.serving.routing.Serving.predict`, a quarter of the readings labelled 75 minutes
late (as in the demo).

* **better**: trained on days 10-11, after the rollout began;
* **worse**: trained on days 0-9 with 40 % of the labels shuffled;
* **worse on one slice**: the better model, except that on one old firmware (the one with the
  fewest failures) it never predicts a failure (answers ``online``): better overall, worse there;
* **equal**: the champion itself, registered again.

For each: the verdict, the labelled events both versions answered when it was reached, the hours
it took, and the share of all traffic during the release that the candidate served (a bad
candidate's exposure). The peer, measured on the same stream and candidates: a fixed-horizon
canary as a metrics-driven rollout tool runs it, with no knowledge of the model (no shadow, no
paired answers): 5 % of entities from the start, judged once 200 of its events are labelled, on
balanced accuracy against the control cohort's over the same hours, promoted unless 2 points
worse.

Goals (issue 6): every verdict right; a bad candidate served to at most 2 % of traffic in total;
a good one promoted within a few thousand labelled events.

    .venv/bin/python evals/release_bench.py [--seeds 0,1,2] [--onts 200]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftpilot.agents.context import AgentContext  # noqa: E402
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer  # noqa: E402
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont  # noqa: E402
from driftpilot.memory import db, decisions, events, managed, releases, versions  # noqa: E402
from driftpilot.memory.ingest import ingest_labels  # noqa: E402
from driftpilot.models.registry import Registry  # noqa: E402
from driftpilot.models.tabular_mlp import TabularMLP  # noqa: E402
from driftpilot.policies import PolicyEngine, StartCanaryFacts, load_policy  # noqa: E402
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator  # noqa: E402
from driftpilot.serving.rollback import manual_rollback  # noqa: E402
from driftpilot.serving.routing import Serving, who_served  # noqa: E402
from driftpilot.tools.cohort import canary_mask  # noqa: E402
from driftpilot.tools.metrics import balanced_accuracy  # noqa: E402

RESULTS = ROOT / "evals" / "results"
LABEL_SHARE = 0.25
LABEL_DELAY = timedelta(minutes=75)
#: The release period: from day 11 (the rollout under way) for at most two days.
RELEASE_START_DAY, HORIZON_HOURS = 11.0, 48
RIGHT = {"better": "promoted", "worse": "rolled_back", "worse on one slice": "rolled_back", "equal": "champion kept"}


class _OneSliceBlind:
    """The better model, but never predicting a failure on one slice (a firmware)."""

    def __init__(self, model: Any, column: str, value: str) -> None:
        self.model, self.column, self.value = model, column, value
        self.classes = model.classes

    def predict_proba(self, columns: Any) -> np.ndarray:
        probabilities = np.array(self.model.predict_proba(columns), dtype=float)
        blind = np.asarray(columns[self.column]).astype(str) == self.value
        probabilities[blind] = 0.0
        probabilities[blind, self.classes.index("online")] = 1.0
        return probabilities

    def predict(self, columns: Any) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(columns).argmax(axis=1)]


class _BenchRegistry(Registry):
    """The registry, but loading a stand-in for versions the bench wraps (the slice-blind one)."""

    def __init__(self, root: Path, stand_ins: dict[int, Any]) -> None:
        super().__init__(root)
        self.stand_ins = stand_ins

    def load(self, version: Any) -> Any:
        return self.stand_ins.get(version.number) or super().load(version)


@dataclass
class Stream:
    ticks: list[Any]
    per_hour: int


def _concat(ticks: list[Any]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    features = {k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features}
    return features, np.concatenate([t.labels for t in ticks])


def _sample(features: dict[str, np.ndarray], labels: np.ndarray, n: int, rng: np.random.Generator):
    pick = rng.choice(len(labels), size=min(n, len(labels)), replace=False)
    return {k: v[pick] for k, v in features.items()}, labels[pick]


def build_candidates(seed: int, onts: int) -> tuple[Stream, dict[str, Any], Any, str]:
    config = OntScenarioConfig(n_onts=onts, days=RELEASE_START_DAY + HORIZON_HOURS / 24, seed=seed, outages=())
    simulator = OntSimulator(config)
    ticks = list(simulator.ticks())
    day = [t.index / simulator.ticks_per_hour / 24 for t in ticks]
    old = [t for t, d in zip(ticks, day, strict=True) if d < 10]
    new = [t for t, d in zip(ticks, day, strict=True) if 10 <= d < RELEASE_START_DAY]
    live = [t for t, d in zip(ticks, day, strict=True) if d >= RELEASE_START_DAY]
    rng = np.random.default_rng(seed)
    old_x, old_y = _sample(*_concat(old), 20000, rng)
    new_x, new_y = _sample(*_concat(new), 20000, rng)
    champion = TabularMLP(FEATURES, CLASSES, seed=seed).fit(old_x, old_y)
    better = TabularMLP(FEATURES, CLASSES, seed=seed).fit(new_x, new_y)
    noisy = old_y.copy()
    flip = rng.random(len(noisy)) < 0.4
    noisy[flip] = rng.permutation(noisy[flip])
    worse = TabularMLP(FEATURES, CLASSES, seed=seed).fit(old_x, noisy)
    # The slice: the old firmware with the fewest failures in the release period, so that the
    # blind candidate stays better overall (most failures are on the new firmware).
    live_x, live_y = _concat(live)
    failing = np.asarray(live_x["firmware"]).astype(str)[live_y != "online"]
    values, counts = np.unique(failing[failing != "v2.0"], return_counts=True)
    blind_value = str(values[counts.argmin()])
    candidates = {
        "better": better,
        "worse": worse,
        "worse on one slice": _OneSliceBlind(better, "firmware", blind_value),
        "equal": champion,
    }
    return Stream(live, simulator.ticks_per_hour), candidates, champion, blind_value


def release_one(stream: Stream, champion: Any, candidate: Any, seed: int) -> dict[str, Any]:
    """Release ``candidate`` beside ``champion`` through the loop's graph; what happened."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        sessions = db.connect(f"sqlite:///{folder / 'm.sqlite'}")
        stand_ins: dict[int, Any] = {}
        registry = _BenchRegistry(folder / "artifacts", stand_ins)
        start = stream.ticks[0].time
        with sessions() as session:
            model = managed.register_model(
                session=session,
                name=MODEL_NAME,
                task="tabular_classification",
                family="tabular_mlp",
                schema=schema_of_ont(),
            )
            registry.register(
                session=session, model_id=model.id, model_name=MODEL_NAME, model=champion, time=start, stage="champion"
            )
            releases.log_serving(session=session, model_id=model.id, at=start, run_id="bench", reason="the champion")
            saved = candidate.model if isinstance(candidate, _OneSliceBlind) else candidate
            version = registry.register(
                session=session, model_id=model.id, model_name=MODEL_NAME, model=saved, time=start
            )
            if saved is not candidate:
                stand_ins[version.number] = candidate
        context = AgentContext(sessions=sessions, registry=registry, policy=PolicyEngine(load_policy()), seed=seed)
        serving = Serving(sessions, registry, model.id, MODEL_NAME)
        label_rng = np.random.default_rng(seed + 1000)
        pending: dict[int, list[dict[str, Any]]] = {}
        delay_ticks = int(LABEL_DELAY / timedelta(hours=1) * stream.per_hour)
        outcome, decided_tick = "champion kept", None
        with sqlite_checkpointer(folder / "cp.sqlite") as checkpointer:
            runner = LoopRunner(context, checkpointer)
            # The candidate passed the offline gate: the bench is about what live traffic shows.
            runner.release(MODEL_NAME, version.number, start, StartCanaryFacts(candidate_score=0.9, champion_score=0.9))
            for i, tick in enumerate(stream.ticks):
                keys = [f"{e}/{tick.index}" for e in tick.entities]
                serving.predict(
                    keys=keys,
                    times=[tick.time] * len(tick),
                    entities=list(tick.entities),
                    groups=list(tick.groups),
                    features=tick.features,
                )
                seen = label_rng.random(len(tick)) < LABEL_SHARE
                pending.setdefault(i + delay_ticks, []).extend(
                    {"event_key": k, "value": str(v), "source": "system", "time": tick.time + LABEL_DELAY}
                    for k, v in zip(np.asarray(keys)[seen], tick.labels[seen], strict=True)
                )
                due = pending.pop(i, [])
                if due:
                    with sessions() as session:
                        ingest_labels(session=session, model=MODEL_NAME, labels=due)
                if (i + 1) % stream.per_hour == 0 and runner.waiting(MODEL_NAME):
                    runner.step(MODEL_NAME, tick.time, {"kind": "schedule"})
                    if not runner.waiting(MODEL_NAME):
                        decided_tick = i
                        break
        with sessions() as session:
            logged = decisions.list_decisions(session=session, model_id=model.id)
            release = releases.list_releases(session=session, model_id=model.id)[0]
            served = events.window(session=session, model_id=model.id, start=None, end=None, with_features=False)
            stage = versions.get_version(session=session, model_id=model.id, number=version.number).stage
        # Measured after the release is read back: the bench's own rollback would be its last decision.
        lookup_ms, rollback_ms = _timings(sessions, serving, stream, start)
        final = logged[-1]
        if final.action == "promote":
            outcome = "promoted"
        elif final.action == "rollback":
            outcome = "champion kept" if release.verdict == "inconclusive" else "rolled_back"
        evidence = final.evidence or {}
        overall = evidence.get("overall", {})
        return {
            "outcome": outcome,
            "release_verdict": release.verdict,
            "stage": stage,
            "reason": final.rationale,
            "hours": round(
                ((decided_tick if decided_tick is not None else len(stream.ticks)) + 1) / stream.per_hour, 1
            ),
            # Labelled events both versions had answered when the verdict was reached (a guard or a
            # slice test may decide before the overall test does).
            "labelled_at_verdict": overall.get("n"),
            "decided_by": release.verdict,
            "events": int(len(served)),
            "candidate_share": round(float(np.mean(served["served_version"] == version.number)), 4),
            "steps": [d.outcome for d in logged if d.agent == "release_manager"],
            "who_served_ms_p99": lookup_ms,
            "rollback_to_next_request_ms": rollback_ms,
        }


def _timings(sessions: Any, serving: Serving, stream: Stream, start: Any) -> tuple[float, float]:
    """Milliseconds: "what served entity X at time T, and why?" (99th percentile of 200 lookups),
    and a manual rollback until the next prediction request is answered by the rolled-back-to
    version."""
    rng = np.random.default_rng(0)
    entities = np.unique(np.concatenate([t.entities for t in stream.ticks[:4]]))
    took = []
    with sessions() as session:
        for _ in range(200):
            at = start + timedelta(minutes=float(rng.uniform(0, HORIZON_HOURS * 60)))
            began = time.perf_counter()
            who_served(session, model=MODEL_NAME, entity=str(rng.choice(entities)), at=at)
            took.append(time.perf_counter() - began)
    tick = stream.ticks[-1]
    began = time.perf_counter()
    try:
        manual_rollback(sessions, model=MODEL_NAME, version=1, who="bench", now=tick.time + timedelta(hours=1))
    except ValueError:
        pass  # version 1 already serves everyone: nothing to roll back, the request below still counts
    answers = serving.predict(
        keys=[f"after-rollback/{e}" for e in tick.entities],
        times=[tick.time + timedelta(hours=1)] * len(tick),
        entities=list(tick.entities),
        groups=list(tick.groups),
        features=tick.features,
    )
    elapsed = time.perf_counter() - began
    assert {a["version"] for a in answers} == {1}
    return round(float(np.percentile(took, 99)) * 1000, 2), round(elapsed * 1000, 1)


def fixed_canary(stream: Stream, champion: Any, candidate: Any, seed: int, *, share=0.05, labels=200, margin=0.02):
    """The peer: a fixed-horizon canary on a hashed share of entities, judged once."""
    rng = np.random.default_rng(seed + 1000)
    canary_truth, canary_pred, control_truth, control_pred = [], [], [], []
    served = total = 0
    for i, tick in enumerate(stream.ticks):
        mask = canary_mask([str(e) for e in tick.entities], share, salt="peer")
        seen = rng.random(len(tick)) < LABEL_SHARE
        total += len(tick)
        served += int(mask.sum())
        canary_truth += list(tick.labels[mask & seen])
        canary_pred += list(np.asarray(candidate.predict({k: v[mask & seen] for k, v in tick.features.items()})))
        control_truth += list(tick.labels[~mask & seen])
        control_pred += list(np.asarray(champion.predict({k: v[~mask & seen] for k, v in tick.features.items()})))
        if len(canary_truth) >= labels:
            cand = balanced_accuracy(canary_truth, canary_pred)
            ctrl = balanced_accuracy(control_truth, control_pred)
            return {
                "outcome": "promoted" if cand - ctrl >= -margin else "rolled_back",
                "labelled": len(canary_truth),
                "hours": round((i + 1) / stream.per_hour, 1),
                "candidate_share": round(served / total, 4),
            }
    return {
        "outcome": "champion kept",
        "labelled": len(canary_truth),
        "hours": None,
        "candidate_share": round(served / total, 4),
    }


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Release bench: four candidates released into the ONT stream",
        "",
        f"{results['onts']} ONTs, seeds {results['seeds']}; champion trained on days 0-9, released beside from day 11 "
        f"(firmware v2.0 rollout under way); a quarter of readings labelled 75 min late; default policy plan "
        f"(shadow → 5 % → 25 % → promotion, alpha 0.05). Exposure: share of all traffic during the release served "
        f"by the candidate. Peer: fixed-horizon 5 % canary judged once at 200 labelled canary events.",
        "",
        "| candidate | right verdict | driftpilot verdicts (by) | labelled events to verdict | hours "
        "| candidate's traffic share | peer verdicts | peer labelled | peer traffic share |",
        "| --- | --- | --- | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for name, row in results["table"].items():
        lines.append(
            f"| {name} | {RIGHT[name]} | {row['verdicts']} | {row['labelled']} | {row['hours']} | {row['share']} "
            f"| {row['peer_verdicts']} | {row['peer_labelled']} | {row['peer_share']} |"
        )
    bad = results["bad_exposure"]
    lines += [
        "",
        f"Bad candidates' traffic share, mean over runs: driftpilot {bad['driftpilot']:.2%}, peer {bad['peer']:.2%} "
        f"(ratio {bad['ratio']}). Right verdicts: driftpilot {results['right']['driftpilot']}, "
        f"peer {results['right']['peer']} (the peer's right verdict for the equal candidate counted as promotion, "
        "its own rule).",
    ]
    lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
    for goal, (measured, met) in results["goals"].items():
        lines.append(f"| {goal} | {measured} | {'yes' if met else 'no'} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--onts", type=int, default=200)
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RIGHT}
    peers: dict[str, list[dict[str, Any]]] = {name: [] for name in RIGHT}
    wall = time.perf_counter()
    for seed in seeds:
        stream, candidates, champion, blind = build_candidates(seed, args.onts)
        for name, candidate in candidates.items():
            run = release_one(stream, champion, candidate, seed)
            run["slice"] = blind if name == "worse on one slice" else None
            runs[name].append(run)
            peers[name].append(fixed_canary(stream, champion, candidate, seed))
            print(
                f"seed {seed} {name}: {run['outcome']} ({run['release_verdict']}) after {run['hours']} h, "
                f"{run['labelled_at_verdict']} labelled, share {run['candidate_share']}",
                flush=True,
            )

    def mean(values: list[float | None], digits: int = 1) -> float | None:
        known = [v for v in values if v is not None]
        return round(float(np.mean(known)), digits) if known else None

    def percent(values: list[float]) -> str:
        return f"{100 * float(np.mean(values)):.2f} %"

    table = {
        name: {
            "verdicts": ", ".join(f"{r['outcome']} ({r['decided_by']})" for r in rs),
            "labelled": mean([r["labelled_at_verdict"] for r in rs], 0),
            "hours": mean([r["hours"] for r in rs]),
            "share": percent([r["candidate_share"] for r in rs]),
            "peer_verdicts": ", ".join(p["outcome"] for p in peers[name]),
            "peer_labelled": mean([p["labelled"] for p in peers[name]], 0),
            "peer_share": percent([p["candidate_share"] for p in peers[name]]),
        }
        for name, rs in runs.items()
    }
    right = all(r["outcome"] == RIGHT[name] for name, rs in runs.items() for r in rs)
    peer_right = {**RIGHT, "equal": "promoted"}
    n_runs = sum(len(rs) for rs in runs.values())
    right_counts = {
        "driftpilot": f"{sum(r['outcome'] == RIGHT[n] for n, rs in runs.items() for r in rs)}/{n_runs}",
        "peer": f"{sum(p['outcome'] == peer_right[n] for n, ps in peers.items() for p in ps)}/{n_runs}",
    }
    bad_names = ("worse", "worse on one slice")
    ours = float(np.mean([r["candidate_share"] for n in bad_names for r in runs[n]]))
    theirs = float(np.mean([p["candidate_share"] for n in bad_names for p in peers[n]]))
    bad_exposure = {"driftpilot": ours, "peer": theirs, "ratio": round(ours / theirs, 3) if theirs else None}
    bad_share = max(r["candidate_share"] for name in ("worse", "worse on one slice") for r in runs[name])
    good = [r["labelled_at_verdict"] for r in runs["better"] if r["outcome"] == "promoted"]
    lookups = max(r["who_served_ms_p99"] for rs in runs.values() for r in rs)
    rollbacks = max(r["rollback_to_next_request_ms"] for rs in runs.values() for r in rs)
    goals = {
        "every verdict right": (right, right),
        "bad candidate's traffic share ≤ 2 % (worst run)": (bad_share, bad_share <= 0.02),
        "good candidate promoted within a few thousand labelled events (worst run)": (
            max(good) if good else None,
            bool(good) and len(good) == len(seeds) and max(good) <= 5000,
        ),
        "who served entity X at T, and why: p99 ms (worst run)": (lookups, lookups < 1000),
        "rollback until the next request is served by the old version: ms (worst run)": (rollbacks, rollbacks < 1000),
    }
    results = {
        "right": right_counts,
        "bad_exposure": bad_exposure,
        "seeds": seeds,
        "onts": args.onts,
        "table": table,
        "goals": goals,
        "runs": runs,
        "peers": peers,
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    text = markdown(results)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "release_bench.json").write_text(json.dumps(results, indent=2, default=str))
    (RESULTS / "release_bench.md").write_text(text)


if __name__ == "__main__":
    main()
