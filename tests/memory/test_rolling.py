"""Rolling features: derived once per reading from the entity's history, the same way whichever
path the reading takes (a whole stream, tick by tick, request by request through stored state)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from driftpilot.memory.events import window
from driftpilot.memory.ingest import IngestError, ingest_events
from driftpilot.memory.managed import register_model
from driftpilot.memory.rolling import RollingHistory, load_history
from driftpilot.memory.schemas import FeatureSpec, ModelSchema

from .conftest import ONT_SCHEMA
from .helpers import T0

# The conftest's schema without its temperature, with rolling features over the last 3 readings.
SCHEMA = ModelSchema.model_validate(
    {**ONT_SCHEMA.model_dump(), "features": [ONT_SCHEMA.features[0], ONT_SCHEMA.features[2]], "rolling": {"k": 3}}
)
HOURS = [0, 1, 2, 3, 4, 20, 21, 22]
VALUES = [1.0, 2.0, 4.0, 7.0, 11.0, 1.0, np.nan, 3.0]


def _derive_one_by_one(
    schema: ModelSchema, entities: list[str], hours: list[float], values: list[float]
) -> pd.DataFrame:
    """Each reading alone, the history passed on as stored state (as requests do)."""
    states: dict[str, dict] = {}
    rows = []
    for entity, hour, value in zip(entities, hours, values, strict=True):
        history = RollingHistory(schema)
        history.restore(states)
        out = history.derive([entity], [T0 + timedelta(hours=hour)], {"rx_power": [value]})
        states[entity] = history.state_of(entity)
        rows.append({name: column[0] for name, column in out.items()})
    return pd.DataFrame(rows)


def test_schema_names_the_derived_features_and_refuses_a_wrong_rolling() -> None:
    assert [f.name for f in SCHEMA.derived_features] == [
        "rx_power__delta",
        "rx_power__mean3",
        "rx_power__std3",
        "hours_since_restart",
    ]
    assert [f.name for f in SCHEMA.model_features][:2] == ["rx_power", "firmware"]
    with pytest.raises(ValidationError, match="rolling.numbers must name number features"):
        SCHEMA.model_copy(update={"rolling": None}).model_validate(
            {**SCHEMA.model_dump(), "rolling": {"numbers": ["firmware"]}}
        )
    with pytest.raises(ValidationError, match="clash"):
        ModelSchema.model_validate(
            {
                **SCHEMA.model_dump(),
                "features": [*SCHEMA.model_dump()["features"], {"name": "rx_power__delta", "kind": "number"}],
            }
        )


def test_the_arithmetic_of_deltas_means_deviations_and_restarts() -> None:
    out = RollingHistory(SCHEMA).derive(["a"] * 8, [T0 + timedelta(hours=h) for h in HOURS], {"rx_power": VALUES})

    # Readings an hour apart, then a 16-hour silence (a restart: > 3 × the usual 1 h).
    np.testing.assert_allclose(out["rx_power__delta"], [np.nan, 1, 2, 3, 4, np.nan, np.nan, np.nan])
    np.testing.assert_allclose(out["rx_power__mean3"], [1, 1.5, 7 / 3, 13 / 3, 22 / 3, 1, 1, 2])
    np.testing.assert_allclose(
        out["rx_power__std3"],
        [
            np.nan,
            np.std([1, 2], ddof=1),
            np.std([1, 2, 4], ddof=1),
            np.std([2, 4, 7], ddof=1),
            np.std([4, 7, 11], ddof=1),
            np.nan,
            np.nan,
            np.std([1, 3], ddof=1),
        ],
    )
    # Unknown until a restart is seen; then hours since it.
    np.testing.assert_allclose(out["hours_since_restart"], [np.nan] * 5 + [0, 1, 2])


def test_a_whole_stream_tick_by_tick_and_request_by_request_give_the_same_features() -> None:
    rng = np.random.default_rng(3)
    entities = [f"e{i % 4}" for i in range(60)]
    hours = [i // 4 + (9.0 if i >= 40 and i % 4 == 1 else 0.0) for i in range(60)]
    values = rng.normal(size=60).round(3).tolist()
    values[7] = np.nan
    whole = pd.DataFrame(
        RollingHistory(SCHEMA).derive(entities, [T0 + timedelta(hours=h) for h in hours], {"rx_power": values})
    )
    ticks = RollingHistory(SCHEMA)
    parts = [
        pd.DataFrame(
            ticks.derive(
                entities[i : i + 4],
                [T0 + timedelta(hours=h) for h in hours[i : i + 4]],
                {"rx_power": values[i : i + 4]},
            )
        )
        for i in range(0, 60, 4)
    ]
    one_by_one = _derive_one_by_one(SCHEMA, entities, hours, values)

    pd.testing.assert_frame_equal(pd.concat(parts, ignore_index=True), whole, check_exact=True)
    pd.testing.assert_frame_equal(one_by_one, whole, check_exact=True)
    assert whole["hours_since_restart"].notna().sum() > 0  # e1 restarted


def test_a_late_or_repeated_reading_derives_nothing_and_keeps_the_history() -> None:
    history = RollingHistory(SCHEMA)
    history.derive(["a", "a"], [T0, T0 + timedelta(hours=1)], {"rx_power": [1.0, 2.0]})
    before = history.state_of("a")
    late = history.derive(["a", "a"], [T0 + timedelta(hours=1), T0], {"rx_power": [5.0, 6.0]})

    assert all(np.isnan(v).all() for v in late.values())
    assert history.state_of("a") == before


def _reading(i: int, entity: str, value: float, **features: object) -> dict:
    time = T0 + timedelta(hours=i)
    return {
        "key": f"{entity}/{i}",
        "time": time,
        "entity": entity,
        "group": "port-1",
        "features": {"rx_power": value, "firmware": "v1", **features},
    }


def test_ingest_derives_from_the_stored_history_and_a_resend_moves_nothing(session: Session) -> None:
    model = register_model(session=session, name="rolling", task="tabular", family="mlp", schema=SCHEMA)
    for i, value in enumerate(VALUES[:5]):
        ingest_events(session=session, model="rolling", events=[_reading(HOURS[i], "a", value)])
    stored = load_history(session, model.id, SCHEMA, ["a"]).state_of("a")
    again = ingest_events(session=session, model="rolling", events=[_reading(HOURS[4], "a", VALUES[4])])
    frame = window(session=session, model_id=model.id, start=None, end=None)

    assert again.duplicates == 1
    assert load_history(session, model.id, SCHEMA, ["a"]).state_of("a") == stored
    np.testing.assert_allclose(frame["rx_power__delta"], [np.nan, 1, 2, 3, 4])
    np.testing.assert_allclose(frame["rx_power__mean3"], [1, 1.5, 7 / 3, 13 / 3, 22 / 3])
    assert frame["hours_since_restart"].isna().all()


def test_a_client_cannot_send_a_derived_feature_and_nothing_is_stored(session: Session) -> None:
    model = register_model(session=session, name="rolling", task="tabular", family="mlp", schema=SCHEMA)
    events = [_reading(0, "a", 1.0), _reading(1, "a", 2.0, rx_power__delta=9.0)]

    with pytest.raises(IngestError, match="rx_power__delta"):
        ingest_events(session=session, model="rolling", events=events)
    assert window(session=session, model_id=model.id, start=None, end=None).empty
    assert load_history(session, model.id, SCHEMA, ["a"]).state_of("a")["time"] == []


def test_a_schema_without_rolling_has_no_history() -> None:
    plain = ModelSchema(features=[FeatureSpec(name="x", kind="number")], target="y", classes=["a", "b"], entity_key="e")
    assert plain.model_features == plain.features
    with pytest.raises(ValueError, match="no rolling features"):
        RollingHistory(plain)
