"""The shipped streams as CSV files, with what ``driftpilot replay`` needs to know about each.

:func:`export_streams` writes ``<name>.csv`` for each stream of :data:`STREAMS` and a
``streams.json`` manifest: the :class:`StreamSpec` of every file it wrote — its target, time,
entity and text columns, how many labelled warm-up rows a replay should start from, the label
delay of the benchmark in rows. Every stream replays under the default policy.

* ``ont``: the ONT simulator (:mod:`driftpilot.scenarios.ont`), 60 ONTs for 30 days, one row per
  reading; the target ``offline_within_1h`` is ``online`` or the cause of the coming outage.
* ``offers``: the offers simulator (:mod:`driftpilot.scenarios.offers`), 120 days of 1,000 offers.
* ``banking77``: real queries with emerging intents (:mod:`driftpilot.scenarios.banking`).
* ``intents_oos``: the same queries, with 15 intents held out as ``out_of_scope`` throughout and
  20 emerging over the middle third.
* ``sea_abrupt`` … ``hyperplane``: river's drift benchmarks (:mod:`driftpilot.scenarios.synthetic`).
* ``stationary``: the control, a stream with no drift at all (SEA's first concept).
* ``slow_drift``: Agrawal's loan applicants, one every 30 minutes (a ``time`` column): 20,000
  rows over 417 days, a label a day after its row.

``scale`` multiplies every stream's row count (the ONT fleet, the offers per day, the share of
Banking77's queries, the synthetic streams' length), and the warm-up and label delay with it, so
that tests can export small copies. ``slow_drift`` keeps its 30 minutes between rows: a small
copy spans fewer days.

Each file is written to a temporary file in the same folder and moved into place, so a failure
never leaves a half-written file behind.

Examples
--------
>>> import tempfile
>>> with tempfile.TemporaryDirectory() as folder:
...     (spec,) = export_streams(Path(folder), ["sea_abrupt"], scale=0.01)
...     sorted(p.name for p in Path(folder).iterdir())
['sea_abrupt.csv', 'streams.json']
>>> spec.rows, spec.target, spec.warmup, spec.label_delay
(300, 'y', 20, 5)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import timedelta
from pathlib import Path
from typing import IO

import numpy as np
import pandas as pd

from driftpilot.scenarios import banking, offers, ont, synthetic

STREAMS: tuple[str, ...] = ("ont", "offers", "banking77", "intents_oos", *synthetic.SYNTHETIC_STREAMS)
MANIFEST = "streams.json"

ONT_TARGET = "offline_within_1h"
_ONT_ONTS = 60
_ONT_DAYS = 30
_ONT_WARMUP_DAYS = 8
_OFFERS_PER_DAY = 1000
_OFFERS_CUSTOMERS = 40_000
_OFFERS_WARMUP_DAYS = 3
_BANKING_WARMUP_SHARE = 0.2
# intents_oos: 15 of the 77 intents out of scope, 42 known from the start, 20 emerging in the middle third.
_OOS_INTENTS = 15
_OOS_INITIAL = 42
_SYNTHETIC_ROWS = 30_000
_SYNTHETIC_WARMUP = 2000
_LABEL_DELAY_ROWS = 500
_SLOW_DRIFT_ROWS = 20_000
_SLOW_DRIFT_ROWS_A_DAY = 48  # one every 30 minutes
# Thirty days of labelled history: what the loop derives its auto fields from.
_SLOW_DRIFT_WARMUP = 30 * _SLOW_DRIFT_ROWS_A_DAY
_SLOW_DRIFT_DELAY = _SLOW_DRIFT_ROWS_A_DAY  # whether a loan was repaid on time is known a day later
_MIN_WARMUP = 20  # the fewest rows replay trains a first version on


@dataclass(frozen=True, kw_only=True)
class StreamSpec:
    """One exported stream: its file and how to replay it.

    ``warmup`` is the number of leading rows a replay treats as labelled history and
    ``label_delay`` the rows after an event before its label may be revealed. Every stream
    replays under the shipped default policy: what depends on its density is derived by the loop
    from what it observes, not written here.
    """

    name: str
    file: str
    target: str
    time_col: str | None = None
    entity_col: str | None = None
    text_col: str | None = None
    #: Model family to replay with (``None``: the replay's default for the stream).
    family: str | None = None
    warmup: int
    label_delay: int
    rows: int
    description: str


def export_streams(
    out: Path,
    names: Sequence[str] | None = None,
    *,
    seed: int = 0,
    scale: float = 1.0,
    banking77_dir: Path | str | None = None,
) -> list[StreamSpec]:
    """Write ``<name>.csv`` for each stream of ``names`` (default: all) and ``streams.json`` into ``out``.

    Returns the specs, in the order of ``names``. ``banking77_dir`` is Banking77's folder, found
    by :func:`driftpilot.scenarios.banking.locate_banking77` when not given; it is looked up
    before anything is written.
    """
    chosen = list(STREAMS if names is None else names)
    unknown = [n for n in chosen if n not in STREAMS]
    if unknown:
        raise ValueError(f"unknown stream(s) {', '.join(map(repr, unknown))}; known: {', '.join(STREAMS)}")
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    if "banking77" in chosen or "intents_oos" in chosen:
        banking77_dir = banking.locate_banking77(banking77_dir)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    specs = []
    for name in dict.fromkeys(chosen):
        if name == "ont":
            frame, spec = _ont(seed, scale)
        elif name == "offers":
            frame, spec = _offers(seed, scale)
        elif name == "banking77":
            frame, spec = _banking(seed, scale, banking77_dir)
        elif name == "intents_oos":
            frame, spec = _intents_oos(seed, scale, banking77_dir)
        elif name == "slow_drift":
            frame, spec = _synthetic(
                name,
                seed,
                scale,
                rows=_SLOW_DRIFT_ROWS,
                warmup=_SLOW_DRIFT_WARMUP,
                label_delay=_SLOW_DRIFT_DELAY,
                time_col=synthetic.TIME,
            )
        else:
            frame, spec = _synthetic(name, seed, scale)
        with _replacing(out / spec.file) as handle:
            frame.to_csv(handle, index=False, lineterminator="\n")
        specs.append(spec)
    with _replacing(out / MANIFEST) as handle:
        json.dump([asdict(s) for s in specs], handle, indent=2)
        handle.write("\n")
    return specs


def _scaled(rows: int, scale: float, minimum: int = 1) -> int:
    return max(minimum, round(rows * scale))


# -- the streams -------------------------------------------------------------------------
def _ont(seed: int, scale: float) -> tuple[pd.DataFrame, StreamSpec]:
    config = ont.OntScenarioConfig(n_onts=_scaled(_ONT_ONTS, scale, 2), days=_ONT_DAYS, seed=seed)
    sim = ont.OntSimulator(config)
    ticks = list(sim.ticks())
    sizes = [len(t) for t in ticks]
    columns: dict[str, np.ndarray] = {
        "time": np.repeat([t.time.isoformat() for t in ticks], sizes),
        "ont_id": np.concatenate([t.entities for t in ticks]),
        "olt_port": np.concatenate([t.groups for t in ticks]),
    }
    for feature, _kind in ont.FEATURES:
        columns[feature] = np.concatenate([t.features[feature] for t in ticks])
    columns[ONT_TARGET] = np.concatenate([t.labels for t in ticks])
    frame = pd.DataFrame(columns)
    warm_until = config.start + timedelta(days=_ONT_WARMUP_DAYS)
    warmup = sum(size for t, size in zip(ticks, sizes, strict=True) if t.time < warm_until)
    spec = StreamSpec(
        name="ont",
        file="ont.csv",
        target=ONT_TARGET,
        time_col="time",
        entity_col="ont_id",
        warmup=warmup,
        label_delay=sim.ticks_per_hour * config.n_onts,  # one simulated hour of readings
        rows=len(frame),
        description=(
            f"{config.n_onts} ONTs, {config.days:g} days of {config.interval_minutes}-minute readings: fibre ageing, "
            "firmware v2.0 from day 10 (counters per second), the XGS-10 model from day 18, "
            "OLT port outages (the largest on day 24); target: online or the cause of going offline within 1 h"
        ),
    )
    return frame, spec


def _offers(seed: int, scale: float) -> tuple[pd.DataFrame, StreamSpec]:
    config = offers.OffersScenarioConfig(
        offers_per_day=_scaled(_OFFERS_PER_DAY, scale),
        n_customers=_scaled(_OFFERS_CUSTOMERS, scale, 100),
        seed=seed,
    )
    frame = offers.OffersSimulator(config).frame()
    spec = StreamSpec(
        name="offers",
        file="offers.csv",
        target=offers.TARGET,
        time_col="time",
        entity_col="customer_id",
        # Hashed embeddings: fibre_2g, launched on day 84, needs no new vocabulary.
        family="hashed_mlp",
        warmup=_OFFERS_WARMUP_DAYS * config.offers_per_day,
        label_delay=config.offers_per_day,  # one day: whether an offer was taken is known a day later
        rows=len(frame),
        description=(
            f"{config.days} days of {config.offers_per_day:,} broadband offers a day: back to school days 7-35, "
            "a competitor's campaign days 56-77 (high prices refused), fibre_2g launched day 84 "
            "(cannibalising speed_upgrade), holidays from day 100; target: accepted yes/no"
        ),
    )
    return frame, spec


def _banking(seed: int, scale: float, data_dir: Path | str | None) -> tuple[pd.DataFrame, StreamSpec]:
    config = banking.BankingStreamConfig(seed=seed, fraction=min(1.0, scale))
    frame = banking.Banking77Stream(config, data_dir).frame()
    emerging = banking.N_INTENTS - config.n_initial
    return frame, _text_spec(
        "banking77",
        frame,
        scale,
        f"BANKING77 customer-service queries: {config.n_initial} intents at first, {emerging} more emerging one "
        f"by one between {config.emerge_from:.0%} and {config.emerge_until:.0%} of the stream; target: intent",
    )


def _text_spec(name: str, frame: pd.DataFrame, scale: float, description: str) -> StreamSpec:
    """A stream of Banking77's queries: warm-up a share of its rows, the usual label delay."""
    return StreamSpec(
        name=name,
        file=f"{name}.csv",
        target=banking.TARGET,
        text_col=banking.TEXT,
        warmup=max(_MIN_WARMUP, round(_BANKING_WARMUP_SHARE * len(frame))),
        label_delay=_scaled(_LABEL_DELAY_ROWS, scale),
        rows=len(frame),
        description=description,
    )


