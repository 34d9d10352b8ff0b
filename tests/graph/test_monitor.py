"""The Monitor fuses its signals into one finding a check, with a severity and a cool-down."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import numpy as np
from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext
from driftpilot.agents.monitor import SIGNALS, monitor
from driftpilot.agents.state import initial_state
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, decisions, events, managed, releases, snapshots, versions
from driftpilot.memory.ingest import EventBatch, ingest_events, ingest_labels
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.policies import Policy, PolicyEngine, load_policy
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator

START = datetime(2026, 3, 1, tzinfo=UTC)
#: The readings from SPLIT on are the ones the checks judge (they run to START + 30 h).
SPLIT = START + timedelta(hours=12)
#: The champion's history (its training snapshot, and the served and labelled events its
#: predictions are compared with) is a copy of the readings of SPLIT to CHECK, a day earlier:
#: the fleet's own clock (daily temperature cycle, uptimes, reboots of the last 24 h) moves its
#: features within a day, which would be drift against any other stretch of the same fleet.
HISTORY_SHIFT = timedelta(hours=24)
#: A policy whose checks look at 12 hours, never reach back for more evidence, and judge on 200 labels.
NO_REACH_BACK = Policy(name="fixed-window", monitor={"max_window_hours": 12, "min_labelled": 200})
#: The first check looks at the 12 hours SPLIT to CHECK.
CHECK = START + timedelta(hours=24)
#: Range of the top probability served on the history with ``serve="probabilities"``: confident,
#: and right about as often as it says (0.95 on average).
HISTORY_CONFIDENCE = (0.9, 1.0)


def calibrated_probabilities(
    labels: np.ndarray, confidence: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Probabilities a calibrated classifier could serve for readings of these labels.

    Each row's top probability ``p`` is drawn uniformly from ``confidence`` and put on the label
    with probability ``p``, on one of the other classes otherwise; the rest is spread evenly. Each
    class's probability is then the chance that it is the label, as CBPE assumes.

    >>> rows = calibrated_probabilities(np.array(["online"] * 4000), (0.6, 0.7), np.random.default_rng(0))
    >>> bool(np.allclose(rows.sum(axis=1), 1.0)), round(float(rows.max(axis=1).mean()), 2)
    (True, 0.65)
    >>> 0.62 < float((rows.argmax(axis=1) == 0).mean()) < 0.68
    True
    """
    n, k = len(labels), len(CLASSES)
    draw_top, draw_right, draw_other = rng.random((3, n))
    top = confidence[0] + (confidence[1] - confidence[0]) * draw_top
    truth = np.array([CLASSES.index(y) for y in labels], dtype=int)
    wrong = (truth + 1 + (draw_other * (k - 1)).astype(int)) % k
    served = np.where(draw_right < top, truth, wrong)
    rows = np.repeat(((1.0 - top) / (k - 1))[:, None], k, axis=1)
    rows[np.arange(n), served] = top
    return rows


@dataclass
class World:
    context: AgentContext
    model_id: int

    def check(self, at: datetime) -> tuple[dict[str, Any], Any]:
        """Run one Monitor check at ``at``; return its update and the decision it logged."""
        state = initial_state(MODEL_NAME, at.isoformat(), f"check-{at.isoformat()}", {"kind": "schedule"})
        update = monitor(state, Runtime(context=self.context))
        with self.context.sessions() as session:
            logged = decisions.list_decisions(session=session, model_id=self.model_id, agent="monitor")
        assert logged[-1].id == update["last_decision"]
        return update, logged[-1]


