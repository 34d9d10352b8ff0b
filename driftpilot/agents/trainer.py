"""Trainer: a candidate updated from the champion (or retrained), judged against it before any release.

The Trainer plans how to train from the evidence and the policy
(:func:`~driftpilot.tools.training.plan_update`): by default an incremental update of the
champion — warm-started, held to its weights by EWC, on recent data mixed with the Curator's
class-balanced replay of older data, the output layer grown for new classes — and a full retrain
from scratch when the policy asks for one, after ``full_every`` updates in a row, or when an
update fails the evaluation gate. Every candidate is evaluated against the champion
(:func:`~driftpilot.tools.evaluation.evaluate_candidate`) and the comparison, the settings the
fit chose and its curves are stored with the version and the decision. The policy's
``start_canary`` gate judges the comparison as :class:`~driftpilot.policies.StartCanaryFacts`;
the run carries their plain dump for the Release Manager, which judges them again at each step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, cast

import pandas as pd
from langgraph.runtime import Runtime
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import EvaluationState, LoopState
from driftpilot.memory import decisions, events, golden, managed, snapshots, versions
from driftpilot.memory.schemas import ModelSchema
from driftpilot.memory.tables import ManagedModel, Snapshot, Version
from driftpilot.models.base import CLASS_WEIGHTS, TorchClassifier, TrainingReport
from driftpilot.policies import FederateFacts, PolicyVerdict, RetrainFacts, StartCanaryFacts, Usage
from driftpilot.tools.augment import Augmented
from driftpilot.tools.distill import distil_student
from driftpilot.tools.evaluation import Evaluation, evaluate_candidate
from driftpilot.tools.training import UpdatePlan, augmented_set, augmented_texts, plan_update, train_candidate


def trainer(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Train a candidate on the run's snapshot, judge it against the champion, register it either way."""
    ctx = runtime.context
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        done = _trained_before(session, state, model)
        if done is not None:
            return done
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion to warm-start from")
        snapshot_id = state.get("snapshot_id")
        if snapshot_id is None:
            raise LookupError(f"run {state['run_id']} reached the Trainer without a snapshot to train on")
        snapshot = snapshots.get_snapshot(session=session, snapshot_id=snapshot_id)
        usage = usage_today(session, model, now)
        schema = managed.model_schema(model)
        retrain = ctx.policy.check("retrain", _retrain_facts(schema, snapshot), usage, at=now)
        if not retrain.allowed:
            decision = record(
                session,
                state,
                model,
                agent="trainer",
                action="retrain",
                outcome="denied",
                rationale="Retraining refused by the policy: " + "; ".join(retrain.reasons),
                evidence={"snapshot": snapshot.id},
                verdicts=[retrain],
            )
            return {"candidate": None, "outcome": "retrain_denied", "last_decision": decision.id}
        work = _prepare(ctx, session, state, model, schema, champion, snapshot, now)
        attempts: list[_Attempt] = []
        federated_trigger = (state.get("trigger") or {}).get("kind") == "federated"
        try:
            final = _train(
                ctx,
                work,
                usage,
                attempts,
                federate=lambda: _federated(ctx, session, state, model, work, usage),
                federated_only=federated_trigger,
            )
        except _TrainingFailed as failed:
            # A set the family cannot train on (empty, one class, features not of its schema):
            # said in the log, nothing registered.
            decision = record(
                session,
                state,
                model,
                agent="trainer",
                action="retrain",
                outcome="failed",
                rationale=f"Training on snapshot {snapshot.id} failed: {failed.error}. Nothing was registered.",
                evidence={
                    "snapshot": snapshot.id,
                    "plan": failed.plan.as_dict(),
                    "error": str(failed.error),
                    "attempts": [a.summary() for a in attempts],
                },
                verdicts=[retrain],
            )
            return {"candidate": None, "outcome": "training_failed", "last_decision": decision.id}
        edge = (
            _edge_student(ctx, session, work, model, final, usage, now) if not _behind(state, final) else _EdgeStudent()
        )
        return _register(ctx, session, state, model, champion, snapshot, final, attempts, retrain, work.augmented, edge)


