from __future__ import annotations

import threading

import pytest
from pydantic import ValidationError

from driftpilot.policies import (
    ActionFacts,
    AlertFacts,
    Policy,
    PolicyEngine,
    PolicyError,
    PolicyVerdict,
    PromoteFacts,
    QuarantineFacts,
    Release,
    RequestLabelsFacts,
    RetrainFacts,
    RollbackFacts,
    StartCanaryFacts,
    Usage,
    evaluate,
    load_policy,
)

# Pinned here rather than taken from the shipped defaults, so tuning the defaults does not
# change what these cases check: 6 retrains, 2000 labels, 500 training labels, canary share
# 0.1, 300 canary samples, max regression 0.02.
POLICY = Policy(
    name="pinned", training={"min_training_labels": 500}, release=Release(steps=[0.1], min_canary_samples=300)
)

L4 = ("autonomy", True, "L4", "L3", "autonomy L4 may '{action}' within the guardrails")

GOOD_CANARY = PromoteFacts(canary_samples=400, canary_score=0.86, control_score=0.84)
GOOD_CANARY_RULES = [
    (
        "canary_samples",
        True,
        400,
        300,
        "canary samples: 400, at least the minimum of 300",
    ),
    (
        "canary_gate",
        True,
        0.02,
        -0.02,
        "canary_score 0.86 - control_score 0.84: 0.02, at or above the floor of -0.02",
    ),
]


def _rows(verdict: PolicyVerdict) -> list[tuple[object, ...]]:
    return [(v.rule, v.passed, v.observed, v.limit, v.reason) for v in verdict.verdicts]


