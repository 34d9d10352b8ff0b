"""The FastAPI app: prediction routing by cohort, rollback, "who served this, and why?", the
approval requests a person answers, and the operator chat (:mod:`driftpilot.api.chat`).

``create_app`` takes what it serves (a session factory, the registry, the policy file) so that
tests and embedders can hand in their own; ``driftpilot.api.app:app`` builds it from the
settings for ``uvicorn``.

Errors name what was wrong: an unknown model or version is 404, a refused request (bad input, a
version that never served) 422, an artifact that fails its checksum, or a different answer to an
approval already decided, 409.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.llm import chat_model
from driftpilot.api.chat import chat_router
from driftpilot.memory import approvals, managed, releases
from driftpilot.memory.decisions import decision_as_dict
from driftpilot.models.registry import ArtifactError, Registry
from driftpilot.policies import PolicyEngine, load_policy
from driftpilot.serving.rollback import manual_rollback
from driftpilot.serving.routing import Serving, assignment, who_served


class PredictEvent(BaseModel):
    """One request to score: the client's idempotency key, when, who, and the features."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1)
    time: datetime
    entity: str = Field(min_length=1)
    group: str | None = None
    features: dict[str, Any]


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[PredictEvent] = Field(min_length=1)


class ApprovalAnswer(BaseModel):
    """A person's answer to an approval request; sending the same answer again changes nothing."""

    model_config = ConfigDict(extra="forbid")

    approve: bool
    by: str = Field(min_length=1)
    comment: str = ""


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = None
    who: str = Field(default="api", min_length=1)


def _refuse(exc: Exception) -> HTTPException:
    if isinstance(exc, ArtifactError):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, LookupError):
        return HTTPException(status_code=404, detail=str(exc).strip("'\""))
    return HTTPException(status_code=422, detail=str(exc))


def create_app(sessions: sessionmaker[Session], registry: Registry, policy_path: str | Path | None = None) -> FastAPI:
    """The app serving the managed models in ``sessions``' database."""
    app = FastAPI(title="driftpilot", summary="Keeps deployed models healthy on their own.")
    servings: dict[str, Serving] = {}
    lock = threading.Lock()

    def serving_of(name: str) -> Serving:
        with lock:
            if name not in servings:
                with sessions() as session:
                    row = managed.get_model(session=session, name=name)
                servings[name] = Serving(sessions, registry, row.id, name)
            return servings[name]

    @app.post("/models/{name}/predict")
    def predict(name: str, request: PredictRequest) -> dict[str, Any]:
        """Serve each event from the version its cohort is on; the events are stored, with the
        version that served them, before the answer is sent (a repeated key gets its first answer)."""
        try:
            serving = serving_of(name)
            feature_names = sorted({k for e in request.events for k in e.features})
            answers = serving.predict(
                keys=[e.key for e in request.events],
                times=[e.time for e in request.events],
                entities=[e.entity for e in request.events],
                groups=[e.group for e in request.events],
                features={k: [e.features.get(k) for e in request.events] for k in feature_names},
            )
        except (LookupError, ValueError) as exc:
            raise _refuse(exc) from exc
        return {"model": name, "answers": answers}

    @app.post("/models/{name}/rollback")
    def rollback(name: str, request: RollbackRequest) -> dict[str, Any]:
        """Serve an earlier version to everyone again (or stop the running release), through the
        policy; in force for the next prediction request."""
        try:
            decision = manual_rollback(
                sessions, model=name, version=request.version, policy_path=policy_path, who=request.who
            )
        except (LookupError, ValueError) as exc:
            raise _refuse(exc) from exc
        return decision_as_dict(decision)

    @app.get("/models/{name}/served")
    def served(name: str, entity: str, at: datetime, group: str | None = Query(default=None)) -> dict[str, Any]:
        """Which version served ``entity`` at ``at``, in what role, since when, and why."""
        try:
            with sessions() as session:
                return who_served(session, model=name, entity=entity, at=at, group=group).as_dict()
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.get("/models/{name}/assignment")
    def assigned(name: str, entity: str, group: str | None = Query(default=None)) -> dict[str, Any]:
        """The version an edge node must run now, with its artifacts' checksums."""
        try:
            with sessions() as session:
                return assignment(session, model=name, entity=entity, group=group)
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.get("/models/{name}/serving-history")
    def history(name: str) -> list[dict[str, Any]]:
        """Every change of what the model serves, oldest first."""
        try:
            with sessions() as session:
                row = managed.get_model(session=session, name=name)
                return [
                    {
                        "at": c.at.isoformat(),
                        "champion": c.champion,
                        "candidate": c.candidate,
                        "phase": c.phase,
                        "share": c.share,
                        "cohort": c.cohort,
                        "release": c.release_id,
                        "reason": c.reason,
                    }
                    for c in releases.serving_history(session=session, model_id=row.id)
                ]
        except LookupError as exc:
            raise _refuse(exc) from exc

    # The operator chat: the policy in force is the app's policy file (watched: a changed file is
    # read again, an invalid one refused), the chat model the one the settings name, if any.
    engine = PolicyEngine.from_file(policy_path) if policy_path else PolicyEngine(load_policy())
    chat = chat_model()

    def engine_for(name: str) -> PolicyEngine:
        engine.reload_if_changed()
        return engine

    app.include_router(chat_router(sessions, registry, engine_for, lambda: chat, policy_path=policy_path))

    @app.get("/approvals")
    def pending(model: str | None = Query(default=None), status: str | None = Query(default="pending")) -> list[Any]:
        """Approval requests (waiting ones unless ``status`` says otherwise), oldest first."""
        try:
            with sessions() as session:
                model_id = managed.get_model(session=session, name=model).id if model else None
                rows = approvals.list_approvals(session=session, model_id=model_id, status=status or None)
                return [approvals.as_dict(a) for a in rows]
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.post("/approvals/{approval_id}")
    def answer(approval_id: int, request: ApprovalAnswer) -> dict[str, Any]:
        """Approve or deny; stored before the reply. A different answer to a decided request is 409."""
        try:
            with sessions() as session:
                approval = approvals.decide_approval(
                    session=session,
                    approval_id=approval_id,
                    approve=request.approve,
                    by=request.by,
                    at=datetime.now(UTC),
                    comment=request.comment,
                )
                return approvals.as_dict(approval)
        except LookupError as exc:
            raise _refuse(exc) from exc
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc

    return app


def _from_settings() -> FastAPI:
    from driftpilot.config import Settings
    from driftpilot.memory import db

    settings = Settings()
    return create_app(db.connect(settings.db_url), Registry(settings.artifact_dir))


def __getattr__(name: str) -> Any:
    # ``uvicorn driftpilot.api.app:app`` builds the app on first access, not on import.
    if name == "app":
        return _from_settings()
    raise AttributeError(name)