def _retrain_facts(schema: ModelSchema, snapshot: Snapshot) -> RetrainFacts:
    # The labelled events behind the retrain: what it learns from and the recent ones held out
    # to judge it, as the Curator counted them when it decided there were enough.
    # Pseudo-labels are no labels: they do not count toward the minimum.
    labelled = (
        snapshot.n_rows - int(snapshot.stats.get("pseudo", 0)) + len(snapshot.stats.get("recent_holdout_ids", []))
    )
    least = snapshot.stats.get("plan", {}).get("min_training_labels")  # the Curator's, derived when auto
    return RetrainFacts(training_labels=labelled, features=schema.feature_names, min_training_labels=least)


@dataclass(frozen=True)
class _Work:
    """What a retrain of this run needs: the data, the champion to start from, the plan, and
    what the candidate is judged on."""

    frame: pd.DataFrame
    labels: Any
    parent: TorchClassifier
    plan: UpdatePlan
    recent: pd.DataFrame
    old: pd.DataFrame
    golden: pd.DataFrame
    slice_columns: list[str]
    concept_changed: bool
    #: Earlier champions (newest first) that compete as they are, and how to load one.
    earlier: list[int]
    load: Callable[[int | None], TorchClassifier]
    #: The training set with synthetic rows for its rare classes (policy ``data.augmentation``).
    augmented: Augmented | None = None
    #: The champion's edge student, loaded (``None`` when it has none).
    load_student: Callable[[], TorchClassifier | None] = lambda: None


def _prepare(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    schema: ModelSchema,
    champion: Version,
    snapshot: Snapshot,
    now: datetime,
) -> _Work:
    """Load the snapshot, the champion and the holdouts, and plan the training from the evidence."""
    training = ctx.policy.policy.training
    frame = snapshots.snapshot_frame(session=session, snapshot_id=snapshot.id)
    labels = frame["label"].to_numpy()
    parent = ctx.registry.load(champion)
    diagnosis = state.get("diagnosis")
    cause = diagnosis["cause"] if diagnosis else None
    plan = plan_update(
        strategy=training.strategy,
        cause=cause,
        parent=parent,
        labels=labels,
        updates_since_scratch=int((champion.metrics or {}).get("updates_since_scratch", 0)),
        full_every=training.full_every,
        penalty=training.penalty,
        strength=training.penalty_strength,
    )
    return _Work(
        frame=frame,
        labels=labels,
        parent=parent,
        plan=plan,
        recent=_holdout(session, snapshot.stats.get("recent_holdout_ids", []), now),
        old=_holdout(session, snapshot.stats.get("old_holdout_ids", []), now),
        golden=golden.golden_frame(session=session, model_id=model.id, visible_at=now),
        slice_columns=schema.slice_columns,
        concept_changed=cause == "concept_drift",
        earlier=_earlier_champions(session, model, champion),
        load=lambda number: ctx.registry.load(
            versions.get_version(session=session, model_id=model.id, number=int(number or 0))
        ),
        augmented=_augmented(ctx, session, parent, frame, labels),
        load_student=lambda: _champion_student(ctx, session, champion),
    )


def _augmented(
    ctx: AgentContext, session: Session, parent: TorchClassifier, frame: pd.DataFrame, labels: Any
) -> Augmented | None:
    """The training set with synthetic rows for its rare classes, when the policy asks for it:
    tabular rows SMOTE-style, a text family's texts varied and encoded again."""
    if not ctx.policy.policy.data.augmentation:
        return None
    if any(kind == "text" for _, kind in parent.features):
        stored = events.texts(session=session, ids=frame["id"].tolist())
        return augmented_texts(parent, frame, [stored.get(int(i)) for i in frame["id"]], labels, ctx.seed)
    return augmented_set(parent, frame, labels, ctx.seed)


#: Earlier champions a retrain lets compete as they are (the newest ones).
EARLIER_RIVALS = 2


def _earlier_champions(session: Session, model: ManagedModel, champion: Version) -> list[int]:
    """The newest earlier champions of the model (archived when a successor was promoted), of the
    champion's features: each competes with what is trained, unchanged."""
    earlier = [
        v.number
        for v in versions.list_versions(session=session, model_id=model.id)
        if v.stage == "archived" and v.number != champion.number
    ]
    return sorted(earlier, reverse=True)[:EARLIER_RIVALS]


