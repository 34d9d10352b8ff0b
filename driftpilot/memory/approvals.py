"""Approvals: a person's yes or no on an action the policy lets happen only with one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import to_jsonable
from driftpilot.memory.db import committing
from driftpilot.memory.tables import Approval


def request_approval(
    *, session: Session, model_id: int, run_id: str, action: str, subject: Any, reason: str, time: datetime
) -> Approval:
    """Ask a person to approve ``action`` of run ``run_id``; idempotent: a run asking again (after a
    restart) gets the request it opened, whatever its status now."""
    existing = find_approval(session=session, model_id=model_id, run_id=run_id, action=action)
    if existing is not None:
        return existing
    with committing(session):
        approval = Approval(
            model_id=model_id,
            run_id=str(run_id),
            action=str(action),
            subject=to_jsonable(subject),
            reason=str(reason),
            requested_at=time,
            status="pending",
            comment="",
        )
        session.add(approval)
    return approval


def find_approval(*, session: Session, model_id: int, run_id: str, action: str) -> Approval | None:
    stmt = sa.select(Approval).where(
        Approval.model_id == model_id, Approval.run_id == str(run_id), Approval.action == str(action)
    )
    return session.scalar(stmt)


def get_approval(*, session: Session, approval_id: int) -> Approval:
    """The approval request with this id; LookupError if there is none."""
    approval = session.get(Approval, approval_id)
    if approval is None:
        raise LookupError(f"no approval request with id {approval_id}")
    return approval


def list_approvals(*, session: Session, model_id: int | None = None, status: str | None = None) -> list[Approval]:
    stmt = sa.select(Approval).order_by(Approval.id)
    if model_id is not None:
        stmt = stmt.where(Approval.model_id == model_id)
    if status is not None:
        stmt = stmt.where(Approval.status == status)
    return list(session.scalars(stmt))


def decide_approval(
    *, session: Session, approval_id: int, approve: bool, by: str, at: datetime, comment: str = ""
) -> Approval:
    """Record a person's answer. Answering again with the same answer changes nothing (a client
    retrying); a different answer to a decided request, or any answer to an expired one, is refused
    with a ValueError naming who decided what, when."""
    if not str(by).strip():
        raise ValueError("an approval must name who gives it ('by')")
    wanted = "approved" if approve else "denied"
    with committing(session):
        approval = get_approval(session=session, approval_id=approval_id)
        if approval.status == wanted:
            return approval
        if approval.status != "pending":
            who = f" by {approval.decided_by}" if approval.decided_by else ""
            when = f" at {approval.decided_at:%Y-%m-%d %H:%M} UTC" if approval.decided_at else ""
            raise ValueError(f"approval request {approval_id} was already {approval.status}{who}{when}")
        approval.status = wanted
        approval.decided_by = str(by)
        approval.decided_at = at
        approval.comment = str(comment)
    return approval


def expire_approval(*, session: Session, approval_id: int, at: datetime) -> Approval:
    """Close a request nobody answered in time (a no); a decided one is left as it is."""
    with committing(session):
        approval = get_approval(session=session, approval_id=approval_id)
        if approval.status == "pending":
            approval.status = "expired"
            approval.decided_at = at
    return approval


def as_dict(approval: Approval) -> dict[str, Any]:
    """An approval as plain JSON values, e.g. for a decision's ``approvals``."""
    fields = ("id", "run_id", "action", "subject", "reason", "requested_at", "status", "decided_by", "decided_at")
    return to_jsonable({name: getattr(approval, name) for name in (*fields, "comment")})
