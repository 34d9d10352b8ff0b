"""The service: API tokens by role, signatures of signed alarm hooks, alerts waiting to be sent,
dead letters of live sources, and the leases loop processes take on models.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("secret_sha256", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("revoked_at", sa.DateTime(), nullable=True),
        sa.CheckConstraint("role IN ('ingest', 'operator', 'auditor', 'admin')", name=op.f("ck_api_token_role")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_token")),
        sa.UniqueConstraint("name", name=op.f("uq_api_token_name")),
        sa.UniqueConstraint("secret_sha256", name=op.f("uq_api_token_secret_sha256")),
    )
    op.create_table(
        "hook_signature",
        sa.Column("signature", sa.String(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("signature", name=op.f("pk_hook_signature")),
    )
    op.create_index("ix_hook_signature_received_at", "hook_signature", ["received_at"], unique=False)
    op.create_table(
        "alert",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=True),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("annotations", sa.JSON(), nullable=False),
        sa.Column("starts_at", sa.DateTime(), nullable=False),
        sa.Column("ends_at", sa.DateTime(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("sent_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'sent', 'failed')", name=op.f("ck_alert_status")),
        sa.ForeignKeyConstraint(["model_id"], ["managed_model.id"], name=op.f("fk_alert_model_id_managed_model")),
        sa.ForeignKeyConstraint(["decision_id"], ["decision.id"], name=op.f("fk_alert_decision_id_decision")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
        sa.UniqueConstraint("key", name=op.f("uq_alert_key")),
    )
    op.create_index("ix_alert_status_next_attempt_at", "alert", ["status", "next_attempt_at"], unique=False)
    op.create_table(
        "dead_letter",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(), nullable=False),
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter")),
    )
    op.create_index("ix_dead_letter_received_at", "dead_letter", ["received_at"], unique=False)
    op.create_table(
        "loop_lease",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("holder", sa.String(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.Column("alarm_mark", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["managed_model.id"], name=op.f("fk_loop_lease_model_id_managed_model")),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_loop_lease")),
    )


def downgrade() -> None:
    op.drop_table("loop_lease")
    op.drop_index("ix_dead_letter_received_at", table_name="dead_letter")
    op.drop_table("dead_letter")
    op.drop_index("ix_alert_status_next_attempt_at", table_name="alert")
    op.drop_table("alert")
    op.drop_index("ix_hook_signature_received_at", table_name="hook_signature")
    op.drop_table("hook_signature")
    op.drop_table("api_token")
