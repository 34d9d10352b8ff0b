"""The demo: 30 simulated days of the ONT fleet through the whole loop, on embedded defaults.

Events enter through :func:`driftpilot.memory.ingest.ingest_events`, the path the API uses;
labels come back late (an hour after the reading, when the truth is known, plus the time the
ticket takes) and only for a seeded share of events, plus the events the Data Curator asks
people about. The loop's graph runs on the policy's schedule and whenever an alarm arrives.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, open_checkpointer
from driftpilot.loop.bootstrap import register_first_version
from driftpilot.loop.driver import Driver, Moment
from driftpilot.loop.federation import federate
from driftpilot.loop.home import fresh_home
from driftpilot.loop.outbox import Outbox
from driftpilot.memory import db, decisions, events, label_requests, managed, versions
from driftpilot.memory.ingest import EventBatch, ingest_alarm, ingest_labels
from driftpilot.memory.rolling import RollingHistory
from driftpilot.memory.schemas import FeatureSpec, ModelSchema, Rolling
from driftpilot.models.base import CLASS_WEIGHTS
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import PolicyEngine, load_policy, policy_from_mapping
from driftpilot.scenarios.ont import (
    CLASSES,
    FEATURES,
    OntScenarioConfig,
    OntSimulator,
    OutageSpec,
    Tick,
    class_balance,
)
from driftpilot.serving.routing import Serving
from driftpilot.tools.metrics import balanced_accuracy

MODEL_NAME = "ont-offline"
#: Days of history the first version is trained on (and the never-updated model is).
WARMUP_DAYS = 8
#: What the ONT operator states over the shipped default policy when the demo is given no policy
#: file: an ONT about to go offline is the rare class that matters, so models are trained for and
#: chosen by balanced accuracy (the default, accuracy, would let them give it up for the common
#: one). A deliberate choice about what matters, not a setting tuned to the stream.
ONT_CHOICES: dict[str, Any] = {"evaluation": {"metric": "balanced_accuracy"}}


@dataclass
class DemoConfig:
    """Knobs of a demo run."""

    out: Path = Path(".driftpilot/demo")
    onts: int = 400
    days: float = 30
    seed: int = 7
    label_share: float = 0.25
    label_delay: timedelta = timedelta(minutes=75)
    requested_label_delay: timedelta = timedelta(hours=2)
    policy_path: Path | None = None
    database_url: str | None = None
    #: Where training runs: ``cpu``, ``cuda`` or ``auto`` (CUDA when present).
    device: str = "cpu"
    #: Simulator settings other than size, length and seed (scripted incidents: a calm fleet
    #: with one change), and policy fields over the policy file's (a mapping, validated whole).
    scenario: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)
    #: Hooks of scripted incidents: ``fault(features, now)`` changes the readings before they are
    #: served (a firmware's unit change); ``feedback(keys, labels, now)`` the labels people send
    #: back (poisoned feedback); ``hourly(context, runner, now)`` acts as a person or a tool would
    #: (answering approvals, releasing a version trained by hand) at the top of every hour.
    fault: Callable[[dict[str, np.ndarray], datetime], dict[str, np.ndarray]] | None = None
    feedback: Callable[[list[str], np.ndarray, datetime], np.ndarray] | None = None
    hourly: Callable[[AgentContext, LoopRunner, datetime], None] | None = None


@dataclass
class DemoResult:
    out: Path
    summary: dict[str, Any]
    daily: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)


def schema_of_ont() -> ModelSchema:
    return ModelSchema(
        features=[FeatureSpec(name=n, kind=k) for n, k in FEATURES],  # type: ignore[arg-type]
        target="offline_within_1h",
        classes=list(CLASSES),
        entity_key="ont_id",
        group_key="olt_port",
        timestamp="time",
        # Hardware before the firmware it ships with: a new device model is named as the cause.
        slice_keys=["device_model", "firmware", "region"],
        # Each ONT's last hour of readings (four 15-minute readings): how fast Rx falls, how
        # much the readings swing, how long since it came back.
        rolling=Rolling(k=4),
    )


def with_rolling(history: RollingHistory, tick: Tick) -> Tick:
    """The tick with each reading's rolling features (derived as serving and ingest derive them)."""
    numbers = {name: tick.features[name] for name in history.numbers}
    derived = history.derive(list(tick.entities), [tick.time] * len(tick), numbers)
    return replace(tick, features={**tick.features, **derived})


