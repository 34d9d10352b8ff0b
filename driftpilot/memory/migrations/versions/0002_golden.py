"""The golden set: events operators pin for every candidate to be scored on.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "golden_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("pinned_at", sa.DateTime(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_golden_event_event_id_event")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["managed_model.id"], name=op.f("fk_golden_event_model_id_managed_model")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_golden_event")),
        sa.UniqueConstraint("model_id", "event_id", name=op.f("uq_golden_event_model_id_event_id")),
    )


def downgrade() -> None:
    op.drop_table("golden_event")