def build_world(
    tmp_path: Path,
    *,
    serve: Literal["truth", "wrong", "probabilities"] = "truth",
    rx_shift: float = 0.0,
    window_labels: int | None = None,
    window_confidence: tuple[float, float] = HISTORY_CONFIDENCE,
    policy: Policy | None = None,
) -> World:
    """100 ONTs, a reading every 30 min, all served by champion version 1 and all labelled.

    The judged readings run from SPLIT to START + 30 h; the history is their copy a day earlier
    (see HISTORY_SHIFT), the champion's training snapshot. ``serve`` is what the champion served:
    ``"truth"`` (always right), ``"wrong"`` (never right on the judged readings, right on the
    history) or ``"probabilities"`` (built by hand, see :func:`calibrated_probabilities`: their
    top probability is drawn from ``HISTORY_CONFIDENCE`` on the history and from
    ``window_confidence`` on the judged readings, and is stored with them). ``rx_shift`` moves
    ``rx_power`` on the judged readings; ``window_labels`` keeps only that many of their labels.
    The champion is a 2-epoch MLP: the check never runs it, it only needs an artifact.
    ``policy`` replaces the shipped default.
    """
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    registry = Registry(tmp_path / "artifacts")
    context = AgentContext(sessions=sessions, registry=registry, policy=PolicyEngine(policy or load_policy()), seed=0)
    sim = OntSimulator(OntScenarioConfig(n_onts=100, days=1.25, interval_minutes=30, seed=4, outages=()))
    ticks = list(sim.ticks())
    early = [t for t in ticks if t.time < SPLIT]
    features = {k: np.concatenate([t.features[k] for t in early]) for k in early[0].features}
    mlp = TabularMLP(FEATURES, CLASSES, epochs=2, seed=0).fit(features, np.concatenate([t.labels for t in early]))
    history = [("history", t) for t in ticks if SPLIT <= t.time < CHECK]
    judged = [("judged", t) for t in ticks if t.time >= SPLIT]
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
        labels = []
        for part, t in history + judged:
            after = part == "judged"
            time = t.time if after else t.time - HISTORY_SHIFT
            columns: dict[str, np.ndarray | list[Any]] = dict(t.features)
            if after and rx_shift:
                columns["rx_power"] = np.asarray(columns["rx_power"]) + rx_shift
            keys = [f"{part}/{e}/{t.index}" for e in t.entities]
            probabilities = None
            if serve == "probabilities":
                confidence = window_confidence if after else HISTORY_CONFIDENCE
                # The draws depend on the reading only, so the judged copy of a history reading
                # is served alike when the confidences are the same.
                probabilities = calibrated_probabilities(t.labels, confidence, np.random.default_rng(t.index))
                served = list(np.asarray(CLASSES)[probabilities.argmax(axis=1)])
            elif serve == "wrong" and after:
                # The class after the label's: never right.
                served = [CLASSES[(CLASSES.index(y) + 1) % len(CLASSES)] for y in t.labels]
            else:
                served = list(t.labels)
            ingest_events(
                session=session,
                model=MODEL_NAME,
                events=EventBatch(
                    keys=keys,
                    times=[time] * len(t),
                    entities=list(t.entities),
                    groups=list(t.groups),
                    features=columns,
                    served_version=[1] * len(t),
                    prediction=served,
                    probabilities=probabilities,
                ),
            )
            labels += [
                {"event_key": k, "value": str(y), "time": time, "after": after}
                for k, y in zip(keys, t.labels, strict=True)
            ]
        if window_labels is not None:
            kept_after = [x for x in labels if x["after"]][:window_labels]
            labels = [x for x in labels if not x["after"]] + kept_after
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[{k: v for k, v in x.items() if k != "after"} for x in labels],
        )
        trained = events.window(
            session=session,
            model_id=model.id,
            start=SPLIT - HISTORY_SHIFT,
            end=CHECK - HISTORY_SHIFT,
            labelled_only=True,
            with_features=False,
        )
        snap = snapshots.create_snapshot(
            session=session,
            model_id=model.id,
            event_ids=trained["id"].tolist(),
            labels=trained["label"].tolist(),
            time=START,
            stats={},
        )
        registry.register(
            session=session,
            model_id=model.id,
            model_name=MODEL_NAME,
            model=mlp,
            time=START,
            snapshot_id=snap.id,
            stage="champion",
            metrics={"reference_balanced_accuracy": 0.95},
        )
    return World(context, model.id)


def test_a_healthy_window_raises_nothing(tmp_path):
    world = build_world(tmp_path)
    policy = world.context.policy.policy.monitor

    update, decision = world.check(CHECK)

    assert update["finding"] is None and update["outcome"] == "healthy"
    assert (decision.action, decision.outcome) == ("check", "healthy")
    evidence = decision.evidence
    assert evidence["severity"] is None and evidence["kinds"] == []
    # The check's level (the default policy's 0.01 at most, the week's false-alarm budget spread
    # over the checks its plan makes) shared by its signal families.
    plan = evidence["plan"]
    assert 0 < plan["alpha"] <= policy.drift_p_value
    assert evidence["alpha"] == plan["alpha"] / SIGNALS
    assert evidence["labelled"] == 2289 and evidence["balanced_accuracy"] == 1.0
    assert evidence["error_rate"]["enough_data"] is True and evidence["error_rate"]["changed"] is False
    assert evidence["drifted_features"] == [] and evidence["drift_enough_data"] is True
    assert decision.rationale.startswith("Healthy: balanced accuracy 1.000 on 2289 labelled events")


