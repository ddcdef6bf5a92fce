"""Virtual keys: generated once, stored only as a SHA-256 hash."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "sk-"
DISPLAY_PREFIX_LEN = 10


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_team_key() -> tuple[str, str, str]:
    """(key, sha256 hex, display prefix). 32 random bytes = 43 url-safe chars."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, hash_key(key), key[:DISPLAY_PREFIX_LEN]


def same_secret(given: str, expected: str) -> bool:
    """Constant-time comparison."""
    return hmac.compare_digest(given.encode(), expected.encode())