CASES = [
    pytest.param(
        "retrain",
        RetrainFacts(training_labels=800),
        Usage(retrains_today=5),
        True,
        [
            (
                "retrain_budget",
                True,
                5,
                6,
                "retrains today: 5, below the limit of 6 a day",
            ),
            (
                "training_labels",
                True,
                800,
                500,
                "training labels: 800, at least the minimum of 500",
            ),
        ],
        id="retrain-passes",
    ),
    pytest.param(
        "retrain",
        RetrainFacts(training_labels=120),
        Usage(retrains_today=6),
        False,
        [
            (
                "retrain_budget",
                False,
                6,
                6,
                "retrains today: 6, at the limit of 6 a day",
            ),
            (
                "training_labels",
                False,
                120,
                500,
                "training labels: 120, below the minimum of 500",
            ),
        ],
        id="retrain-over-budget-and-too-few-labels",
    ),
    pytest.param(
        "retrain",
        RetrainFacts(),
        Usage(),
        False,
        [
            (
                "retrain_budget",
                True,
                0,
                6,
                "retrains today: 0, below the limit of 6 a day",
            ),
            ("training_labels", False, None, 500, "fact 'training_labels' missing"),
        ],
        id="retrain-fact-missing",
    ),
    pytest.param(
        "request_labels",
        RequestLabelsFacts(n_labels=500),
        Usage(labels_requested_today=1500),
        True,
        [
            (
                "label_budget",
                True,
                2000,
                2000,
                ("labels requested today 1500 + asked now 500: 2000, within the budget of 2000 a day"),
            )
        ],
        id="request-labels-exactly-the-budget",
    ),
    pytest.param(
        "request_labels",
        RequestLabelsFacts(n_labels=600),
        Usage(labels_requested_today=1500),
        False,
        [
            (
                "label_budget",
                False,
                2100,
                2000,
                ("labels requested today 1500 + asked now 600: 2100, over the budget of 2000 a day"),
            )
        ],
        id="request-labels-over-budget",
    ),
    pytest.param(
        "start_canary",
        StartCanaryFacts(share=0.05, candidate_score=0.80, champion_score=0.82),
        Usage(),
        True,
        [
            ("canary_share", True, 0.05, 0.1, "canary share: 0.05, within (0, 0.1]"),
            (
                "offline_gate",
                True,
                -0.02,
                -0.02,
                ("candidate_score 0.8 - champion_score 0.82: -0.02, at or above the floor of -0.02"),
            ),
        ],
        id="start-canary-regression-equal-to-tolerance",
    ),
    pytest.param(
        "start_canary",
        StartCanaryFacts(candidate_score=0.75, champion_score=0.82),
        Usage(),
        False,
        [
            (
                "canary_share",
                True,
                None,
                0.1,
                "no share requested: the policy's canary share 0.1 applies",
            ),
            (
                "offline_gate",
                False,
                -0.07,
                -0.02,
                ("candidate_score 0.75 - champion_score 0.82: -0.07, below the floor of -0.02"),
            ),
        ],
        id="start-canary-candidate-worse",
    ),
    pytest.param(
        "start_canary",
        StartCanaryFacts(share=0.5, candidate_score=float("nan"), champion_score=0.8),
        Usage(),
        False,
        [
            ("canary_share", False, 0.5, 0.1, "canary share: 0.5, outside (0, 0.1]"),
            (
                "offline_gate",
                False,
                None,
                -0.02,
                "fact 'candidate_score' must be a finite number, got nan",
            ),
        ],
        id="start-canary-share-too-large-and-fact-not-finite",
    ),
    pytest.param(
        "start_canary",
        StartCanaryFacts(
            share=0.1,
            candidate_score=0.85,
            champion_score=0.83,
            candidate_old_score=0.7,
            champion_old_score=0.9,
        ),
        Usage(),
        False,
        [
            ("canary_share", True, 0.1, 0.1, "canary share: 0.1, within (0, 0.1]"),
            (
                "offline_gate",
                True,
                0.02,
                -0.02,
                "candidate_score 0.85 - champion_score 0.83: 0.02, at or above the floor of -0.02",
            ),
            (
                "forgetting_gate",
                False,
                -0.2,
                -0.02,
                "candidate_old_score 0.7 - champion_old_score 0.9: -0.2, below the floor of -0.02",
            ),
        ],
        id="start-canary-forgets-more-than-it-gains",
    ),
    pytest.param(
        "start_canary",
        StartCanaryFacts(
            share=0.1,
            candidate_score=0.87,
            champion_score=0.55,
            candidate_old_score=0.6,
            champion_old_score=0.8,
            concept_changed=True,
        ),
        Usage(),
        True,
        [
            ("canary_share", True, 0.1, 0.1, "canary share: 0.1, within (0, 0.1]"),
            (
                "offline_gate",
                True,
                0.32,
                -0.02,
                "candidate_score 0.87 - champion_score 0.55: 0.32, at or above the floor of -0.02",
            ),
            (
                "forgetting_gate",
                True,
                -0.2,
                -0.32,
                "candidate_old_score 0.6 - champion_old_score 0.8: -0.2, at or above the floor of -0.32 "
                "(the concept changed: the recent gain of 0.32)",
            ),
        ],
        id="start-canary-concept-changed-so-the-recent-gain-may-outweigh-the-old-loss",
    ),
    pytest.param("promote", GOOD_CANARY, Usage(), True, GOOD_CANARY_RULES, id="promote-passes"),
    pytest.param(
        "promote",
        PromoteFacts(canary_samples=120, canary_score=0.80),
        Usage(),
        False,
        [
            (
                "canary_samples",
                False,
                120,
                300,
                "canary samples: 120, below the minimum of 300",
            ),
            ("canary_gate", False, None, -0.02, "fact 'control_score' missing"),
        ],
        id="promote-too-few-samples-and-fact-missing",
    ),
    pytest.param(
        "promote",
        PromoteFacts(canary_samples=400, canary_score=0.80, control_score=0.84),
        Usage(),
        False,
        [
            ("canary_samples", True, 400, 300, GOOD_CANARY_RULES[0][4]),
            (
                "canary_gate",
                False,
                -0.04,
                -0.02,
                ("canary_score 0.8 - control_score 0.84: -0.04, below the floor of -0.02"),
            ),
        ],
        id="promote-canary-regresses",
    ),
    pytest.param(
        "rollback",
        RollbackFacts(),
        Usage(retrains_today=99, labels_requested_today=99_999),
        True,
        [],
        id="rollback-never-blocked-by-budgets",
    ),
    pytest.param("quarantine", QuarantineFacts(), Usage(), True, [], id="quarantine"),
    pytest.param("alert", AlertFacts(), Usage(), True, [], id="alert"),
]