def _event_keys(entities: np.ndarray, stamp: str) -> list[str]:
    return [f"{e}/{stamp}" for e in entities]


def run_demo(
    config: DemoConfig,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> DemoResult:
    """Run the demo and write its outputs into ``config.out``; ``progress`` hears of simulated
    time, ``on_epoch`` of every training epoch."""
    if config.days <= WARMUP_DAYS + 1:
        raise ValueError(
            f"days must be more than {WARMUP_DAYS + 1}: the first {WARMUP_DAYS} are the history "
            f"version 1 learns from, got {config.days}"
        )
    if not 0 < config.label_share <= 1:
        raise ValueError(f"label_share must be in (0, 1], got {config.label_share}")
    import torch

    torch.set_num_threads(1)  # small networks: one thread is faster than two fighting
    wall_start = time.perf_counter()
    out = config.out
    fresh_home(out, "demo")
    url = config.database_url or f"sqlite:///{out / 'driftpilot.sqlite'}"
    sessions = db.connect(url)
    policy = load_policy(config.policy_path)
    choices = config.policy if config.policy_path else _merged(ONT_CHOICES, config.policy)
    if choices:
        policy = policy_from_mapping(_merged(policy.model_dump(mode="json"), choices), source="the demo's policy")
    # A policy file given alone is watched: changed while the demo runs, it is read again (or refused).
    engine = PolicyEngine(policy, None if choices else config.policy_path)
    registry = Registry(out / "artifacts")
    context = AgentContext(
        sessions=sessions, registry=registry, policy=engine, seed=config.seed, on_epoch=on_epoch, federate=federate
    )

    simulator = OntSimulator(
        OntScenarioConfig(n_onts=config.onts, days=config.days, seed=config.seed, **_scenario(config.scenario))
    )
    ticks_per_day = 24 * simulator.ticks_per_hour
    warmup_ticks = WARMUP_DAYS * ticks_per_day
    label_rng = np.random.default_rng([config.seed, 1])

    # Pass 1: the history the first version learns from (the naturally labelled readings of
    # days 0-7); the same seeded label draws are replayed in pass 2, so its snapshot holds
    # exactly these rows.
    schema = schema_of_ont()
    model_features = [(f.name, f.kind) for f in schema.model_features]
    rolling = RollingHistory(schema)
    history: list[pd.DataFrame] = []
    for tick in simulator.ticks():
        if tick.index >= warmup_ticks:
            break
        tick = with_rolling(rolling, tick)
        seen = label_rng.random(len(tick)) < config.label_share
        frame = pd.DataFrame({k: v[seen] for k, v in tick.features.items()})
        frame["label"] = tick.labels[seen]
        frame["key"] = _event_keys(tick.entities[seen], tick.time.strftime("%Y-%m-%dT%H:%MZ"))
        history.append(frame)
    warmup = pd.concat(history, ignore_index=True)
    n_holdout = len(warmup) // 5
    fit_rows, holdout_rows = warmup.iloc[:-n_holdout], warmup.iloc[-n_holdout:]
    first = TabularMLP(
        model_features,
        CLASSES,
        seed=config.seed,
        device=config.device,
        class_weight=CLASS_WEIGHTS[policy.evaluation.metric],
    )
    first.fit(fit_rows, fit_rows["label"].to_numpy(), on_epoch=on_epoch)
    first_score = balanced_accuracy(holdout_rows["label"].to_numpy(), first.predict(holdout_rows))

    with sessions() as session:
        if any(m.name == MODEL_NAME for m in managed.list_models(session=session)):
            raise FileExistsError(
                f"the database at {url} already holds a demo run of '{MODEL_NAME}'; give the demo a fresh one"
            )
        model_row = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family=TabularMLP.family,
            schema=schema,
            policy=policy.name,
        )

    # Pass 2: the stream through the loop.
    label_rng = np.random.default_rng([config.seed, 1])
    interval = timedelta(minutes=simulator.config.interval_minutes)
    alarms_by_tick: dict[int, list[Any]] = {}
    resolved_by_tick: dict[int, list[Any]] = {}
    for alarm in simulator.alarms():
        alarms_by_tick.setdefault(int((alarm.starts_at - simulator.config.start) / interval), []).append(alarm)
        resolved_by_tick.setdefault(int((alarm.ends_at - simulator.config.start) / interval), []).append(alarm)
    pending_labels: dict[int, list[dict[str, Any]]] = {}
    truth_by_key: dict[str, str] = {}
    label_delay_ticks = int(config.label_delay / interval)
    check_every = max(1, policy.monitor.check_every_minutes // simulator.config.interval_minutes)
    records: dict[str, list[Any]] = {
        k: [] for k in ("event_id", "time", "entity", "served_version", "prediction", "static_prediction", "label")
    }
    # What is served now; refreshed after each run of the loop, the only thing that changes it.
    serving = Serving(sessions, registry, model_row.id, MODEL_NAME)
    rolling = RollingHistory(schema)
    outbox = Outbox(MODEL_NAME, history=rolling)

    # In the memory's own database when that is PostgreSQL, else a SQLite file beside it.
    with open_checkpointer(url, out / "checkpoints.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.forget(MODEL_NAME)
        trigger = {"kind": "schedule", "every_minutes": policy.monitor.check_every_minutes}
        driver = Driver(sessions, runner, MODEL_NAME, model_row.id, trigger=trigger, outbox=outbox, serving=serving)

        def the_fleet(driver: Driver) -> Iterator[Moment]:
            """The source: the simulated fleet tick by tick, served, labelled late, its alarms
            sent as the alarm system's webhook sends them; a moment at each tick after warm-up."""
            for tick in simulator.ticks():
                now = tick.time
                stamp = now.strftime("%Y-%m-%dT%H:%MZ")
                keys = _event_keys(tick.entities, stamp)

                # Serve: champion for most entities, the canary's share by hashed entity id.
                if config.fault is not None and tick.index >= warmup_ticks:
                    tick = replace(tick, features=config.fault(dict(tick.features), now))
                tick = with_rolling(rolling, tick)
                if tick.index < warmup_ticks:
                    versions_served = np.full(len(tick), 1)
                    probabilities = first.predict_proba(tick.features)
                else:
                    versions_served = serving.route(list(tick.entities))
                    probabilities = serving.predict_proba(tick.features, versions_served, CLASSES)
                prediction = np.asarray(CLASSES)[probabilities.argmax(axis=1)]
                static_prediction = first.predict(tick.features)

                outbox.add_events(
                    EventBatch(
                        keys=keys,
                        times=[now] * len(tick),
                        entities=list(tick.entities),
                        groups=list(tick.groups),
                        features=tick.features,
                        served_version=[int(v) for v in versions_served],
                        prediction=list(prediction),
                        # Four decimals are plenty for the record and halve the JSON to write.
                        probabilities=probabilities.round(4),
                    )
                )
                # Natural feedback: a seeded share of readings get their label, late.
                seen = label_rng.random(len(tick)) < config.label_share
                label_time = now + config.label_delay
                sent = tick.labels[seen]
                if config.feedback is not None and tick.index >= warmup_ticks:
                    sent = config.feedback(list(np.asarray(keys)[seen]), sent, now)
                pending_labels.setdefault(tick.index + label_delay_ticks, []).extend(
                    {"event_key": k, "value": str(v), "source": "system", "time": label_time}
                    for k, v in zip(np.asarray(keys)[seen], sent, strict=True)
                )
                truth_by_key.update(zip(keys, (str(v) for v in tick.labels), strict=True))
                outbox.add_labels(pending_labels.pop(tick.index, []))
                alarms_now = alarms_by_tick.get(tick.index, [])
                end_of_hour = (tick.index + 1) % simulator.ticks_per_hour == 0
                if alarms_now or end_of_hour or tick.index == warmup_ticks - 1:
                    outbox.flush(sessions)
                with sessions() as session:
                    # Alarms arrive as the alarm system's webhook sends them: firing, later resolved.
                    for alarm in alarms_now:
                        ingest_alarm(session=session, alarm=alarm.webhook("firing") | {"model": MODEL_NAME})
                    for alarm in resolved_by_tick.get(tick.index, []):
                        ingest_alarm(session=session, alarm=alarm.webhook("resolved") | {"model": MODEL_NAME})
                    if tick.index % simulator.ticks_per_hour == 0 and tick.index >= warmup_ticks:
                        _answer_label_requests(session, model_row.id, truth_by_key, now, config)

                records["event_id"].extend(keys)
                records["time"].extend([now.isoformat()] * len(tick))
                records["entity"].extend(tick.entities)
                records["served_version"].extend(versions_served.tolist())
                records["prediction"].extend(prediction)
                records["static_prediction"].extend(static_prediction)
                records["label"].extend(tick.labels)

                if tick.index == warmup_ticks - 1:
                    register_first_version(
                        sessions,
                        registry,
                        model_id=model_row.id,
                        model_name=MODEL_NAME,
                        model=first,
                        score=first_score,
                        fit_rows=fit_rows,
                        holdout_keys=list(holdout_rows["key"]),
                        now=now,
                        source=f"the warm-up days 0-{WARMUP_DAYS - 1}",
                    )
                    serving.refresh()
                if tick.index >= warmup_ticks:
                    if config.hourly is not None and tick.index % simulator.ticks_per_hour == 0:
                        config.hourly(context, runner, now)
                    # An alarm webhook triggers a run of its own, next to any waiting canary; a
                    # waiting run (a canary gathering evidence, whichever trigger started it) is
                    # looked at every hour, so its verdict is not held back.
                    yield Moment(
                        now,
                        check=(tick.index - warmup_ticks) % check_every == 0,
                        resume=tick.index % simulator.ticks_per_hour == 0,
                        alarms=[alarm.key for alarm in alarms_now],
                    )
                if progress:
                    progress(tick.index + 1, simulator.n_ticks)

        driver.run(the_fleet)

    predictions = pd.DataFrame(records)
    return _write_outputs(out, sessions, model_row.id, predictions, simulator, time.perf_counter() - wall_start, config)


def _merged(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = (
            _merged(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        )
    return merged


def _scenario(overrides: dict[str, Any]) -> dict[str, Any]:
    values = dict(overrides)
    if "outages" in values:
        values["outages"] = tuple(o if isinstance(o, OutageSpec) else OutageSpec(**o) for o in values["outages"])
    return values


def _answer_label_requests(
    session: Session,
    model_id: int,
    truth_by_key: dict[str, str],
    now: datetime,
    config: DemoConfig,
) -> None:
    """The people behind the labelling queue: answer requests older than the delay (oracle)."""
    due = [
        r
        for r in label_requests.open_label_requests(session=session, model_id=model_id)
        if r.time + config.requested_label_delay <= now
    ]
    if not due:
        return
    frame = events.events_by_ids(session=session, ids=[r.event_id for r in due])
    ingest_labels(
        session=session,
        model=MODEL_NAME,
        labels=[{"event_key": k, "value": truth_by_key[k], "source": "oracle", "time": now} for k in frame["key"]],
    )
    label_requests.mark_answered(session=session, event_ids=[r.event_id for r in due], answered_at=now)


def _write_outputs(
    out: Path,
    sessions: sessionmaker[Session],
    model_id: int,
    predictions: pd.DataFrame,
    simulator: OntSimulator,
    seconds: float,
    config: DemoConfig,
) -> DemoResult:
    from driftpilot.loop.report import write_report

    predictions = predictions.copy()
    files = {
        "predictions": out / "predictions.csv",
        "decisions": out / "decisions.jsonl",
        "summary": out / "summary.json",
        "report": out / "report.html",
    }
    predictions.to_csv(files["predictions"], index=False)
    with sessions() as session:
        logged = [decisions.decision_as_dict(d) for d in decisions.list_decisions(session=session, model_id=model_id)]
        version_rows = [
            {
                "number": v.number,
                "stage": v.stage,
                "time": v.time.isoformat(),
                "metrics": {k: v.metrics.get(k) for k in ("recent_balanced_accuracy", "train_rows", "train_seconds")},
            }
            for v in versions.list_versions(session=session, model_id=model_id)
        ]
    with files["decisions"].open("w") as handle:
        for d in logged:
            handle.write(json.dumps(d, default=str) + "\n")

    day = (pd.to_datetime(predictions["time"]) - pd.Timestamp(simulator.config.start)).dt.days
    predictions["day"] = day
    daily_rows = []
    for d, part in predictions.groupby("day"):
        acts = [
            x
            for x in logged
            if x["action"] not in ("check",) and (decisions.logged_time(x) - simulator.config.start).days == d
        ]
        daily_rows.append(
            {
                "day": int(d),
                "static": balanced_accuracy(part["label"].to_numpy(), part["static_prediction"].to_numpy()),
                "served": balanced_accuracy(part["label"].to_numpy(), part["prediction"].to_numpy()),
                "offline_share": float((part["label"] != "online").mean()),
                "decisions": _summarise(acts),
            }
        )
    daily = pd.DataFrame(daily_rows)

    def period(frame: pd.DataFrame, column: str) -> float:
        return balanced_accuracy(frame["label"].to_numpy(), frame[column].to_numpy())

    early, late = predictions[predictions["day"] <= 9], predictions[predictions["day"] >= 11]
    outage_decisions = [x for x in logged if x["agent"] == "diagnostician" and x["outcome"] == "quarantined"]
    static_early, served_early = period(early, "static_prediction"), period(early, "prediction")
    static_late = period(late, "static_prediction") if len(late) else None
    served_late = period(late, "prediction") if len(late) else None
    summary: dict[str, Any] = {
        "model": MODEL_NAME,
        "onts": config.onts,
        "days": config.days,
        "events": len(predictions),
        "class_balance": {k: round(v, 4) for k, v in class_balance(predictions["label"].to_numpy()).items()},
        "balanced_accuracy": {
            "static_days_0_9": static_early,
            "static_days_11_30": static_late,
            "served_days_0_9": served_early,
            "served_days_11_30": served_late,
        },
        "retrains": sum(1 for x in logged if x["action"] == "retrain" and x["outcome"] in ("candidate", "rejected")),
        "promotions": sum(1 for x in logged if x["action"] == "promote"),
        "rollbacks": sum(1 for x in logged if x["action"] == "rollback"),
        "outage_decisions": [{"time": x["time"], "rationale": x["rationale"]} for x in outage_decisions],
        "versions": version_rows,
        "decisions": len(logged),
        "wall_seconds": round(seconds, 1),
    }
    if static_late is not None and served_late is not None:
        summary["static_drop_points"] = round(100 * (static_early - static_late), 2)
        summary["served_gap_points"] = round(100 * (served_early - served_late), 2)
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    write_report(files["report"], daily, logged, summary, scenario_marks=simulator.marks())
    return DemoResult(out=out, summary=summary, daily=daily, files=files)


def _summarise(decisions_of_day: list[dict[str, Any]]) -> str:
    parts = []
    for d in decisions_of_day:
        if d["action"] == "retrain":
            parts.append(f"retrain→{d['outcome']}")
        elif d["action"] in ("promote", "rollback", "start_canary", "bootstrap"):
            parts.append(d["action"])
        elif d["agent"] == "diagnostician" and d["outcome"] == "quarantined":
            parts.append("outage→quarantine")
    return ", ".join(parts)
