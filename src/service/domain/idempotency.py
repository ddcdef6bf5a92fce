"""Idempotency keys (`request_id`): a retry with the same body gets the first result; the same
key with another body is refused. The body is compared by this fingerprint."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson


def body_hash(body: dict[str, Any]) -> str:
    """Fingerprint of an idempotent request's body."""
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
