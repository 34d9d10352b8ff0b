"""The corpus: a text model's raw text on its events, events kept out of the training corpus
(``corpus_exclusion``), and label requests a person skipped, with who answered them.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OLD_STATUSES = "status IN ('open', 'answered', 'expired')"
_NEW_STATUSES = "status IN ('open', 'answered', 'skipped', 'expired')"


def upgrade() -> None:
    # A nullable column: SQLite adds it in place, no copy of the (large) event table.
    op.add_column("event", sa.Column("text", sa.Text(), nullable=True))
    # SQLite cannot alter a CHECK constraint: batch mode copies the (small) table.
    with op.batch_alter_table("label_request") as batch:
        batch.drop_constraint(op.f("ck_label_request_status"), type_="check")
        batch.create_check_constraint("status", sa.text(_NEW_STATUSES))
        batch.add_column(sa.Column("answered_by", sa.String(), nullable=True))
    op.create_table(
        "corpus_exclusion",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("by", sa.String(), nullable=False),
        sa.Column("time", sa.DateTime(), nullable=False),
        sa.Column("decision_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "kind IN ('deleted', 'label_issue', 'duplicate', 'outlier', 'stuck', 'missing')",
            name=op.f("ck_corpus_exclusion_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["decision_id"], ["decision.id"], name=op.f("fk_corpus_exclusion_decision_id_decision")
        ),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name=op.f("fk_corpus_exclusion_event_id_event")),
        sa.ForeignKeyConstraint(
            ["model_id"], ["managed_model.id"], name=op.f("fk_corpus_exclusion_model_id_managed_model")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_corpus_exclusion")),
        sa.UniqueConstraint("model_id", "event_id", name=op.f("uq_corpus_exclusion_model_id_event_id")),
    )


def downgrade() -> None:
    op.drop_table("corpus_exclusion")
    with op.batch_alter_table("label_request") as batch:
        batch.drop_column("answered_by")
        batch.drop_constraint(op.f("ck_label_request_status"), type_="check")
        batch.create_check_constraint("status", sa.text(_OLD_STATUSES))
    op.drop_column("event", "text")