def test_input_drift_while_accuracy_holds_is_low_and_not_repeated_within_the_cooldown(tmp_path):
    world = build_world(tmp_path, rx_shift=-6.0)
    cooldown = world.context.policy.policy.monitor.cooldown_hours

    first, logged_first = world.check(CHECK)
    second, logged_second = world.check(CHECK + timedelta(hours=2))
    third, logged_third = world.check(CHECK + timedelta(hours=cooldown + 1))

    assert first["outcome"] == "finding"
    assert first["finding"]["severity"] == "low" and first["finding"]["kinds"] == ["data_drift"]
    assert first["finding"]["drifted_features"] == ["rx_power"]
    assert first["finding"]["balanced_accuracy"] == 1.0
    assert logged_first.outcome == "finding"

    assert second["finding"] is None and second["outcome"] == "healthy"
    assert logged_second.outcome == "repeat"
    assert logged_second.evidence["severity"] == "low" and logged_second.evidence["kinds"] == ["data_drift"]
    assert logged_second.rationale.startswith("Same drift as the finding of the last 6 h (data_drift)")

    # Seven hours on, the window also holds readings of a time of day the reference lacks.
    assert third["outcome"] == "finding" and third["finding"]["severity"] == "low"
    assert third["finding"]["kinds"] == ["data_drift"]
    assert third["finding"]["drifted_features"] == ["rx_power", "temperature"]
    assert logged_third.outcome == "finding"


def test_a_performance_loss_is_high_and_raised_at_every_check(tmp_path):
    world = build_world(tmp_path, serve="wrong")

    first, _ = world.check(CHECK)
    second, logged_second = world.check(CHECK + timedelta(hours=2))

    assert first["outcome"] == "finding" and first["finding"]["severity"] == "high"
    assert first["finding"]["kinds"] == ["performance_loss", "prediction_drift"]
    assert first["finding"]["balanced_accuracy"] == 0.0
    assert second["outcome"] == "finding" and second["finding"]["severity"] == "high"
    assert logged_second.outcome == "finding"
    assert second["finding"]["kinds"] == first["finding"]["kinds"]


def test_accuracy_is_estimated_from_served_probabilities_when_labels_are_few(tmp_path):
    # The inputs moved (rx_power 6 dB lower), the champion grew unsure (top probability 0.6-0.7
    # on the window, against 0.9-1.0 on its history) and only 50 labels came back: CBPE is asked.
    world = build_world(
        tmp_path,
        serve="probabilities",
        window_labels=50,
        rx_shift=-6.0,
        window_confidence=(0.6, 0.7),
        policy=NO_REACH_BACK,
    )
    tolerance = world.context.policy.policy.monitor.max_accuracy_drop

    update, decision = world.check(CHECK)

    evidence = decision.evidence
    assert evidence["labelled"] == 50 and evidence["balanced_accuracy"] is None
    estimated = evidence["estimated"]
    assert (estimated["metric"], estimated["method"], estimated["enough_data"]) == ("accuracy", "cbpe", True)
    assert (estimated["n_reference"], estimated["n_current"]) == (2000, 2000)  # CBPE_SAMPLE a side
    # On the history the champion is right about as often as it says (0.95), and CBPE's own
    # estimate there, the baseline of the drop, agrees with what was measured.
    assert abs(estimated["reference_value"] - 0.95) < 0.02
    assert abs(estimated["reference_estimated"] - estimated["reference_value"]) < 0.02
    # On the window it reads the champion's doubt: near its confidence (0.65), a drop of some 30
    # points, ten times the policy's tolerance (3 points).
    assert 0.5 < estimated["estimated"] < 0.75
    assert estimated["reference_estimated"] - estimated["estimated"] > 5 * tolerance
    assert estimated["lower"] < estimated["estimated"] < estimated["upper"]
    assert (
        f"estimated accuracy {estimated['estimated']:.3f} without labels "
        f"(estimated {estimated['reference_estimated']:.3f} on the reference, "
        f"measured {estimated['reference_value']:.3f})"
    ) in decision.rationale
    # The moved inputs (which asked for the estimate) and the answers the doubt moved (PSI ~0.56
    # against 0.2) beside the estimated loss; too few labels for a measured loss.
    assert evidence["drifted_features"] == ["rx_power"]
    assert evidence["kinds"] == ["data_drift", "prediction_drift", "estimated_loss"]
    assert evidence["severity"] == "high"
    assert update["outcome"] == decision.outcome == "finding"
    assert update["finding"]["kinds"] == evidence["kinds"]


