"""Release Manager: shadow, canary steps over cohorts, then promotion or rollback on evidence.

A release follows the policy's plan (``release`` section): the candidate first answers in shadow
beside the champion, then serves growing shares of cohorts (hashed entity ids or groups), each
step needing its own labelled evidence. At every look (the loop resumes the waiting run every
hour) both versions answer every event since the release started, and:

- label-free guards (errors, disagreement, a confidence-based accuracy estimate, latency) stop
  the release at once when one fails;
- an always-valid sequential test on the labelled events, overall and per slice, rolls back a
  candidate shown worse (anywhere) and lets one shown better be promoted after the last step;
- a release still undecided after ``max_canary_hours`` ends with the champion kept.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt

from driftpilot.agents.context import AgentContext, now_of, record, usage_today
from driftpilot.agents.state import LoopState
from driftpilot.memory import approvals, decisions, events, managed, releases, versions
from driftpilot.memory.tables import Release, Version
from driftpilot.policies.schema import Release as ReleaseRules
from driftpilot.tools.canary import ReleaseEvidence, label_free_guards, release_evidence
from driftpilot.tools.diagnosis import SLICE_COLUMNS
from driftpilot.tools.evaluation import slice_masks

#: Outcomes of a release's first decision: shadow first, or straight to a canary step.
RELEASE_STARTS = ("shadow_started", "canary_started")


def _may_serve(ctx: AgentContext, session: Any, state: Any, model: Any, share: float, now: datetime) -> Any:
    """The policy's answer to "may the candidate serve ``share`` of cohorts now?", on the facts the
    Trainer's gate judged: asked again at every step, since the policy (or today's usage) may have
    changed while the candidate waited."""
    facts = dict((state.get("evaluation") or {}).get("gate_facts") or {}) | {"share": share}
    return ctx.policy.check("start_canary", facts, usage_today(session, model, now), at=now)


def release_manager(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Start the release: the candidate in shadow (or at the plan's first canary share)."""
    ctx = runtime.context
    rules = ctx.policy.policy.release
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        champion = versions.champion(session=session, model_id=model.id)
        candidate = versions.get_version(session=session, model_id=model.id, number=state["candidate"])
        first_share = 0.0 if rules.shadow else rules.steps[0]
        started = releases.release_started_by(session=session, model_id=model.id, run_id=state["run_id"])
        if started is not None:
            # Resumed after a crash that came after the release started: start nothing twice.
            return _started_before(ctx, session, state, model, started, candidate)
        verdict = _may_serve(ctx, session, state, model, rules.steps[0], now)
        given: list[dict[str, Any]] = []
        if verdict.allowed and verdict.needs_approval:
            approval, waiting = _approval(
                ctx,
                session,
                state,
                model,
                "start_canary",
                {"version": candidate.number, "champion": champion.number if champion else None},
                f"Start the release of version {candidate.number} "
                f"({'shadow' if rules.shadow else f'{first_share:.0%}'} first); "
                "the policy's autonomy L3 asks a person first",
                [verdict],
            )
            if waiting:
                return {"release_id": None, "approval_id": approval.id, "outcome": "waiting_for_approval"}
            given = [approvals.as_dict(approval)]
            if approval.status != "approved":
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
                return {"release_id": None, "outcome": f"approval_{approval.status}", "last_decision": decision.id}
        if not verdict.allowed:
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
        plan = " → ".join(f"{s:.0%}" for s in [*rules.steps, 1.0])
        shadow_part = (
            ("shadow (until shown better) → " if rules.shadow_until == "better" else "shadow → ")
            if rules.shadow
            else ""
        )
        opening = (
            f"Version {candidate.number} answers in shadow beside champion version "
            f"{champion.number if champion else '-'}: nothing it says is served"
            if rules.shadow
            else f"Version {candidate.number} serves {first_share:.0%} of cohorts"
        )
        rationale = (
            f"{opening}. Plan: {shadow_part}{plan}, cohorts by hashed {rules.cohort} id; "
            f"each step needs {rules.min_step_samples} labelled events it served, promotion needs the "
            f"candidate shown better at alpha {rules.alpha:g} on at least {rules.min_canary_samples} labelled events."
        )
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


