"""The FastAPI app: data in (:mod:`driftpilot.api.ingest`), prediction routing by cohort,
rollback, "who served this, and why?", the approval requests a person answers, the operator chat
(:mod:`driftpilot.api.chat`), the decision log (:mod:`driftpilot.api.audit`), API tokens, and
``/metrics``, ``/healthz``, ``/readyz``.

Every route but ``/healthz`` needs a token (:mod:`driftpilot.api.auth`); who acted is the
token's name. Each model is judged by its own policy: the file it was registered with, else the
app's policy file, else the shipped default.

``create_app`` takes what it serves (a session factory, the registry, the policy file) so that
tests and embedders can hand in their own; ``driftpilot.api.app:app`` builds it from the
settings for ``uvicorn``.

Errors name what was wrong: an unknown model or version is 404, a refused request (bad input, a
version that never served) 422, an artifact that fails its checksum, or a different answer to an
approval already decided, 409.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi.responses import FileResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents.llm import chat_model
from driftpilot.api.audit import audit_router
from driftpilot.api.auth import EVERYONE, READERS, IngestCaller, OperatorCaller, allow
from driftpilot.api.chat import chat_router
from driftpilot.api.corpus import corpus_router
from driftpilot.api.ingest import ingest_router
from driftpilot.config import Settings
from driftpilot.loop.metrics import LoopMetrics
from driftpilot.memory import approvals, managed, releases, tokens, versions
from driftpilot.memory.decisions import decision_as_dict
from driftpilot.models.registry import ArtifactError, Registry, artifact_file
from driftpilot.policies import PolicyEngine, load_policy, model_policy_path
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
    """A person's answer to an approval request (who answered is the token's name); sending the
    same answer again changes nothing."""

    model_config = ConfigDict(extra="forbid")

    approve: bool
    comment: str = ""


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = None


class TokenRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    role: str


def _refuse(exc: Exception) -> HTTPException:
    if isinstance(exc, ArtifactError):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, LookupError):
        return HTTPException(status_code=404, detail=str(exc).strip("'\""))
    return HTTPException(status_code=422, detail=str(exc))


def create_app(
    sessions: sessionmaker[Session],
    registry: Registry,
    policy_path: str | Path | None = None,
    *,
    settings: Settings | None = None,
    metrics: LoopMetrics | None = None,
    on_alarm: Callable[[list[str | None]], None] | None = None,
) -> FastAPI:
    """The app serving the managed models in ``sessions``' database. ``metrics`` are shared
    with a loop running in the same process; ``on_alarm`` tells that loop which models a stored
    alarm concerns."""
    settings = settings or Settings()
    metrics = metrics or LoopMetrics(sessions)
    # The OpenAPI document is served to token holders only (below), like every route but /healthz.
    app = FastAPI(
        title="driftpilot",
        summary="Keeps deployed models healthy on their own.",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    app.state.sessions = sessions
    servings: dict[str, Serving] = {}
    lock = threading.Lock()
    app.include_router(ingest_router(sessions, settings, metrics, on_alarm or (lambda models: None)))
    app.include_router(audit_router(sessions))
    app.include_router(corpus_router(sessions, settings, registry))
    reader = Depends(allow(*READERS))

    def serving_of(name: str) -> Serving:
        with lock:
            if name not in servings:
                with sessions() as session:
                    row = managed.get_model(session=session, name=name)
                servings[name] = Serving(sessions, registry, row.id, name)
            return servings[name]

    @app.post("/models/{name}/predict")
    def predict(name: str, request: PredictRequest, caller: IngestCaller) -> dict[str, Any]:
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

    def policy_file(name: str) -> Path | None:
        with sessions() as session:
            return model_policy_path(managed.get_model(session=session, name=name).policy, policy_path)

    @app.post("/models/{name}/rollback")
    def rollback(name: str, request: RollbackRequest, caller: OperatorCaller) -> dict[str, Any]:
        """Serve an earlier version to everyone again (or stop the running release), through the
        model's policy; in force for the next prediction request."""
        try:
            decision = manual_rollback(
                sessions, model=name, version=request.version, policy_path=policy_file(name), who=caller.name
            )
        except (LookupError, ValueError) as exc:
            raise _refuse(exc) from exc
        return decision_as_dict(decision)

    @app.get("/models", dependencies=[reader])
    def listed() -> list[dict[str, Any]]:
        """The managed models: name, task, family, policy, schema."""
        with sessions() as session:
            return [
                {"name": m.name, "task": m.task, "family": m.family, "policy": m.policy, "schema": m.schema}
                for m in managed.list_models(session=session)
            ]

    @app.get("/models/{name}/served", dependencies=[reader])
    def served(name: str, entity: str, at: datetime, group: str | None = Query(default=None)) -> dict[str, Any]:
        """Which version served ``entity`` at ``at``, in what role, since when, and why."""
        try:
            with sessions() as session:
                return who_served(session, model=name, entity=entity, at=at, group=group).as_dict()
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.get("/models/{name}/assignment", dependencies=[Depends(allow(*EVERYONE))])
    def assigned(name: str, entity: str, group: str | None = Query(default=None)) -> dict[str, Any]:
        """The version an edge node must run now, with its artifacts' checksums."""
        try:
            with sessions() as session:
                return assignment(session, model=name, entity=entity, group=group)
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.get("/models/{name}/versions/{number}/artifacts/{artifact}", dependencies=[Depends(allow(*EVERYONE))])
    def artifact(name: str, number: int, artifact: str) -> FileResponse:
        """One artifact of a version, byte for byte: what an edge node downloads after
        ``/assignment`` names the version. The bytes are checked against the sha256 recorded at
        registration before they are sent (409 if they no longer match), and the sum goes with
        them in ``X-Checksum-Sha256`` for the node to check on arrival."""
        try:
            with sessions() as session:
                row = managed.get_model(session=session, name=name)
                try:
                    version = versions.get_version(session=session, model_id=row.id, number=number)
                except LookupError:
                    raise LookupError(f"model '{name}' has no version {number}") from None
                path, digest = artifact_file(version, artifact)
        except (LookupError, ArtifactError) as exc:
            raise _refuse(exc) from exc
        return FileResponse(
            path,
            media_type="application/octet-stream",
            filename=path.name,
            headers={"X-Checksum-Sha256": digest, "ETag": f'"{digest}"'},
        )

    @app.get("/models/{name}/serving-history", dependencies=[reader])
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

    # The operator chat: the policy in force is the model's policy file (watched: a changed file
    # is read again, an invalid one refused), the chat model the one the settings name, if any.
    engines: dict[Path | None, PolicyEngine] = {}
    chat = chat_model()

    def engine_for(name: str) -> PolicyEngine:
        path = policy_file(name)
        with lock:
            if path not in engines:
                engines[path] = PolicyEngine.from_file(path) if path else PolicyEngine(load_policy())
            engine = engines[path]
        engine.reload_if_changed()
        return engine

    app.include_router(chat_router(sessions, registry, engine_for, lambda: chat, policy_file=policy_file))

    @app.get("/approvals", dependencies=[reader])
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
    def answer(approval_id: int, request: ApprovalAnswer, caller: OperatorCaller) -> dict[str, Any]:
        """Approve or deny; stored before the reply. A different answer to a decided request is 409."""
        try:
            with sessions() as session:
                approval = approvals.decide_approval(
                    session=session,
                    approval_id=approval_id,
                    approve=request.approve,
                    by=caller.name,
                    at=datetime.now(UTC),
                    comment=request.comment,
                )
                return approvals.as_dict(approval)
        except LookupError as exc:
            raise _refuse(exc) from exc
        except ValueError as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from exc

    admin = [Depends(allow())]

    @app.post("/tokens", dependencies=admin, status_code=201)
    def create_token(request: TokenRequest) -> dict[str, Any]:
        """A new token; its secret is in this answer only."""
        try:
            with sessions() as session:
                row, secret = tokens.create_token(session=session, name=request.name, role=request.role)
        except ValueError as exc:
            raise HTTPException(status_code=409 if "exists" in str(exc) else 422, detail=str(exc)) from exc
        return {"name": row.name, "role": row.role, "token": secret}

    @app.get("/tokens", dependencies=admin)
    def list_tokens() -> list[dict[str, Any]]:
        with sessions() as session:
            return [token_as_dict(t) for t in tokens.list_tokens(session=session)]

    @app.delete("/tokens/{name}", dependencies=admin)
    def revoke(name: str) -> dict[str, Any]:
        """Revoke a token: refused from the next request on."""
        try:
            with sessions() as session:
                return token_as_dict(tokens.revoke_token(session=session, name=name))
        except LookupError as exc:
            raise _refuse(exc) from exc

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """The process answers (no token needed)."""
        return {"status": "ok"}

    @app.get("/readyz", dependencies=[Depends(allow(*EVERYONE))])
    def readyz() -> dict[str, str]:
        """The memory answers: 503 when the database does not."""
        try:
            with sessions() as session:
                session.execute(sa.text("SELECT 1"))
        except sa.exc.SQLAlchemyError as exc:
            raise HTTPException(status_code=503, detail=f"the database does not answer: {exc}") from exc
        return {"status": "ready"}

    @app.get("/openapi.json", dependencies=[Depends(allow(*EVERYONE))], include_in_schema=False)
    def openapi() -> dict[str, Any]:
        """The contract clients code against."""
        return app.openapi()

    @app.get("/metrics", dependencies=[Depends(allow(*EVERYONE))], response_class=PlainTextResponse)
    def exposition() -> PlainTextResponse:
        """Prometheus's text format: what came in, what the loop decided, and how late it runs."""
        return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


def token_as_dict(token: Any) -> dict[str, Any]:
    return {
        "name": token.name,
        "role": token.role,
        "created_at": token.created_at.isoformat(),
        "revoked_at": token.revoked_at.isoformat() if token.revoked_at else None,
    }


def app_from_settings() -> FastAPI:
    """The app the settings (``DRIFTPILOT_*``) describe: ``uvicorn --factory`` and the worker
    processes of ``driftpilot serve --workers N`` build it so."""
    from driftpilot.memory import db

    settings = Settings()
    return create_app(
        db.connect(settings.db_url), Registry(settings.artifact_dir), settings.policy_file, settings=settings
    )


def __getattr__(name: str) -> Any:
    # ``uvicorn driftpilot.api.app:app`` builds the app on first access, not on import.
    if name == "app":
        return app_from_settings()
    raise AttributeError(name)
