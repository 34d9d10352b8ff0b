"""Synthetic drift streams: river's benchmark generators, written out as tables.

The generators are the standard benchmarks of the drift literature, from
:mod:`river.datasets.synth`; the drifts are river's :class:`~river.datasets.synth.ConceptDriftStream`
(a sigmoid mixture of an old and a new concept, Bifet et al., MOA 2010), nested once for a second
change. Every stream has ``n_rows`` rows (30,000 by default) and, unless it says otherwise, its
concept changes at a third and at two thirds of them (rows 10,000 and 20,000):

* ``sea_abrupt``: SEA (Street & Kim, KDD 2001) with its 10 % class noise; the threshold on
  ``x0 + x1`` goes 8 → 9.5 → 7 at once (within the narrowest transition river can compute,
  58 rows at row 10,000: see :func:`abrupt_width`).
* ``sea_gradual``: the same concepts, each change spread over about 4,000 rows.
* ``agrawal_abrupt``: Agrawal et al.'s loan applicants (IEEE TKDE 1993); the rule deciding the
  class goes from age alone (function 0) to age and education (2) to disposable income (6).
* ``agrawal_gradual``: the same concepts, each change spread over about 4,000 rows.
* ``rbf_drift``: random radial basis functions, three classes in ten dimensions. Still until
  row 10,000; from there the same centroids move (river's ``change_speed``: incremental drift,
  twice the side of the feature cube, bouncing off its walls, by row 20,000); at row 20,000
  they are back where they started (a recurring concept, abrupt).
* ``hyperplane``: the rotating hyperplane (Hulten et al., KDD 2001) with 5 % label noise; four
  of its ten weights wander a little every row (river's ``mag_change``): incremental drift from
  the first row to the last, with no change points.
* ``stationary``: the control, with no drift at all: SEA's first concept (threshold 8) and its
  10 % class noise from the first row to the last. The noise caps every system near 90 %, and a
  model trained on 2,000 rows is within a point of one trained on 20,000: a retrain here answers
  a false alarm.
* ``slow_drift``: Agrawal's loan applicants again, but one every 30 minutes, with a ``time``
  column (ISO 8601, UTC, from 2025-01-01): a window of hours holds a handful of rows, and the
  20,000 rows of the benchmark span 417 days. The rule goes from age alone to age and education
  at a third of the rows (abrupt) and to disposable income around two thirds (gradual, over
  ``n_rows / 7.5`` rows: 56 days of 20,000 rows).

Columns are the generators' features, named as identifiers (river's ``0, 1, …`` become
``x0, x1, …``), rounded to 4 decimals, and the target ``y`` as text: ``"0"``/``"1"`` (SEA's
booleans too), ``"0"``…``"2"`` for ``rbf_drift``. Agrawal's categorical attributes are written
with a prefix (``elevel_2``, ``car_13``, ``zipcode_5``) so that readers see categories, not numbers.
``slow_drift``'s ``time`` comes first.

Examples
--------
>>> print(synthetic_frame("sea_abrupt", SyntheticConfig(n_rows=6, seed=1)).to_string())
       x0      x1      x2  y
0  0.5774  5.3901  8.4870  1
1  0.7790  0.9414  1.2087  0
2  1.4136  3.2343  7.8986  0
3  1.7736  4.7219  2.3921  0
4  6.5063  1.5252  0.3327  1
5  6.2627  1.2002  0.3142  1
>>> frame = synthetic_frame("agrawal_gradual", SyntheticConfig(n_rows=3))
>>> print(frame[["salary", "age", "elevel", "car", "zipcode", "y"]].to_string())
        salary  age    elevel     car    zipcode  y
0  115241.8593   21  elevel_1  car_13  zipcode_2  1
1  110291.6957   62  elevel_3   car_8  zipcode_2  1
2  135530.4249   46  elevel_3  car_12  zipcode_8  0
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice

import numpy as np
import pandas as pd
from river.datasets import synth
from river.datasets.base import SyntheticDataset

SYNTHETIC_STREAMS: tuple[str, ...] = (
    "sea_abrupt",
    "sea_gradual",
    "agrawal_abrupt",
    "agrawal_gradual",
    "rbf_drift",
    "hyperplane",
    "stationary",
    "slow_drift",
)
TARGET = "y"
#: The time column of ``slow_drift``, the one synthetic stream on a clock of its own.
TIME = "time"
SLOW_DRIFT_START = datetime(2025, 1, 1, tzinfo=UTC)
SLOW_DRIFT_EVERY = timedelta(minutes=30)

_SEA_VARIANTS = (0, 3, 2)  # thresholds 8, 9.5, 7 on x0 + x1
_AGRAWAL_FUNCTIONS = (0, 2, 6)
_AGRAWAL_CATEGORIES = ("elevel", "car", "zipcode")
_RBF_CLASSES = 3
_RBF_FEATURES = 10
# Centroid travel during the drifting third, in units of the feature cube's side.
_RBF_TRAVEL = 2.0
# Weight change per row at the default length; the weights random-walk (river flips their
# direction with probability ~0.09), so the step scales with 1 / sqrt(n_rows).
_HYPERPLANE_MAG_CHANGE = 0.002
_HYPERPLANE_DRIFT_FEATURES = 4


@dataclass(frozen=True)
class SyntheticConfig:
    """Length and seed of a synthetic stream; the drift's shape scales with the length.

    The changes sit at a third and two thirds of ``n_rows``, a gradual change spreads over
    ``n_rows / 7.5`` rows (4,000 of 30,000), and the incremental drifts (``rbf_drift``'s moving
    centroids, ``hyperplane``'s wandering weights) go as far whatever the length, so a short
    stream is a smaller copy of the long one.
    """

    n_rows: int = 30_000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_rows < 3:
            raise ValueError(f"n_rows must be at least 3 (three concepts), got {self.n_rows}")

    @property
    def changes(self) -> tuple[int, int]:
        """The rows at which the concept changes (0-based)."""
        return self.n_rows // 3, 2 * self.n_rows // 3

    @property
    def gradual_width(self) -> int:
        return max(1, round(self.n_rows / 7.5))


def synthetic_frame(name: str, config: SyntheticConfig | None = None) -> pd.DataFrame:
    """The stream ``name`` as a table: its features and the target ``y`` as text, in row order.

    ``slow_drift`` has a ``time`` column first: a row every 30 minutes from 2025-01-01 UTC.

    >>> synthetic_frame("slow_drift", SyntheticConfig(n_rows=3))["time"].tolist()
    ['2025-01-01T00:00:00+00:00', '2025-01-01T00:30:00+00:00', '2025-01-01T01:00:00+00:00']
    """
    config = config or SyntheticConfig()
    frame = _to_frame(islice(river_stream(name, config), config.n_rows))
    if name == "slow_drift":
        times = [(SLOW_DRIFT_START + i * SLOW_DRIFT_EVERY).isoformat() for i in range(len(frame))]
        frame.insert(0, TIME, times)
    return frame


_DESCRIPTIONS = {
    "sea_abrupt": "SEA, 10% label noise: the threshold on x0+x1 goes 8 -> 9.5 -> 7, abrupt at rows {first} "
    "and {second}",
    "sea_gradual": "SEA, 10% label noise: the threshold on x0+x1 goes 8 -> 9.5 -> 7, gradual around rows {first} "
    "and {second} (width {width})",
    "agrawal_abrupt": "Agrawal loan applicants: the class decided by age, then age and education, then disposable "
    "income, abrupt at rows {first} and {second}",
    "agrawal_gradual": "Agrawal loan applicants: the class decided by age, then age and education, then disposable "
    "income, gradual around rows {first} and {second} (width {width})",
    "rbf_drift": "random RBF, 3 classes: still, centroids moving from row {first} (incremental), back where they "
    "started at row {second} (recurring)",
    "hyperplane": "rotating hyperplane, 5% label noise: 4 of its 10 weights wander a little every row "
    "(incremental, no change points)",
    "stationary": "SEA, 10% label noise: the threshold on x0+x1 stays 8 throughout (no drift: a control)",
    "slow_drift": "Agrawal loan applicants, one every 30 minutes ({days} days): the class decided by age, then age "
    "and education from row {first} (day {first_day}, abrupt), then disposable income around row {second} "
    "(day {second_day}, gradual over {width} rows)",
}


def describe(name: str, config: SyntheticConfig | None = None) -> str:
    """One line on the stream ``name``: its generator and where its concept changes.

    >>> describe("sea_abrupt")
    'SEA, 10% label noise: the threshold on x0+x1 goes 8 -> 9.5 -> 7, abrupt at rows 10,000 and 20,000'
    """
    config = config or SyntheticConfig()
    if name not in _DESCRIPTIONS:
        raise ValueError(f"unknown synthetic stream {name!r}; known: {', '.join(SYNTHETIC_STREAMS)}")
    first, second = config.changes
    rows_a_day = timedelta(days=1) / SLOW_DRIFT_EVERY
    return _DESCRIPTIONS[name].format(
        first=f"{first:,}",
        second=f"{second:,}",
        width=f"{config.gradual_width:,}",
        days=f"{config.n_rows / rows_a_day:,.0f}",
        first_day=f"{first / rows_a_day:,.0f}",
        second_day=f"{second / rows_a_day:,.0f}",
    )


def river_stream(name: str, config: SyntheticConfig | None = None) -> SyntheticDataset:
    """The river generator behind ``name``: endless; :func:`synthetic_frame` takes ``n_rows`` of it."""
    config = config or SyntheticConfig()
    if name not in SYNTHETIC_STREAMS:
        raise ValueError(f"unknown synthetic stream {name!r}; known: {', '.join(SYNTHETIC_STREAMS)}")
    seeds = _seeds(config.seed, SYNTHETIC_STREAMS.index(name))
    width = config.gradual_width if name.endswith("_gradual") else None
    if name == "stationary":
        return synth.SEA(variant=_SEA_VARIANTS[0], noise=0.1, seed=seeds[2])
    if name.startswith("sea_"):
        sea = [synth.SEA(variant=v, noise=0.1, seed=s) for v, s in zip(_SEA_VARIANTS, seeds[2:5], strict=True)]
        return _two_changes(sea, config, (width, width), seeds)
    if name.startswith("agrawal_") or name == "slow_drift":
        # No ``perturbation``: in river 0.26 it pins ``hvalue`` to (9 - zipcode) × 100,000.
        agrawal = [
            synth.Agrawal(classification_function=f, seed=s)
            for f, s in zip(_AGRAWAL_FUNCTIONS, seeds[2:5], strict=True)
        ]
        widths = (None, config.gradual_width) if name == "slow_drift" else (width, width)
        return _two_changes(agrawal, config, widths, seeds)
    if name == "rbf_drift":
        return _rbf(config, seeds)
    return synth.Hyperplane(
        seed=seeds[2],
        n_features=10,
        n_drift_features=_HYPERPLANE_DRIFT_FEATURES,
        mag_change=_HYPERPLANE_MAG_CHANGE * math.sqrt(30_000 / config.n_rows),
        noise_percentage=0.05,
    )


def _seeds(seed: int, stream: int) -> list[int]:
    """Independent integer seeds for the generators and mixers of one stream.

    Each concept gets its own seed: two generators with one seed draw the same inputs, and the
    new concept would replay the old one's rows.
    """
    return [int(s) for s in np.random.SeedSequence([seed, stream]).generate_state(8)]


def abrupt_width(position: int) -> int:
    """The narrowest transition river's ``ConceptDriftStream`` can compute at ``position``.

    Its sigmoid evaluates ``exp(4 (position - t) / width)`` from the first row on, which
    overflows a float when ``4 × position / width`` passes ~709: ``width=1`` only works for a
    change within the first ~177 rows. At row 10,000 the narrowest is 58 rows, abrupt for a
    stream of 30,000.

    >>> abrupt_width(100), abrupt_width(10_000)
    (1, 58)
    """
    return max(1, math.ceil(4 * position / 700))


def _two_changes(
    concepts: Sequence[SyntheticDataset],
    config: SyntheticConfig,
    widths: tuple[int | None, int | None],
    seeds: list[int],
) -> SyntheticDataset:
    """Concept 0, then 1 from the first change, then 2 from the second.

    ``widths`` are the two changes' transitions in rows; ``None`` is abrupt.
    """
    first, second = config.changes
    # The inner stream counts only the rows it supplies, which start at the first change.
    inner_position = second - first
    later = synth.ConceptDriftStream(
        stream=concepts[1],
        drift_stream=concepts[2],
        position=inner_position,
        width=widths[1] or abrupt_width(inner_position),
        seed=seeds[0],
    )
    return synth.ConceptDriftStream(
        stream=concepts[0], drift_stream=later, position=first, width=widths[0] or abrupt_width(first), seed=seeds[1]
    )


def _rbf(config: SyntheticConfig, seeds: list[int]) -> SyntheticDataset:
    model_seed = seeds[2]
    first, second = config.changes
    speed = _RBF_TRAVEL / max(second - first, 1)

    def rbf(sample_seed: int, change_speed: float) -> synth.RandomRBFDrift:
        # One ``seed_model``: the three concepts start from the same centroids.
        return synth.RandomRBFDrift(
            seed_model=model_seed,
            seed_sample=sample_seed,
            n_classes=_RBF_CLASSES,
            n_features=_RBF_FEATURES,
            change_speed=change_speed,
        )

    return _two_changes([rbf(seeds[3], 0.0), rbf(seeds[4], speed), rbf(seeds[5], 0.0)], config, (None, None), seeds)


def column_name(key: object) -> str:
    """A river feature key as an identifier: ``0`` → ``x0``, ``"a b"`` → ``a_b``.

    >>> column_name(3), column_name("salary"), column_name("rx power")
    ('x3', 'salary', 'rx_power')
    """
    if isinstance(key, int):
        return f"x{key}"
    name = re.sub(r"\W+", "_", str(key)).strip("_")
    return name if name and not name[0].isdigit() else f"x{name}"


def _label(y: object) -> str:
    if isinstance(y, bool | np.bool_):
        return "1" if y else "0"
    return str(y)


def _to_frame(rows: Iterable[tuple[dict, object]]) -> pd.DataFrame:
    records = []
    targets = []
    for x, y in rows:
        records.append({column_name(k): v for k, v in x.items()})
        targets.append(_label(y))
    frame = pd.DataFrame.from_records(records)
    for column in frame.columns:
        if column in _AGRAWAL_CATEGORIES:
            frame[column] = [f"{column}_{int(v)}" for v in frame[column]]
        elif frame[column].dtype.kind == "f":
            frame[column] = frame[column].round(4)
    frame[TARGET] = targets
    return frame
