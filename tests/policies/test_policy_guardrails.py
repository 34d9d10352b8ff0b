"""Change windows and freezes, the compute budget, data rules, and a policy changed while running."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from driftpilot.policies import (
    PolicyEngine,
    PolicyError,
    PromoteFacts,
    RetrainFacts,
    RollbackFacts,
    StartCanaryFacts,
    Usage,
    evaluate,
    policy_from_mapping,
)

GATE = StartCanaryFacts(candidate_score=0.9, champion_score=0.9)
# A Monday.
MONDAY_2300 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


def _calendar(verdict):
    return next(v for v in verdict.verdicts if v.rule == "change_calendar")


def test_changes_happen_only_inside_a_window_that_may_span_midnight():
    policy = policy_from_mapping(
        {"name": "w", "changes": {"windows": [{"days": ["mon"], "start": "22:00", "end": "04:00"}]}}
    )
    inside = evaluate(policy, "start_canary", GATE, Usage(), at=MONDAY_2300)
    after_midnight = evaluate(
        policy,
        "promote",
        PromoteFacts(canary_samples=500, canary_score=0.9, control_score=0.9),
        Usage(),
        at=datetime(2026, 12, 1, 3, 59, tzinfo=UTC),
    )
    outside = evaluate(policy, "start_canary", GATE, Usage(), at=datetime(2026, 12, 1, 4, 0, tzinfo=UTC))
    assert inside.allowed and after_midnight.allowed and not outside.allowed
    assert _calendar(outside).reason == "2026-12-01 04:00 UTC is outside the change windows (mon 22:00-04:00 UTC)"
    # A rollback restores what was served before: no window holds it back.
    assert [
        v.rule
        for v in evaluate(
            policy, "rollback", RollbackFacts(), Usage(), at=datetime(2026, 12, 1, 12, tzinfo=UTC)
        ).verdicts
    ] == ["autonomy"]
    # Without a time the question is whether the candidate is fit at all (the Trainer's gate).
    assert [v.rule for v in evaluate(policy, "start_canary", GATE, Usage()).verdicts] == [
        "autonomy",
        "canary_share",
        "offline_gate",
    ]


def test_a_freeze_beats_a_window_and_is_named():
    policy = policy_from_mapping(
        {
            "name": "f",
            "changes": {
                "windows": [{"start": "00:00", "end": "23:59"}],
                "freezes": [
                    {"start": "2026-11-30T00:00:00Z", "end": "2026-12-02T00:00:00Z", "reason": "OLT migration"}
                ],
            },
        }
    )
    verdict = evaluate(policy, "start_canary", GATE, Usage(), at=MONDAY_2300)
    assert not verdict.allowed
    assert verdict.reasons == [
        "2026-11-30 23:00 UTC is inside the change freeze 'OLT migration' (2026-11-30 00:00 to 2026-12-02 00:00 UTC)"
    ]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"windows": [{"start": "25:00", "end": "04:00"}]}, "changes.windows.0.start"),
        ({"windows": [{"days": ["monday"], "start": "01:00", "end": "04:00"}]}, "changes.windows.0.days.0"),
        ({"windows": [{"start": "01:00", "end": "01:00"}]}, "changes.windows.0"),
        (
            {"freezes": [{"start": "2026-12-02T00:00:00Z", "end": "2026-12-01T00:00:00Z", "reason": "x"}]},
            "changes.freezes.0",
        ),
        (
            {"freezes": [{"start": "2026-12-01T00:00:00", "end": "2026-12-02T00:00:00Z", "reason": "x"}]},
            "changes.freezes.0.start",
        ),
    ],
)
def test_a_bad_calendar_is_refused_naming_the_field(changes, field):
    with pytest.raises(PolicyError) as error:
        policy_from_mapping({"name": "bad", "changes": changes})
    assert error.value.fields == (field,)


def test_the_compute_budget_and_the_fields_never_to_train_on():
    policy = policy_from_mapping(
        {
            "name": "c",
            "budgets": {"max_compute_seconds_per_day": 60},
            "data": {"never_train_on": ["customer_id", "age"]},
        }
    )
    facts = RetrainFacts(training_labels=900, features=["rx_power", "age", "firmware"])
    verdict = evaluate(policy, "retrain", facts, Usage(compute_seconds_today=61.5))
    by_rule = {v.rule: v for v in verdict.verdicts}
    assert not verdict.allowed
    assert by_rule["compute_budget"].reason == "training seconds spent today: 61.5, at or over the budget of 60 a day"
    assert (by_rule["data_rules"].passed, by_rule["data_rules"].observed) == (False, "age")
    fine = evaluate(
        policy,
        "retrain",
        RetrainFacts(training_labels=900, features=["rx_power", "firmware"]),
        Usage(compute_seconds_today=10),
    )
    assert fine.allowed
    assert evaluate(policy, "retrain", RetrainFacts(training_labels=900), Usage()).reasons == [
        "fact 'features' missing: cannot tell what the model trains on"
    ]


def test_a_changed_file_is_put_in_force_and_an_invalid_one_refused_whole(tmp_path):
    path = tmp_path / "ont.yaml"
    path.write_text("name: ont\nautonomy: L4\nbudgets:\n  max_retrains_per_day: 3\n")
    engine = PolicyEngine.from_file(path)
    assert engine.reload_if_changed() is None

    path.write_text("name: ont\nautonomy: L3\nbudgets:\n  max_retrains_per_day: 3\n")
    applied = engine.reload_if_changed()
    assert (applied.applied, applied.fields, engine.policy.autonomy) == (True, ("autonomy",), "L3")

    # One good change and one bad field: nothing of the file is taken.
    path.write_text("name: ont\nautonomy: L4\nbudgets:\n  max_retrains_per_day: 0\n")
    refused = engine.reload_if_changed()
    assert (refused.applied, refused.fields, engine.policy.autonomy) == (False, ("budgets.max_retrains_per_day",), "L3")
    assert "max_retrains_per_day" in refused.error
    assert engine.reload_if_changed() is None  # the same bad bytes are not reported again