def test_no_estimate_is_made_while_nothing_moved(tmp_path):
    # The same readings, served alike, as on the history, and 50 labels: probabilities are
    # stored, but CBPE has nothing to reveal, and is not fitted.
    world = build_world(tmp_path, serve="probabilities", window_labels=50, policy=NO_REACH_BACK)

    update, decision = world.check(CHECK)

    assert "estimated" not in decision.evidence and decision.evidence["kinds"] == []
    # Nothing moved, but 50 labels are too few to judge accuracy on: blind, not healthy.
    needed = decision.evidence["plan"]["min_labelled"]
    assert needed > 50
    assert update["outcome"] == decision.outcome == "blind"
    assert decision.evidence["missing"] == {"labels": f"50 labelled events served by the champion, {needed} needed"}
    assert update["blind"]["labelled"] == 50 and update["blind"]["needed"] == needed


def test_an_empty_window_is_checked_without_crashing_and_is_blind(tmp_path):
    # A policy that forbids reaching back: the 12 hours checked hold no event at all.
    world = build_world(tmp_path, policy=NO_REACH_BACK)

    update, decision = world.check(START + timedelta(hours=43))

    evidence = decision.evidence
    assert evidence["window"] == {"start": "2026-03-02T07:00:00+00:00", "end": "2026-03-02T19:00:00+00:00"}
    assert evidence["plan"]["max_window_hours"] == 12 and "max_window_hours" not in evidence["plan"]["why"]
    assert evidence["labelled"] == 0 and evidence["balanced_accuracy"] is None
    assert evidence["error_rate"]["enough_data"] is False and evidence["error_rate"]["n"] == 0
    assert evidence["drift_enough_data"] is False and "estimated" not in evidence
    assert evidence["kinds"] == [] and evidence["severity"] is None
    assert (update["outcome"], decision.outcome) == ("blind", "blind")
    needed = evidence["plan"]["min_labelled"]
    assert decision.rationale == (
        f"Blind, nothing judged healthy (labels: 0 labelled events served by the champion, {needed} needed; "
        "rows: 0 recent events: too few to test input drift): only 0 labelled events: accuracy not judged."
    )


def test_a_window_reaches_back_for_the_evidence_it_needs(tmp_path):
    # The same check under the default policy: the last 12 hours are empty, so the window reaches
    # back (within its auto bound) to the newest events, and judges them.
    world = build_world(tmp_path)

    update, decision = world.check(START + timedelta(hours=43))

    evidence = decision.evidence
    assert evidence["window"]["start"] < "2026-03-02T07:00:00+00:00"
    assert evidence["balanced_accuracy"] == 1.0 and evidence["labelled"] >= evidence["plan"]["min_labelled"]
    assert evidence["drift_enough_data"] is True and "missing" not in evidence
    assert decision.outcome != "blind"  # it judged (the night's temperatures read as drift: a finding)
    # The derivation is written with the check: the rates observed, and why each auto value is what it is.
    assert evidence["rates"]["events"] > 0 and evidence["rates"]["labels"] > 0
    assert set(evidence["plan"]["why"]) >= {"max_window_hours", "min_labelled", "check_every_labels", "alpha"}


def _tried(world: World, at: datetime, outcome: str) -> None:
    """Log a Trainer's retrain at ``at`` that ended ``outcome`` (what a challenger leaves behind)."""
    with world.context.sessions() as session:
        decisions.record_decision(
            session=session,
            model_id=world.model_id,
            run_id=f"challenger-{at.isoformat()}",
            agent="trainer",
            time=at,
            trigger={"kind": "schedule"},
            evidence={},
            diagnosis={},
            policy_verdicts=[],
            action="retrain",
            outcome=outcome,
            rationale="test",
        )


def test_a_healthy_champion_is_challenged_once_enough_labels_are_new_and_less_often_after_each_failure(tmp_path):
    every = 1500
    world = build_world(tmp_path, policy=Policy(name="challenged", training={"challenger_every_labels": every}))

    update, _ = world.check(CHECK)

    # 2,289 readings were labelled since the champion was trained (START): a challenger is due.
    assert update["outcome"] == "healthy" and update["challenge"] is not None
    challenge = update["challenge"]
    assert challenge["every"] == every and challenge["new_labels"] >= every and challenge["tried_since_serving"] == 0
    assert challenge["since"] == START.isoformat()
    # Had a challenger been trained a minute after the champion and not replaced it, the next
    # would wait for twice as many labels since then: the same 2,289 are not enough.
    _tried(world, START + timedelta(minutes=1), "rejected")
    again, _ = world.check(CHECK)
    assert again["outcome"] == "healthy" and again["challenge"] is None


