"""Registering and finding managed models."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy.orm import Session

from driftpilot.memory.managed import (
    UnknownModelError,
    get_model,
    list_models,
    model_schema,
    register_model,
)
from driftpilot.memory.schemas import FeatureSpec, ModelSchema
from driftpilot.memory.tables import ManagedModel

from .conftest import ONT_SCHEMA


def test_register_is_idempotent_by_name(session: Session, ont: ManagedModel) -> None:
    again = register_model(session=session, name="ont", task="tabular", family="mlp", schema=ONT_SCHEMA)

    assert again.id == ont.id
    assert [m.name for m in list_models(session=session)] == ["ont"]
    assert model_schema(get_model(session=session, name="ont")) == ONT_SCHEMA


def test_register_refuses_a_different_schema_and_names_the_difference(session: Session, ont: ManagedModel) -> None:
    changed = ONT_SCHEMA.model_copy(update={"classes": ["up", "down"]})

    with pytest.raises(ValueError) as error:
        register_model(session=session, name="ont", task="tabular", family="gbm", schema=changed)

    assert str(error.value) == (
        "model 'ont' is already registered with a different family ('mlp', not 'gbm'); "
        "schema.classes (['online', 'offline'], not ['up', 'down'])"
    )


def test_unknown_model_is_a_lookup_error_naming_it(session: Session) -> None:
    with pytest.raises(UnknownModelError, match="unknown model 'nope'") as error:
        get_model(session=session, name="nope")
    assert isinstance(error.value, LookupError)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"classes": ["only"]}, "at least 2 classes"),
        ({"features": [FeatureSpec(name="a", kind="number")] * 2}, "repeated: ['a']"),
        ({"target": "a"}, "target 'a' cannot also be a feature"),
    ],
)
def test_schema_validation(changes: dict, message: str) -> None:
    fields = {
        "features": [FeatureSpec(name="a", kind="number")],
        "target": "y",
        "classes": ["n", "y"],
        "entity_key": "id",
    }
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        ModelSchema(**{**fields, **changes})
