"""Release plans: a release's phase and canary step, the ``shadow`` stage, and the append-only
history of what served whom (``serving_change``).

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STAGES = "stage IN ('candidate', 'canary', 'champion', 'archived', 'rolled_back', 'rejected')"
_NEW_STAGES = "stage IN ('candidate', 'shadow', 'canary', 'champion', 'archived', 'rolled_back', 'rejected')"


def upgrade() -> None:
    # SQLite cannot alter a CHECK constraint: batch mode copies the table.
    with op.batch_alter_table("version") as batch:
        batch.drop_constraint(op.f("ck_version_stage"), type_="check")
        batch.create_check_constraint("stage", sa.text(_NEW_STAGES))
    with op.batch_alter_table("release") as batch:
        batch.add_column(sa.Column("phase", sa.String(), server_default="canary", nullable=False))
        batch.add_column(sa.Column("step", sa.Integer(), server_default="0", nullable=False))
        batch.add_column(sa.Column("step_started_at", sa.DateTime(), nullable=True))
        batch.add_column(sa.Column("plan", sa.JSON(), server_default="[]", nullable=False))
        batch.add_column(sa.Column("cohort", sa.String(), server_default="entity", nullable=False))
        batch.add_column(sa.Column("salt", sa.String(), server_default="", nullable=False))
    op.create_table(
        "serving_change",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(), nullable=False),
        sa.Column("champion", sa.Integer(), nullable=True),
        sa.Column("candidate", sa.Integer(), nullable=True),
        sa.Column("phase", sa.String(), nullable=True),
        sa.Column("share", sa.Float(), nullable=False),
        sa.Column("cohort", sa.String(), nullable=False),
        sa.Column("salt", sa.String(), nullable=False),
        sa.Column("release_id", sa.Integer(), nullable=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.CheckConstraint("cohort IN ('entity', 'group')", name=op.f("ck_serving_change_cohort")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["managed_model.id"], name=op.f("fk_serving_change_model_id_managed_model")
        ),
        sa.ForeignKeyConstraint(["release_id"], ["release.id"], name=op.f("fk_serving_change_release_id_release")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_serving_change")),
    )
    op.create_index("ix_serving_change_model_id_at", "serving_change", ["model_id", "at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_serving_change_model_id_at", table_name="serving_change")
    op.drop_table("serving_change")
    with op.batch_alter_table("release") as batch:
        for column in ("salt", "cohort", "plan", "step_started_at", "step", "phase"):
            batch.drop_column(column)
    with op.batch_alter_table("version") as batch:
        batch.drop_constraint(op.f("ck_version_stage"), type_="check")
        batch.create_check_constraint("stage", sa.text(_OLD_STAGES))
