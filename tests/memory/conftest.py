"""Fixtures of the memory tests: a session on a database of its own (``memory_url``, from
tests/conftest.py: SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.orm import Session

from driftpilot.memory.db import connect
from driftpilot.memory.managed import register_model
from driftpilot.memory.schemas import FeatureSpec, ModelSchema
from driftpilot.memory.tables import ManagedModel


@pytest.fixture
def session(memory_url: str) -> Iterator[Session]:
    """A session on a migrated, empty database."""
    factory = connect(memory_url)
    with factory() as session:
        yield session
    factory.kw["bind"].dispose()


ONT_SCHEMA = ModelSchema(
    features=[
        FeatureSpec(name="rx_power", kind="number"),
        FeatureSpec(name="temperature", kind="number"),
        FeatureSpec(name="firmware", kind="category"),
    ],
    target="offline",
    classes=["online", "offline"],
    entity_key="ont_id",
    group_key="olt_port",
)


@pytest.fixture
def ont(session: Session) -> ManagedModel:
    """A registered ONT-offline model with three features."""
    return register_model(session=session, name="ont", task="tabular", family="mlp", schema=ONT_SCHEMA)