@pytest.mark.parametrize(("action", "facts", "usage", "allowed", "rules"), CASES)
def test_verdicts_at_l4(
    action: str,
    facts: ActionFacts,
    usage: Usage,
    allowed: bool,
    rules: list[tuple[object, ...]],
) -> None:
    verdict = evaluate(POLICY, action, facts, usage)  # type: ignore[arg-type]

    autonomy = (*L4[:4], L4[4].format(action=action))
    assert _rows(verdict) == [autonomy, *rules]
    assert verdict.action == action
    assert verdict.allowed is allowed
    assert verdict.needs_approval is False
    failing = [rule[4] for rule in rules if not rule[1]]
    assert verdict.reasons == ([autonomy[4], *[rule[4] for rule in rules]] if allowed else failing)


# A candidate that forgets: 0.15 lost on the old-concept holdout for 0.10 gained on the recent one.
FORGETFUL = {"share": 0.1, "candidate_score": 0.85, "champion_score": 0.75}
FORGETFUL_OLD = {"candidate_old_score": 0.75, "champion_old_score": 0.9}
GAIN_ROW = (
    "offline_gate",
    True,
    0.1,
    -0.02,
    "candidate_score 0.85 - champion_score 0.75: 0.1, at or above the floor of -0.02",
)


@pytest.mark.parametrize("concept_changed", [False, None], ids=["held", "absent"])
def test_a_forgetful_candidate_is_refused_however_much_it_gains_when_the_concept_held(
    concept_changed: bool | None,
) -> None:
    said = {} if concept_changed is None else {"concept_changed": concept_changed}
    facts = StartCanaryFacts.model_validate(FORGETFUL | FORGETFUL_OLD | said)

    verdict = evaluate(POLICY, "start_canary", facts, Usage())

    assert _rows(verdict)[1:] == [
        ("canary_share", True, 0.1, 0.1, "canary share: 0.1, within (0, 0.1]"),
        GAIN_ROW,
        (
            "forgetting_gate",
            False,
            -0.15,
            -0.02,
            "candidate_old_score 0.75 - champion_old_score 0.9: -0.15, below the floor of -0.02",
        ),
    ]
    assert not verdict.allowed


@pytest.mark.parametrize("concept_changed", ["yes", "true", 1, "no", 0])
def test_a_flag_that_is_not_a_boolean_is_refused_so_it_cannot_relax_the_forgetting_gate(
    concept_changed: str | int,
) -> None:
    # The old "yes"/1 strings: a misspelt flag must not waive the gate, nor silently keep it.
    with pytest.raises(ValidationError, match="concept_changed"):
        StartCanaryFacts.model_validate(FORGETFUL | FORGETFUL_OLD | {"concept_changed": concept_changed})


def test_when_the_concept_changed_the_old_loss_is_tolerated_up_to_the_recent_gain() -> None:
    # The old holdout describes a world that is gone: a loss there up to the recent gain (0.10)
    # passes, a larger one (0.15) still does not.
    facts = FORGETFUL | {"concept_changed": True}

    within = evaluate(
        POLICY,
        "start_canary",
        StartCanaryFacts.model_validate(facts | {"candidate_old_score": 0.82, "champion_old_score": 0.9}),
        Usage(),
    )
    beyond = evaluate(POLICY, "start_canary", StartCanaryFacts.model_validate(facts | FORGETFUL_OLD), Usage())

    assert _rows(within)[1:] == [
        ("canary_share", True, 0.1, 0.1, "canary share: 0.1, within (0, 0.1]"),
        GAIN_ROW,
        (
            "forgetting_gate",
            True,
            -0.08,
            -0.1,
            "candidate_old_score 0.82 - champion_old_score 0.9: -0.08, at or above the floor of -0.1 "
            "(the concept changed: the recent gain of 0.1)",
        ),
    ]
    assert within.allowed
    assert beyond.reasons == [
        "candidate_old_score 0.75 - champion_old_score 0.9: -0.15, below the floor of -0.1 "
        "(the concept changed: the recent gain of 0.1)"
    ]
    assert not beyond.allowed


