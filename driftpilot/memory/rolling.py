"""Rolling features: what an entity's recent readings say beside its newest one.

A schema with ``rolling`` (:class:`~driftpilot.memory.schemas.Rolling`) makes every event carry,
for each rolling number, the change since the entity's previous reading, the mean and deviation
of its last ``k`` readings, and the hours since it last restarted (came back after a silence
longer than ``restart_factor`` times the median of its recent gaps). They are derived once, when
the event is served or stored, and stored with it: training reads exactly what serving computed.

One function derives them (:meth:`RollingHistory.derive`): for a whole recorded stream at once,
tick by tick for a driver, or request by request through the state saved in ``entity_state``;
the three give the same features (the tests check it). The arithmetic is pandas' grouped
``diff`` and ``rolling`` over the entity's kept readings followed by the new ones.

What cannot be known is NaN, imputed as at training: the first delta of an entity (or after a
restart), the deviation of fewer than two readings, the hours since a restart never seen. A
reading not newer than the entity's last one (late, or re-sent) derives nothing and does not
move the history.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.db import chunks
from driftpilot.memory.schemas import SINCE_RESTART, ModelSchema, Rolling
from driftpilot.memory.tables import EntityState
from driftpilot.memory.times import utcnow

_HOUR = np.timedelta64(3600, "s")


class RollingHistory:
    """The last readings of each entity, and the rolling features they give new readings.

    Keeps, per entity, its last ``k + 1`` readings (``k`` for the rolling statistics, one more
    gap for the median that tells a restart), whether each began a restart, and the time of the
    last restart.
    """

    def __init__(self, schema: ModelSchema) -> None:
        if schema.rolling is None:
            raise ValueError("the schema has no rolling features (set its 'rolling')")
        self.numbers = schema.rolling_numbers
        self.k = schema.rolling.k
        self.factor = schema.rolling.restart_factor
        self.names = [f.name for f in schema.derived_features]
        self._kept = pd.DataFrame(
            {
                "entity": pd.Series([], dtype=object),
                "time": pd.Series([], dtype="datetime64[us]"),
                "restart": pd.Series([], dtype=bool),
                **{c: pd.Series([], dtype=np.float64) for c in self.numbers},
            }
        )
        self._anchor: dict[str, pd.Timestamp] = {}
        self.moved: set[str] = set()

    # ------------------------------------------------------------------ derivation

    def derive(
        self, entities: Sequence[str], times: Sequence[Any], numbers: Mapping[str, Sequence[Any] | np.ndarray]
    ) -> dict[str, np.ndarray]:
        """The derived features of a batch of readings (any order, several per entity), in the
        batch's order; the history moves to include them."""
        n = len(entities)
        moments = pd.to_datetime(pd.Series(list(times), dtype=object), utc=True)
        new = pd.DataFrame(
            {
                "entity": pd.Series(np.asarray(entities, dtype=object), dtype=object),
                "time": moments.dt.tz_localize(None).dt.as_unit("us"),
                "restart": False,
                **{c: pd.to_numeric(pd.Series(list(numbers[c]), dtype=object), errors="coerce") for c in self.numbers},
            }
        )
        new["_position"] = np.arange(n)
        out = {name: np.full(n, np.nan) for name in self.names}
        if n == 0:
            return out
        new = new.sort_values(["entity", "time"], kind="stable")
        kept = self._kept[self._kept["entity"].isin(set(new["entity"]))]
        last = kept.groupby("entity")["time"].max()
        before = last.reindex(new["entity"]).to_numpy(dtype="datetime64[us]")
        previous = new.groupby("entity")["time"].shift().to_numpy(dtype="datetime64[us]")
        at = new["time"].to_numpy(dtype="datetime64[us]")
        # NaT compares False: an entity without history, a batch's first reading of an entity.
        late = (at <= before) | (at == previous)
        fresh = new[~late]
        if fresh.empty:
            return out
        rows = pd.concat([kept.assign(_position=-1), fresh], ignore_index=True)
        rows = rows.sort_values(["entity", "time"], kind="stable").reset_index(drop=True)
        derived, restart = self._features(rows)
        ours = rows["_position"].to_numpy() >= 0
        positions = rows.loc[ours, "_position"].to_numpy(dtype=np.int64)
        for name in self.names:
            out[name][positions] = derived[name][ours]
        rows["restart"] = restart
        self._keep(rows)
        return out

    def _features(self, rows: pd.DataFrame) -> tuple[dict[str, np.ndarray], np.ndarray]:
        by_entity = rows.groupby("entity", sort=False)
        gap = by_entity["time"].diff() / _HOUR
        # The median of the entity's k gaps before this one: a gap far beyond it is a restart.
        usual = (
            gap.groupby(rows["entity"], sort=False)
            .shift()
            .groupby(rows["entity"], sort=False)
            .rolling(self.k, min_periods=1)
            .median()
            .reset_index(level=0, drop=True)
            .sort_index()
        )
        kept_flag = rows["restart"].to_numpy(dtype=bool)
        new_rows = rows["_position"].to_numpy() >= 0
        seen = (gap > self.factor * usual).to_numpy(dtype=bool)
        restart = np.where(new_rows, seen, kept_flag)
        segment = pd.Series(restart.astype(np.int64), index=rows.index).groupby(rows["entity"], sort=False).cumsum()
        keys = [rows["entity"], segment]
        out: dict[str, np.ndarray] = {}
        for c in self.numbers:
            grouped = rows[c].astype(np.float64).groupby(keys, sort=False)
            out[f"{c}__delta"] = grouped.diff().to_numpy()
            # The last k readings side by side, each window computed on its own: pandas' rolling
            # sums carry rounding from every earlier reading, so a whole stream and the same
            # readings one by one from saved state would differ in the last digits.
            window = np.column_stack([grouped.shift(j).to_numpy() for j in range(self.k)])
            known = (~np.isnan(window)).sum(axis=1)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = np.nansum(window, axis=1) / known
                spread = np.sqrt(np.nansum((window - mean[:, None]) ** 2, axis=1) / (known - 1))
            out[f"{c}__mean{self.k}"] = np.where(known >= 1, mean, np.nan)
            out[f"{c}__std{self.k}"] = np.where(known >= 2, spread, np.nan)
        anchor = pd.Series(rows["time"].where(restart), index=rows.index).groupby(rows["entity"], sort=False).ffill()
        known = rows["entity"].map(self._anchor)
        anchor = anchor.fillna(known) if len(self._anchor) else anchor
        out[SINCE_RESTART] = ((rows["time"] - anchor) / _HOUR).to_numpy(dtype=np.float64, na_value=np.nan)
        self._anchor.update({str(e): t for e, t in anchor.groupby(rows["entity"], sort=False).last().dropna().items()})
        return out, restart

    def _keep(self, rows: pd.DataFrame) -> None:
        tail = rows.groupby("entity", sort=False).tail(self.k + 1)
        others = self._kept[~self._kept["entity"].isin(set(rows["entity"]))]
        self._kept = pd.concat([others, tail.drop(columns="_position")], ignore_index=True)
        self.moved.update(str(e) for e in rows["entity"].unique())

    # ------------------------------------------------------------------ state

    def state_of(self, entity: str) -> dict[str, Any]:
        """An entity's history as plain JSON values (missing numbers are null)."""
        return self.states([entity]).get(entity) or self._state(entity, [], [], {c: [] for c in self.numbers})

    def states(self, entities: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The histories of ``entities`` that have one, as :meth:`state_of` gives them: columns
        converted once for all of them (a driver's tick moves every entity at once)."""
        rows = self._kept[self._kept["entity"].isin(set(entities))].sort_values("entity", kind="stable")
        if rows.empty:
            return {}
        names = rows["entity"].to_numpy(dtype=object)
        starts = np.flatnonzero(np.r_[True, names[1:] != names[:-1]])
        ends = np.append(starts[1:], len(names))
        times = np.datetime_as_string(rows["time"].to_numpy(dtype="datetime64[us]"), unit="us").tolist()
        restarts = rows["restart"].to_numpy(dtype=bool).tolist()
        numbers: dict[str, list[Any]] = {}
        for c in self.numbers:
            values = rows[c].to_numpy(dtype=np.float64)
            column = values.astype(object)
            column[np.isnan(values)] = None  # a missing reading is JSON null
            numbers[c] = column.tolist()
        return {
            str(names[a]): self._state(
                str(names[a]), times[a:b], restarts[a:b], {c: v[a:b] for c, v in numbers.items()}
            )
            for a, b in zip(starts.tolist(), ends.tolist(), strict=True)
        }

    def _state(
        self, entity: str, times: list[str], restarts: list[bool], numbers: dict[str, list[Any]]
    ) -> dict[str, Any]:
        anchor = self._anchor.get(entity)
        return {
            "time": times,
            "restart": restarts,
            "numbers": numbers,
            "anchor": None if anchor is None or pd.isna(anchor) else anchor.isoformat(),
        }

    def restore(self, states: Mapping[str, Mapping[str, Any]]) -> None:
        """Take the histories of ``states`` (entity -> :meth:`state_of`), replacing theirs: one
        frame built for all of them."""
        if not states:
            return
        lengths = [len(state["time"]) for state in states.values()]
        columns: dict[str, Any] = {
            "entity": pd.Series(np.repeat(np.asarray(list(states), dtype=object), lengths), dtype=object),
            "time": pd.to_datetime(
                pd.Series([t for state in states.values() for t in state["time"]], dtype=object)
            ).dt.as_unit("us"),
            "restart": pd.Series([r for state in states.values() for r in state["restart"]], dtype=bool),
        }
        for c in self.numbers:
            values = [
                v
                for state, n in zip(states.values(), lengths, strict=True)
                for v in state["numbers"].get(c, [None] * n)
            ]
            columns[c] = pd.Series(values, dtype=object).astype(np.float64)
        self._anchor.update(
            {entity: pd.Timestamp(state["anchor"]) for entity, state in states.items() if state.get("anchor")}
        )
        others = self._kept[~self._kept["entity"].isin(set(states))]
        self._kept = pd.concat([others, pd.DataFrame(columns)], ignore_index=True)


def load_history(session: Session, model_id: int, schema: ModelSchema, entities: Sequence[str]) -> RollingHistory:
    """The stored histories of ``entities`` (the others start empty)."""
    history = RollingHistory(schema)
    states: dict[str, Any] = {}
    for part in chunks(sorted(set(entities))):
        found = session.execute(
            sa.select(EntityState.entity, EntityState.state).where(
                EntityState.model_id == model_id, EntityState.entity.in_(part)
            )
        ).all()
        states.update({entity: json.loads(state) for entity, state in found})
    history.restore(states)
    return history


def save_history(session: Session, model_id: int, history: RollingHistory) -> None:
    """Store the histories that moved, in the caller's transaction (it commits)."""
    moved = sorted(history.moved)
    if not moved:
        return
    for part in chunks(moved):
        session.execute(sa.delete(EntityState).where(EntityState.model_id == model_id, EntityState.entity.in_(part)))
    now = utcnow()
    session.execute(
        sa.insert(EntityState),
        [
            {"model_id": model_id, "entity": e, "state": json.dumps(state), "updated_at": now}
            for e, state in history.states(moved).items()
        ],
    )
    history.moved.clear()


#: Least readings of the median entity for a recorded stream to get rolling features: twice the
#: window, so that most readings have a full one.
TELEMETRY_READINGS = 2 * Rolling().k
#: Largest spread of an entity's gaps (median absolute deviation over the median gap, median over
#: entities) for its readings to count as a cadence: telemetry every 15 minutes, not purchases.
TELEMETRY_JITTER = 0.25


def telemetry_rolling(entities: Sequence[str], times: Sequence[Any]) -> Rolling | None:
    """The rolling features a recorded stream gets, derived from what it is: :class:`Rolling`'s
    defaults when its entities report again and again at a regular cadence (the median entity has
    :data:`TELEMETRY_READINGS` readings or more, its gaps vary by :data:`TELEMETRY_JITTER` of the
    usual gap or less), else None (one row per customer, or events at random moments, have no
    history to roll over).

    >>> from datetime import datetime, timedelta
    >>> t0 = datetime(2026, 1, 1)
    >>> ticks = [(f"e{i}", t0 + timedelta(minutes=15 * j)) for j in range(10) for i in range(3)]
    >>> telemetry_rolling([e for e, _ in ticks], [t for _, t in ticks])
    Rolling(k=4, restart_factor=3.0, numbers=None)
    >>> telemetry_rolling([f"row-{i}" for i in range(30)], [t for _, t in ticks]) is None
    True
    """
    frame = pd.DataFrame(
        {"entity": list(entities), "time": pd.to_datetime(pd.Series(list(times), dtype=object), utc=True)}
    )
    if frame.empty or frame.groupby("entity").size().median() < TELEMETRY_READINGS:
        return None
    frame = frame.sort_values(["entity", "time"], kind="stable")
    gaps = (frame.groupby("entity")["time"].diff() / _HOUR).dropna()
    entity = frame.loc[gaps.index, "entity"]
    usual = gaps.groupby(entity).transform("median")
    spread = (gaps - usual).abs().groupby(entity).median() / gaps.groupby(entity).median()
    spread = spread.replace([np.inf, -np.inf], np.nan).dropna()
    if spread.empty or spread.median() > TELEMETRY_JITTER:
        return None
    return Rolling()