def _started_before(
    ctx: AgentContext, session: Any, state: Any, model: Any, release: Release, candidate: Version
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


def _answer(approval: Any) -> str:
    if approval.status == "expired":
        return f"nobody answered the approval request {approval.id} in time"
    comment = f" ({approval.comment})" if approval.comment else ""
    return f"{approval.decided_by} {approval.status} it{comment}"


def _approval(
    ctx: AgentContext,
    session: Any,
    state: Any,
    model: Any,
    action: str,
    subject: dict[str, Any],
    reason: str,
    verdicts: list[Any],
) -> tuple[Any, bool]:
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


def _still_open(ctx: AgentContext, approval: Any, now: datetime) -> bool:
    """Whether the request still waits for an answer at ``now`` (pending, not yet timed out)."""
    waited = now.replace(tzinfo=None) - approval.requested_at.replace(tzinfo=None)
    return approval.status == "pending" and waited < timedelta(hours=ctx.policy.policy.changes.approval_timeout_hours)


def approval_gate(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait (durably) for a person's answer to the release's approval request."""
    resumed = interrupt({"waiting_for": "approval", "approval_id": state["approval_id"]})
    now_iso = resumed["now"]
    with runtime.context.sessions() as session:
        approval = approvals.get_approval(session=session, approval_id=state["approval_id"])
        if _still_open(runtime.context, approval, datetime.fromisoformat(now_iso)):
            return {"now": now_iso, "outcome": "waiting_for_approval"}
    # Answered (or timed out): the Release Manager acts on it, asking the policy again.
    return {"now": now_iso, "outcome": "approval_answered"}


def after_approval(state: LoopState) -> Literal["approval_gate", "release_manager"]:
    return "approval_gate" if state.get("outcome") == "waiting_for_approval" else "release_manager"


def _answers(model: Any, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A version's answers and top-class probabilities on ``frame``; None where it failed to
    answer (non-finite output, or every row if it raised), counted as errors by the guards."""
    if frame.empty:
        return np.array([], dtype=object), np.array([])
    try:
        probabilities = np.asarray(model.predict_proba(frame), dtype=float)
    except Exception:  # noqa: BLE001 - any failure of a candidate is evidence against it, not a crash
        return np.full(len(frame), None, dtype=object), np.zeros(len(frame))
    ok = np.isfinite(probabilities).all(axis=1)
    answers = np.asarray(model.classes, dtype=object)[np.nan_to_num(probabilities).argmax(axis=1)]
    return np.where(ok, answers, None), np.where(ok, probabilities.max(axis=1, initial=0.0), 0.0)


#: Rows and repeats of the latency measurement: the best of a few runs on the same rows, taken
#: in turns, so that a busy machine slows both versions alike and a pause hits neither's best.
LATENCY_ROWS, LATENCY_REPEATS = 256, 5


def _latencies(candidate: Any, champion: Any, frame: pd.DataFrame) -> tuple[float, float]:
    rows = frame.iloc[:LATENCY_ROWS]
    best = [float("inf"), float("inf")]
    if rows.empty:
        return 0.0, 0.0
    for _ in range(LATENCY_REPEATS):
        for i, model in enumerate((candidate, champion)):
            start = time.perf_counter()
            try:
                model.predict_proba(rows)
            except Exception:  # noqa: BLE001 - counted as errors by _answers
                return 0.0, 0.0
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def _answers_since_start(
    ctx: AgentContext, session: Any, release: Release, candidate: Any, champion: Any, ids: np.ndarray
) -> tuple[pd.DataFrame, tuple[float, float]]:
    """Both versions' answers (and top probabilities, and the slice columns) on the events
    ``ids``, with the latest latency measurement. Answers are kept in the context per release:
    each look predicts only the events that arrived since the last one."""
    cached, latency = ctx.release_answers.get(release.id, (None, (0.0, 0.0)))
    known = cached.index if cached is not None else pd.Index([])
    new_ids = [int(i) for i in ids if i not in known]
    if new_ids:
        rows = events.events_by_ids(session=session, ids=new_ids)
        cand_answers, cand_conf = _answers(candidate, rows)
        champ_answers, champ_conf = _answers(champion, rows)
        fresh = pd.DataFrame(
            {
                "candidate": cand_answers,
                "champion": champ_answers,
                "candidate_confidence": cand_conf,
                "champion_confidence": champ_conf,
                **{
                    c: np.where(rows[c].notna().to_numpy(), rows[c].astype(str).to_numpy(), None)
                    for c in SLICE_COLUMNS
                    if c in rows
                },
            },
            index=pd.Index(rows["id"].astype(int), name="id"),
        )
        latency = _latencies(candidate, champion, rows)
        cached = fresh if cached is None else pd.concat([cached, fresh])
        ctx.release_answers[release.id] = (cached, latency)
    if cached is None:
        return pd.DataFrame(columns=["candidate", "champion", "candidate_confidence", "champion_confidence"]), latency
    return cached.reindex(pd.Index(ids, name="id")), latency


def gather_evidence(
    ctx: AgentContext, session: Any, release: Release, candidate: Version, champion: Version, now: datetime
) -> tuple[ReleaseEvidence, dict[str, int]]:
    """Both versions' answers on every event since the release started, judged."""
    rules: ReleaseRules = ctx.policy.policy.release
    # Ids, times, served versions and the labels visible now: features only for new events.
    frame = events.window(
        session=session,
        model_id=release.model_id,
        start=release.started_at,
        end=now,
        visible_at=now,
        with_features=False,
    )
    ids = frame["id"].to_numpy(dtype=int) if len(frame) else np.zeros(0, dtype=int)
    answers, (cand_seconds, champ_seconds) = _answers_since_start(
        ctx, session, release, ctx.registry.load(candidate), ctx.registry.load(champion), ids
    )
    cand_answers = answers["candidate"].to_numpy(dtype=object)
    champ_answers = answers["champion"].to_numpy(dtype=object)
    answered = np.array([a is not None for a in cand_answers], dtype=bool)
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
    truth = frame["label"].to_numpy()[labelled].astype(str) if len(frame) else np.array([], dtype=str)
    evidence = release_evidence(
        truth,
        cand_answers[labelled].astype(str),
        champ_answers[labelled].astype(str),
        slices={k: v[labelled] for k, v in slice_masks(answers, SLICE_COLUMNS).items()},
        guards=guards,
        alpha=rules.alpha,
        max_slices=rules.max_slices,
    )
    step_start = release.step_started_at or release.started_at
    in_step = ((frame["time"] >= pd.Timestamp(step_start)).to_numpy() if len(frame) else np.zeros(0, bool)) & labelled
    served_by_candidate = frame["served_version"].to_numpy() == candidate.number if len(frame) else in_step
    counts = {
        "events": int(len(frame)),
        "labelled": int(labelled.sum()),
        "served_labelled_this_step": int((in_step & served_by_candidate).sum()),
        "served_events": int(served_by_candidate.sum()) if len(frame) else 0,
    }
    return evidence, counts


def canary_judge(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait for release evidence (durably); then step up, promote or roll back.

    The wait is a LangGraph ``interrupt``: nothing happens before it, since this code runs
    again from the top when the loop resumes the run with the current time.
    """
    resumed = interrupt({"waiting_for": "canary_evidence", "release_id": state["release_id"]})
    now_iso = resumed["now"]
    now = datetime.fromisoformat(now_iso)
    state = {**state, "now": now_iso}
    ctx = runtime.context
    rules = ctx.policy.policy.release
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        candidate = versions.get_version(session=session, model_id=model.id, number=state["candidate"])
        release = releases.get_release(session=session, release_id=state["release_id"])
        if release.ended_at is not None:
            # Ended while this run waited, by a manual rollback: acting now would undo it.
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
            return {"now": now_iso, "outcome": "already_ended", "last_decision": decision.id}
        champion = versions.get_version_by_id(session=session, version_id=release.baseline_version_id)
        evidence, counts = gather_evidence(ctx, session, release, candidate, champion, now)
        elapsed = now.replace(tzinfo=None) - release.started_at.replace(tzinfo=None)
        where = "shadow" if release.phase == "shadow" else f"canary at {release.share:.0%}"
        details = {
            "release": release.id,
            "phase": release.phase,
            "share": release.share,
            "hours": round(elapsed.total_seconds() / 3600, 2),
            **counts,
            **evidence.as_dict(),
        }
        overall = evidence.overall
        verdict = evidence.verdict

        def end(
            outcome: str, why: str, promote: bool, verdicts: list[Any], given: list[dict[str, Any]] | None = None
        ) -> dict[str, Any]:
            ctx.release_answers.pop(release.id, None)
            rationale = (
                f"Version {candidate.number} promoted to champion: {why}."
                if promote
                else f"Version {candidate.number} rolled back; champion version {champion.number} serves everyone "
                f"again: {why}."
            )
            releases.end_release(
                session=session,
                release_id=release.id,
                ended_at=now,
                verdict="promoted" if promote else outcome,
                evidence=details,
                promote=promote,
                run_id=state["run_id"],
                reason=rationale,
            )
            decision = record(
                session,
                state,
                model,
                agent="release_manager",
                action="promote" if promote else "rollback",
                outcome="promoted" if promote else "rolled_back",
                rationale=rationale,
                evidence=details,
                verdicts=verdicts,
                approvals=given,
            )
            return {"now": now_iso, "outcome": "promoted" if promote else "rolled_back", "last_decision": decision.id}

        scores = (
            f"on {overall.n} labelled events both answered it scored {overall.candidate_score} balanced accuracy "
            f"where champion version {champion.number} scored {overall.champion_score} ({overall.wins} wins, "
            f"{overall.losses} losses; log evidence {overall.log_evidence} against {overall.threshold})"
            if overall.n
            else "no labelled events yet"
        )
        if verdict in ("guard_failed", "worse", "worse_on_slice"):
            rollback = ctx.policy.check("rollback", {}, usage_today(session, model, now), at=now)
            if verdict == "guard_failed":
                failed = "; ".join(g.reason for g in evidence.failed_guards)
                why = f"a label-free guard failed in {where}: {failed}"
            elif verdict == "worse":
                why = f"shown worse in {where}: {scores}"
            else:
                worst = evidence.worse_slices
                why = (
                    f"shown worse on {', '.join(worst)} in {where} "
                    f"({'; '.join(_slice_sentence(evidence, s) for s in worst)})"
                )
            return end(verdict, why, False, [rollback])
        if elapsed >= timedelta(hours=rules.max_canary_hours):
            rollback = ctx.policy.check("rollback", {}, usage_today(session, model, now), at=now)
            why = f"not shown better within {rules.max_canary_hours:g} hours ({scores})"
            return end("inconclusive", why, False, [rollback])

        if release.phase == "shadow":
            ready = (
                counts["labelled"] >= rules.min_shadow_samples
                and counts["events"] >= rules.guards.min_events
                and (rules.shadow_until == "samples" or verdict == "better")
            )
            if not ready:
                return {"now": now_iso, "outcome": "waiting_for_evidence"}
            return _step(ctx, session, state, model, release, candidate, details, scores, now_iso)
        if counts["served_labelled_this_step"] < rules.min_step_samples:
            return {"now": now_iso, "outcome": "waiting_for_evidence"}
        if release.step + 1 < len(release.plan):
            return _step(ctx, session, state, model, release, candidate, details, scores, now_iso)
        if verdict != "better" or overall.n < rules.min_canary_samples:
            return {"now": now_iso, "outcome": "waiting_for_evidence"}
        promote = ctx.policy.check(
            "promote",
            {
                "canary_samples": overall.n,
                "canary_score": overall.candidate_score,
                "control_score": overall.champion_score,
                "sequential_verdict": overall.verdict,
                "worse_slices": len(evidence.worse_slices),
            },
            usage_today(session, model, now),
            at=now,
        )
        if promote.allowed and promote.needs_approval:
            approval, waiting = _approval(
                ctx,
                session,
                state,
                model,
                "promote",
                {"version": candidate.number, "release": release.id, "champion": champion.number},
                f"Promote version {candidate.number}, shown better after {where}; the policy's autonomy L3 asks "
                "a person first",
                [promote],
            )
            if waiting:
                # The release goes on at its last step meanwhile; its guards still watch.
                return {"now": now_iso, "outcome": "waiting_for_evidence"}
            given = [approvals.as_dict(approval)]
            if approval.status == "approved":
                return end(
                    "promoted", f"shown better after {where} ({scores}); {_answer(approval)}", True, [promote], given
                )
            return end(f"approval_{approval.status}", _answer(approval), False, [promote], given)
        if promote.allowed:
            return end("promoted", f"shown better after {where}: {scores}", True, [promote])
        if any(v.rule == "change_calendar" and not v.passed for v in promote.verdicts):
            # Outside a change window or in a freeze: keep the canary at its step and ask again later.
            return {"now": now_iso, "outcome": "waiting_for_evidence"}
        return end("denied", "; ".join(promote.reasons), False, [promote])


def _slice_sentence(evidence: ReleaseEvidence, name: str) -> str:
    test = evidence.slices[name]
    return f"{name}: {test.candidate_score} against {test.champion_score} on {test.n} labelled events"


def _step(
    ctx: AgentContext,
    session: Any,
    state: dict[str, Any],
    model: Any,
    release: Release,
    candidate: Version,
    details: dict[str, Any],
    scores: str,
    now_iso: str,
) -> dict[str, Any]:
    """Move the release to its plan's next share, through the policy."""
    now = datetime.fromisoformat(now_iso)
    share = release.plan[release.step + 1]
    verdict = _may_serve(ctx, session, state, model, share, now)
    if not verdict.allowed:
        # Stepping up is refused (e.g. a policy changed to smaller shares): keep the step and wait.
        return {"now": now_iso, "outcome": "waiting_for_evidence"}
    came_from = "shadow" if release.phase == "shadow" else f"{release.share:.0%}"
    rationale = (
        f"Version {candidate.number} steps up from {came_from} to serve {share:.0%} of cohorts: no guard failed "
        f"and it was {'shown better' if details['verdict'] == 'better' else 'not shown worse'} ({scores})."
    )
    releases.step_release(session=session, release_id=release.id, at=now, run_id=state["run_id"], reason=rationale)
    decision = record(
        session,
        state,
        model,
        agent="release_manager",
        action="start_canary",
        outcome="canary_step",
        rationale=rationale,
        evidence=details | {"next_share": share},
        verdicts=[verdict],
    )
    return {"now": now_iso, "outcome": "waiting_for_evidence", "last_decision": decision.id}


def after_canary(state: LoopState) -> Literal["canary_judge", "__end__"]:
    return "canary_judge" if state.get("outcome") == "waiting_for_evidence" else "__end__"