@dataclass(frozen=True)
class _Attempt:
    """One candidate trained as ``plan`` says, its evaluation, and the gate's verdict on it."""

    plan: UpdatePlan
    candidate: TorchClassifier
    evaluation: Evaluation
    gate: StartCanaryFacts
    verdict: PolicyVerdict
    #: What a federated training did (strategy, nodes, rounds; see ``driftpilot.edge``).
    federated: dict[str, Any] | None = None

    @property
    def report(self) -> TrainingReport:
        """How the candidate was trained (every family's ``fit`` writes it)."""
        report = self.candidate.report_
        if report is None:
            raise RuntimeError(f"{type(self.candidate).__name__}.fit left no training report")
        return report

    def summary(self) -> dict[str, Any]:
        return {
            "plan": self.plan.as_dict(),
            "seconds": round(self.report.seconds, 3),
            "epochs": self.report.epochs,
            "gate_passed": self.verdict.allowed,
            "gate_reasons": self.verdict.reasons,
            "candidate_recent": self.evaluation.candidate_recent,
            "candidate_metric": self.evaluation.candidate_metric,
            "candidate_old": self.evaluation.candidate_old,
        } | ({"federated": _federated_summary(self.federated)} if self.federated else {})


class _TrainingFailed(Exception):
    """Training (or judging) under ``plan`` raised ``error``: the set cannot be learnt from."""

    def __init__(self, plan: UpdatePlan, error: ValueError) -> None:
        super().__init__(str(error))
        self.plan = plan
        self.error = error


def _train(
    ctx: AgentContext,
    work: _Work,
    usage: Usage,
    attempts: list[_Attempt],
    federate: Callable[[], _Attempt | None] = lambda: None,
    federated_only: bool = False,
) -> _Attempt:
    """Train as planned; an update that fails the gate is tried again as a full retrain when the
    policy says so. Under the ``auto`` strategy an update also competes with a full retrain on the
    same snapshot, and a model of the other shape (linear, or with hidden layers) with both; the
    evidence chooses: the one scoring higher on the newest labels (held out of all) among those
    the gate passes. (An update anchored to a world that has gone can lose to a fresh start; a
    fresh start can lose what the update keeps.) Each attempt is appended to ``attempts``; the
    chosen one is returned."""
    training = ctx.policy.policy.training
    if federated_only:
        only = federate()
        if only is None:
            raise _TrainingFailed(UpdatePlan("federated"), ValueError("the federated training made no candidate"))
        attempts.append(only)
        return only
    attempt = _attempt(ctx, work, work.plan, usage)
    attempts.append(attempt)
    federated = federate()
    if federated is not None:
        attempts.append(federated)
    rivals: list[UpdatePlan] = []
    if work.plan.mode == "update" and not attempt.verdict.allowed and training.fallback_to_full:
        reason = "the incremental update failed the evaluation gate: " + "; ".join(attempt.verdict.reasons)
        rivals.append(UpdatePlan("scratch", reasons=[reason]))
    elif work.plan.mode == "update" and training.strategy == "auto":
        reason = "a full retrain competes with the update; the newest labels, held out of both, choose"
        rivals.append(UpdatePlan("scratch", reasons=[reason]))
    if training.strategy == "auto":
        # The other shape competes too: a linear model where the champion has hidden layers (a
        # concept a hyperplane draws is learnt from fewer labels without them), hidden layers
        # where it is linear.
        other = () if work.parent.hidden else type(work.parent).hidden_layers
        shape = "a model of the other shape competes; the newest labels choose"
        rivals.append(UpdatePlan("scratch", hidden=other, reasons=[shape]))
    if work.augmented is not None and work.plan.mode != "reuse":
        reason = f"the same training with synthetic rows for the rare classes competes ({work.augmented.summary()})"
        rivals.append(replace(work.plan, augment=True, reasons=[*work.plan.reasons, reason]))
    for number in work.earlier:
        reason = "an earlier champion competes: the world it knew may have come back"
        rivals.append(UpdatePlan("reuse", reasons=[reason], version=number))
    for plan in rivals:
        attempts.append(_attempt(ctx, work, plan, usage))
    passed = [a for a in attempts if a.verdict.allowed]
    if not passed:
        return attempts[-1]
    return max(passed, key=lambda a: a.evaluation.candidate_metric)


