"""``driftpilot edge serve``: a node's HTTP service, and the rounds that keep it current.

Routes (on the node, loopback by default):

- ``POST /predict`` ``{"events": [{"key", "features", "time"?, "entity"?, "group"?}]}`` → the
  answers, each with the version and who answered (:meth:`~driftpilot.edge.node.EdgeNode.answer`);
  503 before a first version is loaded, 422 naming what is wrong with an event;
- ``GET /status``: the version served, the last poll, refusals and the outbox;
- ``GET /healthz``: 200 once a version is loaded.

Two background threads: one polls the assignment every ``poll_seconds`` (and at start), one sends
the outbox every ``upload_seconds``. Both keep going through any failure, which they record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from driftpilot.edge.node import EdgeNode

__all__ = ["Rounds", "node_app"]

log = logging.getLogger("driftpilot.edge")


class NodeEvent(BaseModel):
    key: str = Field(min_length=1)
    features: dict[str, Any]
    time: str | None = None
    entity: str | None = None
    group: str | None = None


class NodeRequest(BaseModel):
    events: list[NodeEvent] = Field(min_length=1)


class Rounds:
    """The polling and uploading threads of a node."""

    def __init__(self, node: EdgeNode, *, poll_seconds: float = 30.0, upload_seconds: float = 5.0) -> None:
        self.node = node
        self.poll_seconds = poll_seconds
        self.upload_seconds = upload_seconds
        self.stopping = threading.Event()
        self.last_upload: dict[str, Any] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in (self._poll, self._upload):
            thread = threading.Thread(target=target, name=f"edge-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(timeout=10)

    def _poll(self) -> None:
        while not self.stopping.is_set():
            try:
                log.info("poll: %s", self.node.poll())
            except Exception:  # a round that fails is logged; the node keeps serving
                log.exception("poll failed")
            self.stopping.wait(self.poll_seconds)

    def _upload(self) -> None:
        while not self.stopping.wait(self.upload_seconds):
            try:
                sent = self.node.upload()
                self.last_upload = {"sent": sent.sent, "refused": sent.refused, "error": sent.error}
            except Exception:
                log.exception("upload failed")


def node_app(node: EdgeNode, rounds: Rounds | None = None) -> FastAPI:
    """The node's routes; ``rounds`` (started and stopped with the app) keep it current."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if rounds is not None:
            rounds.start()
        try:
            yield
        finally:
            if rounds is not None:
                rounds.stop()
            node.close()

    app = FastAPI(title=f"driftpilot edge node {node.node_id}", lifespan=lifespan)

    @app.post("/predict")
    def predict(request: NodeRequest) -> dict[str, Any]:
        try:
            answers = node.answer([e.model_dump(exclude_none=True) for e in request.events])
        except LookupError as exc:
            raise HTTPException(503, f"node {node.node_id} has no version loaded yet: {exc}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise HTTPException(422, str(exc)) from exc
        return {"model": node.model_name, "answers": answers}

    @app.get("/status")
    def status() -> dict[str, Any]:
        return node.status() | ({"last_upload": rounds.last_upload} if rounds else {})

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        if node.model.current is None:
            raise HTTPException(503, "no version loaded yet")
        return {"version": node.model.current.version}

    return app
