"""Release Manager: shadow, canary steps over cohorts, then promotion or rollback on evidence.

A release follows the policy's plan (``release`` section): the candidate first answers in shadow
beside the champion, then serves growing shares of cohorts (hashed entity ids or groups), each
step needing its own labelled evidence. At every look (the loop resumes the waiting run every
hour) both versions answer every event since the release started, and:

- label-free guards (errors, disagreement, a confidence-based accuracy estimate, latency) stop
  the release at once when one fails;
- an always-valid sequential test on the labelled events, overall and per slice (the slices of
  the model's schema), rolls back a candidate shown worse (anywhere) and lets one shown better be
  promoted after the last step;
- a release still undecided after ``max_canary_hours`` ends with the champion kept.

Paired answers, latencies and the statistics are tools (:mod:`driftpilot.tools.canary`); this
module reads memory, asks the policy, and words and records the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, now_of, record, stream_rates, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import approvals, decisions, events, managed, releases, snapshots, versions
from driftpilot.memory.tables import Approval, ManagedModel, Release, Version
from driftpilot.memory.times import to_utc
from driftpilot.policies import PolicyVerdict, PromoteFacts, RollbackFacts, StartCanaryFacts
from driftpilot.policies.auto import ReleasePlan, derive_release, derive_training
from driftpilot.policies.schema import Release as ReleaseRules
from driftpilot.tools.canary import (
    LATENCY_ROWS,
    Predictor,
    ReleaseEvidence,
    answers_on,
    append_answers,
    label_free_guards,
    latencies,
    paired_answers,
    release_evidence,
    unanswered,
)
from driftpilot.tools.evaluation import slice_masks
from driftpilot.tools.sequential import PairedVerdict

#: Outcomes of a release's first decision: shadow first, or straight to a canary step.
RELEASE_STARTS = ("shadow_started", "canary_started")

#: Fewest labelled events on which the two versions differ before a release can be found futile:
#: with fewer, which one is ahead is a coin's toss.
FUTILITY_DISCORDANT = 10

#: What a look at a running release leads to (see :func:`_next_move`).
Move = Literal["wait", "step", "promote", "roll_back", "expire", "futile", "superseded"]


def _may_serve(
    ctx: AgentContext, session: Session, state: LoopState, model: ManagedModel, share: float, now: datetime
) -> PolicyVerdict:
    """The policy's answer to "may the candidate serve ``share`` of cohorts now?", on the facts the
    Trainer's gate judged: asked again at every step, since the policy (or today's usage) may have
    changed while the candidate waited. The state holds them as the plain dump of the
    :class:`~driftpilot.policies.StartCanaryFacts` the Trainer's gate judged."""
    gate_facts = (state.get("evaluation") or {}).get("gate_facts") or {}
    facts = StartCanaryFacts.model_validate({**gate_facts, "share": share})
    return ctx.policy.check("start_canary", facts, usage_today(session, model, now), at=now)


def _given(value: int | None, what: str) -> int:
    """``value``, which an earlier node of the run set; an error naming it if none did."""
    if value is None:
        raise ValueError(f"the run's state has no {what}: this node runs only after an earlier one set it")
    return value


