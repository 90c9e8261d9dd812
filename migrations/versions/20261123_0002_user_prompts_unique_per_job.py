"""user prompts unique per job

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 16:14:28.298791
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.create_unique_constraint(
            batch_op.f("uq_user_prompts_user_id_task_job_id"), ["user_id", "task", "job_id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("user_prompts", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_user_prompts_user_id_task_job_id"), type_="unique")