def _intents_oos(seed: int, scale: float, data_dir: Path | str | None) -> tuple[pd.DataFrame, StreamSpec]:
    config = banking.BankingStreamConfig(
        n_initial=_OOS_INITIAL,
        n_out_of_scope=_OOS_INTENTS,
        emerge_from=1 / 3,
        emerge_until=2 / 3,
        seed=seed,
        fraction=min(1.0, scale),
    )
    frame = banking.Banking77Stream(config, data_dir).frame()
    emerging = banking.N_INTENTS - config.n_initial - config.n_out_of_scope
    spec = _text_spec(
        "intents_oos",
        frame,
        scale,
        f"BANKING77 customer-service queries: {config.n_out_of_scope} intents out of the catalogue, labelled "
        f"{banking.OUT_OF_SCOPE} throughout; {config.n_initial} intents at first, {emerging} more emerging one by "
        f"one between {config.emerge_from:.0%} and {config.emerge_until:.0%} of the stream; target: intent",
    )
    return frame, spec


def _synthetic(
    name: str,
    seed: int,
    scale: float,
    *,
    rows: int = _SYNTHETIC_ROWS,
    warmup: int = _SYNTHETIC_WARMUP,
    label_delay: int = _LABEL_DELAY_ROWS,
    time_col: str | None = None,
) -> tuple[pd.DataFrame, StreamSpec]:
    config = synthetic.SyntheticConfig(n_rows=_scaled(rows, scale, 3), seed=seed)
    frame = synthetic.synthetic_frame(name, config)
    spec = StreamSpec(
        name=name,
        file=f"{name}.csv",
        target=synthetic.TARGET,
        time_col=time_col,
        warmup=min(_scaled(warmup, scale, _MIN_WARMUP), len(frame) - 1),
        label_delay=_scaled(label_delay, scale),
        rows=len(frame),
        description=synthetic.describe(name, config),
    )
    return frame, spec


# -- writing -------------------------------------------------------------------------------
@contextmanager
def _replacing(path: Path) -> Iterator[IO[str]]:
    """A text handle on a temporary file in ``path``'s folder, moved onto ``path`` once complete."""
    handle_fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle_fd, "w", encoding="utf-8", newline="") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp's 0600 would make the exported data private
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
