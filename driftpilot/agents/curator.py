"""Data Curator: the labelled data a retrain learns from, or the labels it still needs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd
from langgraph.runtime import Runtime
from langgraph.types import interrupt
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, now_of, record, stream_rates, usage_today
from driftpilot.agents.curation import (
    chosen_for_labels,
    cleaned,
    cleaning_evidence,
    cleaning_sentence,
    keep_out,
    pseudo_labelled,
)
from driftpilot.agents.state import LoopState
from driftpilot.memory import decisions, events, label_requests, managed, snapshots, versions
from driftpilot.memory.db import one_transaction
from driftpilot.memory.tables import ManagedModel, Version
from driftpilot.memory.times import to_utc
from driftpilot.policies import RequestLabelsFacts
from driftpilot.policies.auto import TrainingPlan, derive_training
from driftpilot.tools.cleaning import CleaningReport
from driftpilot.tools.curation import curate_training_set, monitoring_sample

#: Unlabelled recent events looked at when choosing what to ask people to label.
CANDIDATES_FOR_LABELS = 5000


def curator(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Snapshot the recent labelled events (with a replay of older ones) for a retrain, or ask
    people for the labels still missing."""
    ctx = runtime.context
    training = ctx.policy.policy.training
    now = now_of(state)
    federated = (state.get("trigger") or {}).get("kind") == "federated"
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        done = decisions.run_decision(
            session=session, model_id=model.id, run_id=state["run_id"], agent="curator", action="curate"
        )
        if done is not None:
            # Resumed after a crash: the snapshot this run made stands (snapshots are immutable).
            return {"snapshot_id": int(done.evidence["snapshot"]), "outcome": "snapshot", "last_decision": done.id}
        plan = derive_training(training, stream_rates(session, model.id, now))
        since = now - timedelta(hours=plan.recent_hours)
        champion = versions.champion(session=session, model_id=model.id)
        recent = events.window(
            session=session,
            model_id=model.id,
            start=since,
            end=now,
            visible_at=now,
            labelled_only=True,
            corpus_only=True,
            limit=training.max_recent,
            exclude_quarantined=ctx.policy.policy.data.exclude_quarantined,
        )
        report = None
        if len(recent) >= plan.min_training_labels:
            # Cleaned before it is counted: what cleaning keeps out is no label to learn from.
            recent, report = cleaned(session, model, recent, ctx.policy.policy, ctx.seed)
        if len(recent) < plan.min_training_labels and (state.get("challenge") or federated):
            # A challenger (or a federated training, whose nodes hold the rows it learns from)
            # makes do with the labels there are; nobody is asked for more on its behalf.
            decision = record(
                session,
                state,
                model,
                agent="curator",
                action="curate",
                outcome="not_enough_labels",
                rationale=f"No {'federated training' if federated else 'challenger'}: {len(recent)} labelled "
                f"events in the last {plan.recent_hours:g} h, "
                f"{plan.min_training_labels} needed to judge its candidate; no labels are asked for it.",
                evidence={"labelled": len(recent), "needed": plan.min_training_labels, "plan": plan.as_dict()},
            )
            return {"outcome": "not_enough_labels", "last_decision": decision.id}
        if len(recent) < plan.min_training_labels:
            return _ask_for_labels(ctx, session, state, model, champion, recent, plan, now)
        return _snapshot(ctx, session, state, model, champion, recent, report, plan, now)


