"""Database schema (SQLAlchemy Core). Alembic migrations in
storage/migrations are the only way it changes; a test checks that the
migrations produce exactly these tables."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

Json = JSON().with_variant(JSONB(), "postgresql")
# BIGINT autoincrement on PostgreSQL, INTEGER PRIMARY KEY (rowid) on SQLite.
SeqId = BigInteger().with_variant(Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


organizations = Table(
    "organizations",
    metadata,
    Column("organization_id", String(128), primary_key=True),
    Column("name", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Json, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
)

model_groups = Table(
    "model_groups",
    metadata,
    Column("model_group_id", String(36), primary_key=True),
    Column("group_name", String(128), nullable=False, unique=True),
    Column("display_name", String(256), nullable=False),
    Column("description", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Json, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    # Response cache TTL (issue 16); 0 = off.
    Column("cache_ttl_seconds", Integer, nullable=False, server_default="0"),
)

model_group_models = Table(
    "model_group_models",
    metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column(
        "model_group_id",
        String(36),
        ForeignKey("model_groups.model_group_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("model_name", String(256), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("config", Json, nullable=False),
    UniqueConstraint("model_group_id", "priority", name="uq_model_group_models_priority"),
)

teams = Table(
    "teams",
    metadata,
    Column("team_id", String(128), primary_key=True),
    Column(
        "organization_id",
        String(128),
        ForeignKey("organizations.organization_id"),
        nullable=False,
        index=True,
    ),
    Column("team_alias", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Json, nullable=False),
    # SHA-256 hex of the virtual key; the key itself is never stored.
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_prefix", String(16), nullable=False),
    Column("credits_allocated", Integer, nullable=False),
    Column("credits_used", Integer, nullable=False),
    Column("credits_reserved", Integer, nullable=False),
    _ts("created_at"),
    _ts("updated_at"),
    # The OpenAI-compatible API's budget (credits_allocated x $0.10), in nano-USD: the settled
    # cost of the team's direct calls, and the upper bounds held by those in flight.
    Column("budget_spent_nanos", BigInteger, nullable=False, server_default="0"),
    Column("budget_reserved_nanos", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("budget_reserved_nanos >= 0", name="budget_reserved_nonnegative"),
    # Rate limits (per minute) and per-job bounds (DESIGN.md "Operations"); 0 = none.
    Column("rpm_limit", Integer, nullable=False, server_default="0"),
    Column("tpm_limit", Integer, nullable=False, server_default="0"),
    Column("max_calls_per_job", Integer, nullable=False, server_default="100"),
    Column("max_tokens_per_job", Integer, nullable=False, server_default="0"),
    Column("max_job_cost_usd", Float, nullable=False, server_default="0"),
    CheckConstraint(
        "rpm_limit >= 0 AND tpm_limit >= 0 AND max_calls_per_job >= 0 "
        "AND max_tokens_per_job >= 0 AND max_job_cost_usd >= 0",
        name="limits_nonnegative",
    ),
    # The ledger's guarantees, enforced by the database itself.
    CheckConstraint(
        "credits_allocated - credits_used - credits_reserved >= 0", name="available_nonnegative"
    ),
    CheckConstraint("credits_used >= 0", name="used_nonnegative"),
    CheckConstraint("credits_reserved >= 0", name="reserved_nonnegative"),
)

team_model_groups = Table(
    "team_model_groups",
    metadata,
    Column(
        "team_id", String(128), ForeignKey("teams.team_id", ondelete="CASCADE"), primary_key=True
    ),
    Column(
        "model_group_id",
        String(36),
        ForeignKey("model_groups.model_group_id"),
        primary_key=True,
    ),
    Column("position", Integer, nullable=False),
)

access_groups = Table(
    "access_groups",
    metadata,
    Column("access_group_id", String(36), primary_key=True),
    Column("group_name", String(128), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    _ts("created_at"),
)

access_group_model_groups = Table(
    "access_group_model_groups",
    metadata,
    Column(
        "access_group_id",
        String(36),
        ForeignKey("access_groups.access_group_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column(
        "model_group_id",
        String(36),
        ForeignKey("model_groups.model_group_id"),
        primary_key=True,
    ),
    Column("position", Integer, nullable=False),
)

team_access_groups = Table(
    "team_access_groups",
    metadata,
    Column(
        "team_id", String(128), ForeignKey("teams.team_id", ondelete="CASCADE"), primary_key=True
    ),
    Column(
        "access_group_id",
        String(36),
        ForeignKey("access_groups.access_group_id"),
        primary_key=True,
    ),
    Column("position", Integer, nullable=False),
)

credit_transactions = Table(
    "credit_transactions",
    metadata,
    # Monotonic order of the ledger ("newest first" sorts on it).
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("transaction_id", String(36), nullable=False, unique=True),
    Column("team_id", String(128), ForeignKey("teams.team_id"), nullable=False),
    Column("transaction_type", String(16), nullable=False),
    Column("credits_amount", Integer, nullable=False),
    Column("balance_after", Integer, nullable=False),
    Column("reason", String(512), nullable=False),
    Column("job_id", String(36), nullable=True),
    Column("metadata", Json, nullable=False),
    # Idempotency key of an AddCredits request, with a hash of its body.
    Column("request_id", String(128), nullable=True),
    Column("request_hash", String(64), nullable=True),
    _ts("created_at"),
    CheckConstraint("credits_amount >= 0", name="amount_nonnegative"),
    CheckConstraint(
        "transaction_type IN "
        "('allocation','addition','reservation','deduction','release','expiry')",
        name="type_known",
    ),
    UniqueConstraint("team_id", "request_id", name="uq_credit_transactions_request"),
    Index("ix_credit_transactions_team_id_id", "team_id", "id"),
    Index("ix_credit_transactions_job_id", "job_id"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("job_id", String(36), primary_key=True),
    Column("team_id", String(128), ForeignKey("teams.team_id"), nullable=False),
    Column("user_id", String(256), nullable=False),
    Column("job_type", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("metadata", Json, nullable=False),
    Column("result_metadata", Json, nullable=True),
    Column("error_message", Text, nullable=True),
    Column("credit_applied", Boolean, nullable=False),
    # credits_remaining of the team right after completion, so that a repeated
    # complete returns the same summary.
    Column("credits_remaining_after", Integer, nullable=True),
    Column("request_id", String(128), nullable=True),
    Column("request_hash", String(64), nullable=True),
    # The answer of a create-and-call made with a request_id, so that a retry
    # returns the first result ({content, finish_reason, tool_calls}).
    Column("replay_response", Json, nullable=True),
    _ts("created_at"),
    _ts("updated_at"),
    _ts("completed_at", nullable=True),
    CheckConstraint(
        "status IN ('pending','in_progress','completed','failed','expired')", name="status_known"
    ),
    # Totals of the job's calls, kept by the call record's own UPDATE of the
    # job (no extra round trip), so that usage reports read jobs alone.
    Column("total_tokens", Integer, nullable=False, server_default="0"),
    Column("total_cost_usd", Float, nullable=False, server_default="0"),
    # Calls admitted (before their provider call), counted by the money writer's conditional
    # UPDATE so that max_calls_per_job holds exactly under concurrency.
    Column("calls_admitted", Integer, nullable=False, server_default="0"),
    UniqueConstraint("team_id", "request_id", name="uq_jobs_request"),
    # Serves the team's job list (team_id, created_at) and covers the usage
    # report: an index-only range scan per team and month.
    Index(
        "ix_jobs_usage",
        "team_id",
        "created_at",
        "job_type",
        "status",
        "credit_applied",
        "total_tokens",
        "total_cost_usd",
    ),
    Index("ix_jobs_status_updated_at", "status", "updated_at"),
)

llm_calls = Table(
    "llm_calls",
    metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("call_id", String(36), nullable=False, unique=True),
    Column("job_id", String(36), ForeignKey("jobs.job_id"), nullable=False),
    Column("team_id", String(128), nullable=False),
    Column("model_group", String(128), nullable=False),
    # The model that answered (or the last one tried); internal, never shown
    # to clients.
    Column("model", String(256), nullable=False),
    Column("purpose", String(128), nullable=False),
    Column("status", String(16), nullable=False),
    Column("streamed", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    # NULL = unpriced model (never reported as $0).
    Column("cost_usd", Float, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("error", Text, nullable=True),
    # Every model tried: [{"model", "error", "latency_ms"}].
    Column("attempts", Json, nullable=False),
    _ts("created_at"),
    CheckConstraint("status IN ('success','failed','cancelled')", name="status_known"),
    Index("ix_llm_calls_job_id", "job_id"),
)

# Calls of the OpenAI-compatible API (no job): each reserves an upper bound of its cost from the
# team's budget when admitted (status in_flight) and settles to its actual cost when it ends.
direct_calls = Table(
    "direct_calls",
    metadata,
    Column("id", SeqId, primary_key=True, autoincrement=True),
    Column("call_id", String(36), nullable=False, unique=True),
    Column("team_id", String(128), ForeignKey("teams.team_id"), nullable=False),
    Column("kind", String(16), nullable=False),  # chat | embeddings
    # The name the client asked for (an actual model or a model group's name).
    Column("requested_model", String(256), nullable=False),
    # The group the model was found in (or the group asked for).
    Column("model_group", String(128), nullable=False),
    # The model that answered (or the last one tried).
    Column("model", String(256), nullable=False),
    Column("status", String(16), nullable=False),
    Column("streamed", Boolean, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("usage_estimated", Boolean, nullable=False),
    Column("reserved_nanos", BigInteger, nullable=False),
    Column("cost_nanos", BigInteger, nullable=False),
    Column("latency_ms", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),
    Column("error", Text, nullable=True),
    Column("attempts", Json, nullable=False),
    _ts("created_at"),
    _ts("settled_at", nullable=True),
    CheckConstraint(
        "status IN ('in_flight','success','failed','cancelled','expired')", name="status_known"
    ),
    CheckConstraint("kind IN ('chat','embeddings')", name="kind_known"),
    CheckConstraint("reserved_nanos >= 0 AND cost_nanos >= 0", name="money_nonnegative"),
    Index("ix_direct_calls_team_created", "team_id", "created_at"),
    Index("ix_direct_calls_status_created", "status", "created_at"),
)