@pytest.mark.parametrize(
    ("delta", "passed", "reason"),
    [
        (-0.08, False, "worst slice firmware=2.1: candidate - champion -0.08, below the floor of -0.05"),
        (-0.05, True, "worst slice firmware=2.1: candidate - champion -0.05, at or above the floor of -0.05"),
        (None, True, "no slice with at least 100 samples to compare"),
    ],
)
def test_slice_gate_refuses_a_slice_that_regressed_more_than_allowed(
    delta: float | None, passed: bool, reason: str
) -> None:
    facts = StartCanaryFacts(
        candidate_score=0.9,
        champion_score=0.9,
        worst_slice_delta=delta,
        worst_slice=None if delta is None else "firmware=2.1",
        slices_compared=True,
    )

    verdict = evaluate(POLICY, "start_canary", facts, Usage())

    assert _rows(verdict)[-1] == ("slice_gate", passed, delta, -0.05, reason)
    assert verdict.allowed is passed


@pytest.mark.parametrize(
    ("candidate", "passed", "reason"),
    [
        (0.99, False, "candidate_golden_score 0.99 - champion_golden_score 1: -0.01, below the floor of 0"),
        (1.0, True, "candidate_golden_score 1 - champion_golden_score 1: 0, at or above the floor of 0"),
    ],
)
def test_golden_gate_of_the_shipped_policy_refuses_any_drop_on_the_golden_set(
    candidate: float, passed: bool, reason: str
) -> None:
    facts = StartCanaryFacts(
        candidate_score=0.9, champion_score=0.9, candidate_golden_score=candidate, champion_golden_score=1.0
    )

    verdict = evaluate(load_policy(), "start_canary", facts, Usage())

    assert _rows(verdict)[-1] == ("golden_gate", passed, round(candidate - 1.0, 12), 0.0, reason)
    assert verdict.allowed is passed


def test_without_golden_or_slice_facts_their_gates_are_not_checked() -> None:
    verdict = evaluate(POLICY, "start_canary", StartCanaryFacts(candidate_score=0.9, champion_score=0.9), Usage())

    assert [row[0] for row in _rows(verdict)] == ["autonomy", "canary_share", "offline_gate"]


@pytest.mark.parametrize(
    ("level", "allowed", "needs_approval", "autonomy_row"),
    [
        (
            "L0",
            False,
            False,
            (
                "autonomy",
                False,
                "L0",
                "L3",
                "autonomy L0 is manual: 'promote' is left to a person",
            ),
        ),
        (
            "L1",
            False,
            False,
            (
                "autonomy",
                False,
                "L1",
                "L3",
                "autonomy L1 is manual: 'promote' is left to a person",
            ),
        ),
        (
            "L2",
            False,
            False,
            (
                "autonomy",
                False,
                "L2",
                "L3",
                ("autonomy L2 is recommend only: 'promote' may be proposed, not executed"),
            ),
        ),
        (
            "L3",
            True,
            True,
            (
                "autonomy",
                True,
                "L3",
                "L3",
                "autonomy L3 acts, but 'promote' waits for a person's approval",
            ),
        ),
        (
            "L4",
            True,
            False,
            (
                "autonomy",
                True,
                "L4",
                "L3",
                "autonomy L4 may 'promote' within the guardrails",
            ),
        ),
    ],
)
def test_promote_at_each_autonomy_level(
    level: str, allowed: bool, needs_approval: bool, autonomy_row: tuple[object, ...]
) -> None:
    policy = POLICY.model_copy(update={"autonomy": level})

    verdict = evaluate(policy, "promote", GOOD_CANARY, Usage())

    # The guardrails are still checked and reported: a recommendation carries them.
    assert _rows(verdict) == [autonomy_row, *GOOD_CANARY_RULES]
    assert (verdict.allowed, verdict.needs_approval) == (allowed, needs_approval)
    if not allowed:
        assert verdict.reasons == [autonomy_row[4]]


@pytest.mark.parametrize(
    ("action", "facts"),
    [
        ("quarantine", QuarantineFacts()),
        ("alert", AlertFacts()),
        ("retrain", RetrainFacts(training_labels=900)),
    ],
)
def test_l2_denies_every_action_as_recommend_only(action: str, facts: ActionFacts) -> None:
    policy = POLICY.model_copy(update={"autonomy": "L2"})

    verdict = evaluate(policy, action, facts, Usage())  # type: ignore[arg-type]

    assert not verdict.allowed
    assert verdict.reasons == [f"autonomy L2 is recommend only: '{action}' may be proposed, not executed"]


