"""Corpus and label-queue routes: what people read, correct and add to a model's training data.

Readers (operator, auditor) list, search, read, export and diff; operators change (relabel,
delete, restore, add, import, snapshot) and answer the label queue. Who changed it is the
token's name. Errors: an unknown model, item, snapshot or request is 404, bad input (an unknown
class, a bad row of an import: named) 422, an answer contradicting an earlier one 409. Every
change is logged as a decision in the transaction that makes it (:mod:`driftpilot.memory.corpus`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.agents import expansion
from driftpilot.api.auth import READERS, OperatorCaller, allow
from driftpilot.config import Settings
from driftpilot.memory import corpus, managed
from driftpilot.memory.ingest import IngestError
from driftpilot.models.registry import Registry
from driftpilot.serving.texts import text_features

#: Items per page of ``GET /models/{name}/corpus``.
PAGE = 500
_MEDIA = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}


class LabelBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1)


class ItemsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    events: list[int] = Field(min_length=1)
    reason: str = ""


class NameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: The class the cluster becomes: a new intent, or an old one it merges into.
    label: str = Field(min_length=1)
    #: Unlabelled queries nearest the cluster asked for labels.
    around: int = Field(default=20, ge=0, le=500)


class RowsBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: list[dict[str, Any]] = Field(min_length=1)


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, corpus.CorpusConflict):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, LookupError):
        return HTTPException(status_code=404, detail=str(exc).strip("'\""))
    return HTTPException(status_code=422, detail=str(exc))


def corpus_router(sessions: sessionmaker[Session], settings: Settings, registry: Registry) -> APIRouter:
    router = APIRouter(tags=["corpus"])
    reader = [Depends(allow(*READERS))]
    texts = text_features(settings.embedding_cache_dir)

    def run(work: Callable[[Session], Any]) -> Any:
        try:
            with sessions() as session:
                return work(session)
        except (corpus.CorpusError, IngestError, LookupError, ValueError) as exc:
            raise _refused(exc) from exc

    def model_id(session: Session, name: str) -> int:
        return managed.get_model(session=session, name=name).id

    def encoded(session: Session, name: str, rows: list[Any]) -> list[Any]:
        return texts.encode_rows(managed.model_schema(managed.get_model(session=session, name=name)), rows)

    @router.post("/models/{name}/clusters")
    def clusters(name: str, caller: OperatorCaller) -> dict[str, Any]:
        """Cluster the recent queries the champion does not know (a text model's), each with
        examples and a suggested name: a proposal people name clusters of, by its decision id."""

        def propose(session: Session) -> dict[str, Any]:
            change, found = expansion.propose(session, registry, name, by=caller.name)
            return {"proposal": change.decision_id, "clusters": found}

        return run(propose)

    @router.post("/models/{name}/clusters/{proposal}/{cluster}/name")
    def name_cluster(name: str, proposal: int, cluster: int, body: NameBody, caller: OperatorCaller) -> dict[str, Any]:
        """Name a proposed cluster as a new intent (the model's classes grow) or merge it into an
        old one; the unlabelled queries nearest it are asked for labels."""
        return run(
            lambda s: expansion.name(
                s, registry, name, proposal=proposal, cluster=cluster, label=body.label, by=caller.name, k=body.around
            ).as_dict()
        )

    @router.get("/models/{name}/corpus", dependencies=reader)
    def listed(
        name: str,
        label: str | None = None,
        source: str | None = None,
        q: str | None = Query(default=None, description="A piece of the text, key or entity (any case)."),
        excluded: bool = Query(default=False, description="List the items kept out of the corpus too."),
        after: int = Query(default=0, description="Only items with a larger event id (the next page)."),
        limit: int = Query(default=50, ge=1, le=PAGE),
    ) -> list[dict[str, Any]]:
        """The corpus's items by event id: each with its best label, its source, and why it is
        out of the corpus if it is."""
        return run(
            lambda s: corpus.corpus_rows(
                session=s,
                model_id=model_id(s, name),
                label=label,
                source=source,
                search=q,
                include_excluded=excluded,
                after_id=after,
                limit=limit,
            )
        )

    @router.get("/models/{name}/corpus/export", dependencies=reader)
    def export(name: str, format: str = Query(default="jsonl", pattern="^(csv|jsonl)$")) -> Response:
        """The whole corpus as CSV or JSON lines, in the form the import reads back."""
        body = run(lambda s: corpus.export_corpus(session=s, model_id=model_id(s, name), fmt=format))
        return Response(content=body, media_type=_MEDIA[format])

    @router.get("/models/{name}/corpus/{event_id}", dependencies=reader)
    def item(name: str, event_id: int) -> dict[str, Any]:
        """One item with every label it has, why it is out if it is, its requests and snapshots."""
        return run(lambda s: corpus.corpus_item(session=s, model_id=model_id(s, name), event_id=event_id))

    @router.put("/models/{name}/corpus/{event_id}/label")
    def relabel(name: str, event_id: int, body: LabelBody, caller: OperatorCaller) -> dict[str, Any]:
        """Label the item as a person (the label training reads from now on)."""
        return run(
            lambda s: corpus.relabel(
                session=s, model=name, event_id=event_id, value=body.label, by=caller.name
            ).as_dict()
        )

    @router.post("/models/{name}/corpus/delete")
    def delete(name: str, body: ItemsBody, caller: OperatorCaller) -> dict[str, Any]:
        """Take items out of the corpus (kept and restorable), with a reason."""
        return run(
            lambda s: corpus.delete_items(
                session=s, model=name, event_ids=body.events, by=caller.name, reason=body.reason
            ).as_dict()
        )

    @router.post("/models/{name}/corpus/restore")
    def restore(name: str, body: ItemsBody, caller: OperatorCaller) -> dict[str, Any]:
        """Bring items back into the corpus."""
        return run(
            lambda s: corpus.restore_items(session=s, model=name, event_ids=body.events, by=caller.name).as_dict()
        )

    @router.post("/models/{name}/corpus")
    def add(name: str, body: RowsBody, caller: OperatorCaller) -> dict[str, Any]:
        """Add labelled examples (a text model's as text), or relabel stored events by key: all
        rows or none."""
        return run(
            lambda s: corpus.add_examples(
                session=s, model=name, rows=encoded(s, name, body.rows), by=caller.name
            ).as_dict()
        )

    @router.post("/models/{name}/corpus/import")
    async def imported(
        name: str, request: Request, caller: OperatorCaller, format: str = Query(pattern="^(csv|jsonl)$")
    ) -> dict[str, Any]:
        """A CSV or JSON-lines file as the body: every row added, or none (the bad row named)."""
        raw = await request.body()

        def work(s: Session) -> dict[str, Any]:
            schema = managed.model_schema(managed.get_model(session=s, name=name))
            rows, lines = corpus.parse_corpus_file(raw, format, schema)
            return corpus.add_examples(
                session=s, model=name, rows=encoded(s, name, rows), by=caller.name, lines=lines
            ).as_dict()

        return run(work)

    @router.post("/models/{name}/snapshots", status_code=201)
    def snapshot(name: str, caller: OperatorCaller) -> dict[str, Any]:
        """An immutable snapshot of the corpus as it is now."""
        return run(lambda s: corpus.snapshot_corpus(session=s, model=name, by=caller.name).as_dict())

    @router.get("/models/{name}/snapshots", dependencies=reader)
    def snapshots(name: str) -> list[dict[str, Any]]:
        """The model's snapshots, oldest first (the Curator's training snapshots and corpus ones)."""
        return run(lambda s: corpus.list_snapshots(session=s, model_id=model_id(s, name)))

    @router.get("/models/{name}/snapshots/diff", dependencies=reader)
    def diff(name: str, a: int, b: int) -> dict[str, Any]:
        """Items added, removed and relabelled from snapshot ``a`` to ``b``."""

        def work(s: Session) -> dict[str, Any]:
            owner = model_id(s, name)
            for snapshot_id in (a, b):
                if corpus.snapshot_model(session=s, snapshot_id=snapshot_id) != owner:
                    raise LookupError(f"model {name!r} has no snapshot {snapshot_id}")
            return corpus.diff_snapshots(session=s, a=a, b=b)

        return run(work)

    @router.get("/models/{name}/label-requests", dependencies=reader)
    def queue(name: str, after: int = 0, limit: int = Query(default=20, ge=1, le=PAGE)) -> list[dict[str, Any]]:
        """The open label requests, oldest first, each with its event and why it was chosen."""
        return run(lambda s: corpus.label_queue(session=s, model_id=model_id(s, name), limit=limit, after_id=after))

    @router.post("/models/{name}/label-requests/{request_id}/answer")
    def answer(name: str, request_id: int, body: LabelBody, caller: OperatorCaller) -> dict[str, Any]:
        """Answer a request with a label (the same answer again changes nothing)."""
        return run(
            lambda s: corpus.answer_request(
                session=s, model=name, request_id=request_id, value=body.label, by=caller.name
            ).as_dict()
        )

    @router.post("/models/{name}/label-requests/{request_id}/skip")
    def skip(name: str, request_id: int, caller: OperatorCaller) -> dict[str, Any]:
        """Skip a request (the person cannot tell)."""
        return run(
            lambda s: corpus.skip_request(session=s, model=name, request_id=request_id, by=caller.name).as_dict()
        )

    return router
