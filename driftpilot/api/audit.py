"""Audit routes: the decision log filtered, one decision, an export, and the chain verified."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.responses import StreamingResponse
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.api.auth import READERS, allow
from driftpilot.memory import decisions, managed
from driftpilot.memory.audit import verify_chain
from driftpilot.memory.tables import Decision

#: Decisions per page of ``GET /decisions``, and per read of an export.
PAGE = 500


@dataclass
class DecisionFilter:
    """Which decisions: by model, agent, action, outcome, and ``since <= time < until``."""

    model: str | None = None
    agent: str | None = None
    action: str | None = None
    outcome: str | None = None
    since: datetime | None = None
    until: datetime | None = None

    def rows(self, session: Session, after: int | None, limit: int) -> list[Decision]:
        model_id = managed.get_model(session=session, name=self.model).id if self.model else None
        return decisions.list_decisions(
            session=session,
            model_id=model_id,
            agent=self.agent,
            action=self.action,
            outcome=self.outcome,
            since=self.since,
            until=self.until,
            after_id=after,
            limit=limit,
        )


Filter = Annotated[DecisionFilter, Depends()]


def audit_router(sessions: sessionmaker[Session]) -> APIRouter:
    router = APIRouter(tags=["audit"], dependencies=[Depends(allow(*READERS))])

    @router.get("/decisions")
    def listed(
        where: Filter,
        after: int | None = Query(default=None, description="Only decisions with a larger id (the next page)."),
        limit: int = Query(default=100, ge=1, le=PAGE),
    ) -> list[dict[str, Any]]:
        """Decisions in log order, filtered; page with ``after`` = the last id seen."""
        try:
            with sessions() as session:
                return [decisions.decision_as_dict(d) for d in where.rows(session, after, limit)]
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc).strip("'\"")) from exc

    @router.get("/decisions/export")
    def export(where: Filter) -> StreamingResponse:
        """Every decision the filter keeps, as JSON lines, read and sent a page at a time."""
        with sessions() as session:
            try:
                where.rows(session, None, 1)  # an unknown model is 404 before the stream starts
            except LookupError as exc:
                raise HTTPException(status_code=404, detail=str(exc).strip("'\"")) from exc

        def lines() -> Iterator[bytes]:
            after: int | None = None
            while True:
                with sessions() as session:
                    page = [decisions.decision_as_dict(d) for d in where.rows(session, after, PAGE)]
                for row in page:
                    yield orjson.dumps(row, default=str) + b"\n"
                if len(page) < PAGE:
                    return
                after = page[-1]["id"]

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @router.get("/decisions/verify")
    def verify() -> dict[str, Any]:
        """Recompute every hash and link of the log: ``ok``, how many were checked, the first broken."""
        with sessions() as session:
            report = verify_chain(session=session)
        return {
            "ok": report.ok,
            "checked": report.checked,
            "first_broken_id": report.first_broken_id,
            "reason": report.reason,
        }

    @router.get("/decisions/{decision_id}")
    def shown(decision_id: int) -> dict[str, Any]:
        """One decision with its evidence, verdicts, rationale and hashes."""
        with sessions() as session:
            found = session.get(Decision, decision_id)
            if found is None:
                raise HTTPException(status_code=404, detail=f"no decision #{decision_id} in the log")
            return decisions.decision_as_dict(found)

    return router
