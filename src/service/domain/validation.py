"""Bounds on every client-supplied value, checked before anything reaches
storage. The limits are documented on the proto fields."""

from __future__ import annotations

import re
from typing import Any

import orjson

from service.domain.errors import InvalidArgument

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
PERIOD_PATTERN = re.compile(r"(\d{4})-(\d{2})")
MAX_METADATA_BYTES = 16 * 1024
MAX_MESSAGES = 256
MAX_CREDITS = 100_000_000
MAX_PAGE = 1000
MAX_OFFSET = 10_000_000
MAX_MODELS_PER_GROUP = 32
MAX_GROUPS_PER_TEAM = 64


def require_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(f"{field} is required", field=field)
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(f"{field} must match [A-Za-z0-9_.:-]{{1,128}}", field=field)
    return value


def optional_id(value: str, field: str) -> str | None:
    if not value:
        return None
    return require_id(value, field)


def text(value: str, field: str, *, max_len: int, required: bool = False) -> str:
    if required and not value.strip():
        raise InvalidArgument(f"{field} is required", field=field)
    if len(value) > max_len:
        raise InvalidArgument(f"{field} is longer than {max_len} characters", field=field)
    if "\x00" in value:
        raise InvalidArgument(f"{field} contains a NUL character", field=field)
    return value


def metadata(value: dict[str, Any], field: str = "metadata") -> dict[str, Any]:
    if not value:
        return {}
    size = len(orjson.dumps(value))
    if size > MAX_METADATA_BYTES:
        raise InvalidArgument(
            f"{field} is {size} bytes; the limit is {MAX_METADATA_BYTES}", field=field
        )
    return value


def credits(value: int, field: str, *, allow_zero: bool) -> int:
    low = 0 if allow_zero else 1
    if value < low or value > MAX_CREDITS:
        raise InvalidArgument(f"{field} must be between {low} and {MAX_CREDITS}", field=field)
    return value


def page(limit: int, offset: int, *, default_limit: int) -> tuple[int, int]:
    if limit < 0 or limit > MAX_PAGE:
        raise InvalidArgument(f"limit must be between 1 and {MAX_PAGE}", field="limit")
    if offset < 0 or offset > MAX_OFFSET:
        raise InvalidArgument(f"offset must be between 0 and {MAX_OFFSET}", field="offset")
    return (limit or default_limit), offset


def period(value: str) -> tuple[int, int]:
    """'YYYY-MM' -> (year, month)."""
    m = PERIOD_PATTERN.fullmatch(value or "")
    if not m or not 1 <= int(m.group(2)) <= 12 or int(m.group(1)) < 1970:
        raise InvalidArgument("period must be a month in the form YYYY-MM", field="period")
    return int(m.group(1)), int(m.group(2))