def test_l3_a_release_start_needs_approval_but_a_rollback_or_retrain_does_not() -> None:
    policy = POLICY.model_copy(update={"autonomy": "L3"})

    start = evaluate(policy, "start_canary", StartCanaryFacts(candidate_score=0.9, champion_score=0.9), Usage())
    rollback = evaluate(policy, "rollback", RollbackFacts(), Usage())
    retrain = evaluate(policy, "retrain", RetrainFacts(training_labels=900), Usage())

    assert (start.allowed, start.needs_approval) == (True, True)
    # A rollback restores what served before: it never waits for a person.
    assert (rollback.allowed, rollback.needs_approval) == (True, False)
    assert (retrain.allowed, retrain.needs_approval) == (True, False)


def test_l3_promote_failing_a_guardrail_asks_no_approval() -> None:
    policy = POLICY.model_copy(update={"autonomy": "L3"})

    verdict = evaluate(policy, "promote", PromoteFacts(canary_samples=10), Usage())

    assert (verdict.allowed, verdict.needs_approval) == (False, False)


def test_promotion_needs_the_sequential_test_to_say_better_and_no_slice_worse() -> None:
    def canary(**more: object) -> PromoteFacts:
        return PromoteFacts.model_validate(GOOD_CANARY.model_dump() | more)

    strict = POLICY.model_copy(update={"release": POLICY.release.model_copy(update={"promote_when": "better"})})
    shown = evaluate(strict, "promote", canary(sequential_verdict="better", worse_slices=0), Usage())
    undecided = evaluate(strict, "promote", canary(sequential_verdict="undecided"), Usage())
    slice_worse = evaluate(strict, "promote", canary(sequential_verdict="better", worse_slices=1), Usage())

    assert shown.allowed
    assert _rows(shown)[-2:] == [
        ("sequential_test", True, "better", "better", "sequential test (alpha 0.05): better"),
        ("slice_test", True, 0, 0, "slices shown worse than the champion: 0, at most 0"),
    ]
    assert undecided.reasons == ["sequential test (alpha 0.05): undecided, not shown better than the champion"]
    assert slice_worse.reasons == ["slices shown worse than the champion: 1, at most 0"]


def test_unknown_action_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="action 'deploy' is not one of"):
        evaluate(POLICY, "deploy", AlertFacts(), Usage())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("action", "facts", "named"),
    [
        ("promote", StartCanaryFacts(candidate_score=0.9, champion_score=0.9), "StartCanaryFacts"),
        ("retrain", RequestLabelsFacts(n_labels=10), "RequestLabelsFacts"),
        ("rollback", PromoteFacts(), "PromoteFacts"),
    ],
)
def test_another_actions_facts_are_refused_naming_both(action: str, facts: ActionFacts, named: str) -> None:
    expected = {"promote": "PromoteFacts", "retrain": "RetrainFacts", "rollback": "RollbackFacts"}[action]

    with pytest.raises(TypeError) as caught:
        evaluate(POLICY, action, facts, Usage())  # type: ignore[arg-type]

    assert str(caught.value) == f"action '{action}' judges {expected}, got {named} (the facts of '{facts.action}')"


@pytest.mark.parametrize(
    ("action", "facts", "rule", "reason"),
    [
        ("retrain", RetrainFacts(features=["x"]), "training_labels", "fact 'training_labels' missing"),
        ("request_labels", RequestLabelsFacts(), "label_budget", "fact 'n_labels' missing"),
        ("start_canary", StartCanaryFacts(candidate_score=0.9), "offline_gate", "fact 'champion_score' missing"),
        ("promote", PromoteFacts(canary_samples=400, control_score=0.8), "canary_gate", "fact 'canary_score' missing"),
    ],
)
def test_a_missing_fact_fails_its_rule_saying_so(action: str, facts: ActionFacts, rule: str, reason: str) -> None:
    verdict = evaluate(POLICY, action, facts, Usage())  # type: ignore[arg-type]

    (failed,) = [v for v in verdict.verdicts if not v.passed]
    assert (failed.rule, failed.observed, failed.reason) == (rule, None, reason)
    assert not verdict.allowed and verdict.reasons == [reason]


