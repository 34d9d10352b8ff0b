"""Managed models: register (idempotently by name), look up, list."""

from __future__ import annotations

import threading
import weakref
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import ManagedModel


class UnknownModelError(LookupError):
    """No managed model has this name (or id)."""

    def __init__(self, name: str | int) -> None:
        super().__init__(f"unknown model {name!r}: register it first")
        self.name = name


def model_schema(row: ManagedModel) -> ModelSchema:
    """The :class:`ModelSchema` stored with a model."""
    return ModelSchema.model_validate(row.schema)


def register_model(
    *,
    session: Session,
    name: str,
    task: str,
    family: str,
    schema: ModelSchema,
    policy: str = "default",
) -> ManagedModel:
    """Register a model, or return it if it is already registered exactly so.

    Raises
    ------
    ValueError
        If ``name`` is registered with another task, family, policy or schema; the message
        names what differs.
    """
    if not name:
        raise ValueError("a model needs a non-empty name")
    wanted = {
        "task": task,
        "family": family,
        "policy": policy,
        "schema": schema.model_dump(mode="json"),
    }
    existing = session.scalars(sa.select(ManagedModel).where(ManagedModel.name == name)).first()
    if existing is None:
        try:
            with committing(session):
                row = ManagedModel(name=name, **wanted)
                session.add(row)
            return row
        except IntegrityError:
            # Another process registered the same name in between: compare with its row.
            existing = session.scalars(sa.select(ManagedModel).where(ManagedModel.name == name)).one()
    differences = _differences(existing, wanted)
    if differences:
        raise ValueError(f"model {name!r} is already registered with a different {'; '.join(differences)}")
    return existing


def _differences(row: ManagedModel, wanted: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for field in ("task", "family", "policy"):
        if getattr(row, field) != wanted[field]:
            found.append(f"{field} ({getattr(row, field)!r}, not {wanted[field]!r})")
    stored_schema = row.schema
    wanted_schema = wanted["schema"]
    assert isinstance(wanted_schema, dict)
    for field in wanted_schema:
        if stored_schema.get(field) != wanted_schema[field]:
            found.append(f"schema.{field} ({stored_schema.get(field)!r}, not {wanted_schema[field]!r})")
    return found


def get_model(*, session: Session, name: str) -> ManagedModel:
    """The model called ``name``; :class:`UnknownModelError` if there is none."""
    row = session.scalars(sa.select(ManagedModel).where(ManagedModel.name == name)).first()
    if row is None:
        raise UnknownModelError(name)
    return row


def get_model_by_id(*, session: Session, model_id: int) -> ManagedModel:
    """The model with id ``model_id``; :class:`UnknownModelError` if there is none."""
    row = session.get(ManagedModel, model_id)
    if row is None:
        raise UnknownModelError(model_id)
    return row


def list_models(*, session: Session) -> list[ManagedModel]:
    """Every managed model, by id."""
    return list(session.scalars(sa.select(ManagedModel).order_by(ManagedModel.id)))


# Per engine: a model's id and schema by name. A registered model's row never changes (registering
# it again with anything different is refused, and models are not deleted), so ingest, which runs
# on every request, reads it once per process instead of querying and parsing it each time.
_KNOWN: weakref.WeakKeyDictionary[sa.Engine, dict[str, tuple[int, ModelSchema]]] = weakref.WeakKeyDictionary()
_KNOWN_LOCK = threading.Lock()


def known_model(*, session: Session, name: str) -> tuple[int, ModelSchema]:
    """The id and schema of the model called ``name`` (:class:`UnknownModelError` if none), read
    from the database once per engine."""
    engine = session.get_bind()
    assert isinstance(engine, sa.Engine)
    with _KNOWN_LOCK:
        found = _KNOWN.get(engine, {}).get(name)
    if found is None:
        row = get_model(session=session, name=name)
        found = (row.id, model_schema(row))
        with _KNOWN_LOCK:
            _KNOWN.setdefault(engine, {})[name] = found
    return found
