"""The Release Manager in the graph: shadow until shown better, then canary steps, then promotion."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from driftpilot.agents.context import AgentContext
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory import approvals, decisions, releases, snapshots, versions
from driftpilot.memory.ingest import event_ids, ingest_labels
from driftpilot.policies import PolicyEngine, StartCanaryFacts
from driftpilot.policies.loader import policy_from_mapping
from driftpilot.serving.routing import Serving

from ..serving.test_release_serving import START, world  # noqa: F401 - the fixture

POLICY = {
    "name": "release-test",
    "release": {
        # The path these tests follow: a candidate leaves the shadow once shown better.
        "promote_when": "better",
        "min_shadow_samples": 20,
        "steps": [0.5],
        "min_step_samples": 5,
        "min_canary_samples": 20,
        # The test's two versions disagree on most events; the guards are not what is tested here,
        # and the latency guard, timed in this process, once ended a release on a loaded machine.
        "guards": {"min_events": 50, "max_disagreement": 1.0, "max_estimated_drop": 1.0, "max_latency_ratio": 1e6},
    },
}

#: What the Trainer's gate judged of the version released by hand: as good as the champion.
GATE = StartCanaryFacts(candidate_score=0.9, champion_score=0.9)


def _serve_hour(serving, sessions, tick, h: int, truth: np.ndarray, labelled: np.ndarray) -> None:
    """An hour of traffic through the serving path, labelled (half an hour later) where ``labelled``."""
    at = START + timedelta(hours=h)
    keys = [f"{e}/{h}" for e in tick.entities]
    serving.predict(
        keys=keys,
        times=[at] * len(keys),
        entities=list(tick.entities),
        groups=list(tick.groups),
        features=tick.features,
    )
    with sessions() as session:
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[
                {"event_key": k, "value": str(v), "time": at + timedelta(minutes=30)}
                for k, v, keep in zip(keys, truth, labelled, strict=True)
                if keep
            ],
        )


def _released(built):  # noqa: ANN001, ANN202
    """The loop's context under POLICY, the serving path, and both versions' answers on the tick."""
    sessions, registry, model_id, tick = built
    context = AgentContext(
        sessions=sessions, registry=registry, policy=PolicyEngine(policy_from_mapping(POLICY)), seed=0
    )
    serving = Serving(sessions, registry, model_id, MODEL_NAME)
    with sessions() as session:
        answers = {
            n: registry.load(versions.get_version(session=session, model_id=model_id, number=n)).predict(tick.features)
            for n in (1, 2)
        }
    return context, serving, answers


def test_shadow_lasts_until_the_candidate_is_shown_better_then_steps_and_promotes(world, tmp_path):  # noqa: F811
    sessions, registry, model_id, tick = world
    context, serving, answers = _released(world)

    def hour(h: int, truth: np.ndarray, labelled: np.ndarray) -> None:
        _serve_hour(serving, sessions, tick, h, truth, labelled)

    def stage() -> str:
        with sessions() as session:
            return versions.get_version(session=session, model_id=model_id, number=2).stage

    agree = answers[1] == answers[2]
    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.release(MODEL_NAME, 2, START, GATE, run_id="t")
        serving.refresh()
        # Hour 0: labels only where both versions agree: plenty of labels, no evidence either way.
        hour(0, answers[1], agree)
        runner.step(MODEL_NAME, START + timedelta(hours=1), {"kind": "schedule"})
        shadow_stage = stage()
        # Hour 1: the truth is what the candidate says: it is right where the champion is wrong.
        hour(1, answers[2], np.ones(len(tick), dtype=bool))
        runner.step(MODEL_NAME, START + timedelta(hours=2), {"kind": "schedule"})
        canary_stage = stage()
        serving.refresh()
        served = serving.route(list(tick.entities))
        hour(2, answers[2], np.ones(len(tick), dtype=bool))
        runner.step(MODEL_NAME, START + timedelta(hours=3), {"kind": "schedule"})
        assert not runner.waiting(MODEL_NAME)

    with sessions() as session:
        logged = [
            d for d in decisions.list_decisions(session=session, model_id=model_id) if d.agent == "release_manager"
        ]
        history = releases.serving_history(session=session, model_id=model_id)
    assert shadow_stage == "shadow"  # agreeing labels: undecided, so still in shadow
    assert canary_stage == "canary"
    assert 0.3 < float(np.mean(served == 2)) < 0.7
    assert [(d.action, d.outcome) for d in logged] == [
        ("start_canary", "shadow_started"),
        ("start_canary", "canary_step"),
        ("promote", "promoted"),
    ]
    assert logged[1].evidence["verdict"] == "better" and "shown better" in logged[1].rationale
    # Slices (the ONTs' device models, firmwares, regions, ports) are tested beside the whole.
    assert logged[2].evidence["slices_tested"] >= 3
    assert [(h.champion, h.candidate, h.phase, h.share) for h in history] == [
        (1, None, None, 0.0),
        (1, 2, "shadow", 0.0),
        (1, 2, "canary", 0.5),
        (2, None, None, 0.0),
    ]
    assert stage() == "champion"


@pytest.mark.parametrize("approve", [True, False])
def test_at_l3_the_start_and_the_promotion_wait_for_a_person(world, tmp_path, approve):  # noqa: F811
    sessions, registry, model_id, tick = world
    policy = policy_from_mapping(POLICY | {"autonomy": "L3"})
    context = AgentContext(sessions=sessions, registry=registry, policy=PolicyEngine(policy), seed=0)
    with sessions() as session:
        truth = registry.load(versions.get_version(session=session, model_id=model_id, number=2)).predict(tick.features)

    serving = Serving(sessions, registry, model_id, MODEL_NAME)

    def hour(h: int) -> None:
        _serve_hour(serving, sessions, tick, h, truth, np.ones(len(tick), dtype=bool))

    def answer(action: str, yes: bool) -> None:
        with sessions() as session:
            (pending,) = approvals.list_approvals(session=session, model_id=model_id, status="pending")
            assert pending.action == action
            approvals.decide_approval(session=session, approval_id=pending.id, approve=yes, by="noc", at=START)

    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.release(MODEL_NAME, 2, START, GATE, run_id="l3")
        answer("start_canary", True)
        for h in range(4):
            runner.step(MODEL_NAME, START + timedelta(hours=h, minutes=1), {"kind": "schedule"})
            hour(h)
        # Shown better after the last step: the promotion waits; the canary keeps serving meanwhile.
        runner.step(MODEL_NAME, START + timedelta(hours=5), {"kind": "schedule"})
        answer("promote", approve)
        runner.step(MODEL_NAME, START + timedelta(hours=6), {"kind": "schedule"})
        assert not runner.waiting(MODEL_NAME)

    with sessions() as session:
        logged = [
            (d.action, d.outcome, [a["status"] for a in d.approvals])
            for d in decisions.list_decisions(session=session, model_id=model_id)
            if d.agent == "release_manager"
        ]
        (release,) = releases.list_releases(session=session, model_id=model_id)
        stage = versions.get_version(session=session, model_id=model_id, number=2).stage
    assert logged == [
        ("start_canary", "awaiting_approval", ["pending"]),
        ("start_canary", "shadow_started", ["approved"]),
        ("start_canary", "canary_step", []),
        ("promote", "awaiting_approval", ["pending"]),
        ("promote", "promoted", ["approved"]) if approve else ("rollback", "rolled_back", ["denied"]),
    ]
    assert (release.verdict, stage) == (("promoted", "champion") if approve else ("approval_denied", "rolled_back"))


@pytest.mark.parametrize(
    ("rules", "truth_of", "verdict", "why"),
    [
        # Labels say the champion is right where the two differ: the candidate is shown worse.
        ({}, 1, "worse", "shown worse in shadow: on "),
        # No labels at all, and almost no disagreement allowed: a label-free guard stops it.
        (
            {"guards": POLICY["release"]["guards"] | {"max_disagreement": 0.01}},
            None,
            "guard_failed",
            "a label-free guard failed in shadow: share of events answered differently",
        ),
        # Labels only where both agree, and one hour to decide: time is up, the champion stays.
        ({"max_canary_hours": 1}, "agree", "inconclusive", "not shown better within 1 hours (on "),
    ],
)
def test_a_release_not_shown_better_ends_with_the_champion_kept(world, tmp_path, rules, truth_of, verdict, why):  # noqa: F811
    sessions, registry, model_id, tick = world
    policy = POLICY | {"release": POLICY["release"] | rules}
    context = AgentContext(
        sessions=sessions, registry=registry, policy=PolicyEngine(policy_from_mapping(policy)), seed=0
    )
    serving = Serving(sessions, registry, model_id, MODEL_NAME)
    with sessions() as session:
        answers = {
            n: registry.load(versions.get_version(session=session, model_id=model_id, number=n)).predict(tick.features)
            for n in (1, 2)
        }
    agree = answers[1] == answers[2]
    if truth_of is None:
        truth, labelled = answers[1], np.zeros(len(tick), dtype=bool)
    elif truth_of == "agree":
        truth, labelled = answers[1], agree

    else:
        truth, labelled = answers[truth_of], np.ones(len(tick), dtype=bool)
    assert 0.1 < float(np.mean(agree)) < 0.9  # what each case needs: both agreement and disagreement

    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.release(MODEL_NAME, 2, START, GATE, run_id="t")
        serving.refresh()
        _serve_hour(serving, sessions, tick, 0, truth, labelled)
        runner.step(MODEL_NAME, START + timedelta(hours=1), {"kind": "schedule"})
        assert not runner.waiting(MODEL_NAME)

    with sessions() as session:
        logged = [
            d for d in decisions.list_decisions(session=session, model_id=model_id) if d.agent == "release_manager"
        ]
        (release,) = releases.list_releases(session=session, model_id=model_id)
        stage = versions.get_version(session=session, model_id=model_id, number=2).stage
    assert [(d.action, d.outcome) for d in logged] == [("start_canary", "shadow_started"), ("rollback", "rolled_back")]
    assert (release.verdict, stage) == (verdict, "rolled_back")
    last = logged[-1]
    assert last.rationale.startswith("Version 2 rolled back; champion version 1 serves everyone again: " + why)
    assert last.evidence["verdict"] == ("undecided" if verdict == "inconclusive" else verdict)
    assert [v["action"] for v in last.policy_verdicts] == ["rollback"]
    assert last.evidence["events"] == len(tick) and last.evidence["labelled"] == int(labelled.sum())
    # The look's answers are dropped with the release.
    assert context.release_answers == {}


def test_a_candidate_shown_better_on_prequential_events_needs_no_labelled_shadow(world, tmp_path):  # noqa: F811
    # The hour before the release: labelled events newer than anything version 2 learnt from (its
    # snapshot's holdout), on which it is right where the champion is wrong.
    sessions, registry, model_id, tick = world
    context, serving, answers = _released(world)
    agree = answers[1] == answers[2]
    _serve_hour(serving, sessions, tick, -1, answers[2], np.ones(len(tick), dtype=bool))
    with sessions() as session:
        ids = event_ids(session=session, model_id=model_id, keys=[f"{e}/-1" for e in tick.entities])
        trained_on = [ids[f"{e}/-1"] for e in tick.entities][:10]
        snapshot = snapshots.create_snapshot(
            session=session,
            model_id=model_id,
            event_ids=trained_on,
            labels=["online"] * len(trained_on),
            time=START,
            stats={"recent_holdout_ids": sorted(ids.values())},
        )
        version = versions.get_version(session=session, model_id=model_id, number=2)
        version.snapshot_id = snapshot.id
        session.commit()

    def stage() -> str:
        with sessions() as session:
            return versions.get_version(session=session, model_id=model_id, number=2).stage

    with sqlite_checkpointer(tmp_path / "cp.sqlite") as checkpointer:
        runner = LoopRunner(context, checkpointer)
        runner.release(MODEL_NAME, 2, START, GATE, run_id="t")
        serving.refresh()
        # Hour 0: live labels only where both agree, as in the test above, where this kept the
        # candidate in shadow: here the prequential events already showed it better.
        _serve_hour(serving, sessions, tick, 0, answers[1], agree)
        runner.step(MODEL_NAME, START + timedelta(hours=1), {"kind": "schedule"})
        after_shadow = stage()
        serving.refresh()
        # Hour 1: still no live label telling them apart; the step needs only the guards' events.
        _serve_hour(serving, sessions, tick, 1, answers[1], agree)
        runner.step(MODEL_NAME, START + timedelta(hours=2), {"kind": "schedule"})

    with sessions() as session:
        logged = [
            d for d in decisions.list_decisions(session=session, model_id=model_id) if d.agent == "release_manager"
        ]
    assert after_shadow == "canary"
    assert [(d.action, d.outcome) for d in logged] == [
        ("start_canary", "shadow_started"),
        ("start_canary", "canary_step"),
        ("promote", "promoted"),
    ]
    step = logged[1].evidence
    # Judged on the 200 prequential pairs, before any live label told the two apart.
    assert step["prequential"]["verdict"] == "better" and step["prequential"]["n"] == len(tick)
    assert stage() == "champion"


@pytest.mark.parametrize(
    ("n", "wins", "losses", "scores", "futile"),
    [
        (40, 10, 12, (0.80, 0.82), True),  # a shadow's worth, behind on both measures: ended
        (19, 10, 12, (0.80, 0.82), False),  # not yet a shadow's worth of labelled events
        (40, 4, 5, (0.80, 0.82), False),  # too few events tell the two apart
        (40, 10, 12, (0.85, 0.82), False),  # ahead in balanced accuracy (right on rarer classes)
        (40, 13, 12, (0.80, 0.82), False),  # ahead in accuracy
    ],
)
def test_a_release_ahead_on_neither_measure_after_a_shadows_evidence_is_futile(n, wins, losses, scores, futile):
    from driftpilot.agents.release_manager import _futile
    from driftpilot.policies.auto import ReleasePlan
    from driftpilot.tools.sequential import PairedVerdict

    overall = PairedVerdict(n, wins, losses, scores[0], scores[1], 0.5, 3.7, None, "undecided")
    plan = ReleasePlan(min_shadow_samples=20, min_step_samples=5, min_canary_samples=20, max_canary_hours=72)
    assert _futile(overall, plan) is futile


def _look_at(
    verdict: str,
    scores: tuple[float, float],
    *,
    ahead: bool,
    phase: str = "shadow",
    labelled: int = 40,
    wins: int = 12,
    live: int = 0,
    challenger: bool = False,
):
    """What :func:`_next_move` reads of a look: the release's position, its counts and evidence."""
    from types import SimpleNamespace

    from driftpilot.policies.auto import ReleasePlan
    from driftpilot.tools.canary import ReleaseEvidence
    from driftpilot.tools.sequential import PairedVerdict

    overall = PairedVerdict(labelled, wins, 8, scores[0], scores[1], 0.5, 3.7, None, verdict)  # type: ignore[arg-type]
    plan = ReleasePlan(min_shadow_samples=500, min_step_samples=50, min_canary_samples=20, max_canary_hours=72)
    return SimpleNamespace(
        evidence=ReleaseEvidence(overall=overall, slices={}),
        counts={
            "events": 300,
            "events_this_step": 300,
            "labelled": labelled + live,
            "prequential": labelled,
            "served_labelled_this_step": 0,
        },
        state={"challenge": {"every": 50}} if challenger else {},
        release=SimpleNamespace(phase=phase, step=0 if phase == "shadow" else 1, plan=[0.0, 0.05, 0.25]),
        plan=plan,
        elapsed=timedelta(hours=1),
        challenger_every=50,
        ahead_suffices=ahead,
    )


