"""Apply Alembic migrations from code (no alembic.ini needed).

`migrate(url)` is blocking and must not run inside a running event loop: the
Alembic env starts its own loop. Callers in async code use
`await asyncio.to_thread(migrate, url)`.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    # '%' must be escaped in ConfigParser values (passwords may contain it).
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
