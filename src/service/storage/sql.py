"""SQLAlchemy Core as a statement builder, run on the raw database driver.

The repositories build their statements with SQLAlchemy Core (schema.py's tables, types and
dialects), but no SQLAlchemy engine, pool or asyncio layer runs them: through that layer a
one-row transaction cost more CPU than the database spent on it (a thread hop per cursor
operation on aiosqlite, a greenlet switch per statement on asyncpg; docs/decisions.md has the
numbers). Instead a statement is compiled for the database's dialect once (`Prepared`) or per
call (ad-hoc statements of the admin paths), and its SQL text runs on the one connection stack
of the database (storage/database.py: sqlite3 or an asyncpg pool), with SQLAlchemy's own type
processors converting values in and out (SQLite's DATETIME text, JSON text, 0/1 booleans).

The answer has the part of SQLAlchemy's Result API the repositories use: `first()`, `all()`,
`one()`, `scalar()`, `scalar_one()`, `scalars()`, and rows that are tuples with `_mapping`.

Two constructs replace IN lists, which SQLAlchemy renders only at execution time: `one_of` for a
constant list (rendered in the SQL) and `in_list` for a list passed as one parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import ColumnElement, String, bindparam, literal_column
from sqlalchemy.dialects import sqlite
from sqlalchemy.dialects.postgresql import asyncpg as pg_asyncpg
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ClauseElement
from sqlalchemy.types import TypeDecorator


def _json_text(value: Any) -> str:
    return orjson.dumps(value).decode()


# JSON columns are written and read with orjson (SQLAlchemy's default is the json module).
SQLITE: Dialect = sqlite.pysqlite.dialect(
    json_serializer=_json_text, json_deserializer=orjson.loads
)
POSTGRES: Dialect = pg_asyncpg.dialect(  # type: ignore[no-untyped-call]
    json_serializer=_json_text, json_deserializer=orjson.loads
)

Processor = Callable[[Any], Any] | None


class Row(tuple[Any, ...]):
    """A result row: a tuple, with `_mapping` by column name as SQLAlchemy's Row has."""

    __slots__ = ()
    _keys: tuple[str, ...] = ()

    @property
    def _mapping(self) -> dict[str, Any]:
        return dict(zip(self._keys, self, strict=True))


def _row_class(keys: tuple[str, ...]) -> type[Row]:
    return type("Row", (Row,), {"__slots__": (), "_keys": keys})


class Scalars(list[Any]):
    """The first column of each row; `.all()` as on SQLAlchemy's ScalarResult."""

    def all(self) -> list[Any]:
        return list(self)


class Result:
    """The rows of one statement (all fetched: our statements return few rows)."""

    __slots__ = ("_rows",)

    def __init__(self, rows: list[Row]) -> None:
        self._rows = rows

    def first(self) -> Row | None:
        return self._rows[0] if self._rows else None

    def all(self) -> list[Row]:
        return self._rows

    def one(self) -> Row:
        if len(self._rows) != 1:
            raise LookupError(f"expected one row, got {len(self._rows)}")
        return self._rows[0]

    def scalar(self) -> Any:
        return self._rows[0][0] if self._rows else None

    def scalar_one(self) -> Any:
        return self.one()[0]

    def scalars(self) -> Scalars:
        return Scalars(r[0] for r in self._rows)

    def __iter__(self) -> Iterator[Row]:
        return iter(self._rows)


@dataclass(frozen=True, slots=True)
class Compiled:
    """One statement's SQL for one dialect, with how to bind its parameters and read its rows."""

    sql: str
    # Parameter names in placeholder order, each with its default (a value the statement
    # carries itself) and the type's bind processor.
    names: tuple[str, ...]
    defaults: Mapping[str, Any]
    binders: tuple[Processor, ...]
    # Result columns: names (for `_mapping`) and the type's result processor.
    row: type[Row] | None
    readers: tuple[Processor, ...]

    def args(self, params: Mapping[str, Any] | None) -> list[Any]:
        """The positional arguments of one execution."""
        out = []
        for name, bind in zip(self.names, self.binders, strict=True):
            value = self.defaults[name] if params is None or name not in params else params[name]
            out.append(value if bind is None or value is None else bind(value))
        return out

    def rows(self, raw: Sequence[Sequence[Any]]) -> list[Row]:
        row = self.row
        if row is None:
            return []
        readers = self.readers
        if not any(readers):
            return [row(r) for r in raw]
        return [
            row(v if f is None or v is None else f(v) for f, v in zip(readers, r, strict=True))
            for r in raw
        ]


