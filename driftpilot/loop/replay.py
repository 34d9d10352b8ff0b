"""`driftpilot replay`: backtest the loop on a recorded stream, beside the alternatives.

The rows of a CSV file enter, in time order, through :func:`driftpilot.memory.ingest.ingest_events`
(the path a live client uses), each predicted first by the version the loop serves to its
entity. Labels enter through :func:`~driftpilot.memory.ingest.ingest_labels`, and only as the
flags allow:

* the first ``warmup`` rows are labelled history: version 1 learns from them;
* after them, a label is revealed ``label_delay`` rows after its event (natural feedback, a
  seeded random share of the rows), or ``label_delay`` rows after the Data Curator asks for it;
* at most ``label_budget`` of the rows after the warm-up ever reveal their label, natural and
  requested together; natural feedback is drawn at ``label_budget × (1 - request_share)`` so the
  Curator's requests have room, and once the budget is spent nothing more is revealed.

A label is ingested, with the time of the row at which it is revealed, only when the stream has
reached that row; nothing reads labels another way, so no component can see one earlier. The
baselines (:mod:`driftpilot.loop.baselines`) get the very same labels at the very same rows.

Streams without a time column run on a row clock: row ``i`` happens ``i × row_seconds`` after
2026-01-01T00:00Z, and the policy's hours and minutes are read on that clock. The label space
is the set of values of the target column (an operator declares it, as an intent catalogue
does); a class is only learnt once labels of it are revealed. Text columns are encoded into
384 sentence-vector features (all-MiniLM-L6-v2, offline, cached by text hash) before ingest.
"""

from __future__ import annotations

import copy
import json
import math
import time
import warnings as warnings_module
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.context import AgentContext
from driftpilot.agents.release_manager import RELEASE_STARTS
from driftpilot.graph.runner import LoopRunner, open_checkpointer
from driftpilot.loop.baselines import BASELINES, Baseline, Periodic, PeriodicLogistic, RiverARF, Static, Stream
from driftpilot.loop.bootstrap import register_first_version
from driftpilot.loop.driver import Driver, Moment
from driftpilot.loop.federation import federate
from driftpilot.loop.home import fresh_home
from driftpilot.loop.outbox import Outbox
from driftpilot.loop.schedule import CheckSchedule
from driftpilot.memory import db, decisions, events, label_requests, managed, versions
from driftpilot.memory.ingest import EventBatch, event_ids
from driftpilot.memory.rolling import RollingHistory, telemetry_rolling
from driftpilot.memory.schemas import FeatureSpec, ModelSchema, Rolling
from driftpilot.models.base import CLASS_WEIGHTS, TorchClassifier
from driftpilot.models.families import family
from driftpilot.models.intent_mlp import IntentMLP
from driftpilot.models.registry import Registry
from driftpilot.models.text_encoder import SentenceEncoder
from driftpilot.policies import Policy, PolicyEngine, load_policy
from driftpilot.serving.routing import Serving
from driftpilot.tools.metrics import BY_NAME, accuracy, balanced_accuracy, macro_f1

#: The row clock's origin, for streams without a time column.
ROW_CLOCK_START = datetime(2026, 1, 1, tzinfo=UTC)
#: Most rows predicted and ingested between two looks at the schedule.
MAX_CHUNK = 2000
#: Pending events and labels that make the outbox write itself out.
FLUSH_AT = 20_000


@dataclass
class ReplayConfig:
    """What ``driftpilot replay`` was asked to do."""

    data: Path
    target: str
    out: Path = Path(".driftpilot/replay")
    time_col: str | None = None
    entity_col: str | None = None
    text_col: str | None = None
    feature_cols: list[str] | None = None
    #: Category features whose values slice errors and drift (the schema's ``slice_keys``).
    slice_cols: list[str] = field(default_factory=list)
    warmup: int = 1000
    label_delay: int = 0
    label_budget: float = 0.1
    policy_path: Path | None = None
    seed: int = 0
    baselines: tuple[str, ...] = BASELINES
    model: str | None = None
    row_seconds: float = 10.0
    #: Share of the label budget left for the Curator's requests.
    request_share: float = 0.2
    #: Rows between two retrains of the periodic baseline (default: a tenth of the stream).
    periodic_every: int | None = None
    #: Revealed labels the periodic baseline learns from.
    periodic_window: int = 2000
    database_url: str | None = None
    #: Where sentence vectors are cached (the CLI passes ``Settings.embedding_cache_dir``);
    #: ``None`` keeps them in memory for this run only.
    embedding_cache: Path | None = None
    encoder: SentenceEncoder | None = None
    #: Model family; by default ``intent_mlp`` for a text column, ``tabular_mlp`` otherwise.
    family: str | None = None
    #: Where training runs: ``cpu``, ``cuda`` or ``auto`` (CUDA when present).
    device: str = "cpu"


@dataclass
class ReplayResult:
    out: Path
    summary: dict[str, Any]
    predictions: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    reveals: pd.DataFrame = field(default_factory=pd.DataFrame)
    baselines: dict[str, Baseline] = field(default_factory=dict)


# ----------------------------------------------------------------------------- reading


