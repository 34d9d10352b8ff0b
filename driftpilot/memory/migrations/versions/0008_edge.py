"""The edge (issue 19): who answered each event (the server, or an edge node's student), and the
``student`` stage of a version distilled from its parent for edge nodes.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STAGES = "stage IN ('candidate', 'shadow', 'canary', 'champion', 'archived', 'rolled_back', 'rejected')"
_NEW_STAGES = "stage IN ('candidate', 'shadow', 'canary', 'champion', 'archived', 'rolled_back', 'rejected', 'student')"


def upgrade() -> None:
    with op.batch_alter_table("event") as batch:
        batch.add_column(sa.Column("answered_by", sa.String(), nullable=True))
    # SQLite cannot alter a CHECK constraint: batch mode copies the table.
    with op.batch_alter_table("version") as batch:
        batch.drop_constraint(op.f("ck_version_stage"), type_="check")
        batch.create_check_constraint("stage", sa.text(_NEW_STAGES))


def downgrade() -> None:
    with op.batch_alter_table("version") as batch:
        batch.drop_constraint(op.f("ck_version_stage"), type_="check")
        batch.create_check_constraint("stage", sa.text(_OLD_STAGES))
    with op.batch_alter_table("event") as batch:
        batch.drop_column("answered_by")