def compile_for(
    statement: ClauseElement, dialect: Dialect, keys: Sequence[str] | None = None
) -> Compiled:
    """Compile `statement` for `dialect`. `keys`: the parameter names an INSERT or UPDATE
    without `.values()` is executed with (SQLAlchemy's column_keys)."""
    kw: dict[str, Any] = {"dialect": dialect}
    if keys is not None:
        kw["column_keys"] = list(keys)
    c: Any = statement.compile(**kw)
    names = tuple(c.positiontup or ())
    binders = tuple(_bind_processor(c.binds[n].type, dialect) for n in names)
    columns = getattr(c, "_result_columns", None) or []
    row = _row_class(tuple(col[0] for col in columns)) if columns else None
    readers = tuple(_result_processor(col[3], dialect) for col in columns)
    return Compiled(
        sql=c.string,
        names=names,
        defaults=dict(c.params),
        binders=binders,
        row=row,
        readers=readers,
    )


def _bind_processor(type_: Any, dialect: Dialect) -> Processor:
    impl = type_.dialect_impl(dialect)
    processor: Processor = impl.bind_processor(dialect)
    return processor


def _result_processor(type_: Any, dialect: Dialect) -> Processor:
    if dialect is POSTGRES:
        # asyncpg hands back Python values (datetime, bool, float); JSON is decoded by the codec
        # storage/database.py registers on each connection, as SQLAlchemy's asyncpg dialect does.
        return None
    impl = type_.dialect_impl(dialect)
    processor: Processor = impl.result_processor(dialect, None)
    return processor


class Prepared:
    """A statement built once and compiled once per dialect and parameter set, then reused:
    building and compiling a statement costs more CPU than running it."""

    __slots__ = ("_cache", "statement")

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._cache: dict[tuple[str, tuple[str, ...] | None], Compiled] = {}

    def compiled(self, dialect: Dialect, keys: tuple[str, ...] | None) -> Compiled:
        key = (dialect.name, keys)
        found = self._cache.get(key)
        if found is None:
            found = self._cache[key] = compile_for(self.statement, dialect, keys)
        return found


def prepared(statement: ClauseElement) -> Prepared:
    return Prepared(statement)


def one_of(column: ColumnElement[Any], values: Sequence[str]) -> ColumnElement[bool]:
    """`column IN ('a', 'b')` for a constant list of the code's own strings (rendered in the
    SQL, so that the statement compiles once)."""
    for v in values:
        if "'" in v:
            raise ValueError(f"one_of takes plain constants, not {v!r}")
    return column.in_([literal_column(f"'{v}'") for v in values])


class _JsonList(TypeDecorator[list[str]]):
    """A list of strings passed as one parameter: a JSON array for SQLite's json_each, an
    array for PostgreSQL's ANY."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import ARRAY

            return dialect.type_descriptor(ARRAY(String()))
        return dialect.type_descriptor(String())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if dialect.name == "postgresql":
            return list(value)
        return _json_text(list(value))


class _InList(ColumnElement[bool]):
    inherit_cache = True

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.param = bindparam(name, type_=_JsonList())


@compiles(_InList, "sqlite")
def _in_list_sqlite(element: _InList, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} IN (SELECT value FROM json_each({compiler.process(element.param, **kw)}))"


@compiles(_InList, "postgresql")
def _in_list_postgres(element: _InList, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    return f"{column} = ANY({compiler.process(element.param, **kw)})"


def in_list(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """`column IN (<the list passed as parameter `name`>)`, compiled once for any length."""
    return _InList(column, name)