def _attempt(ctx: AgentContext, work: _Work, plan: UpdatePlan, usage: Usage) -> _Attempt:
    """Train as ``plan`` says, evaluate against the champion, and ask the gate."""
    policy = ctx.policy.policy
    try:
        if plan.mode == "reuse":
            candidate = work.load(plan.version)
        else:
            augmented = work.augmented if plan.augment else None
            candidate = train_candidate(
                work.parent,
                work.frame if augmented is None else augmented.rows,
                work.labels if augmented is None else augmented.labels,
                plan,
                class_weight=CLASS_WEIGHTS[policy.evaluation.metric],
                on_epoch=ctx.on_epoch,
            )
    except ValueError as exc:
        raise _TrainingFailed(plan, exc) from exc
    return _judged(ctx, work, plan, candidate, usage)


def _judged(ctx: AgentContext, work: _Work, plan: UpdatePlan, candidate: TorchClassifier, usage: Usage) -> _Attempt:
    """Evaluate ``candidate`` against the champion and ask the gate."""
    policy = ctx.policy.policy
    try:
        evaluation = evaluate_candidate(
            candidate,
            work.parent,
            recent=work.recent,
            old=work.old,
            golden=work.golden,
            slice_columns=work.slice_columns,
            min_slice_samples=policy.evaluation.min_slice_samples,
            metric=policy.evaluation.metric,
        )
    except ValueError as exc:
        raise _TrainingFailed(plan, exc) from exc
    # Judged without a time: whether the candidate is fit for a release at all; the Release
    # Manager asks again, at the share and time it starts one.
    gate = _gate_facts(evaluation, work.concept_changed, share=policy.release.canary_share)
    return _Attempt(plan, candidate, evaluation, gate, ctx.policy.check("start_canary", gate, usage))


#: Fewest labelled rows of a group that make it a node of a simulated federation.
FEDERATED_MIN_NODE_ROWS = 20


def _federated(
    ctx: AgentContext, session: Session, state: LoopState, model: ManagedModel, work: _Work, usage: Usage
) -> _Attempt | None:
    """A candidate made by federated rounds from the champion, when the policy's ``federated.mode``
    asks for one, within its budget of rounds; judged by the same evaluation and gate as every
    attempt. Its own decision (``federate``) records what the rounds did, or why none ran."""
    settings = ctx.policy.policy.federated
    if settings.mode == "off":
        return None

    def log(outcome: str, rationale: str, evidence: dict[str, Any], verdicts: list[PolicyVerdict]) -> None:
        record(
            session,
            state,
            model,
            agent="trainer",
            action="federate",
            outcome=outcome,
            rationale=rationale,
            evidence={"mode": settings.mode} | evidence,
            verdicts=verdicts,
        )

    nodes = _simulated_nodes(work) if settings.mode == "simulation" else None
    facts = FederateFacts(rounds=settings.rounds, nodes=len(nodes) if nodes is not None else None)
    verdict = ctx.policy.check("federate", facts, usage, at=now_of(state))
    if ctx.federate is None or not verdict.allowed:
        why = "; ".join(verdict.reasons) if not verdict.allowed else "this loop was started without federation"
        log("denied", f"No federated training: {why}.", {"nodes": facts.nodes}, [verdict])
        return None
    recent = work.recent
    check = (recent.drop(columns=["label"]), recent["label"].astype(str).to_numpy()) if len(recent) else None
    try:
        candidate, done = ctx.federate(work.parent, nodes, check, settings)
    except (RuntimeError, ValueError, OSError) as exc:
        log("failed", f"The federated training failed: {exc}. Nothing was registered.", {"error": str(exc)}, [verdict])
        return None
    candidate.report_ = _federated_report(work.parent, done)
    log(
        "trained",
        f"Federated training over {len(done['nodes'])} node(s), {settings.rounds} round(s): strategy "
        f"{done['strategy']} ({'; '.join(done['reasons'])})"
        + (f"; outliers flagged: {', '.join(done['outliers'])}" if done["outliers"] else "")
        + ". Its candidate is judged as every other.",
        done | {"rounds_run": len(done["rounds"])},
        [verdict],
    )
    plan = UpdatePlan("federated", reasons=[f"the policy's federated mode is {settings.mode}"])
    attempt = _judged(ctx, work, plan, candidate, usage)
    return replace(attempt, federated=done)