def test_a_candidate_ahead_and_not_shown_worse_moves_on_without_a_verdict_unless_the_policy_wants_one():
    from driftpilot.agents.release_manager import _next_move
    from driftpilot.policies.schema import Release

    rules = Release()
    # Undecided, ahead on the 40 prequential pairs: under `promote_when: ahead` the candidate
    # leaves the shadow and, after the last step, is promoted; under "better" it waits.
    assert _next_move(rules, _look_at("undecided", (0.86, 0.84), ahead=True)) == "step"
    assert _next_move(rules, _look_at("undecided", (0.86, 0.84), ahead=False)) == "wait"
    last = _look_at("undecided", (0.86, 0.84), ahead=True, phase="canary")
    last.release.step = 2
    assert _next_move(rules, last) == "promote"
    # Behind on the pairs, or ahead on fewer than a promotion needs: no step.
    assert _next_move(rules, _look_at("undecided", (0.82, 0.84), ahead=True)) == "wait"
    assert _next_move(rules, _look_at("undecided", (0.86, 0.84), ahead=True, labelled=10)) == "wait"
    # Ahead in balanced accuracy bought with accuracy (fewer right where they differ): not ahead.
    assert _next_move(rules, _look_at("undecided", (0.86, 0.84), ahead=True, wins=5)) == "wait"
    # Not shown after 50 live labels, as many as make a challenger due: a challenger gives way to
    # a newer one; a retrain's candidate keeps its release's time.
    behind = {"verdict": "undecided", "scores": (0.82, 0.84), "ahead": True, "live": 50}
    assert _next_move(rules, _look_at(**behind, challenger=True)) == "superseded"
    assert _next_move(rules, _look_at(**behind, challenger=False)) == "wait"
    assert _next_move(rules, _look_at(**behind | {"live": 49}, challenger=True)) == "wait"


def test_the_policy_promotes_a_candidate_not_shown_worse_only_when_it_says_so():
    from driftpilot.policies import PolicyEngine, PromoteFacts, Usage

    facts = PromoteFacts(canary_samples=300, canary_score=0.86, control_score=0.84, sequential_verdict="undecided")
    ahead = PolicyEngine(policy_from_mapping({"name": "default"}))
    strict = PolicyEngine(policy_from_mapping({"name": "strict", "release": {"promote_when": "better"}}))
    assert ahead.check("promote", facts, Usage()).allowed
    assert not strict.check("promote", facts, Usage()).allowed
    assert strict.check("promote", facts.model_copy(update={"sequential_verdict": "better"}), Usage()).allowed
    assert not ahead.check("promote", facts.model_copy(update={"sequential_verdict": "worse"}), Usage()).allowed
    behind = facts.model_copy(update={"canary_score": 0.80})  # the canary gate: at most max_regression lower
    assert not ahead.check("promote", behind, Usage()).allowed
