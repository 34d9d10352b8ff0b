"""Create every table of the memory, with its indexes.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "managed_model",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("task", sa.String(), nullable=False),
        sa.Column("family", sa.String(), nullable=False),
        sa.Column("schema", sa.JSON(), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_managed_model")),
        sa.UniqueConstraint("name", name=op.f("uq_managed_model_name")),
    )
    op.create_table(
        "alarm",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("groups", sa.JSON(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('firing', 'resolved')", name=op.f("ck_alarm_status")),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_alarm_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alarm")),
        sa.UniqueConstraint("key", name=op.f("uq_alarm_key")),
    )
    op.create_index("ix_alarm_starts_at", "alarm", ["starts_at"], unique=False)

    op.create_table(
        "decision",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("trigger", sa.JSON(), nullable=False),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("diagnosis", sa.JSON(), nullable=False),
        sa.Column("policy_verdicts", sa.JSON(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("rationale", sa.Text(), nullable=False),
        sa.Column("approvals", sa.JSON(), nullable=False),
        sa.Column("prev_hash", sa.String(), nullable=False),
        sa.Column("hash", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_decision_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decision")),
    )
    op.create_index("ix_decision_model_id_time", "decision", ["model_id", "time"], unique=False)
    op.create_index("ix_decision_run_id", "decision", ["run_id"], unique=False)

    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("entity", sa.String(), nullable=False),
        sa.Column("group_key", sa.String(), nullable=True),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("served_version", sa.Integer(), nullable=True),
        sa.Column("prediction", sa.String(), nullable=True),
        sa.Column("probabilities", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("ingested_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_event_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event")),
        sa.UniqueConstraint("model_id", "key", name=op.f("uq_event_model_id_key")),
    )
    op.create_index("ix_event_model_id_time", "event", ["model_id", "time"], unique=False)

    op.create_table(
        "snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("content_hash", sa.String(), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=False),
        sa.Column("stats", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_snapshot_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_snapshot")),
    )
    op.create_index("ix_snapshot_model_id", "snapshot", ["model_id"], unique=False)

    op.create_table(
        "label",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("value", sa.String(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "source IN ('person', 'oracle', 'system', 'pseudo')",
            name=op.f("ck_label_source"),
        ),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_label_event_id_event")),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_label_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label")),
        sa.UniqueConstraint("event_id", "source", name=op.f("uq_label_event_id_source")),
    )
    op.create_index("ix_label_model_id_time", "label", ["model_id", "time"], unique=False)

    op.create_table(
        "label_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("answered_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint(
            "status IN ('open', 'answered', 'expired')",
            name=op.f("ck_label_request_status"),
        ),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_label_request_event_id_event")),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_label_request_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_label_request")),
    )
    op.create_index("ix_label_request_event_id", "label_request", ["event_id"], unique=False)
    op.create_index(
        "ix_label_request_model_id_status",
        "label_request",
        ["model_id", "status"],
        unique=False,
    )

    op.create_table(
        "quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("start", sa.DateTime(), nullable=False),
        sa.Column("end", sa.DateTime(), nullable=True),
        sa.Column("groups", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.id"],
            name=op.f("fk_quarantine_decision_id_decision"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_quarantine_model_id_managed_model"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    op.create_index("ix_quarantine_model_id", "quarantine", ["model_id"], unique=False)

    op.create_table(
        "snapshot_item",
        sa.Column("snapshot_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("label", sa.String(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_snapshot_item_event_id_event")),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_snapshot_item_snapshot_id_snapshot"),
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "event_id", name=op.f("pk_snapshot_item")),
    )
    op.create_table(
        "version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.Integer(), nullable=True),
        sa.Column("stage", sa.String(), nullable=False),
        sa.Column("artifacts", sa.JSON(), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("snapshot_id", sa.Integer(), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.CheckConstraint(
            "stage IN ('candidate', 'canary', 'champion', 'archived', 'rolled_back', 'rejected')",
            name=op.f("ck_version_stage"),
        ),
        sa.ForeignKeyConstraint(
            ["decision_id"],
            ["decision.id"],
            name=op.f("fk_version_decision_id_decision"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_version_model_id_managed_model"),
        ),
        sa.ForeignKeyConstraint(["parent_id"], ["version.id"], name=op.f("fk_version_parent_id_version")),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshot.id"],
            name=op.f("fk_version_snapshot_id_snapshot"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_version")),
        sa.UniqueConstraint("model_id", "number", name=op.f("uq_version_model_id_number")),
    )
    op.create_table(
        "release",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("baseline_version_id", sa.Integer(), nullable=True),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("ended_at", sa.DateTime(), nullable=True),
        sa.Column("evidence", sa.JSON(), nullable=False),
        sa.Column("verdict", sa.String(), nullable=True),
        sa.ForeignKeyConstraint(
            ["baseline_version_id"],
            ["version.id"],
            name=op.f("fk_release_baseline_version_id_version"),
        ),
        sa.ForeignKeyConstraint(
            ["model_id"],
            ["managed_model.id"],
            name=op.f("fk_release_model_id_managed_model"),
        ),
        sa.ForeignKeyConstraint(["version_id"], ["version.id"], name=op.f("fk_release_version_id_version")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_release")),
    )
    op.create_index("ix_release_model_id", "release", ["model_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_release_model_id", table_name="release")

    op.drop_table("release")
    op.drop_table("version")
    op.drop_table("snapshot_item")
    op.drop_index("ix_quarantine_model_id", table_name="quarantine")

    op.drop_table("quarantine")
    op.drop_index("ix_label_request_model_id_status", table_name="label_request")
    op.drop_index("ix_label_request_event_id", table_name="label_request")

    op.drop_table("label_request")
    op.drop_index("ix_label_model_id_time", table_name="label")

    op.drop_table("label")
    op.drop_index("ix_snapshot_model_id", table_name="snapshot")

    op.drop_table("snapshot")
    op.drop_index("ix_event_model_id_time", table_name="event")

    op.drop_table("event")
    op.drop_index("ix_decision_run_id", table_name="decision")
    op.drop_index("ix_decision_model_id_time", table_name="decision")

    op.drop_table("decision")
    op.drop_index("ix_alarm_starts_at", table_name="alarm")

    op.drop_table("alarm")
    op.drop_table("managed_model")