def _simulated_nodes(work: _Work) -> dict[str, tuple[pd.DataFrame, Any]]:
    """The snapshot split by its events' group (the schema's group key): one node per group with
    at least :data:`FEDERATED_MIN_NODE_ROWS` labelled rows."""
    if "group" not in work.frame.columns:
        return {}
    groups = work.frame["group"].astype(str)
    return {
        str(g): (work.frame[mask].drop(columns=["label"], errors="ignore").reset_index(drop=True), work.labels[mask])
        for g in sorted(groups.unique())
        if (mask := (groups == g).to_numpy()).sum() >= FEDERATED_MIN_NODE_ROWS
    }


def _federated_report(parent: TorchClassifier, done: dict[str, Any]) -> TrainingReport:
    """What a federated candidate's training was, in the form every fit reports it (the rate and
    batch are the lineage's, which each node's local update starts from)."""
    rounds = len(done["rounds"])
    lineage = parent.report_
    return TrainingReport(
        mode="federated",
        scope="all",
        penalty="none",
        strength=0.0,
        lr=lineage.lr if lineage else 0.0,
        lr_source="each node's local update (half the lineage's rate), averaged by the strategy",
        batch_size=lineage.batch_size if lineage else 0,
        batch_reason="each node's, as an update of the lineage takes them",
        rows=int(sum(done["samples"].values())),
        validation_rows=0,
        max_epochs=rounds,
        epochs=rounds,
        best_epoch=rounds,
        stopped_early=False,
        new_classes=[],
        seconds=float(done["seconds"]),
        device="cpu",
        curves=[],
        base_lr=(lineage.base_lr or lineage.lr) if lineage else None,
        base_batch_size=(lineage.base_batch_size or lineage.batch_size) if lineage else None,
    )


def _federated_summary(done: dict[str, Any]) -> dict[str, Any]:
    keys = ("strategy", "final_strategy", "nodes", "outliers", "dropped", "dp")
    return {k: done.get(k) for k in keys} | {"rounds": len(done.get("rounds", []))}


def _gate_facts(evaluation: Evaluation, concept_changed: bool, share: float | None) -> StartCanaryFacts:
    return StartCanaryFacts(
        **evaluation.gate_facts(), share=share, concept_changed=concept_changed, slices_compared=True
    )


def _register(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    champion: Version,
    snapshot: Snapshot,
    final: _Attempt,
    attempts: list[_Attempt],
    retrain: PolicyVerdict,
    augmented: Augmented | None,
    edge: _EdgeStudent,
) -> dict[str, Any]:
    """Register the last candidate (for a release, or rejected and kept for audit) and log why."""
    # A challenger answers no finding: the champion is not known to be losing, so one not ahead
    # of it on the newest labels has nothing to release for (a retrain may give up a little there
    # for what the finding says it mends, within the policy's max_regression).
    behind = _behind(state, final)
    accepted = final.verdict.allowed and not behind
    compared, table = final.evaluation.as_dict(), final.evaluation.table()
    # Kept without a share: the Release Manager asks for the share of each step it starts.
    gate_facts = final.gate.model_copy(update={"share": None}).model_dump()
    version = ctx.registry.register(
        session=session,
        model_id=model.id,
        model_name=model.name,
        model=final.candidate,
        time=now_of(state),
        parent_id=champion.id,
        snapshot_id=snapshot.id,
        stage="candidate" if accepted else "rejected",
        metrics=_metrics(champion, snapshot.n_rows, final)
        | {"evaluation": compared, "comparison_table": table, "run_id": state["run_id"], "gate_facts": gate_facts}
        | ({"student": edge.summary} if edge.summary else {}),
    )
    student = _register_student(ctx, session, state, model, version, snapshot, edge) if accepted else None
    decision = record(
        session,
        state,
        model,
        agent="trainer",
        action="retrain",
        outcome="candidate" if accepted else "rejected",
        rationale=("A challenger of the champion. " if state.get("challenge") else "")
        + _rationale(version, champion, snapshot, final, attempts)
        + (" Not released: a challenger must score higher than the champion on the newest labels." if behind else ""),
        evidence={
            "challenger": state.get("challenge"),
            "version": version.number,
            "plan": final.plan.as_dict(),
            "attempts": [a.summary() for a in attempts],
            "augmentation": _augmentation_effect(attempts, augmented),
            "evaluation": compared,
            "comparison_table": table,
            "training": final.report.as_dict(),
            "student": edge.summary | {"version": student.number} if student and edge.summary else edge.summary,
        },
        verdicts=[retrain, final.verdict, *([edge.verdict] if edge.verdict else [])],
    )
    for made in (version, student):
        if made is not None:
            versions.set_decision(session=session, version_id=made.id, decision_id=decision.id)
    carried: EvaluationState = {**compared, "gate_facts": gate_facts}
    return {
        "candidate": version.number if accepted else None,
        "evaluation": carried,
        "outcome": "candidate" if accepted else "rejected",
        "last_decision": decision.id,
    }


