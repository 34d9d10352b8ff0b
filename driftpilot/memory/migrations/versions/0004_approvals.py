"""Approvals: what a person is asked to approve at autonomy L3, and their answer.

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("action", sa.String(), nullable=False),
        sa.Column("subject", sa.JSON(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.DateTime(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("decided_by", sa.String(), nullable=True),
        sa.Column("decided_at", sa.DateTime(), nullable=True),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.CheckConstraint("status IN ('pending', 'approved', 'denied', 'expired')", name=op.f("ck_approval_status")),
        sa.ForeignKeyConstraint(["model_id"], ["managed_model.id"], name=op.f("fk_approval_model_id_managed_model")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approval")),
        sa.UniqueConstraint("model_id", "run_id", "action", name=op.f("uq_approval_model_id_run_id_action")),
    )
    op.create_index("ix_approval_model_id_status", "approval", ["model_id", "status"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_approval_model_id_status", table_name="approval")
    op.drop_table("approval")
