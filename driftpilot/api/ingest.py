"""Data in: events scored elsewhere, labels, and alarms (Alertmanager's webhook, or a generic
signed one).

Each request is validated whole and stored in one transaction before the answer, so a refused
request leaves nothing and an acknowledged one survives a crash; each is idempotent by its keys
(events, labels: the client's key; alarms: the alert's fingerprint or key). Bodies are read as
bytes and parsed with orjson: at a few hundred requests a second, pydantic's per-event models
would cost more than storing the events, and ingest's own checks already name the field at
fault. The OpenAPI still documents each body (``openapi_extra``).

The generic alarm hook is signed: ``X-Driftpilot-Timestamp`` (Unix seconds) and
``X-Driftpilot-Signature: sha256=HEX``, the HMAC-SHA256 of ``"{timestamp}.{body}"`` with the
shared ``hook_secret``. A timestamp further than ``hook_tolerance_seconds`` from now is stale,
a signature seen before a replay: both are refused.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.api.auth import IngestCaller
from driftpilot.config import Settings
from driftpilot.loop.metrics import LoopMetrics
from driftpilot.memory.alarms import claim_signature
from driftpilot.memory.ingest import (
    IngestError,
    IngestResult,
    ResentConflict,
    alertmanager_to_alarms,
    contract_labels,
    ingest_alarms,
    ingest_events,
    ingest_labels,
)
from driftpilot.memory.managed import UnknownModelError, known_model
from driftpilot.serving.texts import text_features


class EventIn(BaseModel):
    """One event scored elsewhere (on a gateway, by the client's own service)."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="The client's idempotency key, unique per model.")
    entity: str = Field(min_length=1, description="The device, customer or other entity scored.")
    time: datetime
    group: str | None = Field(default=None, description="The group (OLT port, site, region) it belongs to.")
    features: dict[str, Any] = Field(description="Every feature of the model's schema, by name.")
    served_version: int | None = Field(default=None, description="The version that scored it.")
    prediction: str | None = Field(default=None, description="The class it predicted.")
    probabilities: dict[str, float] | None = None
    answered_by: str | None = Field(
        default=None,
        max_length=200,
        description='Who answered: "server", or an edge node ("edge:<node>", and why when it did not defer).',
    )


class EventsIn(BaseModel):
    events: list[EventIn]


class LabelIn(BaseModel):
    """The truth, or a person's feedback, about one event."""

    model_config = ConfigDict(extra="forbid")

    key: str = Field(min_length=1, description="The labelled event's key.")
    label: str = Field(description="Its class.")
    source: str = Field(default="system", description="person, oracle, system or pseudo.")
    confidence: float = 1.0
    time: datetime | None = Field(default=None, description="When the label became known (default: now).")


class LabelsIn(BaseModel):
    labels: list[LabelIn]


class AlarmsIn(BaseModel):
    """Generic alarms: ``{"key", "name", "severity", "status", "starts_at", "ends_at"?, "groups"?,
    "labels"?, "model"?}`` each (see :func:`driftpilot.memory.ingest.ingest_alarm`)."""

    alarms: list[dict[str, Any]]


def _body(model: type[BaseModel]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": model.model_json_schema()}}}}


def ingest_router(
    sessions: sessionmaker[Session],
    settings: Settings,
    metrics: LoopMetrics,
    on_alarm: Callable[[list[str | None]], None] = lambda models: None,
) -> APIRouter:
    """The routes that take data in. ``on_alarm`` is told the models a stored alarm concerns
    (None: every model), so that a loop in this process can check them at once."""
    router = APIRouter(tags=["ingest"])
    texts = text_features(settings.embedding_cache_dir)

    def store_events(name: str, items: list[Any]) -> IngestResult:
        with sessions() as session:
            _, schema = known_model(session=session, name=name)
            events = texts.expand(schema, items)  # a text model's texts, as its sentence vectors
            return ingest_events(session=session, model=name, events=events)

    def store_labels(name: str, items: list[Any]) -> IngestResult:
        with sessions() as session:
            return ingest_labels(session=session, model=name, labels=contract_labels(items))

    async def take(route: str, name: str, request: Request, store: Callable[[str, list[Any]], IngestResult]) -> Any:
        """Parse the body's list ``route``, store it (durable before the answer), count it."""
        items = await parsed(request, route)
        began = time.perf_counter()
        try:
            result = await run_in_threadpool(store, name, items)
        except (LookupError, IngestError) as exc:
            raise refused(route, exc) from exc
        metrics.ingest_seconds.labels(route).observe(time.perf_counter() - began)
        (metrics.events if route == "events" else metrics.labels).labels(name, "http").inc(result.inserted)
        metrics.duplicates.labels(name, "http").inc(result.duplicates)
        return {"inserted": result.inserted, "duplicates": result.duplicates}

    async def parsed(request: Request, field: str) -> list[Any]:
        raw = await request.body()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _not_json(raw, exc) from exc
        if not isinstance(body, dict) or not isinstance(body.get(field), list):
            raise HTTPException(status_code=422, detail=f"the body must be an object with a list {field!r}")
        unknown = sorted(set(body) - {field})
        if unknown:
            raise HTTPException(status_code=422, detail=f"unknown field {unknown[0]!r}; the body holds {field!r}")
        items: list[Any] = body[field]
        if not items:
            raise HTTPException(status_code=422, detail=f"field {field!r} is empty")
        if len(items) > settings.max_batch:
            raise HTTPException(
                status_code=413, detail=f"{len(items)} {field} in one request; the limit is {settings.max_batch}"
            )
        return items

    def refused(route: str, exc: Exception) -> HTTPException:
        code = 404 if isinstance(exc, UnknownModelError) else 409 if isinstance(exc, ResentConflict) else 422
        metrics.refused.labels(route, str(code)).inc()
        return HTTPException(status_code=code, detail=str(exc).strip("'\""))

    @router.post("/models/{name}/events", openapi_extra=_body(EventsIn))
    async def events(name: str, request: Request, caller: IngestCaller) -> dict[str, int]:
        """Store events scored elsewhere (at most ``max_batch``); a re-sent key is a duplicate,
        the same key with other content 409."""
        return await take("events", name, request, store_events)

    @router.post("/models/{name}/labels", openapi_extra=_body(LabelsIn))
    async def labels(name: str, request: Request, caller: IngestCaller) -> dict[str, int]:
        """Store labels of stored events (``key`` is the event's key); one per event and source."""
        return await take("labels", name, request, store_labels)

    def store_alarms(alarms: list[Any], signed: tuple[str, datetime, datetime] | None = None) -> dict[str, Any]:
        """Store the alarms, and the signature they came with, in one transaction."""
        with sessions() as session:
            if signed is not None:
                claim_signature(session=session, signature=signed[0], now=signed[1], forget_before=signed[2])
            rows = ingest_alarms(session=session, alarms=alarms)
            statuses = [row.status for row in rows]
        for status in statuses:
            metrics.alarms.labels(status).inc()
        on_alarm([a.get("model") if isinstance(a, dict) else None for a in alarms])
        return {"alarms": len(alarms)}

    @router.post("/hooks/alertmanager")
    async def alertmanager(request: Request, caller: IngestCaller) -> dict[str, Any]:
        """Prometheus Alertmanager's webhook (version 4), as Alertmanager sends it: each alert is
        one alarm, by fingerprint; firing then resolved updates it."""
        try:
            payload = orjson.loads(await request.body())
            if not isinstance(payload, dict) or str(payload.get("version", "4")) != "4":
                raise IngestError("Alertmanager payload: field 'version' must be \"4\"")
            alarms = alertmanager_to_alarms(payload, group_labels=settings.alarm_group_labels)
            return await run_in_threadpool(store_alarms, alarms)
        except orjson.JSONDecodeError as exc:
            raise _not_json(b"", exc) from exc
        except (LookupError, IngestError) as exc:
            raise refused("alertmanager", exc) from exc

    @router.post("/hooks/alarms", openapi_extra=_body(AlarmsIn))
    async def alarms(request: Request, caller: IngestCaller) -> dict[str, Any]:
        """Generic alarms, signed (see the module's doc); stale or replayed requests are 401."""
        body = await request.body()
        signature = _verified(settings, request.headers, body)
        now = datetime.now(UTC)
        try:
            items = orjson.loads(body)
            if not isinstance(items, dict) or not isinstance(items.get("alarms"), list):
                raise IngestError("the body must be an object with a list 'alarms'")
            forget_before = now - timedelta(seconds=2 * settings.hook_tolerance_seconds)
            return await run_in_threadpool(store_alarms, items["alarms"], (signature, now, forget_before))
        except ValueError as exc:
            if "replayed" in str(exc):
                raise HTTPException(status_code=401, detail=str(exc)) from exc
            if isinstance(exc, orjson.JSONDecodeError):
                raise _not_json(body, exc) from exc
            raise refused("alarms", exc) from exc
        except LookupError as exc:
            raise refused("alarms", exc) from exc

    return router


def _not_json(raw: bytes, exc: Exception) -> HTTPException:
    hint = ""
    if b"NaN" in raw or b"Infinity" in raw or b"e999" in raw.lower():
        hint = " (non-finite numbers, NaN or Infinity, are not JSON: every feature must be a finite number)"
    return HTTPException(status_code=400, detail=f"the body is not valid JSON: {exc}{hint}")


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Driftpilot-Signature`` header of ``body`` sent at ``timestamp`` (for clients).

    >>> sign("s3cret", 1767225600, b'{"alarms": []}')
    'sha256=55f8cdf607ea68fad8e3156e7c51664a4050450c44901a399e59994f3c376657'
    """
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def _verified(settings: Settings, headers: Any, body: bytes) -> str:
    """The request's signature, if it is valid and fresh; else a 401 naming what is wrong."""
    if not settings.hook_secret:
        raise HTTPException(status_code=401, detail="signed hooks are off: the service has no hook_secret")
    stamp, given = headers.get("x-driftpilot-timestamp"), headers.get("x-driftpilot-signature")
    if not stamp or not given:
        raise HTTPException(status_code=401, detail="missing header X-Driftpilot-Timestamp or X-Driftpilot-Signature")
    try:
        timestamp = int(stamp)
    except ValueError as exc:
        raise HTTPException(status_code=401, detail="X-Driftpilot-Timestamp must be Unix seconds") from exc
    if abs(time.time() - timestamp) > settings.hook_tolerance_seconds:
        raise HTTPException(
            status_code=401,
            detail=f"stale X-Driftpilot-Timestamp: more than {settings.hook_tolerance_seconds} s from now",
        )
    if not hmac.compare_digest(sign(settings.hook_secret, timestamp, body), given):
        raise HTTPException(status_code=401, detail="bad X-Driftpilot-Signature: not the HMAC of this body")
    return given
