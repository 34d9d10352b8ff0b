"""The operator chat: ``POST /models/{name}/chat`` turns a person's message into judged proposals.

The operator agent (:mod:`driftpilot.agents.operator`) plans and records; this route executes
what was accepted and has a path here: a rollback, through
:func:`driftpilot.serving.rollback.manual_rollback`, which checks the policy again and records the
change. Other accepted actions (retrain, promote, request labels) are returned for the loop to
carry out. An unknown model is 404, a message the operator does not understand 422.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.context import AgentContext
from driftpilot.agents.operator import NotUnderstoodError, operate
from driftpilot.api.auth import OperatorCaller
from driftpilot.memory.decisions import decision_as_dict
from driftpilot.models.registry import ArtifactError, Registry
from driftpilot.policies import PolicyEngine
from driftpilot.serving.rollback import manual_rollback


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(min_length=1)


def chat_router(
    sessions: sessionmaker[Session],
    registry: Registry,
    engine_getter: Callable[[str], PolicyEngine],
    chat_getter: Callable[[], Any],
    *,
    policy_file: Callable[[str], Path | None] = lambda name: None,
) -> APIRouter:
    """The chat route. ``engine_getter(name)`` gives the policy engine in force for a model,
    ``chat_getter()`` the chat model or None; ``policy_file(name)`` is the model's policy file
    that :func:`~driftpilot.serving.rollback.manual_rollback` loads when it executes a rollback.
    Who speaks is the operator token's name."""
    router = APIRouter(tags=["chat"])

    @router.post("/models/{name}/chat")
    def chat(name: str, request: ChatRequest, caller: OperatorCaller) -> dict[str, Any]:
        """Plan from the message (a chat model, or the fixed grammar), judge each proposal by the
        policy, record it, and execute an accepted rollback."""
        now = datetime.now(UTC)
        try:
            ctx = AgentContext(sessions=sessions, registry=registry, policy=engine_getter(name))
            reply = operate(ctx, name, request.message, now, chat_getter(), who=caller.name)
        except NotUnderstoodError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        except LookupError as exc:
            raise HTTPException(status_code=404, detail=str(exc).strip("'\"")) from exc
        proposals = []
        for proposal in reply.proposals:
            executed: dict[str, Any] | None = None
            if proposal.outcome == "accepted" and proposal.action == "rollback":
                executed = execute_rollback(
                    sessions, name, proposal.arguments.get("version"), policy_file(name), caller.name, now
                )
            proposals.append({**proposal.__dict__, "executed": executed})
        return {**reply.as_dict(), "proposals": proposals}

    return router


def execute_rollback(
    sessions: sessionmaker[Session],
    name: str,
    version: int | None,
    policy_path: str | Path | None,
    who: str,
    now: datetime,
) -> dict[str, Any]:
    """Execute an accepted rollback; its refusal is reported, not raised, since the proposal's
    decision is already written."""
    try:
        decision = manual_rollback(
            sessions, model=name, version=version, policy_path=policy_path, who=f"{who} (chat)", now=now
        )
    except (LookupError, ValueError, ArtifactError) as exc:
        return {"error": str(exc).strip("'\"")}
    return decision_as_dict(decision)
