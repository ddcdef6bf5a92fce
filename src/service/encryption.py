"""The data key that seals provider credentials at rest: AES-256-GCM from `cryptography`.

ENCRYPTION_KEY holds one or more keys, comma-separated, each 32 random bytes in url-safe base64
(`python -m service rotate-encryption-key --generate` prints one). The first key seals; every
key opens, so that a key can be rotated without downtime (give every replica "new,old", run
`python -m service rotate-encryption-key`, then drop "old"). `make run` generates
data/encryption_key when ENCRYPTION_KEY is unset. The key never reaches the database.

A sealed value is the text "v1.<key id>.<base64(nonce + ciphertext + tag)>": the key id (first 8
hex digits of the key's SHA-256) picks the key that opens it, and the associated data binds it to
its purpose, so that a ciphertext of something else cannot be passed off as a credential.
AES-GCM rather than Fernet: 0.9 µs per open against 13 µs (docs/decisions.md, issue 19), and
opening happens on every call that uses a pasted key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

VERSION = "v1"
_AAD = b"saas-llm-gateway model config credential v1"
_NONCE_BYTES = 12
KEY_FILE = "encryption_key"  # under data/, written by `make run`


class EncryptionKeyError(Exception):
    """ENCRYPTION_KEY is missing, malformed, or cannot open a stored value. The message says
    what to do and never holds a key."""


def generate_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def _decode_key(text: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise EncryptionKeyError(
            "ENCRYPTION_KEY must be one or more comma-separated keys of 32 random bytes in "
            "url-safe base64 (44 characters); `python -m service rotate-encryption-key "
            "--generate` prints one"
        )
    return raw


def key_id(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:8]


class SecretBox:
    """Seals and opens short secrets with the keys of ENCRYPTION_KEY (the first one seals)."""

    def __init__(self, keys: str) -> None:
        parts = [p.strip() for p in keys.split(",") if p.strip()]
        if not parts:
            raise EncryptionKeyError("ENCRYPTION_KEY is empty")
        raws = [_decode_key(p) for p in parts]
        self._keys = {key_id(r): AESGCM(r) for r in raws}
        self._current = key_id(raws[0])

    @property
    def current_key_id(self) -> str:
        return self._current

    def seal(self, plaintext: bytes) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        body = self._keys[self._current].encrypt(nonce, plaintext, _AAD)
        token = base64.urlsafe_b64encode(nonce + body).decode()
        return f"{VERSION}.{self._current}.{token}"

    def open(self, sealed: str) -> bytes:
        version, _, rest = sealed.partition(".")
        kid, _, token = rest.partition(".")
        if version != VERSION or not token:
            raise EncryptionKeyError("a stored credential is not in a known sealed format")
        aead = self._keys.get(kid)
        if aead is None:
            raise EncryptionKeyError(
                f"a stored credential was sealed with key {kid}, which ENCRYPTION_KEY does not "
                "hold (wrong key, or a rotation left out the old one)"
            )
        try:
            raw = base64.urlsafe_b64decode(token.encode())
            return aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD)
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise EncryptionKeyError(
                f"a stored credential does not open with key {kid}: it was altered, or "
                "ENCRYPTION_KEY is not the key it was sealed with"
            ) from exc

    def reseal(self, sealed: str) -> str:
        """The same secret sealed with the current key (rotation)."""
        return self.seal(self.open(sealed))

    def sealed_with_current(self, sealed: str) -> bool:
        return sealed.startswith(f"{VERSION}.{self._current}.")


def load_key_text(env_value: str | None, data_dir: Path) -> tuple[str | None, Path | None]:
    """(keys, file they came from): ENCRYPTION_KEY wins over data/encryption_key (the file
    `make run` generates); (None, None) when neither is set."""
    if env_value and env_value.strip():
        return env_value.strip(), None
    path = data_dir / KEY_FILE
    if path.exists():
        text = path.read_text().strip()
        if text:
            return text, path
    return None, None


def write_key_file(path: Path, text: str) -> None:
    """Replace the key file atomically, readable by its owner only."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
