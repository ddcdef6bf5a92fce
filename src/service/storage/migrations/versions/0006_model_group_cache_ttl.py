"""model groups: response cache TTL

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

Issue 16's response cache is opt-in per model group: `cache_ttl_seconds` (0 = off) is a column of
the group, read with it by every call that already loads the group (no extra query).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("model_groups", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("cache_ttl_seconds", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("model_groups", schema=None) as batch_op:
        batch_op.drop_column("cache_ttl_seconds")
