"""The schema of a managed model: its features and their kinds, target, classes and keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FeatureSpec(BaseModel):
    """One input feature: a finite ``number`` or a non-empty ``category`` string."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["number", "category"]


class ModelSchema(BaseModel):
    """What a managed model reads and predicts.

    ``entity_key`` names what an event is about (a device id), ``group_key`` the grouping used
    for outages and quarantines (an OLT port), ``timestamp`` the time field of recorded data.

    Examples
    --------
    >>> s = ModelSchema(features=[FeatureSpec(name="rx_power", kind="number")],
    ...                 target="offline", classes=["no", "yes"], entity_key="ont_id")
    >>> s.feature_names
    ['rx_power']
    """

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureSpec] = Field(min_length=1)
    target: str = Field(min_length=1)
    classes: list[str]
    entity_key: str = Field(min_length=1)
    group_key: str | None = None
    timestamp: str = "time"

    @model_validator(mode="after")
    def _check(self) -> ModelSchema:
        names = [f.name for f in self.features]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"feature names must be unique, repeated: {repeated}")
        if len(self.classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {self.classes}")
        if any(not c for c in self.classes):
            raise ValueError(f"class names must be non-empty strings, got {self.classes}")
        repeated = sorted({c for c in self.classes if self.classes.count(c) > 1})
        if repeated:
            raise ValueError(f"classes must be unique, repeated: {repeated}")
        if self.target in names:
            raise ValueError(f"target {self.target!r} cannot also be a feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        """The feature names, in schema order."""
        return [f.name for f in self.features]
