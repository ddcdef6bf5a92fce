"""job totals for usage

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("total_tokens", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("total_cost_usd", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.create_index(
            "ix_jobs_usage",
            [
                "team_id",
                "created_at",
                "job_type",
                "status",
                "credit_applied",
                "total_tokens",
                "total_cost_usd",
            ],
            unique=False,
        )
        # A prefix of ix_jobs_usage: redundant, and one more index per write.
        batch_op.drop_index("ix_jobs_team_id_created_at")
    # Backfill the totals of existing jobs from their calls.
    op.execute(
        "UPDATE jobs SET "
        "total_tokens = coalesce((SELECT sum(c.prompt_tokens + c.completion_tokens) "
        "FROM llm_calls c WHERE c.job_id = jobs.job_id), 0), "
        "total_cost_usd = coalesce((SELECT sum(c.cost_usd) "
        "FROM llm_calls c WHERE c.job_id = jobs.job_id), 0)"
    )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index("ix_jobs_team_id_created_at", ["team_id", "created_at"])
        batch_op.drop_index("ix_jobs_usage")
        batch_op.drop_column("total_cost_usd")
        batch_op.drop_column("total_tokens")
