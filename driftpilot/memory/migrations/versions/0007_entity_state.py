"""Rolling features: each entity's recent readings (``entity_state``), from which the derived
features of its next event are computed.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "entity_state",
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("entity", sa.String(), nullable=False),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_id"], ["managed_model.id"], name=op.f("fk_entity_state_model_id_managed_model")
        ),
        sa.PrimaryKeyConstraint("model_id", "entity", name=op.f("pk_entity_state")),
    )


def downgrade() -> None:
    op.drop_table("entity_state")