def _snapshot(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    champion: Version | None,
    recent: pd.DataFrame,
    report: CleaningReport | None,
    plan: TrainingPlan,
    now: datetime,
) -> dict[str, Any]:
    """Enough labels: the training snapshot, recent events (as cleaning left them, with
    pseudo-labels where the champion is sure) plus a class-balanced replay of what the champion
    learnt from, with the newest held out to judge the candidate."""
    training, policy = ctx.policy.policy.training, ctx.policy.policy
    # When the concept itself changed, older events teach the rule that no longer holds: none
    # are replayed (the old holdout still measures what the candidate gives up).
    diagnosis = state.get("diagnosis")
    changed = diagnosis is not None and diagnosis.get("cause") == "concept_drift"
    replay_share = 0.0 if changed else training.replay_share
    pool = held = pd.DataFrame(columns=["id", "time", "label"])
    if champion is not None and champion.snapshot_id is not None:
        pool, held = _replay_pool(session, champion.snapshot_id, now)
    curated = curate_training_set(
        recent, pool, max_recent=training.max_recent, replay_share=replay_share, held_out=held, seed=ctx.seed
    )
    scorer = ctx.registry.load(champion) if champion is not None and policy.data.pseudo_label_share > 0 else None
    window = _newest(session, model.id, now - timedelta(hours=plan.recent_hours), now) if scorer else recent
    # An event pseudo-labelled by an earlier snapshot may come back through the replay pool.
    taken = set(curated.train_ids) | set(curated.recent_holdout_ids) | set(curated.old_holdout_ids)
    window = window[~window["id"].isin(taken)]
    with one_transaction(session):
        pseudo, pseudo_evidence = pseudo_labelled(
            session, model, scorer, recent, window, policy, n_train=len(curated.train_ids), changed=changed, now=now
        )
        stats = dict(curated.stats) | {
            "recent_holdout_ids": curated.recent_holdout_ids,
            "old_holdout_ids": curated.old_holdout_ids,
            "pseudo": len(pseudo),
            "window_hours": plan.recent_hours,
            "plan": plan.as_dict(),
        }
        snapshot = snapshots.create_snapshot(
            session=session,
            model_id=model.id,
            event_ids=curated.train_ids + pseudo["id"].astype(int).tolist(),
            labels=curated.train_labels + pseudo["label"].astype(str).tolist(),
            time=now,
            stats=stats,
        )
        decision = record(
            session,
            state,
            model,
            agent="curator",
            action="curate",
            outcome="snapshot",
            rationale=_challenge_sentence(state.get("challenge"))
            + (
                "A federated training was asked for: this snapshot's holdouts judge its candidate. "
                if (state.get("trigger") or {}).get("kind") == "federated"
                else ""
            )
            + _snapshot_sentence(snapshot.id, curated.stats, plan, changed, len(curated.recent_holdout_ids))
            + cleaning_sentence(report)
            + (f" {len(pseudo)} pseudo-labels added." if len(pseudo) else ""),
            evidence={
                "snapshot": snapshot.id,
                "content_hash": snapshot.content_hash,
                **curated.stats,
                "cleaning": cleaning_evidence(report),
                "pseudo_labels": pseudo_evidence,
                "plan": plan.as_dict(),
            },
        )
        keep_out(session, model, report, decision.id, now)
    return {"snapshot_id": snapshot.id, "outcome": "snapshot", "last_decision": decision.id}


def _snapshot_sentence(snapshot_id: int, stats: dict[str, Any], plan: TrainingPlan, changed: bool, held: int) -> str:
    return (
        f"Snapshot {snapshot_id}: {stats['recent']} recent labelled events of the last "
        f"{plan.recent_hours:g} h plus {stats['replay']} replayed older ones "
        + (
            "(none: the concept changed, older events teach a rule that no longer holds)"
            if changed
            else "(class-balanced, against forgetting)"
        )
        + f"; {held} newest held out."
    )


def _newest(session: Session, model_id: int, since: datetime | None, now: datetime) -> pd.DataFrame:
    """The newest events of the window (at most ``CANDIDATES_FOR_LABELS``) still in the corpus:
    what pseudo-labels and label requests are chosen among."""
    return events.window(
        session=session,
        model_id=model_id,
        start=since,
        end=now,
        visible_at=now,
        limit=CANDIDATES_FOR_LABELS,
        corpus_only=True,
    )


def _challenge_sentence(challenge: dict[str, Any] | None) -> str:
    """Why a challenger is trained, as the rationale's first sentence ("" for a retrain)."""
    if not challenge:
        return ""
    return (
        f"A challenger is due: {challenge['new_labels']} labels arrived since the last training "
        f"({challenge['since']}), {challenge['every']} make one due. "
    )


