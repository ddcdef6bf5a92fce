"""Alembic environment. Configured from code by storage/migrate.py, which also picks the
SQLAlchemy engine (migrations are the one place SQLAlchemy connects by itself)."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from service.storage.migrate import with_connection
from service.storage.schema import metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline migrations are not supported; run `python -m service migrate`")
with_connection(config.get_main_option("sqlalchemy.url") or "", _run)
