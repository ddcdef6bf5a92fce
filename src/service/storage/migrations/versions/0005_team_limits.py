"""team rate limits and per-job bounds

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

Issue 16: a team's rpm_limit / tpm_limit (0 = none) and its per-job bounds
(max_calls_per_job, default 100; max_tokens_per_job and max_job_cost_usd, 0 = none), and each
job's calls_admitted, the count the money writer's conditional UPDATE takes atomically before a
call reaches a provider.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("rpm_limit", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("tpm_limit", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("max_calls_per_job", sa.Integer(), server_default="100", nullable=False)
        )
        batch_op.add_column(
            sa.Column("max_tokens_per_job", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("max_job_cost_usd", sa.Float(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            "limits_nonnegative",
            "rpm_limit >= 0 AND tpm_limit >= 0 AND max_calls_per_job >= 0 "
            "AND max_tokens_per_job >= 0 AND max_job_cost_usd >= 0",
        )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("calls_admitted", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("calls_admitted")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_constraint("limits_nonnegative", type_="check")
        batch_op.drop_column("max_job_cost_usd")
        batch_op.drop_column("max_tokens_per_job")
        batch_op.drop_column("max_calls_per_job")
        batch_op.drop_column("tpm_limit")
        batch_op.drop_column("rpm_limit")
