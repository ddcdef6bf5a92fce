"""direct calls and their budget

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03

The OpenAI-compatible API (seed 003, Pattern B) spends a team's budget (credits_allocated x
$0.10) call by call. Each call reserves an upper bound of its cost before it is sent and settles
to its actual cost when it ends; money is integer nano-USD so that the team row and the sum of
its calls agree exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_Json = sa.JSON().with_variant(sa.dialects.postgresql.JSONB(), "postgresql")
_SeqId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("budget_spent_nanos", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.add_column(
            sa.Column("budget_reserved_nanos", sa.BigInteger(), server_default="0", nullable=False)
        )
        batch_op.create_check_constraint(
            "budget_reserved_nonnegative", "budget_reserved_nanos >= 0"
        )
    op.create_table(
        "direct_calls",
        sa.Column("id", _SeqId, autoincrement=True, nullable=False),
        sa.Column("call_id", sa.String(length=36), nullable=False),
        sa.Column("team_id", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("requested_model", sa.String(length=256), nullable=False),
        sa.Column("model_group", sa.String(length=128), nullable=False),
        sa.Column("model", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("streamed", sa.Boolean(), nullable=False),
        sa.Column("prompt_tokens", sa.Integer(), nullable=False),
        sa.Column("completion_tokens", sa.Integer(), nullable=False),
        sa.Column("usage_estimated", sa.Boolean(), nullable=False),
        sa.Column("reserved_nanos", sa.BigInteger(), nullable=False),
        sa.Column("cost_nanos", sa.BigInteger(), nullable=False),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("ttft_ms", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", _Json, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("settled_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('in_flight','success','failed','cancelled','expired')",
            name=op.f("ck_direct_calls_status_known"),
        ),
        sa.CheckConstraint(
            "kind IN ('chat','embeddings')", name=op.f("ck_direct_calls_kind_known")
        ),
        sa.CheckConstraint(
            "reserved_nanos >= 0 AND cost_nanos >= 0",
            name=op.f("ck_direct_calls_money_nonnegative"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"], ["teams.team_id"], name=op.f("fk_direct_calls_team_id_teams")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_direct_calls")),
        sa.UniqueConstraint("call_id", name=op.f("uq_direct_calls_call_id")),
    )
    op.create_index("ix_direct_calls_team_created", "direct_calls", ["team_id", "created_at"])
    op.create_index("ix_direct_calls_status_created", "direct_calls", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_direct_calls_status_created", table_name="direct_calls")
    op.drop_index("ix_direct_calls_team_created", table_name="direct_calls")
    op.drop_table("direct_calls")
    with op.batch_alter_table("teams", schema=None) as batch_op:
        batch_op.drop_constraint("budget_reserved_nonnegative", type_="check")
        batch_op.drop_column("budget_reserved_nanos")
        batch_op.drop_column("budget_spent_nanos")
