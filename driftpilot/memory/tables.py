"""The tables of driftpilot's memory, one per noun of the design.

Every time is stored as naive UTC and read, or assigned, as aware UTC (see
:mod:`driftpilot.memory.times`). JSON columns hold plain
JSON values only (see :func:`driftpilot.memory.audit.to_jsonable`). Schema changes go through
Alembic (``migrations/versions``); the migration test checks the two agree.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy import event as orm_event
from sqlalchemy.orm import DeclarativeBase, Mapped, Mapper, mapped_column
from sqlalchemy.types import TypeDecorator

from driftpilot.memory.times import to_naive_utc, to_utc, utcnow

LABEL_SOURCES = ("person", "oracle", "system", "pseudo")
"""Label sources, most trustworthy first."""
PSEUDO = "pseudo"
"""The source of the Curator's pseudo-labels: learnt from (through snapshots), never judged by."""
ALARM_STATUSES = ("firing", "resolved")
VERSION_STAGES = (
    "candidate",
    "shadow",
    "canary",
    "champion",
    "archived",
    "rolled_back",
    "rejected",
    # Distilled from its parent for edge nodes; goes out with its parent, never served centrally.
    "student",
)
LABEL_REQUEST_STATUSES = ("open", "answered", "skipped", "expired")
"""A request waits for a person (``open``) until they answer it, skip it (they cannot tell), or
its event leaves the training window (``expired``)."""
EXCLUSION_KINDS = ("deleted", "label_issue", "duplicate", "outlier", "stuck", "missing")
"""Why an event is kept out of the corpus: an operator deleted it, or the Curator's cleaning found
its label suspicious, the event a duplicate, an outlier, or a stuck or missing reading."""
RELEASE_PHASES = ("shadow", "canary", "ended")
"""A release's phases: the candidate answers in shadow (nothing it says is served), then serves
a growing canary cohort, then the release ends (promoted or rolled back)."""
COHORT_KINDS = ("entity", "group")
APPROVAL_STATUSES = ("pending", "approved", "denied", "expired")
"""An approval request waits for a person (``pending``) until they approve or deny it, or until
the policy's ``approval_timeout_hours`` pass (``expired``)."""

