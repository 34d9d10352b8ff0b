"""The schema of a managed model: its features and their kinds, target, classes and keys."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FeatureSpec(BaseModel):
    """One input feature: a finite ``number`` or a non-empty ``category`` string."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    kind: Literal["number", "category"]


#: The derived feature that counts hours since an entity's last restart (see :class:`Rolling`).
SINCE_RESTART = "hours_since_restart"


class Rolling(BaseModel):
    """Per-entity rolling features a model reads beside the features events bring.

    For each number of ``numbers`` (every number feature when None): ``{name}__delta``, the
    change since the entity's previous reading; ``{name}__mean{k}`` and ``{name}__std{k}``, the
    mean and deviation of its last ``k`` readings; and once, :data:`SINCE_RESTART`, the hours
    since the entity came back from a silence longer than ``restart_factor`` times the median of
    its recent gaps (a reboot, an outage). A restart clears the entity's history. They are
    derived from the schema's entity and time columns (:mod:`driftpilot.memory.rolling`).
    """

    model_config = ConfigDict(extra="forbid")

    k: int = Field(default=4, ge=2, le=64)
    restart_factor: float = Field(default=3.0, gt=1.0)
    numbers: list[str] | None = None


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
    rolling: Rolling | None = None

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
        if self.rolling is not None:
            numbers = {f.name for f in self.features if f.kind == "number"}
            wrong = [n for n in self.rolling.numbers or [] if n not in numbers]
            if wrong or not numbers:
                raise ValueError(f"rolling.numbers must name number features of the schema, got {wrong or '[]'}")
            clash = sorted({f.name for f in self.derived_features} & set(names))
            if clash:
                raise ValueError(f"features {clash} clash with the rolling features derived from the schema")
        return self

    @property
    def feature_names(self) -> list[str]:
        """The feature names, in schema order."""
        return [f.name for f in self.features]

    @property
    def slice_columns(self) -> list[str]:
        """The columns of an event frame that slice it: the slice keys, then ``group``."""
        return [*self.slice_keys, "group"] if self.group_key else list(self.slice_keys)

    @property
    def rolling_numbers(self) -> list[str]:
        """The number features rolling features are derived from (none without ``rolling``)."""
        if self.rolling is None:
            return []
        numbers = [f.name for f in self.features if f.kind == "number"]
        return [n for n in numbers if self.rolling.numbers is None or n in self.rolling.numbers]

    @property
    def derived_features(self) -> list[FeatureSpec]:
        """The rolling features derived for each event, all numbers (none without ``rolling``).

        >>> s = ModelSchema(features=[FeatureSpec(name="signal", kind="number")], target="y",
        ...                 classes=["a", "b"], entity_key="device", rolling=Rolling(k=3))
        >>> [f.name for f in s.derived_features]
        ['signal__delta', 'signal__mean3', 'signal__std3', 'hours_since_restart']
        """
        if self.rolling is None:
            return []
        k = self.rolling.k
        names = [f"{n}__{part}" for n in self.rolling_numbers for part in ("delta", f"mean{k}", f"std{k}")]
        return [FeatureSpec(name=n, kind="number") for n in [*names, SINCE_RESTART]]

    @property
    def model_features(self) -> list[FeatureSpec]:
        """What a model of this schema may read: the features events bring, then the derived."""
        return [*self.features, *self.derived_features]
