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
    for outages and quarantines (a network segment), ``timestamp`` the time field of recorded data.
    ``slice_keys`` are the category features whose values make the slices that errors and drift
    are searched in (a hardware model, a software version, a region), in the order a cause is
    named when two slices hold the same rows. None by default: a category is a slice only when
    its owner says so (slicing by every category would split the tests' error budget among
    slices nobody asked for, and name a colour as a cause). The event's group is always a slice
    too (the column ``group``) when ``group_key`` is set.

    Examples
    --------
    >>> s = ModelSchema(features=[FeatureSpec(name="signal", kind="number"),
    ...                           FeatureSpec(name="hardware", kind="category"),
    ...                           FeatureSpec(name="software", kind="category")],
    ...                 target="offline", classes=["no", "yes"], entity_key="device_id", group_key="segment",
    ...                 slice_keys=["hardware", "software"])
    >>> s.feature_names, s.slice_columns
    (['signal', 'hardware', 'software'], ['hardware', 'software', 'group'])
    >>> s.model_copy(update={"slice_keys": []}).slice_columns
    ['group']
    """

    model_config = ConfigDict(extra="forbid")

    features: list[FeatureSpec] = Field(min_length=1)
    target: str = Field(min_length=1)
    classes: list[str]
    entity_key: str = Field(min_length=1)
    group_key: str | None = None
    timestamp: str = "time"
    slice_keys: list[str] = Field(default_factory=list)

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
        categories = {f.name for f in self.features if f.kind == "category"}
        wrong = [k for k in self.slice_keys if k not in categories]
        if wrong:
            raise ValueError(f"slice_keys must name category features of the schema, got {wrong}")
        return self

    @property
    def feature_names(self) -> list[str]:
        """The feature names, in schema order."""
        return [f.name for f in self.features]

    @property
    def slice_columns(self) -> list[str]:
        """The columns of an event frame that slice it: the slice keys, then ``group``."""
        return [*self.slice_keys, "group"] if self.group_key else list(self.slice_keys)