@dataclass
class RecordedStream:
    """A CSV stream in time order, ready to replay."""

    rows: np.ndarray  # 0-based row of each position in DATA.csv
    times: list[datetime]
    stamps: np.ndarray  # the same times as POSIX seconds, for searching
    entities: list[str]
    labels: np.ndarray
    classes: list[str]
    features: dict[str, np.ndarray]
    specs: list[FeatureSpec]
    task: str
    #: What looked wrong in the time column but did not stop the replay, said before it starts.
    warnings: list[str] = field(default_factory=list)
    #: A text stream's raw texts (its features hold their vectors): stored on the events, for the corpus.
    texts: list[str | None] | None = None
    #: The rolling features a telemetry stream gets (:func:`~driftpilot.memory.rolling.telemetry_rolling`),
    #: derived over the whole stream once; their columns are in ``features``.
    rolling: Rolling | None = None
    derived: list[FeatureSpec] = field(default_factory=list)

    @property
    def model_specs(self) -> list[FeatureSpec]:
        """What a model of the stream reads: its columns, then the rolling features."""
        return [*self.specs, *self.derived]


def schema_of(config: ReplayConfig, data: RecordedStream) -> ModelSchema:
    """The managed model's schema for a recorded stream."""
    return ModelSchema(
        features=data.specs,
        target=config.target,
        classes=data.classes,
        entity_key=config.entity_col or "row",
        timestamp=config.time_col or "time",
        slice_keys=config.slice_cols,
        rolling=data.rolling,
    )


