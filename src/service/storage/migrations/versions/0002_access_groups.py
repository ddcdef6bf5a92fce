"""access groups

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "access_groups",
        sa.Column("access_group_id", sa.String(length=36), nullable=False),
        sa.Column("group_name", sa.String(length=128), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("access_group_id", name=op.f("pk_access_groups")),
        sa.UniqueConstraint("group_name", name=op.f("uq_access_groups_group_name")),
    )
    op.create_table(
        "access_group_model_groups",
        sa.Column("access_group_id", sa.String(length=36), nullable=False),
        sa.Column("model_group_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_group_id"],
            ["access_groups.access_group_id"],
            name=op.f("fk_access_group_model_groups_access_group_id_access_groups"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["model_group_id"],
            ["model_groups.model_group_id"],
            name=op.f("fk_access_group_model_groups_model_group_id_model_groups"),
        ),
        sa.PrimaryKeyConstraint(
            "access_group_id", "model_group_id", name=op.f("pk_access_group_model_groups")
        ),
    )
    op.create_table(
        "team_access_groups",
        sa.Column("team_id", sa.String(length=128), nullable=False),
        sa.Column("access_group_id", sa.String(length=36), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["access_group_id"],
            ["access_groups.access_group_id"],
            name=op.f("fk_team_access_groups_access_group_id_access_groups"),
        ),
        sa.ForeignKeyConstraint(
            ["team_id"],
            ["teams.team_id"],
            name=op.f("fk_team_access_groups_team_id_teams"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("team_id", "access_group_id", name=op.f("pk_team_access_groups")),
    )


def downgrade() -> None:
    op.drop_table("team_access_groups")
    op.drop_table("access_group_model_groups")
    op.drop_table("access_groups")