def _behind(state: LoopState, final: _Attempt) -> bool:
    """A challenger not ahead of the champion on the newest labels (it is not released)."""
    return bool(state.get("challenge")) and final.evaluation.candidate_metric <= final.evaluation.champion_metric


@dataclass(frozen=True)
class _EdgeStudent:
    """The candidate's edge student when it earned its place (``None`` otherwise), what the
    decision records of it, and the gate's verdict on it."""

    student: TorchClassifier | None = None
    summary: dict[str, Any] | None = None
    verdict: PolicyVerdict | None = None


def _edge_student(
    ctx: AgentContext, session: Session, work: _Work, model: ManagedModel, final: _Attempt, usage: Usage, now: datetime
) -> _EdgeStudent:
    """Distil a candidate that passed the gate into its edge student, judged by the same gate
    against the student the nodes run now (the champion's), and released with its teacher only if
    it passes and its int8 graph answers as it does (``driftpilot.tools.distill``). The first
    student replaces nothing: its comparison with its teacher is recorded, not gated."""
    policy = ctx.policy.policy
    if not (policy.training.distil and final.verdict.allowed):
        return _EdgeStudent()
    teacher = final.candidate
    unlabelled = _unlabelled_recent(session, model, work, now)
    rows = pd.concat([work.frame, unlabelled], ignore_index=True) if len(unlabelled) else work.frame
    labels = [*work.labels, *([None] * len(unlabelled))]
    frames = [_with_texts(session, teacher, f) for f in (rows, work.recent, work.old, work.golden)]
    derived = [f.name for f in managed.model_schema(model).derived_features]
    try:
        incumbent = work.load_student()
        made = distil_student(teacher, frames[0], labels, frames[1], derived=derived)
        evaluation = evaluate_candidate(
            made.student,
            incumbent or teacher,
            recent=frames[1],
            old=frames[2],
            golden=frames[3],
            slice_columns=work.slice_columns,
            min_slice_samples=policy.evaluation.min_slice_samples,
            metric=policy.evaluation.metric,
        )
    except ValueError as exc:
        return _EdgeStudent(summary={"released": False, "reason": f"no student: {exc}"})
    verdict = None
    reasons = []
    if incumbent is not None:
        facts = _gate_facts(evaluation, False, share=policy.release.canary_share)
        verdict = ctx.policy.check("start_canary", facts, usage)
        if not verdict.allowed:
            reasons.append("the gate against the champion's student: " + "; ".join(verdict.reasons))
    if not made.parity_passed:
        reasons.append(f"its int8 graph agrees with it on {made.parity.agreement:.2%} of held-out rows")
    summary = made.summary() | {
        "compared_with": "the champion's student" if incumbent is not None else "its teacher (the first student)",
        "evaluation": evaluation.as_dict(),
        "released": not reasons,
        "reason": "; ".join(reasons) or None,
    }
    return _EdgeStudent(None if reasons else made.student, summary, verdict)