# Constraint names must be stable so that later migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def _one_of(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class UTCDateTime(TypeDecorator[datetime]):
    """A ``DateTime`` that stores naive UTC and returns aware UTC.

    Values bound to it (inserted, or compared with such a column in a query) may be aware in any
    zone, naive (taken as UTC) or ISO 8601 strings: they are stored as naive UTC, so the stored
    text is what it always was and no migration is needed.
    """

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None or (type(value) is datetime and value.tzinfo is None):
            return value
        return to_naive_utc(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        # The database hands back the naive UTC it stores.
        return None if value is None else value.replace(tzinfo=UTC)


def table_of(model: type[Base]) -> Table:
    """The Core ``Table`` of a mapped class (typed, unlike ``__table__``)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Base(DeclarativeBase):
    """Declarative base of the memory tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


@orm_event.listens_for(Base, "mapper_configured", propagate=True)
def _assign_times_as_utc(mapper: Mapper[Any], cls: type[Base]) -> None:
    """Make a time assigned to an object aware UTC at once, as it reads back from the database.

    Sessions keep objects after commit (``expire_on_commit=False``), so without this an object
    would hold whatever its caller assigned (naive, another zone, a string) until reloaded.
    """
    for prop in mapper.column_attrs:
        if any(isinstance(column.type, UTCDateTime) for column in prop.columns):
            orm_event.listen(getattr(cls, prop.key), "set", _as_utc, retval=True)


def _as_utc(target: Any, value: Any, oldvalue: Any, initiator: Any) -> Any:
    return None if value is None else to_utc(value)


class ManagedModel(Base):
    """A model driftpilot keeps healthy: name, task, schema, family and policy."""

    __tablename__ = "managed_model"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    task: Mapped[str] = mapped_column(String)
    family: Mapped[str] = mapped_column(String)
    schema: Mapped[dict[str, Any]] = mapped_column(JSON)
    policy: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Event(Base):
    """One inference record, unique per (model, client key)."""

    __tablename__ = "event"
    __table_args__ = (
        UniqueConstraint("model_id", "key"),
        Index("ix_event_model_id_time", "model_id", "time"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    key: Mapped[str] = mapped_column(String)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    entity: Mapped[str] = mapped_column(String)
    group_key: Mapped[str | None] = mapped_column(String, nullable=True)
    features: Mapped[dict[str, Any]] = mapped_column(JSON)
    served_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    prediction: Mapped[str | None] = mapped_column(String, nullable=True)
    probabilities: Mapped[dict[str, float] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    ingested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: A text model's raw text (its features hold the text's sentence vector): what people read,
    #: search and relabel in the corpus.
    text: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Who answered: ``"server"``, or an edge node (``"edge:<node>"``, with why when it answered
    #: what it would have deferred to the server); ``None`` when the client did not say.
    answered_by: Mapped[str | None] = mapped_column(String, nullable=True)


class Label(Base):
    """Ground truth or feedback for an event; ``time`` is when it became known."""

    __tablename__ = "label"
    __table_args__ = (
        UniqueConstraint("event_id", "source"),
        Index("ix_label_model_id_time", "model_id", "time"),
        CheckConstraint(_one_of("source", LABEL_SOURCES), name="source"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"))
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    value: Mapped[str] = mapped_column(String)
    source: Mapped[str] = mapped_column(String)
    confidence: Mapped[float] = mapped_column(Float)
    time: Mapped[datetime] = mapped_column(UTCDateTime)


class Alarm(Base):
    """An external alarm, unique by its key (the Alertmanager fingerprint)."""

    __tablename__ = "alarm"
    __table_args__ = (
        Index("ix_alarm_starts_at", "starts_at"),
        CheckConstraint(_one_of("status", ALARM_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String, unique=True)
    name: Mapped[str] = mapped_column(String)
    severity: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    groups: Mapped[list[str]] = mapped_column(JSON)
    labels: Mapped[dict[str, str]] = mapped_column(JSON)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("managed_model.id"), nullable=True)


class Snapshot(Base):
    """An immutable set of (event, label) pairs a version was trained on."""

    __tablename__ = "snapshot"
    __table_args__ = (Index("ix_snapshot_model_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    content_hash: Mapped[str] = mapped_column(String)
    n_rows: Mapped[int] = mapped_column(Integer)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON)


class SnapshotItem(Base):
    """One (event, label) pair of a snapshot."""

    __tablename__ = "snapshot_item"

    snapshot_id: Mapped[int] = mapped_column(ForeignKey("snapshot.id"), primary_key=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"), primary_key=True)
    label: Mapped[str] = mapped_column(String)


class Decision(Base):
    """One agent step, chained to the previous decision by ``prev_hash``."""

    __tablename__ = "decision"
    __table_args__ = (
        Index("ix_decision_model_id_time", "model_id", "time"),
        Index("ix_decision_run_id", "run_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("managed_model.id"), nullable=True)
    run_id: Mapped[str] = mapped_column(String)
    agent: Mapped[str] = mapped_column(String)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    trigger: Mapped[Any] = mapped_column(JSON)
    evidence: Mapped[Any] = mapped_column(JSON)
    diagnosis: Mapped[Any] = mapped_column(JSON)
    policy_verdicts: Mapped[Any] = mapped_column(JSON)
    action: Mapped[str] = mapped_column(String)
    outcome: Mapped[str] = mapped_column(String)
    rationale: Mapped[str] = mapped_column(Text)
    approvals: Mapped[Any] = mapped_column(JSON)
    prev_hash: Mapped[str] = mapped_column(String)
    hash: Mapped[str] = mapped_column(String)


class Version(Base):
    """A trained model version; ``number`` counts from 1 per model."""

    __tablename__ = "version"
    __table_args__ = (
        UniqueConstraint("model_id", "number"),
        CheckConstraint(_one_of("stage", VERSION_STAGES), name="stage"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    number: Mapped[int] = mapped_column(Integer)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("version.id"), nullable=True)
    stage: Mapped[str] = mapped_column(String)
    artifacts: Mapped[dict[str, dict[str, str]]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    snapshot_id: Mapped[int | None] = mapped_column(ForeignKey("snapshot.id"), nullable=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    time: Mapped[datetime] = mapped_column(UTCDateTime)


class Release(Base):
    """A version's exposure to a share of traffic, with its evidence and verdict."""

    __tablename__ = "release"
    __table_args__ = (Index("ix_release_model_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    version_id: Mapped[int] = mapped_column(ForeignKey("version.id"))
    baseline_version_id: Mapped[int | None] = mapped_column(ForeignKey("version.id"), nullable=True)
    share: Mapped[float] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String, nullable=True)
    #: ``shadow``, ``canary`` or ``ended``; ``step`` indexes ``plan`` (the canary shares, from the
    #: policy when the release started), -1 in shadow.
    phase: Mapped[str] = mapped_column(String, server_default="canary")
    step: Mapped[int] = mapped_column(Integer, server_default="0")
    step_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    plan: Mapped[list[float]] = mapped_column(JSON, server_default="[]")
    #: Cohorts by hashing the entity id or its group (edge node, network segment), with this salt.
    cohort: Mapped[str] = mapped_column(String, server_default="entity")
    salt: Mapped[str] = mapped_column(String, server_default="")


class ServingChange(Base):
    """One change of what a model serves, appended and never updated: from ``at`` until the next
    change, ``champion`` serves everyone but the ``share`` of cohorts (by ``cohort`` and ``salt``)
    that ``candidate`` serves; in shadow the candidate only answers beside the champion.

    ``run_id`` and ``reason`` say why: the decision of that run that made the change.
    """

    __tablename__ = "serving_change"
    __table_args__ = (
        Index("ix_serving_change_model_id_at", "model_id", "at"),
        CheckConstraint(_one_of("cohort", COHORT_KINDS), name="cohort"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    champion: Mapped[int | None] = mapped_column(Integer, nullable=True)
    candidate: Mapped[int | None] = mapped_column(Integer, nullable=True)
    phase: Mapped[str | None] = mapped_column(String, nullable=True)
    share: Mapped[float] = mapped_column(Float)
    cohort: Mapped[str] = mapped_column(String)
    salt: Mapped[str] = mapped_column(String)
    release_id: Mapped[int | None] = mapped_column(ForeignKey("release.id"), nullable=True)
    run_id: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)


class LabelRequest(Base):
    """An event the curator asks a person to label, and why."""

    __tablename__ = "label_request"
    __table_args__ = (
        Index("ix_label_request_model_id_status", "model_id", "status"),
        Index("ix_label_request_event_id", "event_id"),
        CheckConstraint(_one_of("status", LABEL_REQUEST_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"))
    reason: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    #: Who answered or skipped it (a token's or a person's name).
    answered_by: Mapped[str | None] = mapped_column(String, nullable=True)


class Quarantine(Base):
    """A window of events kept out of training and monitoring (``groups`` None = all)."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_model_id", "model_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    start: Mapped[datetime] = mapped_column(UTCDateTime)
    end: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # SQL NULL (not JSON null) so that "all groups" reads unambiguously.
    groups: Mapped[list[str] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    reason: Mapped[str] = mapped_column(Text)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision.id"), nullable=True)


class CorpusExclusion(Base):
    """An event kept out of the training corpus, and why: deleted by an operator, or flagged by
    the Curator's cleaning (a suspicious label, a duplicate, an outlier, a stuck or missing
    reading). Kept rather than deleted, so it can be audited and restored; one per event."""

    __tablename__ = "corpus_exclusion"
    __table_args__ = (
        UniqueConstraint("model_id", "event_id"),
        CheckConstraint(_one_of("kind", EXCLUSION_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"))
    kind: Mapped[str] = mapped_column(String)
    reason: Mapped[str] = mapped_column(Text)
    by: Mapped[str] = mapped_column(String)
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision.id"), nullable=True)


class GoldenEvent(Base):
    """An event operators pinned to the model's golden set: every candidate is scored on it, and
    the policy may forbid any regression there."""

    __tablename__ = "golden_event"
    __table_args__ = (UniqueConstraint("model_id", "event_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    event_id: Mapped[int] = mapped_column(ForeignKey("event.id"))
    pinned_at: Mapped[datetime] = mapped_column(UTCDateTime)
    note: Mapped[str] = mapped_column(Text, default="")


class Approval(Base):
    """A person's approval asked for one action of one run (at autonomy L3: a release's start and
    its promotion), and their answer.

    One request per (model, run, action): asking again, after a restart, finds the same one.
    """

    __tablename__ = "approval"
    __table_args__ = (
        UniqueConstraint("model_id", "run_id", "action"),
        Index("ix_approval_model_id_status", "model_id", "status"),
        CheckConstraint(_one_of("status", APPROVAL_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"))
    run_id: Mapped[str] = mapped_column(String)
    action: Mapped[str] = mapped_column(String)
    #: What is to be approved: the version, the release, the share.
    subject: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str] = mapped_column(Text)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String, default="pending")
    decided_by: Mapped[str | None] = mapped_column(String, nullable=True)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    comment: Mapped[str] = mapped_column(Text, default="")


TOKEN_ROLES = ("ingest", "operator", "auditor", "admin")
"""What an API token may do: send events and labels; answer approvals, roll back and act through
the chat; read the decision log; everything, tokens included."""
ALERT_STATUSES = ("pending", "sent", "failed")
"""An alert waits in ``alert`` until a sender delivers it (``sent``) or gives up (``failed``)."""


class ApiToken(Base):
    """An API token: who holds it (its name, which the decision log records as the actor), its
    role, and the SHA-256 of the secret (the secret itself is shown once, never stored)."""

    __tablename__ = "api_token"
    __table_args__ = (CheckConstraint(_one_of("role", TOKEN_ROLES), name="role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String, unique=True)
    role: Mapped[str] = mapped_column(String)
    secret_sha256: Mapped[str] = mapped_column(String, unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class HookSignature(Base):
    """A signature a signed alarm hook was accepted with: the same one again is a replay."""

    __tablename__ = "hook_signature"
    __table_args__ = (Index("ix_hook_signature_received_at", "received_at"),)

    signature: Mapped[str] = mapped_column(String, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertOut(Base):
    """An alert for a person (a data fault, an outage quarantined, a rollback, an approval
    waiting, a blind model), kept until it is delivered: one per ``key``, so a decision read
    twice raises one alert."""

    __tablename__ = "alert"
    __table_args__ = (
        Index("ix_alert_status_next_attempt_at", "status", "next_attempt_at"),
        CheckConstraint(_one_of("status", ALERT_STATUSES), name="status"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String, unique=True)
    model_id: Mapped[int | None] = mapped_column(ForeignKey("managed_model.id"), nullable=True)
    decision_id: Mapped[int | None] = mapped_column(ForeignKey("decision.id"), nullable=True)
    name: Mapped[str] = mapped_column(String)
    severity: Mapped[str] = mapped_column(String)
    labels: Mapped[dict[str, Any]] = mapped_column(JSON)
    annotations: Mapped[dict[str, Any]] = mapped_column(JSON)
    starts_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ends_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    status: Mapped[str] = mapped_column(String, default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(Text, default="")


class DeadLetter(Base):
    """A message a live source could not store (malformed, unknown model, refused by ingest),
    kept with the reason instead of being dropped."""

    __tablename__ = "dead_letter"
    __table_args__ = (Index("ix_dead_letter_received_at", "received_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String)
    subject: Mapped[str] = mapped_column(String)
    payload: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)


class LoopLease(Base):
    """Which loop process runs a model's graph now: taken when free or expired, renewed while
    held, so that loops sharing one database never run one model's thread twice. Kept when the
    holder stops (``holder`` empty), for its alarm mark."""

    __tablename__ = "loop_lease"

    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"), primary_key=True)
    holder: Mapped[str] = mapped_column(String)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    #: The last alarm (by id) whose run the model's loop started: a loop taking the model over
    #: goes on from there, so every alarm is run once.
    alarm_mark: Mapped[int] = mapped_column(Integer, default=0)


class EntityState(Base):
    """An entity's recent readings, from which the rolling features of its next event are derived
    (:mod:`driftpilot.memory.rolling`): written with the events that move it, in their
    transaction."""

    __tablename__ = "entity_state"

    model_id: Mapped[int] = mapped_column(ForeignKey("managed_model.id"), primary_key=True)
    entity: Mapped[str] = mapped_column(String, primary_key=True)
    state: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