def test_no_challenger_without_enough_new_labels_or_when_the_policy_keeps_none(tmp_path):
    few = build_world(tmp_path / "few", policy=Policy(name="few", training={"challenger_every_labels": 5000}))
    assert few.check(CHECK)[0]["challenge"] is None
    off = build_world(tmp_path / "off", policy=Policy(name="off", training={"challenger": False}))
    assert off.check(CHECK)[0]["challenge"] is None
    # At autonomy L3 a person approves every release: no challenger asks for their time.
    l3 = Policy(name="l3", autonomy="L3", training={"challenger_every_labels": 1000})
    assert build_world(tmp_path / "l3", policy=l3).check(CHECK)[0]["challenge"] is None


def test_a_losing_champion_gets_a_diagnosis_not_a_challenger(tmp_path):
    world = build_world(tmp_path, serve="wrong", policy=Policy(name="c", training={"challenger_every_labels": 10}))

    update, _ = world.check(CHECK)

    assert update["outcome"] == "finding" and update["challenge"] is None


def test_a_due_challenger_goes_to_the_curator_before_a_monitoring_sample_and_a_finding_before_both():
    from driftpilot.graph.build import after_monitor

    blind, challenge, finding = {"labelled": 3}, {"new_labels": 500}, {"kinds": ["performance_loss"]}
    assert after_monitor({"blind": blind, "challenge": challenge}) == "curator"
    assert after_monitor({"blind": blind, "challenge": None}) == "monitoring_sample"
    assert after_monitor({"finding": finding, "challenge": challenge}) == "diagnostician"  # type: ignore[typeddict-item]
    assert after_monitor({}) == "__end__"


def test_retrains_that_did_not_replace_the_champion_make_the_next_wait_for_twice_the_labels(tmp_path):
    from driftpilot.agents.context import retrain_backoff

    policy = Policy(name="backoff", training={"challenger_every_labels": 1000})
    world = build_world(tmp_path, policy=policy)

    def backoff() -> str | None:
        with world.context.sessions() as session:
            return retrain_backoff(session, world.model_id, policy, CHECK)

    assert backoff() is None  # nothing tried since the champion serves
    # 2,289 labels arrived between START and CHECK: one or two failed retrains at START wait for
    # 1,000 and 2,000 of them; three for 4,000.
    for _ in range(2):
        _tried(world, START + timedelta(minutes=1), "rejected")
    assert backoff() is None
    _tried(world, START + timedelta(minutes=1), "candidate")
    assert backoff() == (
        "3 retrain(s) since the champion serves did not replace it; the next waits for 4000 new labels, 2289 so far"
    )


def test_a_champion_just_promoted_is_judged_on_its_release_while_its_own_labels_are_on_their_way(tmp_path):
    # 50 labels came back of what the champion served, 200 needed; it was promoted 2 hours
    # before the check on 600 labelled events of its release, scoring 0.93 there.
    world = build_world(tmp_path, window_labels=50, policy=NO_REACH_BACK)
    with world.context.sessions() as session:
        champion = versions.champion(session=session, model_id=world.model_id)
        release = releases.start_release(
            session=session,
            model_id=world.model_id,
            version_id=champion.id,
            baseline_version_id=None,
            started_at=CHECK - timedelta(hours=5),
            shadow=True,
        )
        releases.end_release(
            session=session,
            release_id=release.id,
            ended_at=CHECK - timedelta(hours=2),
            verdict="promoted",
            evidence={"overall": {"n": 600, "candidate_score": 0.93, "champion_score": 0.9}},
            promote=True,
        )

    update, decision = world.check(CHECK)

    evidence = decision.evidence
    assert (evidence["balanced_accuracy"], evidence["labelled"]) == (0.93, 600)
    assert evidence["judged_in_release"] == release.id and "labels" not in evidence.get("missing", {})
    assert update["outcome"] != "blind"
    assert f"on 600 labelled events of release {release.id}, which promoted it" in decision.rationale
    # Its own accuracy is still to be judged: the monitoring sample is asked for as when blind.
    assert evidence["served_labelled"] == 50 and update["blind"]["labelled"] == 50
    # Past a label delay and the shortest window (12 hours here) its own labels are awaited: blind.
    later, old = world.check(CHECK + timedelta(hours=13))
    assert "judged_in_release" not in old.evidence and old.evidence["balanced_accuracy"] is None