def _register_student(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    teacher: Version,
    snapshot: Snapshot,
    edge: _EdgeStudent,
) -> Version | None:
    """The student as a version of its own (stage ``student``, its teacher's as parent), with its
    evaluation and the gate's facts: what edge nodes assigned the teacher download."""
    if edge.student is None or edge.summary is None:
        return None
    return ctx.registry.register(
        session=session,
        model_id=model.id,
        model_name=model.name,
        model=edge.student,
        time=now_of(state),
        parent_id=teacher.id,
        snapshot_id=snapshot.id,
        stage="student",
        metrics={"student_of": teacher.number} | edge.summary,
    )


def _champion_student(ctx: AgentContext, session: Session, champion: Version) -> TorchClassifier | None:
    """The student the nodes run now: the champion's (``None`` when it went out without one)."""
    student = versions.student_of(session=session, version=champion)
    return ctx.registry.load(student) if student is not None else None


def _unlabelled_recent(session: Session, model: ManagedModel, work: _Work, now: datetime) -> pd.DataFrame:
    """The newest events without a label since the recent holdout began, at most as many as the
    snapshot's rows: a student learns from the teacher's answers on them too (what the nodes will
    see next), not from labels alone."""
    if work.recent.empty or "time" not in work.recent or work.frame.empty:
        return work.frame.iloc[:0]
    start = work.recent["time"].min()
    window = events.window(
        session=session, model_id=model.id, start=start, end=now, visible_at=now, limit=len(work.frame)
    )
    return window[window["label"].isna()]


