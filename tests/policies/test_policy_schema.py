from __future__ import annotations

import pytest
from pydantic import ValidationError

from driftpilot.policies import Policy


@pytest.mark.parametrize(
    ("section", "field", "value"),
    [
        ("release", "steps", [0.0]),
        ("release", "steps", [1.0]),
        ("release", "steps", [0.5, 0.2]),
        ("release", "steps", []),
        ("training", "replay_share", 1.0),
        ("training", "replay_share", -0.1),
        ("monitor", "drift_p_value", 0.0),
        ("monitor", "check_every_minutes", 0),
        ("monitor", "window_hours", 0.0),
        ("budgets", "max_retrains_per_day", 0),
        ("budgets", "max_labels_per_day", 2.5),
        ("training", "min_training_labels", True),
        ("release", "max_regression", -0.01),
        ("release", "max_canary_hours", 0),
        ("evaluation", "max_forgetting", -0.01),
        ("evaluation", "max_slice_regression", 1.0),
        ("evaluation", "min_slice_samples", 0),
        ("evaluation", "max_golden_regression", -0.1),
    ],
)
def test_out_of_range_values_are_refused_naming_the_field(section: str, field: str, value: object) -> None:
    with pytest.raises(ValidationError) as caught:
        Policy.model_validate({"name": "x", section: {field: value}})

    # A field that may also be "auto" fails each member of its union: the field is named either way.
    assert {error["loc"][:2] for error in caught.value.errors()} == {(section, field)}


def test_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="autonomy_level"):
        Policy.model_validate({"name": "x", "autonomy_level": "L3"})


def test_policy_is_frozen() -> None:
    policy = Policy(name="x")

    with pytest.raises(ValidationError):
        policy.release.alpha = 0.5


def test_boundary_values_are_accepted() -> None:
    policy = Policy.model_validate(
        {
            "name": "edge",
            "autonomy": "L0",
            "training": {"replay_share": 0.0},
            "release": {"max_regression": 0.0, "steps": [0.99]},
            "monitor": {"window_hours": 1},
        }
    )

    assert policy.training.replay_share == 0.0
    assert policy.monitor.window_hours == 1.0