def read_stream(config: ReplayConfig, encoding: Callable[[int, int], None] | None = None) -> RecordedStream:
    """Read and check DATA.csv; every refusal names the column and the first bad row.

    ``encoding`` hears (encoded, to encode) while texts not yet cached are encoded."""
    path = Path(config.data)
    if not path.is_file():
        raise FileNotFoundError(f"no data file at {path}")
    text_types = {c: str for c in (config.target, config.entity_col, config.text_col) if c}
    try:
        frame = pd.read_csv(path, dtype=text_types, keep_default_na=True)
    except (pd.errors.ParserError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not a readable CSV file: {exc}") from None
    named = {"--target": config.target, "--time-col": config.time_col}
    named |= {"--entity-col": config.entity_col, "--text-col": config.text_col}
    for flag, column in named.items():
        if column and column not in frame.columns:
            raise ValueError(f"{flag} {column!r} is not a column of {path.name}; columns are {list(frame.columns)}")
    special = [c for c in (config.target, config.time_col, config.entity_col, config.text_col) if c]
    if config.feature_cols is None:
        feature_cols = [c for c in frame.columns if c not in special]
    else:
        feature_cols = list(config.feature_cols)
        unknown = [c for c in feature_cols if c not in frame.columns]
        if unknown:
            raise ValueError(
                f"--feature-cols {unknown} are not columns of {path.name}; columns are {list(frame.columns)}"
            )
        clash = [c for c in feature_cols if c in special]
        if clash:
            raise ValueError(f"--feature-cols {clash} are also the target, time, entity or text column")
    if not feature_cols and not config.text_col:
        raise ValueError(f"{path.name} has no feature columns besides {special}")
    if len(frame) == 0:
        raise ValueError(f"{path.name} has no rows")

    frame["__row"] = np.arange(len(frame))
    warnings: list[str] = []
    if config.time_col:
        column = frame[config.time_col]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            warnings.append(
                f"--time-col {config.time_col!r} holds numbers ({column.min():g} to {column.max():g}), not times: "
                "they are read as nanoseconds since 1970. Give ISO 8601 times, or leave --time-col out to replay "
                "on a row clock (--row-seconds)."
            )
        stamps = pd.to_datetime(column, utc=True, errors="coerce", format="mixed")
        bad = stamps.isna()
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise ValueError(
                f"--time-col {config.time_col!r}: row {i} has {frame[config.time_col].iloc[i]!r}, not a time"
            )
        frame["__time"] = stamps
        backwards = np.flatnonzero((stamps.diff() < pd.Timedelta(0)).to_numpy())
        if len(backwards):
            warnings.append(
                f"--time-col {config.time_col!r} is not increasing ({len(backwards):,} rows earlier than the row "
                f"before, the first at row {int(backwards[0])}): the rows are replayed in time order."
            )
        # Recorded streams are not always written in order; replay them in time order, ties
        # kept in file order, and report each prediction under its row in the file.
        frame = frame.sort_values("__time", kind="stable").reset_index(drop=True)
        with warnings_module.catch_warnings():
            # Numbers read as nanoseconds (warned about above) would each warn again here.
            warnings_module.simplefilter("ignore", UserWarning)
            times = [t.to_pydatetime() for t in frame["__time"]]
    else:
        times = [ROW_CLOCK_START + timedelta(seconds=config.row_seconds * i) for i in range(len(frame))]

    labels = frame[config.target]
    if labels.isna().any():
        i = int(frame["__row"][labels.isna()].iloc[0])
        raise ValueError(f"--target {config.target!r}: row {i} has no value")
    labels = labels.astype(str).str.strip()
    if (labels == "").any():
        i = int(frame["__row"][labels == ""].iloc[0])
        raise ValueError(f"--target {config.target!r}: row {i} is empty")

    if config.entity_col:
        entity = frame[config.entity_col]
        if entity.isna().any():
            i = int(frame["__row"][entity.isna()].iloc[0])
            raise ValueError(f"--entity-col {config.entity_col!r}: row {i} has no value")
        entities = entity.astype(str).tolist()
    else:
        entities = [f"row-{r}" for r in frame["__row"]]

    features: dict[str, np.ndarray] = {}
    specs: list[FeatureSpec] = []
    for column in feature_cols:
        values = frame[column]
        if pd.api.types.is_bool_dtype(values) or not pd.api.types.is_numeric_dtype(values):
            if values.isna().any():
                i = int(frame["__row"][values.isna()].iloc[0])
                raise ValueError(f"feature column {column!r}: row {i} has no value (a category must be given)")
            features[column] = values.astype(str).to_numpy(dtype=object)
            specs.append(FeatureSpec(name=column, kind="category"))
        else:
            # An empty cell is a reading that did not come: stored as missing, and imputed by the
            # served model as it was at training.
            numbers = values.to_numpy(dtype=np.float64)
            if np.isinf(numbers).any():
                i = int(frame["__row"].iloc[int(np.flatnonzero(np.isinf(numbers))[0])])
                raise ValueError(f"feature column {column!r}: row {i} is not a finite number")
            features[column] = numbers
            specs.append(FeatureSpec(name=column, kind="number"))
    categories = [s.name for s in specs if s.kind == "category"]
    for column in config.slice_cols:
        if column not in categories:
            raise ValueError(
                f"--slice-cols {column!r} is not a category feature of {path.name}; those are {categories}"
            )
    task = "tabular_classification"
    if config.text_col:
        texts = frame[config.text_col]
        if texts.isna().any():
            i = int(frame["__row"][texts.isna()].iloc[0])
            raise ValueError(f"--text-col {config.text_col!r}: row {i} has no text")
        encoder = config.encoder or SentenceEncoder(config.embedding_cache)
        vectors = encoder.encode(texts.astype(str).tolist(), progress=encoding)
        for j in range(vectors.shape[1]):
            name = f"{config.text_col}_e{j:03d}"
            features[name] = vectors[:, j].astype(np.float64)
            specs.append(FeatureSpec(name=name, kind="number"))
        task = "text_classification"
    data = RecordedStream(
        texts=frame[config.text_col].astype(str).tolist() if config.text_col else None,
        rows=frame["__row"].to_numpy(),
        times=times,
        stamps=np.asarray([t.timestamp() for t in times]),
        entities=entities,
        labels=labels.to_numpy(dtype=object),
        classes=sorted(set(labels)),
        features=features,
        specs=specs,
        task=task,
        warnings=warnings,
    )
    if config.entity_col and config.time_col and not config.text_col:
        data.rolling = telemetry_rolling(entities, times)
    if data.rolling is not None:
        # Derived once over the whole stream, in time order: what serving and ingest derive
        # reading by reading (the same function, tested to agree).
        schema = schema_of(config, data)
        numbers = {name: features[name] for name in schema.rolling_numbers}
        features.update(RollingHistory(schema).derive(entities, times, numbers))
        data.derived = schema.derived_features
    return data


# ----------------------------------------------------------------------------- labels


@dataclass(frozen=True)
class Reveal:
    """A label revealed: of the row at ``position``, when the stream reached ``at``."""

    position: int
    at: int
    source: str  # "history", "feedback" or "requested"


class LabelReveal:
    """Decides which labels are revealed, and when, under the replay's flags.

    The only source of labels in a replay: the loop (through ingest) and every baseline get
    what :meth:`due` returns, and nothing else.
    """

    def __init__(self, n: int, warmup: int, delay: int, budget: float, request_share: float, seed: int) -> None:
        self.n, self.delay = n, delay
        self.budget = math.floor(budget * (n - warmup))
        rng = np.random.default_rng([seed, 1])
        natural = np.flatnonzero(rng.random(n - warmup) < budget * (1 - request_share)) + warmup
        self.pending: dict[int, list[tuple[int, str]]] = {}
        for position in natural.tolist():
            self.pending.setdefault(position + delay, []).append((position, "feedback"))
        self.scheduled = set(natural.tolist())
        self.requested: set[int] = set()
        self.revealed = 0
        self.over_budget = 0
        self.log: list[Reveal] = []

    def request(self, positions: Sequence[int], at: int) -> list[int]:
        """The Curator asks at row ``at`` for these rows' labels; returns those newly scheduled."""
        fresh = [p for p in positions if p not in self.scheduled and p < self.n]
        for position in fresh:
            self.pending.setdefault(at + self.delay, []).append((position, "requested"))
            self.scheduled.add(position)
            self.requested.add(position)
        return fresh

    def due(self, at: int) -> list[Reveal]:
        """Labels revealed once row ``at`` has been seen (after its prediction)."""
        out = []
        for position, source in self.pending.pop(at, []):
            if self.revealed >= self.budget:
                self.over_budget += 1
                continue
            self.revealed += 1
            out.append(Reveal(position, at, source))
        self.log.extend(out)
        return out


# ----------------------------------------------------------------------------- replay


def run_replay(
    config: ReplayConfig,
    progress: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    warn: Callable[[str], None] | None = None,
    encoding: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Replay ``config.data`` through the loop and the baselines; write the four outputs.

    ``progress`` hears of rows replayed, ``on_epoch`` of every training epoch (version 1's and
    the Trainer's), ``warn`` of what looks wrong in the input, before the replay starts (the
    summary's ``warnings`` keeps them, with those about the run), ``encoding`` of texts encoded.
    """
    _check_config(config)
    family_name = config.family or ("intent_mlp" if config.text_col else "tabular_mlp")
    family(family_name)  # an unknown family is refused before anything is read
    import torch

    torch.set_num_threads(1)  # small networks: one thread is faster than two fighting
    wall_start = time.perf_counter()
    data = read_stream(config, encoding)
    n = len(data.rows)
    if config.warmup >= n:
        raise ValueError(f"--warmup {config.warmup} leaves no rows to replay: {config.data} has {n}")
    warm = np.arange(config.warmup)
    if len(set(data.labels[warm])) < 2:
        raise ValueError(f"the {config.warmup} warm-up rows hold a single class; give a longer --warmup")
    name = config.model or _model_name(Path(config.data))
    out = config.out
    fresh_home(out, "replay")
    sessions = db.connect(config.database_url or f"sqlite:///{out / 'driftpilot.sqlite'}")
    policy = load_policy(config.policy_path)
    data.warnings.extend(_span_warnings(config, data, policy.monitor.check_every_minutes))
    for message in data.warnings:
        if warn:
            warn(message)
    registry = Registry(out / "artifacts")
    context = AgentContext(
        sessions=sessions,
        registry=registry,
        policy=PolicyEngine(policy),
        seed=config.seed,
        on_epoch=on_epoch,
        federate=federate,
    )
    with sessions() as session:
        if any(m.name == name for m in managed.list_models(session=session)):
            raise FileExistsError(f"the database already holds a model '{name}'; give the replay a fresh one")
    stream = Stream(data.features, data.labels, [(s.name, s.kind) for s in data.model_specs])
    keys = [f"row-{r}" for r in data.rows]
    position_of = {k: i for i, k in enumerate(keys)}
    gate = LabelReveal(n, config.warmup, config.label_delay, config.label_budget, config.request_share, config.seed)
    outbox = Outbox(name)
    model_id, first, usual = register_with_history(
        config,
        data,
        stream,
        keys,
        sessions,
        registry,
        name=name,
        family_name=family_name,
        policy=policy,
        policy_label=policy.name,
        on_epoch=on_epoch,
    )
    gate.log.extend(Reveal(p, p, "history") for p in warm.tolist())
    serving = Serving(sessions, registry, model_id, name)
    serving.refresh()
    baselines = _baselines(config, first, usual, data, stream, n)
    baseline_seconds = dict.fromkeys(baselines, 0.0)

    records: dict[str, list[Any]] = {name: [] for name in ("served_version", "prediction", *baselines)}
    answered_requests: list[int] = []
    schedule = CheckSchedule(data.times[config.warmup - 1], timedelta(minutes=policy.monitor.check_every_minutes))
    # In the memory's own database when that is PostgreSQL, else a SQLite file beside it.
    with open_checkpointer(config.database_url, out / "checkpoints.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.forget(name)

        def mark_answered(at: datetime) -> None:
            """The requests people answered since the last look, marked before the loop reads them."""
            _mark_answered(sessions, model_id, keys, answered_requests, at)
            answered_requests.clear()

        driver = Driver(
            sessions,
            runner,
            name,
            model_id,
            trigger={"kind": "schedule", "every_minutes": policy.monitor.check_every_minutes},
            outbox=outbox,
            serving=serving,
            schedule=schedule,
            before_runs=mark_answered,
        )

        def recorded_stream(driver: Driver) -> Iterator[Moment]:
            """The source: the stream chunk by chunk, served, labelled as the gate allows, beside
            the baselines; a moment at each chunk's end."""
            start = config.warmup
            next_hour = data.times[config.warmup - 1] + timedelta(hours=1)
            while start < n:
                # The chunk ends where the next check can be due: its time has come and its evidence
                # is in (on a slow stream the evidence, not the clock, decides), or at the next hour
                # while a run waits.
                clock = int(np.searchsorted(data.stamps, schedule.next_check.timestamp(), side="right"))
                end = min(n, start + MAX_CHUNK, max(clock, _evidence_row(schedule, gate, start, n)))
                if driver.waiting:  # a waiting run (labels, a person, canary evidence) is looked at hourly
                    end = min(end, int(np.searchsorted(data.stamps, next_hour.timestamp(), side="right")))
                periodic = baselines.get("periodic")
                if isinstance(periodic, Periodic) and periodic.next_retrain > start:
                    end = min(end, periodic.next_retrain)
                end = max(end, start + 1)

                served = serving.route(data.entities[start:end])
                probabilities = serving.predict_proba(stream.columns(start, end), served, data.classes)
                prediction = np.asarray(data.classes, dtype=object)[probabilities.argmax(axis=1)]
                records["served_version"].extend(served.tolist())
                records["prediction"].extend(prediction.tolist())
                outbox.add_events(_batch(data, keys, start, end, served, prediction, probabilities))

                revealed: dict[int, list[int]] = {}
                for at in range(start, end):
                    for reveal in gate.due(at):
                        revealed.setdefault(at, []).append(reveal.position)
                        outbox.add_labels([_label(data, keys, reveal.position, at, reveal.source)])
                        if reveal.source == "requested":
                            answered_requests.append(reveal.position)
                for label, baseline in baselines.items():
                    began = time.perf_counter()
                    records[label].extend(baseline.run(stream, start, end, revealed).tolist())
                    baseline_seconds[label] += time.perf_counter() - began
                schedule.saw(rows=end - start, labels=sum(len(p) for p in revealed.values()))
                if len(outbox) >= FLUSH_AT:
                    outbox.flush(sessions)

                now = data.times[end - 1]
                resume = now >= next_hour and driver.waiting
                while next_hour <= now:
                    next_hour += timedelta(hours=1)
                yield Moment(
                    now,
                    check=schedule.due(now),
                    resume=resume,
                    after_runs=partial(_take_requests, sessions, model_id, gate, position_of, end - 1, now),
                )
                start = end
                if progress:
                    progress(start, n)

        driver.run(recorded_stream)
        outbox.flush(sessions)
        _mark_answered(sessions, model_id, keys, answered_requests, data.times[-1])

    seconds = time.perf_counter() - wall_start
    evaluated = slice(config.warmup, n)
    predictions = pd.DataFrame({"row": data.rows[evaluated]})
    if config.time_col:
        predictions["time"] = [t.isoformat() for t in data.times[evaluated]]
    predictions["served_version"] = records["served_version"]
    predictions["prediction"] = records["prediction"]
    for label in baselines:
        predictions[label] = records[label]
    predictions["label"] = data.labels[evaluated]
    reveals = pd.DataFrame([r.__dict__ for r in gate.log], columns=["position", "at", "source"])
    return _write_outputs(
        config, out, sessions, model_id, name, data, predictions, reveals, gate, baselines, seconds, baseline_seconds
    )


def register_with_history(
    config: ReplayConfig,
    data: RecordedStream,
    stream: Stream,
    keys: list[str],
    sessions: sessionmaker[Session],
    registry: Registry,
    *,
    name: str,
    family_name: str,
    policy: Policy,
    policy_label: str,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    sibling: tuple[str, TorchClassifier] | None = None,
) -> tuple[int, TorchClassifier, TorchClassifier]:
    """Register the managed model ``name`` with the stream's schema and ``policy_label`` (the
    policy's file, or ``"default"``), store its first ``config.warmup`` rows as labelled history,
    and train version 1 on them, as champion. Returns the model's id, version 1 and the family's
    usual shape (the periodic baseline's).

    With ``sibling`` (a related model's name and champion), a third candidate starts from its
    weights (:func:`driftpilot.models.transfer.fit_transferred`: shared features mapped, new ones
    at zero, classes remapped by name) and competes on the same held-out fifth; the decision
    records what it carried over and whether it was chosen.
    """
    schema = schema_of(config, data)
    with sessions() as session:
        model_id = managed.register_model(
            session=session, name=name, task=data.task, family=family_name, schema=schema, policy=policy_label
        ).id

    outbox = Outbox(name)
    warm = np.arange(config.warmup)

    # Warm-up: labelled history, ingested as such; version 1 learns from all but its newest fifth.
    outbox.add_events(_batch(data, keys, 0, config.warmup))
    outbox.add_labels([_label(data, keys, p, p, "history") for p in warm.tolist()])
    outbox.flush(sessions)
    n_holdout = max(1, config.warmup // 5)
    fit, holdout = warm[:-n_holdout], warm[-n_holdout:]
    # Version 1 is the family's usual shape or a linear model of it, whichever the newest fifth
    # of the warm-up, held out of both, scores higher on in the policy's metric (the periodic
    # baseline keeps the usual shape). Both are trained for that metric.
    metric = policy.evaluation.metric
    usual = _first_model(config, data, family_name, sorted(set(data.labels[fit])), CLASS_WEIGHTS[metric])
    shapes = [usual, type(usual).from_config({**usual.config(), "hidden": []})]
    scores, chosen_by = [], []
    for model in shapes:
        if isinstance(usual, IntentMLP):
            model.encoder = usual.encoder  # type: ignore[attr-defined]
        model.fit(stream.take(fit), data.labels[fit], on_epoch=on_epoch)
        predicted = model.predict(stream.take(holdout))
        scores.append(balanced_accuracy(data.labels[holdout], predicted))
        chosen_by.append(BY_NAME[metric](data.labels[holdout], predicted))
    transfer = None
    if sibling is not None:
        carried, transfer = _transferred(sibling, stream, data, fit, CLASS_WEIGHTS[metric])
        shapes.append(carried)
        predicted = carried.predict(stream.take(holdout))
        scores.append(balanced_accuracy(data.labels[holdout], predicted))
        chosen_by.append(BY_NAME[metric](data.labels[holdout], predicted))
    # On a tie the model that learnt from more labels, the sibling's, goes first.
    best = max(range(len(shapes)), key=lambda i: (chosen_by[i], transfer is not None and i == len(shapes) - 1))
    first, score = shapes[best], scores[best]
    if transfer is not None:
        transfer["chosen"] = best == len(shapes) - 1
    register_first_version(
        sessions,
        registry,
        model_id=model_id,
        model_name=name,
        model=first,
        score=score,
        fit_rows=pd.DataFrame({"key": [keys[p] for p in fit], "label": data.labels[fit]}),
        holdout_keys=[keys[p] for p in holdout],
        now=data.times[config.warmup - 1],
        source=f"the {config.warmup} warm-up rows of {Path(config.data).name}",
        shapes={
            ("transferred from " + sibling[0] if sibling and i == len(shapes) - 1 else _shape(m)): round(float(v), 4)
            for i, (m, v) in enumerate(zip(shapes, chosen_by, strict=True))
        },
        metric=metric,
        transfer=transfer,
    )
    return model_id, first, usual


def _transferred(
    sibling: tuple[str, TorchClassifier],
    stream: Stream,
    data: RecordedStream,
    fit: np.ndarray,
    class_weight: str | None,
) -> tuple[TorchClassifier, dict[str, Any]]:
    """Version 1 started from the sibling's weights, and what it carried over."""
    from driftpilot.models.transfer import fit_transferred

    name, model = sibling
    # Trained for the policy's metric, as the other shapes are (the sibling's own may differ).
    model = copy.deepcopy(model)
    model.class_weight = class_weight
    candidate, carried = fit_transferred(
        model, stream.kinds, sorted(set(data.labels[fit])), stream.take(fit), data.labels[fit]
    )
    return candidate, {"from": name} | carried


def _span_warnings(config: ReplayConfig, data: RecordedStream, check_every_minutes: int) -> list[str]:
    """A time column whose replayed part spans less than one check interval: the loop cannot check."""
    if not config.time_col or config.warmup >= len(data.times):
        return []
    span = data.times[-1] - data.times[config.warmup - 1]
    if span >= timedelta(minutes=check_every_minutes):
        return []
    return [
        f"--time-col {config.time_col!r}: the {len(data.times) - config.warmup:,} rows after the warm-up span "
        f"{span.total_seconds():g} s, less than one check interval ({check_every_minutes} min): the loop will not "
        "check the model at all. Is the column a time?"
    ]


def _check_config(config: ReplayConfig) -> None:
    if config.warmup < 20:
        raise ValueError(f"--warmup must be at least 20 rows to train a first version, got {config.warmup}")
    if config.label_delay < 0:
        raise ValueError(f"--label-delay must be 0 or more rows, got {config.label_delay}")
    if not 0 <= config.label_budget <= 1:
        raise ValueError(f"--label-budget must be a share between 0 and 1, got {config.label_budget}")
    if not 0 <= config.request_share <= 1:
        raise ValueError(f"the request share must be between 0 and 1, got {config.request_share}")
    if config.row_seconds <= 0:
        raise ValueError(f"--row-seconds must be positive, got {config.row_seconds}")
    unknown = [b for b in config.baselines if b not in BASELINES]
    if unknown:
        raise ValueError(f"unknown baselines {unknown}; known: {list(BASELINES)}")
    if config.periodic_every is not None and config.periodic_every < 1:
        raise ValueError(f"--periodic-every must be at least 1 row, got {config.periodic_every}")
    if config.periodic_window < 2:
        raise ValueError(f"--periodic-window must be at least 2 labels, got {config.periodic_window}")


def _first_model(
    config: ReplayConfig, data: RecordedStream, family_name: str, classes: list[str], class_weight: str | None
) -> TorchClassifier:
    """Version 1, unfitted: the chosen family over the stream's features, knowing the classes
    of the warm-up (classes that appear later grow its output layer at a retrain), its classes
    weighted as ``class_weight`` says."""
    cls = family(family_name)
    if family_name == "intent_mlp":
        if not config.text_col:
            raise ValueError("--family intent_mlp needs --text-col: it classifies a text")
        # The replay has encoded the texts once; the family reads those vectors.
        return IntentMLP(
            [(config.text_col, "text")],
            classes,
            seed=config.seed,
            device=config.device,
            encoder=config.encoder,
            class_weight=class_weight,
        )
    text = [s.name for s in data.specs if config.text_col and s.name.startswith(f"{config.text_col}_e")]
    if text and len(text) == len(data.specs):
        raise ValueError(f"--family {family_name} takes numbers and categories; a text-only stream needs intent_mlp")
    return cls(
        [(s.name, s.kind) for s in data.model_specs],
        classes,
        seed=config.seed,
        device=config.device,
        class_weight=class_weight,
    )


def _shape(model: TorchClassifier) -> str:
    return f"hidden layers {list(model.hidden)}" if model.hidden else "linear (no hidden layer)"


def _model_name(path: Path) -> str:
    cleaned = "".join(c if c.isalnum() or c in "-_" else "-" for c in path.stem).strip("-")
    return cleaned or "replay"


def _baselines(
    config: ReplayConfig, first: TorchClassifier, usual: TorchClassifier, data: RecordedStream, stream: Stream, n: int
) -> dict[str, Baseline]:
    """The baselines: ``static`` serves version 1 (``first``) for ever; ``periodic`` retrains the
    family's usual shape (``usual``, fitted on the warm-up like version 1), whichever shape
    version 1 took."""
    warm = list(range(config.warmup))
    every = config.periodic_every or max(1, (n - config.warmup) // 10)
    built: dict[str, Baseline] = {}
    for label in config.baselines:
        if label == "static":
            built[label] = Static(first)
        elif label == "periodic":
            periodic = Periodic(usual, start=config.warmup, every=every, window=config.periodic_window)
            periodic.learn(stream, warm)
            built[label] = periodic
        elif label == "logistic":
            # Periodic starts from the warm-up model; logistic fits its own first model, on every
            # warm-up label (the warm-up model leaves out the newest fifth, on which it is scored).
            logistic = PeriodicLogistic(start=config.warmup, every=every, window=config.periodic_window)
            logistic.learn(stream, warm)
            built[label] = logistic.fit(stream, warm)
        elif label == "river-arf":
            values, counts = np.unique(data.labels[warm], return_counts=True)
            arf = RiverARF(str(values[counts.argmax()]), seed=config.seed)
            arf.learn(stream, warm)
            built[label] = arf
    return built


def _batch(
    data: RecordedStream,
    keys: list[str],
    start: int,
    end: int,
    served: np.ndarray | None = None,
    prediction: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> EventBatch:
    return EventBatch(
        keys=keys[start:end],
        times=data.times[start:end],
        entities=data.entities[start:end],
        groups=[None] * (end - start),
        features={name: values[start:end] for name, values in data.features.items()},
        served_version=served.tolist() if served is not None else None,
        prediction=prediction.tolist() if prediction is not None else None,
        # Four decimals are plenty for the record and halve the JSON to write.
        probabilities=probabilities.round(4) if probabilities is not None else None,
        texts=data.texts[start:end] if data.texts is not None else None,
    )


#: Label sources in memory of the ways a replay reveals labels: feedback and history come from
#: the system of record, requested labels from the people answering the Curator (an oracle here).
_SOURCE = {"history": "system", "feedback": "system", "requested": "oracle"}


def _label(data: RecordedStream, keys: list[str], position: int, at: int, source: str) -> dict[str, Any]:
    value = str(data.labels[position])
    return {"event_key": keys[position], "value": value, "source": _SOURCE[source], "time": data.times[at]}


def _evidence_row(schedule: CheckSchedule, gate: LabelReveal, start: int, n: int) -> int:
    """The row by which the new evidence a check wants will be in (rows, or the labels the gate
    has scheduled to reveal, whichever comes first); ``start`` when it already is."""
    rows_short, labels_short = schedule.rows_wanted - schedule.rows, schedule.labels_wanted - schedule.labels
    if rows_short <= 0 or labels_short <= 0:
        return start
    last = min(n, start + rows_short)
    for at in range(start, min(last, start + MAX_CHUNK)):
        labels_short -= len(gate.pending.get(at, ()))
        if labels_short <= 0:
            return at + 1
    return last


def _take_requests(
    sessions: sessionmaker[Session],
    model_id: int,
    gate: LabelReveal,
    position_of: dict[str, int],
    at: int,
    now: datetime,
) -> None:
    """Schedule the answers to the Curator's open requests (the people behind the queue).

    A request for a row whose label comes, or came, as natural feedback is answered by that
    label: it is closed now and costs no second label.
    """
    with sessions() as session:
        open_requests = label_requests.open_label_requests(session=session, model_id=model_id)
        if not open_requests:
            return
        frame = events.events_by_ids(session=session, ids=[r.event_id for r in open_requests])
        position_by_id = {int(i): position_of[k] for i, k in zip(frame["id"], frame["key"], strict=True)}
        gate.request(list(position_by_id.values()), at)
        answered = [i for i, p in position_by_id.items() if p not in gate.requested]
        if answered:
            label_requests.mark_answered(session=session, event_ids=answered, answered_at=now)


def _mark_answered(
    sessions: sessionmaker[Session], model_id: int, keys: list[str], positions: list[int], now: datetime
) -> None:
    if not positions:
        return
    with sessions() as session:
        ids = event_ids(session=session, model_id=model_id, keys=[keys[p] for p in positions])
        label_requests.mark_answered(session=session, event_ids=list(ids.values()), answered_at=now)


# ----------------------------------------------------------------------------- outputs


def _scores(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    return {
        "accuracy": round(accuracy(truth, predicted), 4),
        "macro_f1": round(macro_f1(truth, predicted, labels=classes), 4),
    }


def _write_outputs(
    config: ReplayConfig,
    out: Path,
    sessions: sessionmaker[Session],
    model_id: int,
    name: str,
    data: RecordedStream,
    predictions: pd.DataFrame,
    reveals: pd.DataFrame,
    gate: LabelReveal,
    baselines: dict[str, Baseline],
    seconds: float,
    baseline_seconds: dict[str, float],
) -> ReplayResult:
    from driftpilot.loop.report import write_replay_report

    files = {
        "predictions": out / "predictions.csv",
        "decisions": out / "decisions.jsonl",
        "summary": out / "summary.json",
        "report": out / "report.html",
    }
    predictions.to_csv(files["predictions"], index=False)
    with sessions() as session:
        logged = [decisions.decision_as_dict(d) for d in decisions.list_decisions(session=session, model_id=model_id)]
        # Versions trained (an edge student goes with its teacher: not counted on its own).
        n_versions = sum(v.stage != "student" for v in versions.list_versions(session=session, model_id=model_id))
    with files["decisions"].open("w") as handle:
        for d in logged:
            handle.write(json.dumps(d, default=str) + "\n")

    systems = ["driftpilot", *baselines]
    column = {"driftpilot": "prediction"} | {b: b for b in baselines}
    truth = predictions["label"].to_numpy()
    tenths = []
    for i, part in enumerate(np.array_split(np.arange(len(predictions)), 10)):
        if len(part) == 0:
            continue
        rows = predictions.iloc[part]
        tenths.append(
            {
                "tenth": i + 1,
                # Positions in the replay's (time) order, the warm-up counted: [first, last].
                "positions": [config.warmup + int(part[0]), config.warmup + int(part[-1])],
                **{s: _scores(rows["label"].to_numpy(), rows[column[s]].to_numpy(), data.classes) for s in systems},
            }
        )
    sources = reveals["source"].value_counts().to_dict()
    checks = {o: 0 for o in ("healthy", "blind", "finding", "repeat")}
    for x in logged:
        if x["agent"] == "monitor" and x["action"] == "check":
            checks[x["outcome"]] = checks.get(x["outcome"], 0) + 1
    n_checks = sum(checks.values())
    trained = [x for x in logged if x["action"] == "retrain" and x["outcome"] in ("candidate", "rejected")]
    # A challenger is trained without a finding, on a cadence of new labels; a retrain answers one.
    challengers = sum(1 for x in trained if (x.get("evidence") or {}).get("challenger"))
    retrains = len(trained) - challengers
    warnings = list(data.warnings)
    if n_checks == 0:
        warnings.append("the loop never checked the model: the replayed rows span less than one check interval")
    elif not trained and checks["blind"] > n_checks / 2:
        warnings.append(
            f"no retrain, and {checks['blind']:,} of {n_checks:,} checks were blind (too few labels or rows to judge): "
            "the result says little about the loop. Reveal more labels (--label-budget), or a shorter --label-delay."
        )
    loop_seconds = seconds - sum(baseline_seconds.values())
    summary = {
        "data": str(config.data),
        "model": name,
        "rows": len(data.rows),
        "warmup": config.warmup,
        "evaluated_rows": len(predictions),
        "label_delay": config.label_delay,
        "label_budget": config.label_budget,
        "scores": {s: _scores(truth, predictions[column[s]].to_numpy(), data.classes) for s in systems},
        "per_tenth": tenths,
        "labels_revealed": {
            "history": int(sources.get("history", 0)),
            "feedback": int(sources.get("feedback", 0)),
            "requested": int(sources.get("requested", 0)),
            "budget": gate.budget,
            "refused_over_budget": gate.over_budget,
        },
        "checks": checks,
        "blind_share": round(checks["blind"] / n_checks, 4) if n_checks else None,
        "retrains": retrains,
        "challengers": challengers,
        "releases": sum(1 for x in logged if x["action"] == "start_canary" and x["outcome"] in RELEASE_STARTS),
        "promotions": sum(1 for x in logged if x["action"] == "promote"),
        "rollbacks": sum(1 for x in logged if x["action"] == "rollback"),
        "versions": n_versions,
        "decisions": len(logged),
        "periodic_retrains": getattr(baselines.get("periodic"), "retrains", None),
        "wall_seconds": round(seconds, 2),
        "baseline_seconds": {k: round(v, 2) for k, v in baseline_seconds.items()},
        "rows_per_second": round(len(data.rows) / seconds, 1),
        "rows_per_second_without_baselines": round(len(data.rows) / max(loop_seconds, 1e-9), 1),
        "warnings": warnings,
    }
    files["summary"].write_text(json.dumps(summary, indent=2, default=str))
    positions = np.searchsorted(data.stamps, [decisions.logged_time(d).timestamp() for d in logged])
    marks = [
        {**d, "row": int(data.rows[min(p, len(data.rows) - 1)])}
        for d, p in zip(logged, positions, strict=True)
        if d["action"] not in ("check",)
    ]
    write_replay_report(files["report"], predictions, systems, column, marks, summary)
    return ReplayResult(
        out=out, summary=summary, predictions=predictions, files=files, reveals=reveals, baselines=baselines
    )
