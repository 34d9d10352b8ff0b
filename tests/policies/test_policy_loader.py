from __future__ import annotations

from pathlib import Path

import pytest

from driftpilot.policies import Policy, PolicyError, load_policy


def test_default_policy_loads_with_every_documented_value() -> None:
    policy = load_policy()

    assert policy == Policy(name="default")
    assert policy.autonomy == "L4"
    assert policy.monitor.check_every_minutes == 120
    assert policy.monitor.window_hours == 12
    # Every field that depends on the stream's volume or label rate is derived from it.
    assert policy.monitor.min_labelled == policy.monitor.max_window_hours == "auto"
    assert policy.monitor.check_every_labels == policy.monitor.check_every_rows == "auto"
    assert policy.training.label_wait_hours == "auto"
    assert policy.release.min_shadow_samples == policy.release.min_step_samples == "auto"
    assert policy.monitor.max_accuracy_drop == 0.03
    assert policy.monitor.drift_p_value == 0.01
    assert policy.monitor.psi_threshold == 0.2
    assert policy.budgets.max_retrains_per_day == 6
    assert policy.budgets.max_labels_per_day == 2000
    assert policy.training.recent_hours == "auto"
    assert policy.training.max_recent == 20000
    assert policy.training.replay_share == 0.3
    assert policy.training.min_training_labels == "auto"
    assert policy.release.steps == [0.05, 0.25]
    assert policy.release.min_canary_samples == "auto"
    assert policy.release.max_regression == 0.02
    assert policy.release.max_canary_hours == "auto"
    assert policy.evaluation.max_forgetting == 0.02
    assert policy.evaluation.max_slice_regression == 0.05
    assert policy.evaluation.min_slice_samples == 100
    assert policy.evaluation.max_golden_regression == 0.0


def test_default_file_writes_every_field_out() -> None:
    # The shipped file documents every field: nothing may be left to a code default.
    import yaml

    text = (Path(__file__).parents[2] / "driftpilot/policies/default.yaml").read_text()
    data = yaml.safe_load(text)

    assert set(data) == set(Policy.model_fields)
    for section in ("monitor", "budgets", "training", "evaluation", "release", "changes", "data"):
        field = Policy.model_fields[section]
        assert field.annotation is not None
        assert set(data[section]) == set(field.annotation.model_fields)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ont.yaml"
    path.write_text(text)
    return path


def test_a_typo_is_refused_naming_the_field_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ont\nbudgets:\n  max_retrain_per_day: 3\n")

    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.fields == ("budgets.max_retrain_per_day",)
    assert str(path) in str(caught.value)
    assert "field 'budgets.max_retrain_per_day' is not a policy field" in str(caught.value)


def test_an_invalid_share_is_refused_naming_the_field(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ont\nrelease:\n  steps: [1.5]\n")

    with pytest.raises(PolicyError, match="field 'release.steps'") as caught:
        load_policy(path)

    assert caught.value.fields == ("release.steps",)
    assert "got [1.5]" in str(caught.value)


def test_every_fault_is_named(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "autonomy: L5\nmonitor:\n  min_labelled: 0\ntraining:\n  replay_share: '0.3'\n",
    )

    with pytest.raises(PolicyError) as caught:
        load_policy(path)

    assert caught.value.fields == (
        "name",
        "autonomy",
        "monitor.min_labelled",
        "training.replay_share",
    )


def test_yaml_error_names_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "name: ont\nrelease: [unclosed\n")

    with pytest.raises(PolicyError, match=f"policy file {path} is not valid YAML"):
        load_policy(path)


def test_not_a_mapping_and_missing_file_are_policy_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="must be a mapping of fields, got list"):
        load_policy(_write(tmp_path, "- name: ont\n"))
    with pytest.raises(PolicyError, match="cannot be read"):
        load_policy(tmp_path / "absent.yaml")


def test_policy_error_is_a_value_error() -> None:
    assert issubclass(PolicyError, ValueError)
