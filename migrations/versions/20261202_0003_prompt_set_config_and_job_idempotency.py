"""prompt set config and search time; job idempotency key

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02 03:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("prompt_sets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "config",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
        batch_op.add_column(sa.Column("searched_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("search_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.String(length=128), nullable=True))
        batch_op.add_column(sa.Column("request_hash", sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_search_jobs_idempotency_key"), ["idempotency_key"]
        )


def downgrade() -> None:
    with op.batch_alter_table("search_jobs", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_search_jobs_idempotency_key"), type_="unique")
        batch_op.drop_column("request_hash")
        batch_op.drop_column("idempotency_key")
    with op.batch_alter_table("prompt_sets", schema=None) as batch_op:
        batch_op.drop_column("searched_at")
        batch_op.drop_column("config")