def release_manager(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Start the release: the candidate in shadow (or at the plan's first canary share)."""
    ctx = runtime.context
    rules = ctx.policy.policy.release
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        champion = versions.champion(session=session, model_id=model.id)
        candidate = versions.get_version(
            session=session, model_id=model.id, number=_given(state.get("candidate"), "candidate")
        )
        started = releases.release_started_by(session=session, model_id=model.id, run_id=state["run_id"])
        if started is not None:
            # Resumed after a crash that came after the release started: start nothing twice.
            return _started_before(session, state, model, started, candidate)
        verdict = _may_serve(ctx, session, state, model, rules.steps[0], now)
        given: list[dict[str, Any]] = []
        if verdict.allowed and verdict.needs_approval:
            given, answer = _start_approval(ctx, session, state, model, candidate, champion, verdict)
            if answer is not None:
                return answer
        if not verdict.allowed:
            return _refused(session, state, model, verdict)
        plan = derive_release(rules, stream_rates(session, model.id, now))
        rationale = _plan_sentence(rules, plan, candidate, champion)
        release = releases.start_release(
            session=session,
            model_id=model.id,
            version_id=candidate.id,
            baseline_version_id=champion.id if champion else None,
            started_at=now,
            plan=rules.steps,
            shadow=rules.shadow,
            cohort=rules.cohort,
            salt=f"{model.name}:v{candidate.number}",
            run_id=state["run_id"],
            reason=rationale,
        )
        decision = record(
            session,
            state,
            model,
            agent="release_manager",
            action="start_canary",
            outcome="shadow_started" if rules.shadow else "canary_started",
            rationale=rationale,
            evidence={
                "release": release.id,
                "plan": {"shadow": rules.shadow, "steps": rules.steps, "cohort": rules.cohort},
                "candidate": candidate.number,
                "champion": champion.number if champion else None,
            },
            verdicts=[verdict],
            approvals=given,
        )
    return {"release_id": release.id, "outcome": "canary_started", "last_decision": decision.id}


def _start_approval(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    candidate: Version,
    champion: Version | None,
    verdict: PolicyVerdict,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """A person's answer to starting the release: the approvals to log with the start, and the
    node's update instead of a start when there is none (still waiting, denied or expired)."""
    rules = ctx.policy.policy.release
    first = "shadow" if rules.shadow else f"{rules.steps[0]:.0%}"
    approval, waiting = _approval(
        ctx,
        session,
        state,
        model,
        "start_canary",
        {"version": candidate.number, "champion": champion.number if champion else None},
        f"Start the release of version {candidate.number} ({first} first); "
        "the policy's autonomy L3 asks a person first",
        [verdict],
    )
    if waiting:
        return [], {"release_id": None, "approval_id": approval.id, "outcome": "waiting_for_approval"}
    given = [approvals.as_dict(approval)]
    if approval.status == "approved":
        return given, None
    decision = record(
        session,
        state,
        model,
        agent="release_manager",
        action="start_canary",
        outcome=f"approval_{approval.status}",
        rationale=f"Version {candidate.number} is not released: {_answer(approval)}.",
        verdicts=[verdict],
        approvals=given,
    )
    return given, {"release_id": None, "outcome": f"approval_{approval.status}", "last_decision": decision.id}


def _refused(session: Session, state: LoopState, model: ManagedModel, verdict: PolicyVerdict) -> dict[str, Any]:
    """No release: the policy refused it, for the reasons it gave."""
    decision = record(
        session,
        state,
        model,
        agent="release_manager",
        action="start_canary",
        outcome="denied",
        rationale="Release refused by the policy: " + "; ".join(verdict.reasons),
        verdicts=[verdict],
    )
    return {"release_id": None, "outcome": "canary_denied", "last_decision": decision.id}


def _plan_sentence(rules: ReleaseRules, plan: ReleasePlan, candidate: Version, champion: Version | None) -> str:
    """The start's rationale: what the candidate does first, and the plan it follows."""
    shares = " → ".join(f"{s:.0%}" for s in [*rules.steps, 1.0])
    shadow_part = (
        ("shadow (until shown better) → " if rules.shadow_until == "better" else "shadow → ") if rules.shadow else ""
    )
    opening = (
        f"Version {candidate.number} answers in shadow beside champion version "
        f"{champion.number if champion else '-'}: nothing it says is served"
        if rules.shadow
        else f"Version {candidate.number} serves {rules.steps[0]:.0%} of cohorts"
    )
    return (
        f"{opening}. Plan: {shadow_part}{shares}, cohorts by hashed {rules.cohort} id; "
        f"each step needs {plan.min_step_samples} labelled events it served, promotion needs the "
        f"candidate shown better at alpha {rules.alpha:g} on at least {plan.min_canary_samples} labelled events, "
        f"all within {plan.max_canary_hours:g} hours."
    )


def _started_before(
    session: Session, state: LoopState, model: ManagedModel, release: Release, candidate: Version
) -> dict[str, Any]:
    """The state after a release this run started before a restart; its decision is written now
    if the crash came between the two writes."""
    decision = decisions.run_decision(
        session=session,
        model_id=model.id,
        run_id=state["run_id"],
        agent="release_manager",
        action="start_canary",
        outcomes=RELEASE_STARTS,
    )
    if decision is None:
        decision = record(
            session,
            state,
            model,
            agent="release_manager",
            action="start_canary",
            outcome="shadow_started" if release.phase == "shadow" else "canary_started",
            rationale=(
                f"The release of version {candidate.number} was started by this run before a restart "
                f"(release {release.id}); it goes on, nothing was started twice."
            ),
            evidence={"release": release.id, "candidate": candidate.number, "recovered": True},
        )
    return {"release_id": release.id, "outcome": "canary_started", "last_decision": decision.id}


def _answer(approval: Approval) -> str:
    """A person's answer, as the end of a rationale's sentence."""
    if approval.status == "expired":
        return f"nobody answered the approval request {approval.id} in time"
    comment = f" ({approval.comment})" if approval.comment else ""
    return f"{approval.decided_by} {approval.status} it{comment}"


def _approval(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    action: str,
    subject: dict[str, Any],
    reason: str,
    verdicts: list[PolicyVerdict],
) -> tuple[Approval, bool]:
    """This run's approval request for ``action`` (opened, and its decision written, the first
    time), expired when nobody answered within the policy's time; and whether it is still open."""
    now = now_of(state)
    approval = approvals.request_approval(
        session=session,
        model_id=model.id,
        run_id=state["run_id"],
        action=action,
        subject=subject,
        reason=reason,
        time=now,
    )
    asked = decisions.run_decision(
        session=session,
        model_id=model.id,
        run_id=state["run_id"],
        agent="release_manager",
        action=action,
        outcomes=["awaiting_approval"],
    )
    if asked is None:
        record(
            session,
            state,
            model,
            agent="release_manager",
            action=action,
            outcome="awaiting_approval",
            rationale=f"{reason}: approval request {approval.id} waits for an answer.",
            evidence={"approval": approval.id, **subject},
            verdicts=verdicts,
            approvals=[approvals.as_dict(approval)],
        )
    if approval.status == "pending":
        if _still_open(ctx, approval, now):
            return approval, True
        approval = approvals.expire_approval(session=session, approval_id=approval.id, at=now)
    return approval, False


def _still_open(ctx: AgentContext, approval: Approval, now: datetime) -> bool:
    """Whether the request still waits for an answer at ``now`` (pending, not yet timed out)."""
    waited = now - approval.requested_at
    return approval.status == "pending" and waited < timedelta(hours=ctx.policy.policy.changes.approval_timeout_hours)


def approval_gate(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait (durably) for a person's answer to the release's approval request."""
    resumed = interrupt({"waiting_for": "approval", "approval_id": state["approval_id"]})
    now_iso = resumed["now"]
    with runtime.context.sessions() as session:
        approval = approvals.get_approval(session=session, approval_id=_given(state.get("approval_id"), "approval"))
        if _still_open(runtime.context, approval, to_utc(now_iso, what="the resumed now")):
            return {"now": now_iso, "outcome": "waiting_for_approval"}
    # Answered (or timed out): the Release Manager acts on it, asking the policy again.
    return {"now": now_iso, "outcome": "approval_answered"}


def after_approval(state: LoopState) -> Literal["approval_gate", "release_manager"]:
    return "approval_gate" if state.get("outcome") == "waiting_for_approval" else "release_manager"


def _answers_since_start(
    ctx: AgentContext,
    session: Session,
    release: Release,
    candidate: Predictor,
    champion: Predictor,
    ids: np.ndarray,
    slice_columns: list[str],
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Both versions' answers (and top probabilities, and the slice columns) on the events
    ``ids``, with the latest latency measurement. Answers are kept in the context per release:
    each look reads and predicts only the events that arrived since the last one."""
    known, latency, measured = ctx.release_answers.get(release.id, (None, (0.0, 0.0), 0))
    new_ids = unanswered(known, ids)
    if new_ids:
        rows = events.events_by_ids(session=session, ids=new_ids)
        known = append_answers(known, paired_answers(candidate, champion, rows, slice_columns))
        if measured < LATENCY_ROWS:  # measured on a full sample once, the versions do not change
            latency, measured = latencies(candidate, champion, rows), min(len(rows), LATENCY_ROWS)
        ctx.release_answers[release.id] = (known, latency, measured)
    return answers_on(known, ids), latency


def gather_evidence(
    ctx: AgentContext,
    session: Session,
    release: Release,
    candidate: Version,
    champion: Version,
    now: datetime,
    slice_columns: list[str],
) -> tuple[ReleaseEvidence, dict[str, int]]:
    """Both versions' answers on every event since the release started, and before them on the
    prequential events (see :func:`_prequential`), judged overall and on each value of
    ``slice_columns`` (the model schema's slices)."""
    rules: ReleaseRules = ctx.policy.policy.release
    # Ids, times, served versions and the labels visible now: features only for new events.
    live = events.window(
        session=session,
        model_id=release.model_id,
        start=release.started_at,
        end=now,
        visible_at=now,
        with_features=False,
    )
    held = _prequential(session, candidate, release.started_at, now)
    frame = pd.concat([held[live.columns], live], ignore_index=True) if len(held) else live
    ids = frame["id"].to_numpy(dtype=int) if len(frame) else np.zeros(0, dtype=int)
    answers, (cand_seconds, champ_seconds) = _answers_since_start(
        ctx, session, release, ctx.registry.load(candidate), ctx.registry.load(champion), ids, slice_columns
    )
    cand_answers = answers["candidate"].to_numpy(dtype=object)
    champ_answers = answers["champion"].to_numpy(dtype=object)
    answered = answers["candidate"].notna().to_numpy(dtype=bool)
    g = rules.guards
    guards = label_free_guards(
        candidate=cand_answers[answered],
        champion=champ_answers[answered],
        candidate_confidence=answers["candidate_confidence"].to_numpy(dtype=float)[answered],
        champion_confidence=answers["champion_confidence"].to_numpy(dtype=float)[answered],
        candidate_seconds=cand_seconds,
        champion_seconds=champ_seconds,
        errors=int((~answered).sum()),
        min_events=g.min_events,
        max_disagreement=g.max_disagreement,
        max_estimated_drop=g.max_estimated_drop,
        max_latency_ratio=g.max_latency_ratio,
        max_error_rate=g.max_error_rate,
    )
    labelled = (frame["label"].notna().to_numpy() if len(frame) else np.zeros(0, bool)) & answered
    prequential = int(labelled[: len(held)].sum())  # the held-out pairs open the frame
    truth = frame["label"].to_numpy()[labelled].astype(str) if len(frame) else np.array([], dtype=str)
    evidence = release_evidence(
        truth,
        cand_answers[labelled].astype(str),
        champ_answers[labelled].astype(str),
        slices={k: v[labelled] for k, v in slice_masks(answers, slice_columns).items()},
        guards=guards,
        alpha=rules.alpha,
        max_slices=rules.max_slices,
        prequential=prequential,
    )
    return evidence, _counts(frame, labelled, release, candidate) | {"prequential": prequential}


def _prequential(session: Session, candidate: Version, started: datetime, now: datetime) -> pd.DataFrame:
    """Prequential evidence: the labelled events newer than anything the candidate learnt from and
    older than its release — the newest events its snapshot held out of training. Both versions'
    answers on them show, before the candidate serves anyone, which is better on today's data."""
    if candidate.snapshot_id is None:
        return pd.DataFrame()
    stats = snapshots.get_snapshot(session=session, snapshot_id=candidate.snapshot_id).stats or {}
    ids = [int(i) for i in stats.get("recent_holdout_ids", [])]
    if not ids:
        return pd.DataFrame()
    # Without features: the looks predict (and cache) only the events they have not answered yet.
    held = events.events_by_ids(session=session, ids=ids, visible_at=now, with_features=False)
    return held[held["label"].notna() & (held["time"] < pd.Timestamp(started))]


def _counts(frame: pd.DataFrame, labelled: np.ndarray, release: Release, candidate: Version) -> dict[str, int]:
    """How many events the release has seen (live: since it started; this step), how many of the
    pairs it is judged on are labelled (prequential ones included), and how many of those the
    candidate served itself during the current step (what a step needs before the next one)."""
    step_start = release.step_started_at or release.started_at
    in_step = ((frame["time"] >= pd.Timestamp(step_start)).to_numpy() if len(frame) else np.zeros(0, bool)) & labelled
    served_by_candidate = frame["served_version"].to_numpy() == candidate.number if len(frame) else in_step
    live = (frame["time"] >= pd.Timestamp(release.started_at)).to_numpy() if len(frame) else labelled
    in_step_events = (frame["time"] >= pd.Timestamp(step_start)).to_numpy() if len(frame) else labelled
    return {
        "events": int(live.sum()),
        "events_this_step": int(in_step_events.sum()),
        "labelled": int(labelled.sum()),
        "served_labelled_this_step": int((in_step & served_by_candidate).sum()),
        "served_events": int(served_by_candidate.sum()) if len(frame) else 0,
    }


@dataclass(frozen=True)
class _Look:
    """What one look at a running release saw, and what every way of acting on it needs."""

    ctx: AgentContext
    session: Session
    state: LoopState
    model: ManagedModel
    release: Release
    candidate: Version
    champion: Version
    now: datetime
    evidence: ReleaseEvidence
    counts: dict[str, int]
    elapsed: timedelta
    #: The evidence and time the release needs, derived from the stream's rates where auto.
    plan: ReleasePlan
    #: New labels that make a challenger due (None: the policy keeps none).
    challenger_every: int | None
    #: The decision's evidence: the release's position, the counts and the tests' results.
    details: dict[str, Any]

    @property
    def ahead_suffices(self) -> bool:
        """The policy promotes a candidate ahead and not shown worse (``promote_when: ahead``)."""
        return self.ctx.policy.policy.release.promote_when == "ahead"

    @property
    def now_iso(self) -> str:
        return self.state["now"]

    @property
    def where(self) -> str:
        return "shadow" if self.release.phase == "shadow" else f"canary at {self.release.share:.0%}"

    @property
    def scores(self) -> str:
        """The overall test's result, as a rationale's clause."""
        overall = self.evidence.overall
        if not overall.n:
            return "no labelled events yet"
        return (
            f"on {overall.n} labelled events both answered it scored {overall.candidate_score} balanced accuracy "
            f"where champion version {self.champion.number} scored {overall.champion_score} ({overall.wins} wins, "
            f"{overall.losses} losses; log evidence {overall.log_evidence} against {overall.threshold})"
        )


def canary_judge(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait for release evidence (durably); then step up, promote or roll back.

    The wait is a LangGraph ``interrupt``: nothing happens before it, since this code runs
    again from the top when the loop resumes the run with the current time.
    """
    resumed = interrupt({"waiting_for": "canary_evidence", "release_id": state["release_id"]})
    now_iso = resumed["now"]
    looked: LoopState = {**state, "now": now_iso}
    ctx = runtime.context
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        candidate = versions.get_version(
            session=session, model_id=model.id, number=_given(state.get("candidate"), "candidate")
        )
        release = releases.get_release(session=session, release_id=_given(state.get("release_id"), "release"))
        if release.ended_at is not None:
            return _already_ended(session, looked, model, release, candidate)
        look = _look(ctx, session, looked, model, release, candidate)
        move = _next_move(ctx.policy.policy.release, look)
        if move == "wait":
            return {"now": now_iso, "outcome": "waiting_for_evidence"}
        if move == "step":
            return _step(look)
        if move == "promote":
            return _promote(look)
        return _roll_back(look, move)


def _already_ended(
    session: Session, state: LoopState, model: ManagedModel, release: Release, candidate: Version
) -> dict[str, Any]:
    """Ended while this run waited, by a manual rollback: acting now would undo it."""
    assert release.ended_at is not None  # the caller's condition
    decision = record(
        session,
        state,
        model,
        agent="release_manager",
        action="judge_canary",
        outcome="already_ended",
        rationale=(
            f"The release of version {candidate.number} ended at {release.ended_at:%Y-%m-%d %H:%M} UTC "
            f"({release.verdict}) before it was judged; nothing more to do."
        ),
        evidence={"release": release.id},
    )
    return {"now": state["now"], "outcome": "already_ended", "last_decision": decision.id}


def _look(
    ctx: AgentContext, session: Session, state: LoopState, model: ManagedModel, release: Release, candidate: Version
) -> _Look:
    """Gather the release's evidence at the state's time."""
    now = now_of(state)
    baseline = release.baseline_version_id
    if baseline is None:
        raise ValueError(f"release {release.id} has no champion to compare version {candidate.number} with")
    champion = versions.get_version_by_id(session=session, version_id=baseline)
    slice_columns = managed.model_schema(model).slice_columns
    evidence, counts = gather_evidence(ctx, session, release, candidate, champion, now, slice_columns)
    elapsed = now - release.started_at
    if release.id not in ctx.release_plans:
        rates = stream_rates(session, model.id, now)
        every = derive_training(ctx.policy.policy.training, rates).challenger_every_labels
        ctx.release_plans[release.id] = (derive_release(ctx.policy.policy.release, rates), every)
    plan, challenger_every = ctx.release_plans[release.id]
    details = {
        "release": release.id,
        "phase": release.phase,
        "share": release.share,
        "hours": round(elapsed.total_seconds() / 3600, 2),
        **counts,
        **evidence.as_dict(),
        "plan": plan.as_dict(),
    }
    return _Look(
        ctx=ctx,
        session=session,
        state=state,
        model=model,
        release=release,
        candidate=candidate,
        champion=champion,
        now=now,
        evidence=evidence,
        counts=counts,
        elapsed=elapsed,
        plan=plan,
        challenger_every=challenger_every,
        details=details,
    )


def _next_move(rules: ReleaseRules, look: _Look) -> Move:
    """What the evidence leads to under the release rules: a failed guard or a candidate shown
    worse (overall or on a slice) rolls back; time up expires, as does a candidate ahead on
    nothing (futile) or not shown before a newer one is due (superseded); otherwise the release
    steps up once the current step has its evidence, and is promoted once shown better after the
    last (once ahead and not shown worse, under the policy's ``promote_when: ahead``)."""
    verdict, counts, release = look.evidence.verdict, look.counts, look.release
    if verdict in ("guard_failed", "worse", "worse_on_slice"):
        return "roll_back"
    plan = look.plan
    if look.elapsed >= timedelta(hours=plan.max_canary_hours):
        return "expire"
    if _futile(look.evidence.overall, plan):
        return "futile"
    # Shown better (on the prequential events, or on the pairs of the shadow and the steps so
    # far), or where the policy asks no more, ahead on them and not shown worse:
    # the labels have said what they must, so the shadow and each step need only the label-free
    # guards' evidence, which is what serving more of the traffic can still reveal (the guards,
    # the slice tests and alpha still judge every look).
    overall = look.evidence.overall
    ahead = look.ahead_suffices and overall.n >= plan.min_canary_samples and _ahead(overall)
    shown = verdict == "better" or ahead
    # A challenger not shown while as many labels came in as make the next one due: a candidate
    # trained on them would know more of today's world; it gives way (the Monitor decides at its
    # next check). A retrain's candidate answers a finding: it has its release's time.
    every = look.challenger_every if look.state.get("challenge") else None
    if not shown and every is not None and counts["labelled"] - counts["prequential"] >= every:
        return "superseded"
    if look.evidence.held_guards:
        return "wait"  # the labels and the stand-in guards disagree: neither steps nor ends it
    if release.phase == "shadow":
        ready = (
            (shown or counts["labelled"] >= plan.min_shadow_samples)
            and counts["events"] >= rules.guards.min_events
            and (rules.shadow_until == "samples" or shown)
        )
        return "step" if ready else "wait"
    if shown:
        if counts["events_this_step"] < rules.guards.min_events:
            return "wait"
    elif counts["served_labelled_this_step"] < plan.min_step_samples:
        return "wait"
    if release.step + 1 < len(release.plan):
        return "step"
    if not shown or look.evidence.overall.n < plan.min_canary_samples:
        return "wait"
    return "promote"


def _ahead(overall: PairedVerdict) -> bool:
    """Not shown worse, and behind on neither measure on the labelled pairs (there being some):
    no lower balanced accuracy, and right where the champion was wrong at least as often as the
    reverse. (A candidate that buys one with the other, as a propensity model's often do, is not
    ahead: only the sequential test can say it is better.)"""
    if overall.verdict == "worse" or overall.candidate_score is None or overall.champion_score is None:
        return False
    return overall.candidate_score >= overall.champion_score and overall.wins >= overall.losses


def _futile(overall: PairedVerdict, plan: ReleasePlan) -> bool:
    """Whether a release is not worth going on with: on a shadow's worth of labelled pairs (the
    prequential ones count) the candidate is ahead neither in accuracy (no more events right
    where the champion was wrong than the reverse) nor in balanced accuracy. A candidate truly
    better is ahead by then far more often than not; one that is not would hold the loop in a
    release, unable to train anything better, until its time ran out (three days on a fleet whose
    labels come slowly)."""
    if overall.verdict != "undecided" or overall.n < plan.min_shadow_samples:
        return False
    if overall.wins + overall.losses < FUTILITY_DISCORDANT:
        return False  # the labelled events hardly tell the two apart yet: nothing says either is ahead
    return overall.wins <= overall.losses and (overall.candidate_score or 0.0) <= (overall.champion_score or 0.0)


def _may_roll_back(look: _Look) -> PolicyVerdict:
    """The policy's verdict on rolling back (a rollback is always allowed; it is logged)."""
    usage = usage_today(look.session, look.model, look.now)
    return look.ctx.policy.check("rollback", RollbackFacts(), usage, at=look.now)


def _roll_back(look: _Look, move: Literal["roll_back", "expire", "futile", "superseded"]) -> dict[str, Any]:
    """End the release with the champion kept, saying why."""
    evidence, where = look.evidence, look.where
    verdict = evidence.verdict
    if move == "expire":
        why = f"not shown better within {look.plan.max_canary_hours:g} hours ({look.scores})"
        return _end(look, "inconclusive", why, False, _may_roll_back(look))
    if move == "futile":
        why = (
            f"ahead neither in accuracy nor in balanced accuracy after the {look.plan.min_shadow_samples} "
            f"labelled events a shadow needs, in {where} ({look.scores})"
        )
        return _end(look, "inconclusive", why, False, _may_roll_back(look))
    if move == "superseded":
        live = look.counts["labelled"] - look.counts["prequential"]
        why = (
            f"neither shown better nor ahead on the {live} labels that arrived since it was released, as many as make "
            f"a challenger due ({look.challenger_every}): a newer candidate may take its place ({look.scores})"
        )
        return _end(look, "inconclusive", why, False, _may_roll_back(look))
    if verdict == "guard_failed":
        failed = "; ".join(g.reason for g in evidence.failed_guards)
        why = f"a label-free guard failed in {where}: {failed}"
    elif verdict == "worse":
        why = f"shown worse in {where}: {look.scores}"
    else:
        worst = evidence.worse_slices
        why = f"shown worse on {', '.join(worst)} in {where} ({'; '.join(_slice_sentence(evidence, s) for s in worst)})"
    return _end(look, verdict, why, False, _may_roll_back(look))


def _slice_sentence(evidence: ReleaseEvidence, name: str) -> str:
    test = evidence.slices[name]
    return f"{name}: {test.candidate_score} against {test.champion_score} on {test.n} labelled events"


def _may_promote(look: _Look) -> PolicyVerdict:
    """The policy's verdict on promoting the candidate, on the release's evidence."""
    overall = look.evidence.overall
    facts = PromoteFacts(
        canary_samples=overall.n,
        canary_score=overall.candidate_score,
        control_score=overall.champion_score,
        sequential_verdict=overall.verdict,
        worse_slices=len(look.evidence.worse_slices),
        min_canary_samples=look.plan.min_canary_samples,
    )
    return look.ctx.policy.check("promote", facts, usage_today(look.session, look.model, look.now), at=look.now)


def _shown(look: _Look) -> str:
    if look.evidence.verdict == "better":
        return "shown better"
    return "ahead of the champion on the labelled events and shown worse by nothing"


def _promote(look: _Look) -> dict[str, Any]:
    """Promote the candidate shown better after the last step, through the policy (and a person
    at autonomy L3)."""
    verdict = _may_promote(look)
    if verdict.allowed and verdict.needs_approval:
        approval, waiting = _approval(
            look.ctx,
            look.session,
            look.state,
            look.model,
            "promote",
            {"version": look.candidate.number, "release": look.release.id, "champion": look.champion.number},
            f"Promote version {look.candidate.number}, shown better after {look.where}; the policy's autonomy L3 "
            "asks a person first",
            [verdict],
        )
        if waiting:
            # The release goes on at its last step meanwhile; its guards still watch.
            return {"now": look.now_iso, "outcome": "waiting_for_evidence"}
        given = [approvals.as_dict(approval)]
        if approval.status == "approved":
            why = f"{_shown(look)} after {look.where} ({look.scores}); {_answer(approval)}"
            return _end(look, "promoted", why, True, verdict, given)
        return _end(look, f"approval_{approval.status}", _answer(approval), False, verdict, given)
    if verdict.allowed:
        return _end(look, "promoted", f"{_shown(look)} after {look.where}: {look.scores}", True, verdict)
    if any(v.rule == "change_calendar" and not v.passed for v in verdict.verdicts):
        # Outside a change window or in a freeze: keep the canary at its step and ask again later.
        return {"now": look.now_iso, "outcome": "waiting_for_evidence"}
    return _end(look, "denied", "; ".join(verdict.reasons), False, verdict)


def _end(
    look: _Look,
    outcome: str,
    why: str,
    promote: bool,
    verdict: PolicyVerdict,
    given: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """End the release: the candidate promoted, or rolled back with the champion serving
    everyone again (``outcome`` is then the release's verdict), logging the policy's ``verdict``
    on that action and the approvals ``given``."""
    look.ctx.release_answers.pop(look.release.id, None)
    look.ctx.release_plans.pop(look.release.id, None)
    candidate, champion = look.candidate, look.champion
    rationale = (
        f"Version {candidate.number} promoted to champion: {why}."
        if promote
        else f"Version {candidate.number} rolled back; champion version {champion.number} serves everyone again: {why}."
    )
    releases.end_release(
        session=look.session,
        release_id=look.release.id,
        ended_at=look.now,
        verdict="promoted" if promote else outcome,
        evidence=look.details,
        promote=promote,
        run_id=look.state["run_id"],
        reason=rationale,
    )
    decision = record(
        look.session,
        look.state,
        look.model,
        agent="release_manager",
        action="promote" if promote else "rollback",
        outcome="promoted" if promote else "rolled_back",
        rationale=rationale,
        evidence=look.details,
        verdicts=[verdict],
        approvals=given,
    )
    return {"now": look.now_iso, "outcome": "promoted" if promote else "rolled_back", "last_decision": decision.id}


def _step(look: _Look) -> dict[str, Any]:
    """Move the release to its plan's next share, through the policy."""
    release, candidate = look.release, look.candidate
    share = release.plan[release.step + 1]
    verdict = _may_serve(look.ctx, look.session, look.state, look.model, share, look.now)
    if not verdict.allowed:
        # Stepping up is refused (e.g. a policy changed to smaller shares): keep the step and wait.
        return {"now": look.now_iso, "outcome": "waiting_for_evidence"}
    came_from = "shadow" if release.phase == "shadow" else f"{release.share:.0%}"
    shown = "shown better" if look.evidence.verdict == "better" else "not shown worse"
    rationale = (
        f"Version {candidate.number} steps up from {came_from} to serve {share:.0%} of cohorts: no guard failed "
        f"and it was {shown} ({look.scores})."
    )
    releases.step_release(
        session=look.session, release_id=release.id, at=look.now, run_id=look.state["run_id"], reason=rationale
    )
    decision = record(
        look.session,
        look.state,
        look.model,
        agent="release_manager",
        action="start_canary",
        outcome="canary_step",
        rationale=rationale,
        evidence=look.details | {"next_share": share},
        verdicts=[verdict],
    )
    return {"now": look.now_iso, "outcome": "waiting_for_evidence", "last_decision": decision.id}


def after_canary(state: LoopState) -> Literal["canary_judge", "__end__"]:
    return "canary_judge" if state.get("outcome") == "waiting_for_evidence" else "__end__"
