"""The decision log: every agent step, appended to the hash chain of :mod:`driftpilot.memory.audit`."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import HASHED_FIELDS, decision_hash, to_jsonable
from driftpilot.memory.db import committing
from driftpilot.memory.tables import Decision
from driftpilot.memory.times import to_utc, utcnow


def record_decision(
    *,
    session: Session,
    model_id: int | None,
    run_id: str,
    agent: str,
    time: datetime,
    trigger: Any,
    evidence: Any,
    diagnosis: Any,
    policy_verdicts: Any,
    action: str,
    outcome: str,
    rationale: str,
    approvals: Any = None,
) -> Decision:
    """Append a decision to the log, chained to the last one by ``prev_hash``.

    ``time`` is the decision's logical (possibly simulated) time; ``created_at`` is set to the
    wall clock. JSON fields may hold numpy values: they are stored as plain JSON.
    """
    content: dict[str, Any] = {
        "model_id": model_id,
        "run_id": str(run_id),
        "agent": str(agent),
        "time": time,
        "created_at": utcnow(),
        "trigger": to_jsonable(trigger),
        "evidence": to_jsonable(evidence),
        "diagnosis": to_jsonable(diagnosis),
        "policy_verdicts": to_jsonable(policy_verdicts),
        "action": str(action),
        "outcome": str(outcome),
        "rationale": str(rationale),
        "approvals": to_jsonable(approvals),
    }
    with committing(session):
        if session.get_bind().dialect.name == "postgresql":
            # Two writers must not both chain to the same last decision.
            session.execute(sa.text("LOCK TABLE decision IN SHARE ROW EXCLUSIVE MODE"))
        decision = Decision(**content, prev_hash="", hash="")
        session.add(decision)
        # On SQLite this first write takes the database's write lock, so the previous
        # decision read next is final.
        session.flush()
        previous = session.scalar(
            sa.select(Decision.hash).where(Decision.id < decision.id).order_by(Decision.id.desc()).limit(1)
        )
        decision.prev_hash = previous or ""
        decision.hash = decision_hash({**content, "prev_hash": decision.prev_hash})
    return decision


def list_decisions(
    *,
    session: Session,
    model_id: int | None = None,
    agent: str | None = None,
    action: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    outcome: str | None = None,
    after_id: int | None = None,
    limit: int | None = None,
) -> list[Decision]:
    """Decisions in log order, filtered by model, agent, action, outcome and ``since <= time < until``;
    a page of at most ``limit`` of them with ids above ``after_id``."""
    stmt = sa.select(Decision).order_by(Decision.id).limit(limit)
    if after_id is not None:
        stmt = stmt.where(Decision.id > after_id)
    if outcome is not None:
        stmt = stmt.where(Decision.outcome == outcome)
    if model_id is not None:
        stmt = stmt.where(Decision.model_id == model_id)
    if agent is not None:
        stmt = stmt.where(Decision.agent == agent)
    if action is not None:
        stmt = stmt.where(Decision.action == action)
    if since is not None:
        stmt = stmt.where(Decision.time >= since)
    if until is not None:
        stmt = stmt.where(Decision.time < until)
    return list(session.scalars(stmt))


def count_decisions(
    *,
    session: Session,
    model_id: int | None,
    action: str | Sequence[str],
    outcome: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many decisions of a model took ``action`` (one of several) with ``since <= time < until``."""
    actions = [action] if isinstance(action, str) else list(action)
    stmt = sa.select(sa.func.count()).select_from(Decision).where(Decision.action.in_(actions))
    if model_id is not None:
        stmt = stmt.where(Decision.model_id == model_id)
    if outcome is not None:
        stmt = stmt.where(Decision.outcome == outcome)
    if since is not None:
        stmt = stmt.where(Decision.time >= since)
    if until is not None:
        stmt = stmt.where(Decision.time < until)
    return int(session.scalar(stmt) or 0)


def last_decision(
    *,
    session: Session,
    model_id: int,
    agent: str,
    outcome: str | None,
    since: datetime | None = None,
) -> Decision | None:
    """The latest decision of a model's agent with this outcome (any, when None; at ``since`` or
    later), or None."""
    stmt = sa.select(Decision).where(Decision.model_id == model_id, Decision.agent == agent)
    if outcome is not None:
        stmt = stmt.where(Decision.outcome == outcome)
    if since is not None:
        stmt = stmt.where(Decision.time >= since)
    return session.scalar(stmt.order_by(Decision.time.desc(), Decision.id.desc()).limit(1))


def run_decision(
    *, session: Session, model_id: int, run_id: str, agent: str, action: str, outcomes: Sequence[str] | None = None
) -> Decision | None:
    """The first decision run ``run_id`` took with this agent and action (one of ``outcomes``), or
    None: how a step resumed after a crash finds out that it already acted."""
    stmt = sa.select(Decision).where(
        Decision.model_id == model_id,
        Decision.run_id == str(run_id),
        Decision.agent == agent,
        Decision.action == action,
    )
    if outcomes is not None:
        stmt = stmt.where(Decision.outcome.in_(list(outcomes)))
    return session.scalar(stmt.order_by(Decision.id).limit(1))


def get_decision(*, session: Session, decision_id: int) -> Decision:
    """The decision with this id; LookupError if there is none."""
    decision = session.get(Decision, decision_id)
    if decision is None:
        raise LookupError(f"no decision with id {decision_id}")
    return decision


def decision_as_dict(decision: Decision) -> dict[str, Any]:
    """A decision as plain JSON values, e.g. for ``decisions.jsonl``.

    Times are the text the hash covers (naive UTC ISO 8601, see
    :func:`~driftpilot.memory.audit.to_jsonable`), so a reader can recompute the chain from the
    dicts alone; :func:`logged_time` reads one back as aware UTC.
    """
    fields = ("id", *HASHED_FIELDS, "hash")
    return to_jsonable({name: getattr(decision, name) for name in fields})


def logged_time(decision: Mapping[str, Any]) -> datetime:
    """The ``time`` of a decision in the :func:`decision_as_dict` form, as aware UTC."""
    return to_utc(decision["time"], what="the decision's time")


def decisions_after(
    *, session: Session, after_id: int, kinds: Collection[tuple[str, str]], limit: int = 500
) -> list[Decision]:
    """Decisions newer than ``after_id``, in log order, whose ``(action, outcome)`` is one of
    ``kinds``: those that may need a person."""
    if not kinds:
        return []
    stmt = (
        sa.select(Decision)
        .where(Decision.id > after_id, sa.tuple_(Decision.action, Decision.outcome).in_(list(kinds)))
        .order_by(Decision.id)
        .limit(limit)
    )
    return list(session.scalars(stmt))


def previous_outcome(*, session: Session, decision: Decision) -> str | None:
    """The outcome of the decision before ``decision`` of the same model, agent and action (None
    when it is the first): whether a state such as a blind check is new or goes on."""
    stmt = (
        sa.select(Decision.outcome)
        .where(
            Decision.model_id == decision.model_id,
            Decision.agent == decision.agent,
            Decision.action == decision.action,
            Decision.id < decision.id,
        )
        .order_by(Decision.id.desc())
        .limit(1)
    )
    return session.scalar(stmt)
