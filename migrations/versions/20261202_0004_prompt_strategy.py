"""prompt strategy per user prompt and per search job; user prompt state

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02 08:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("strategy", sa.String(length=32), server_default="paprec", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "state",
                sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
                nullable=True,
            )
        )
    with op.batch_alter_table("search_jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("strategy", sa.String(length=32), server_default="paprec", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("search_jobs", schema=None) as batch_op:
        batch_op.drop_column("strategy")
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.drop_column("state")
        batch_op.drop_column("strategy")