def _with_texts(session: Session, teacher: TorchClassifier, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the raw text of a text teacher's feature (stored beside its sentence
    vector, which is what the frame's features hold): what a student reads instead."""
    texts = [name for name, kind in teacher.features if kind == "text" and name not in frame]
    if not texts or frame.empty or "id" not in frame:
        return frame
    found = events.texts(session=session, ids=frame["id"].tolist())
    return frame.assign(**{texts[0]: [found.get(int(i)) for i in frame["id"]]})


def _trained_before(session: Session, state: LoopState, model: ManagedModel) -> dict[str, Any] | None:
    """What this run trained before a restart, or None: a run resumed after a crash never trains
    (or registers) twice. The version is found by its run; its decision is written now if the
    crash came between the two writes."""
    version = versions.version_of_run(session=session, model_id=model.id, run_id=state["run_id"], time=now_of(state))
    if version is None:
        return None
    accepted = version.stage != "rejected"
    outcome = "candidate" if accepted else "rejected"
    decision = decisions.run_decision(
        session=session, model_id=model.id, run_id=state["run_id"], agent="trainer", action="retrain"
    )
    if decision is None:
        decision = record(
            session,
            state,
            model,
            agent="trainer",
            action="retrain",
            outcome=outcome,
            rationale=(
                f"Version {version.number} was trained and registered by this run before a restart; "
                f"it is taken as it is ({'goes to canary' if accepted else 'kept for audit'}), not trained again."
            ),
            evidence={"version": version.number, "recovered": True, "evaluation": version.metrics.get("evaluation")},
        )
        versions.set_decision(session=session, version_id=version.id, decision_id=decision.id)
    metrics = version.metrics or {}
    # As stored with the version by _register (JSON of the same record).
    carried = cast(
        EvaluationState, {**(metrics.get("evaluation") or {}), "gate_facts": metrics.get("gate_facts") or {}}
    )
    return {
        "candidate": version.number if accepted else None,
        "evaluation": carried,
        "outcome": outcome,
        "last_decision": decision.id,
    }


def _augmentation_effect(attempts: list[_Attempt], augmented: Augmented | None) -> dict[str, Any] | None:
    """What augmenting the rare classes did to the candidate: the metric on the newest labels of
    the plan trained with the synthetic rows, less that of the same plan without them."""
    rival = next((a for a in attempts if a.plan.augment), None)
    if augmented is None or rival is None:
        return None
    plain = next(a for a in attempts if a.plan == replace(rival.plan, augment=False, reasons=a.plan.reasons))
    return {
        "summary": augmented.summary(),
        "added": augmented.added,
        "effect": round(rival.evaluation.candidate_metric - plain.evaluation.candidate_metric, 4),
        "augmented_metric": rival.evaluation.candidate_metric,
        "plain_metric": plain.evaluation.candidate_metric,
        "gate_passed": rival.verdict.allowed,
    }


def _metrics(champion: Version, rows: int, final: _Attempt) -> dict[str, Any]:
    """What is stored with the version: its scores and how it was trained (the caller adds the comparison)."""
    plan, report, evaluation = final.plan, final.report, final.evaluation
    previous = champion.metrics or {}
    return {
        "recent_balanced_accuracy": evaluation.candidate_recent,
        # The level the Monitor holds the model to once it serves: what it scored on the newest
        # labelled events, i.e. what is attainable now. (It used to be inherited from the first
        # version, whose score on a world that has since moved no later champion could reach:
        # every check then read as a loss, and retrains followed that could not beat it.)
        "reference_balanced_accuracy": evaluation.candidate_recent,
        "reference_n": evaluation.n_recent,
        "old_balanced_accuracy": evaluation.candidate_old,
        "champion_recent_balanced_accuracy": evaluation.champion_recent,
        "train_rows": rows,
        "train_seconds": 0.0 if plan.mode == "reuse" else round(report.seconds, 3),
        "loss_history": [round(c.train_loss, 5) for c in report.curves],
        "updates_since_scratch": 0
        if plan.mode in ("scratch", "reuse")
        else int(previous.get("updates_since_scratch", 0)) + 1,
        "plan": plan.as_dict(),
        "training": report.as_dict(),
    }


def _rationale(
    version: Version, champion: Version, snapshot: Snapshot, final: _Attempt, attempts: list[_Attempt]
) -> str:
    plan, report, evaluation = final.plan, final.report, final.evaluation
    old = (
        f", on old concepts {evaluation.candidate_old:.3f} vs {evaluation.champion_old:.3f}"
        if evaluation.candidate_old is not None and evaluation.champion_old is not None
        else ""
    )
    first, others = attempts[0], [a for a in attempts if a is not final]
    retried = ""
    if final is not first and not first.verdict.allowed:
        retried = f" {first.plan.describe().capitalize()} was tried first and failed the gate."
    if others:
        scores = [
            f"{a.plan.describe()} ({a.evaluation.candidate_recent:.3f}"
            + ("" if a.verdict.allowed else ", failed the gate: " + "; ".join(a.verdict.reasons))
            + ")"
            for a in others
        ]
        retried += " Chosen on the recent holdout over " + "; ".join(scores) + "."
    grown = f" New classes: {', '.join(report.new_classes)}." if report.new_classes and plan.mode != "reuse" else ""
    reasons = final.verdict.reasons
    verdict = "Goes to canary." if final.verdict.allowed else f"Kept for audit, not released: {'; '.join(reasons)}."
    settings = (
        ""
        if plan.mode == "reuse"
        else f" Settings found for this run: learning rate {report.lr:.2g} ({report.lr_source}), batch "
        f"{report.batch_size}, {report.epochs} of at most {report.max_epochs} epochs (best {report.best_epoch}"
        f"{', stopped early' if report.stopped_early else ''}), {report.seconds:.1f} s."
    )
    what = (
        f"{plan.describe()}, judged against version {champion.number} on snapshot {snapshot.id}'s holdout"
        if plan.mode == "reuse"
        else f"{plan.describe()} of version {champion.number} on snapshot {snapshot.id} ({snapshot.n_rows} rows)"
    )
    return (
        f"Version {version.number} is {what} because {'; '.join(plan.reasons)}.{settings}{grown}{retried} "
        f"Balanced accuracy on the recent holdout "
        f"{evaluation.candidate_recent:.3f} vs the champion's {evaluation.champion_recent:.3f}{old}. {verdict}"
    )


def _holdout(session: Session, ids: list[int], now: datetime) -> pd.DataFrame:
    """The holdout events with their labels as visible ``now`` (unlabelled ones dropped)."""
    if not ids:
        return pd.DataFrame(columns=["label"])
    frame = events.events_by_ids(session=session, ids=ids, visible_at=now)
    return frame[frame["label"].notna()]