def _replay_pool(session: Session, snapshot_id: int, now: datetime) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the champion learnt from (its snapshot: the replay pool) and what it was judged on
    but never trained on (its holdouts: where forgetting is measured, fairly to both models).

    Each generation's holdouts become the next one's old-concept holdout, so the events judged
    on stay out of training, and old concepts keep being measured on rows no model has seen.
    """
    pool = snapshots.snapshot_frame(session=session, snapshot_id=snapshot_id)
    stats = snapshots.get_snapshot(session=session, snapshot_id=snapshot_id).stats or {}
    ids = [int(i) for i in stats.get("recent_holdout_ids", []) + stats.get("old_holdout_ids", [])]
    held = pool.iloc[:0]
    if ids:
        judged = events.events_by_ids(session=session, ids=ids, visible_at=now)
        held = judged[judged["label"].notna()]
    return pool, held


def _ask_for_labels(
    ctx: AgentContext,
    session: Session,
    state: LoopState,
    model: ManagedModel,
    champion: Version | None,
    recent: pd.DataFrame,
    plan: TrainingPlan,
    now: datetime,
) -> dict[str, Any]:
    """Too few labels to retrain: ask people for the most uncertain recent events.

    Requests still open (for events of the window) count as labels on their way, so checks that
    come back before people answered do not ask again and spend the label budget twice.
    """
    pending, unlabelled = _open_and_unasked(session, model.id, now - timedelta(hours=plan.recent_hours), now)
    needed = max(0, plan.min_training_labels - len(recent) - len(pending))
    verdict = ctx.policy.check(
        "request_labels", RequestLabelsFacts(n_labels=needed), usage_today(session, model, now), at=now
    )
    asked = 0
    if needed and verdict.allowed and champion is not None and len(unlabelled):
        chosen, why = chosen_for_labels(
            ctx.registry.load(champion), unlabelled, recent, needed, diagnosis=state.get("diagnosis"), seed=ctx.seed
        )
        asked = label_requests.add_label_requests(
            session=session, model_id=model.id, event_ids=[int(i) for i in chosen["id"]], reasons=why, time=now
        )
    decision = record(
        session,
        state,
        model,
        agent="curator",
        action="request_labels",
        outcome="waiting_for_labels" if asked or pending else "not_enough_labels",
        rationale=(
            f"Only {len(recent)} labelled events in the last {plan.recent_hours:g} h, "
            f"{plan.min_training_labels} needed to retrain; "
            + (f"{len(pending)} requested earlier are still open; " if pending else "")
            + (
                f"asked people to label {asked} events chosen by active learning (uncertain, diverse, the "
                "drifted slice first; each request says why)."
                if asked
                else "no new labels requested" + ("" if verdict.allowed else ": " + "; ".join(verdict.reasons)) + "."
            )
        ),
        evidence={
            "labelled": len(recent),
            "pending": len(pending),
            "needed": needed,
            "asked": asked,
            "plan": plan.as_dict(),
        },
        verdicts=[verdict],
    )
    if not (asked or pending):
        return {"snapshot_id": None, "outcome": "not_enough_labels", "last_decision": decision.id}
    # The run waits (an interrupt, see label_gate) until the labels are in, or for so long.
    return {
        "snapshot_id": None,
        "outcome": "waiting_for_labels",
        "waiting_since": state.get("waiting_since") or now.isoformat(),
        "last_decision": decision.id,
    }


def _open_and_unasked(
    session: Session, model_id: int, since: datetime | None, now: datetime
) -> tuple[set[int], pd.DataFrame]:
    """The events of the window (from ``since``) with a request still open, and its newest
    unlabelled events nobody was asked about yet (at most ``CANDIDATES_FOR_LABELS``). Requests
    for events older than the window count no more: their events left it, and a request nobody
    answers must not block sight for ever."""
    pending = {
        r.event_id
        for r in label_requests.open_label_requests(session=session, model_id=model_id)
        if since is None or r.time >= since
    }
    unlabelled = _newest(session, model_id, since, now)
    return pending, unlabelled[unlabelled["label"].isna() & ~unlabelled["id"].isin(pending)]


def monitoring_sample_node(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """A check was blind for want of labels: ask people for a monitoring sample of the events its
    window reached (half at random, half the most uncertain), within the label budget, so that the
    next check can judge. The run ends: the next check finds the labels (or is blind again).

    It asks for what the window lacks beyond the labels still on their way (requested ones, and
    the feedback due on its newest events), and at most ``at_most`` at a time: a budget is spread
    over checks, not spent on one.
    """
    ctx = runtime.context
    blind = state.get("blind") or {}
    now = now_of(state)
    since = to_utc(blind["since"], what="the blind window's start") if blind.get("since") else None
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        champion = versions.champion(session=session, model_id=model.id)
        pending, unlabelled = _open_and_unasked(session, model.id, since, now)
        short = int(blind.get("needed", 0)) - int(blind.get("labelled", 0)) - len(pending) - blind.get("coming", 0)
        needed = min(int(blind.get("at_most", short)), max(0, int(short)))
        verdict = ctx.policy.check(
            "request_labels", RequestLabelsFacts(n_labels=needed), usage_today(session, model, now), at=now
        )
        asked = 0
        if needed and verdict.allowed and champion is not None and len(unlabelled):
            chosen, why = monitoring_sample(
                unlabelled, ctx.registry.load(champion).predict_proba(unlabelled), needed, seed=ctx.seed
            )
            asked = label_requests.add_label_requests(
                session=session, model_id=model.id, event_ids=[int(i) for i in chosen["id"]], reasons=why, time=now
            )
        if asked:
            said = f"asked people to label {asked} of its events (half at random, half the most uncertain)."
        elif not needed:
            said = f"the {len(pending)} labels requested earlier, still open, would be enough."
        else:
            said = "no labels requested: " + (
                "; ".join(verdict.reasons) if not verdict.allowed else "no unlabelled event to ask about"
            )
            said += "."
        decision = record(
            session,
            state,
            model,
            agent="curator",
            action="request_labels",
            outcome="monitoring_sample" if asked else "not_enough_labels",
            rationale=(
                f"The check was blind: {blind.get('labelled', 0)} labelled events, {blind.get('needed', 0)} needed "
                f"to judge accuracy; {said}"
            ),
            evidence={"labelled": blind.get("labelled", 0), "pending": len(pending), "needed": needed, "asked": asked},
            verdicts=[verdict],
        )
    return {"outcome": "monitoring_sample" if asked else "not_enough_labels", "last_decision": decision.id}


def label_gate(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Wait (durably) for the labels the Curator asked for: back to the Curator once the window
    holds enough labelled events or people answered every request; the run ends after
    the plan's ``label_wait_hours`` without enough."""
    resumed = interrupt({"waiting_for": "labels", "since": state.get("waiting_since")})
    now_iso = resumed["now"]
    now = to_utc(now_iso, what="the resumed now")
    ctx = runtime.context
    training = ctx.policy.policy.training
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        plan = derive_training(training, stream_rates(session, model.id, now))
        labelled = events.window(
            session=session,
            model_id=model.id,
            start=now - timedelta(hours=plan.recent_hours),
            end=now,
            visible_at=now,
            labelled_only=True,
            corpus_only=True,
            limit=plan.min_training_labels,
            exclude_quarantined=ctx.policy.policy.data.exclude_quarantined,
        )
        open_requests = label_requests.open_label_requests(session=session, model_id=model.id)
        if len(labelled) >= plan.min_training_labels or not open_requests:
            # Enough now, or every request answered and still short (older labels left the
            # window meanwhile): the Curator curates, or asks for what is still missing.
            return {"now": now_iso, "outcome": "labels_arrived"}
        since = to_utc(state.get("waiting_since") or now_iso, what="waiting_since")
        if now - since < timedelta(hours=plan.label_wait_hours):
            return {"now": now_iso, "outcome": "waiting_for_labels"}
        decision = record(
            session,
            {**state, "now": now_iso},
            model,
            agent="curator",
            action="request_labels",
            outcome="labels_timed_out",
            rationale=(
                f"Waited {plan.label_wait_hours:g} h for labels: {len(labelled)} labelled events in the last "
                f"{plan.recent_hours:g} h, {plan.min_training_labels} needed. The run ends; the next "
                "check starts over."
            ),
            evidence={"labelled": len(labelled), "needed": plan.min_training_labels, "plan": plan.as_dict()},
        )
    return {"now": now_iso, "outcome": "labels_timed_out", "last_decision": decision.id}


def after_labels(state: LoopState) -> Literal["label_gate", "curator", "__end__"]:
    outcome = state.get("outcome")
    if outcome == "labels_arrived":
        return "curator"
    return "label_gate" if outcome == "waiting_for_labels" else "__end__"