def test_a_fact_of_the_wrong_type_is_refused_where_it_is_made() -> None:
    with pytest.raises(ValidationError, match="candidate_score"):
        StartCanaryFacts(candidate_score="high")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="canary_samples"):
        PromoteFacts(canary_samples=400.5)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="extra_forbidden"):
        RetrainFacts(training_label=900)  # type: ignore[call-arg]


def test_the_plain_dump_rebuilds_into_the_same_verdict_and_a_mapping_is_refused() -> None:
    # The Trainer keeps its gate facts in the graph's state as plain data; the release rebuilds
    # them: the verdict must be the same, optional gates (the slice gate here) included.
    facts = StartCanaryFacts(candidate_score=0.9, champion_score=0.88, slices_compared=True)
    rebuilt = StartCanaryFacts.model_validate(facts.model_dump())

    assert evaluate(POLICY, "start_canary", rebuilt, Usage()) == evaluate(POLICY, "start_canary", facts, Usage())
    assert evaluate(POLICY, "start_canary", rebuilt, Usage()).verdicts[-1].reason == (
        "no slice with at least 100 samples to compare"
    )
    # The engine judges typed facts only: plain data is rebuilt where it came from.
    with pytest.raises(TypeError, match=r"judges RollbackFacts, got a mapping: build it with RollbackFacts"):
        evaluate(POLICY, "rollback", {}, Usage())  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="n_labels"):
        RetrainFacts.model_validate({"n_labels": 3})


def test_usage_refuses_negative_counts() -> None:
    with pytest.raises(ValueError, match="retrains_today"):
        Usage(retrains_today=-1)


def test_engine_checks_under_the_policy_in_force_and_replaces_it() -> None:
    engine = PolicyEngine(POLICY.model_copy(update={"autonomy": "L2"}))

    before = engine.check("rollback", RollbackFacts(), Usage())
    previous = engine.replace(Policy(name="pinned", autonomy="L4"))
    after = engine.check("rollback", RollbackFacts(), Usage())

    assert (before.allowed, after.allowed) == (False, True)
    assert previous.autonomy == "L2"
    assert engine.policy.autonomy == "L4"


def test_engine_keeps_its_policy_when_a_replacement_is_invalid() -> None:
    engine = PolicyEngine(POLICY)

    with pytest.raises(PolicyError, match="release.steps"):
        engine.replace({"name": "pinned", "release": {"steps": [2.0]}})

    assert engine.policy is POLICY
    assert engine.replace({"name": "new", "autonomy": "L3"}).name == "pinned"
    assert engine.policy.autonomy == "L3"


def test_engine_checks_while_policies_are_replaced() -> None:
    engine = PolicyEngine(Policy(name="a", autonomy="L4"))
    policies = [Policy(name="a", autonomy="L4"), Policy(name="b", autonomy="L2")]
    seen: set[tuple[bool, str]] = set()

    def swap() -> None:
        for i in range(500):
            engine.replace(policies[i % 2])

    thread = threading.Thread(target=swap)
    thread.start()
    for _ in range(500):
        verdict = engine.check("alert", AlertFacts(), Usage())
        seen.add((verdict.allowed, verdict.verdicts[0].observed))  # type: ignore[arg-type]
    thread.join()

    # Never a verdict mixing two policies: L4 allows, L2 denies.
    assert seen <= {(True, "L4"), (False, "L2")}


def test_under_promote_when_ahead_an_undecided_test_passes_and_a_worse_one_does_not() -> None:
    def canary(**more: object) -> PromoteFacts:
        return PromoteFacts.model_validate(GOOD_CANARY.model_dump() | more)

    assert POLICY.release.promote_when == "ahead"  # the default
    undecided = evaluate(POLICY, "promote", canary(sequential_verdict="undecided", worse_slices=0), Usage())
    worse = evaluate(POLICY, "promote", canary(sequential_verdict="worse", worse_slices=0), Usage())
    assert undecided.allowed
    assert _rows(undecided)[-2] == (
        "sequential_test",
        True,
        "undecided",
        "not worse",
        "sequential test (alpha 0.05): undecided",
    )
    assert worse.reasons == ["sequential test (alpha 0.05): worse, shown worse"]
