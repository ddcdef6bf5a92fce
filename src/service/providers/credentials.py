"""Provider credentials in model configs: every rule about them lives here.

Which values are credentials:
- `api_key`, `azure_ad_token`, `aws_access_key_id`, `aws_secret_access_key`, `aws_session_token`,
  `vertex_credentials`: always;
- every value of `extra_headers` (a name-based rule misses `X-Credential`, `X-Goog-...`, a
  proxy's own header; the values are few and small, so all of them are treated as secret);
- `api_base` when it carries credentials: user info (`https://user:pass@host`) or a query string
  (`?api_key=...`); a plain URL is not a secret and is stored and shown as it is.

Each may be written in two forms:
- an environment reference, `"os.environ/NAME"` (LiteLLM's convention), read at call time. NAME
  may only name a provider credential: it ends in `_KEY` (so `_API_KEY`), `_TOKEN` or `_SECRET`,
  or is one of KNOWN_PROVIDER_ENV or PROVIDER_ENV_NAMES; never one of the gateway's own settings
  (MASTER_KEY, DATABASE_URL, REDIS_URL, ENCRYPTION_KEY, ...), so that a model config cannot send
  the process's secrets to an api_base of its choosing. Refused at create/update and at call time.
- a literal, pasted by an operator: sealed with ENCRYPTION_KEY (service/encryption.py) before it
  is stored, as `{"$encrypted": "v1.<key id>.<...>", "hint": "****abcd"}`. Without
  ENCRYPTION_KEY a literal is refused.

What reads show (never the secret, never decrypted to be shown):
- the master key: a sealed value as its hint, `"****"` and the last 4 characters (for api_base,
  the URL with `****` in place of the user info and the query); env references as they are.
  Sending the hint back unchanged in an update keeps the stored secret (read, edit, write back
  works); a hint that matches no stored secret of that model is refused.
- a team key: no credential at all (the fields are left out).

Opened only when a call is made: `for_call` gives the provider a copy of the model with the
secrets in clear, for that attempt only.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from service.encryption import EncryptionKeyError, SecretBox
from service.providers.base import ModelSpec, ProviderError

ENV_PREFIX = "os.environ/"
SEALED = "$encrypted"
HINT = "hint"
REDACTED = "****"
SECRET_FIELDS = (
    "api_key",
    "azure_ad_token",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_session_token",
    "vertex_credentials",
)
HEADERS = "extra_headers"
API_BASE = "api_base"
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
PROVIDER_ENV_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET")
# Provider settings LiteLLM documents under names the suffix rule does not cover.
KNOWN_PROVIDER_ENV = frozenset(
    {
        "AWS_ACCESS_KEY_ID",
        "AWS_REGION_NAME",
        "AWS_REGION",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "AZURE_API_BASE",
        "AZURE_API_VERSION",
        "VERTEXAI_PROJECT",
        "VERTEXAI_LOCATION",
    }
)
# The gateway's own settings (besides every field of service.settings.Settings, added below) and
# other processes' secrets the service may have in its environment.
_GATEWAY_ENV = frozenset(
    {
        "MASTER_KEY",
        "DATABASE_URL",
        "REDIS_URL",
        "ENCRYPTION_KEY",
        "PROVIDER_ENV_NAMES",
        "TEST_PG_URL",
        "PGPASSWORD",
    }
)
# Hints show the last characters only of values long enough for that to reveal little.
_HINT_MIN_LEN = 16
_HINT_TAIL = 4


@functools.cache
def _gateway_env() -> frozenset[str]:
    from service.settings import Settings

    return _GATEWAY_ENV | {name.upper() for name in Settings.model_fields}


class CredentialError(ValueError):
    """A credential field a create or update cannot accept; `field` is its path in the
    request (models.config.api_key). The message never holds the value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


@functools.lru_cache(maxsize=1024)
def env_reference_error(name: str, extra_names: frozenset[str] = frozenset()) -> str | None:
    """Why "os.environ/<name>" may not be used, or None when it may. (Cached: every call that
    uses a reference asks; `extra_names` are upper-case.)"""
    if not _ENV_NAME.fullmatch(name):
        return f"'{name[:130]}' is not an environment variable name"
    upper = name.upper()
    if upper in _gateway_env():
        return f"{name} is a setting of the gateway itself, not a provider credential"
    if upper.endswith(PROVIDER_ENV_SUFFIXES) or upper in KNOWN_PROVIDER_ENV:
        return None
    if upper in extra_names:
        return None
    return (
        f"{name} is not a provider credential: a reference must name a variable ending in "
        "_API_KEY, _KEY, _TOKEN or _SECRET, or one listed in PROVIDER_ENV_NAMES"
    )


def read_env_reference(name: str, extra_names: frozenset[str] = frozenset()) -> str:
    """The value of "os.environ/<name>" at call time; ProviderError when the name may not be
    referenced (retryable: the operator's config, the next model may work) or is unset."""
    problem = env_reference_error(name, extra_names)
    if problem:
        raise ProviderError(f"The model's config is refused: {problem}", retryable=True)
    resolved = os.environ.get(name)
    if not resolved:
        raise ProviderError(f"API key env var {name} is not set", retryable=False)
    return resolved


def is_sealed(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get(SEALED), str)


def _is_env_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(ENV_PREFIX)


def base_has_credentials(url: str) -> bool:
    """Whether an api_base carries a secret: user info or a query string."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return True  # unparsable: treat it as secret rather than show it
    return "@" in parts.netloc or bool(parts.query)


def _hint(field: str, value: Any) -> str:
    if field == API_BASE and isinstance(value, str):
        try:
            parts = urlsplit(value)
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
        except ValueError:
            return REDACTED
        netloc = (f"{REDACTED}@" if "@" in parts.netloc else "") + host + port
        query = REDACTED if parts.query else ""
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    if isinstance(value, str) and len(value) >= _HINT_MIN_LEN:
        return REDACTED + value[-_HINT_TAIL:]
    return REDACTED


def _shown(field: str, value: Any) -> Any:
    """A stored value as the master key reads it."""
    if is_sealed(value):
        return value.get(HINT) or REDACTED
    if field == API_BASE and isinstance(value, str) and not _is_env_ref(value):
        # Stored before this rule existed, in clear.
        return _hint(field, value) if base_has_credentials(value) else value
    if field != API_BASE and value is not None and not _is_env_ref(value):
        return _hint(field, value)
    return value


class CredentialPolicy:
    """The rules above, with the gateway's key (None: literals refused) and PROVIDER_ENV_NAMES."""

    def __init__(self, box: SecretBox | None = None, extra_env_names: Iterable[str] = ()) -> None:
        self.box = box
        self.extra_env_names = frozenset(n.strip().upper() for n in extra_env_names if n.strip())

    @classmethod
    def from_settings(cls, encryption_key: str | None, provider_env_names: str) -> CredentialPolicy:
        box = SecretBox(encryption_key) if encryption_key else None
        return cls(box, provider_env_names.split(","))

    # Writes -----------------------------------------------------------------------------------

    def seal_models(self, models: list[ModelSpec], previous: list[ModelSpec]) -> list[ModelSpec]:
        """The models as they are stored: literal credentials sealed, env references checked,
        hints sent back resolved to the secret `previous` (the group as stored) holds.
        CredentialError when a value cannot be accepted."""
        stored: dict[tuple[str, str], list[Any]] = {}
        for m in previous:
            for path, value in _credential_values(m.config):
                stored.setdefault((m.model_name, path), []).append(value)
        out = []
        for m in models:
            config = dict(m.config)
            for path, value in list(_credential_values(config, incoming=True)):
                new = self._incoming(path, value, stored.get((m.model_name, path), []))
                _set(config, path, new)
            self._check_plain_env_refs(config)
            out.append(replace(m, config=config))
        return out

    def _incoming(self, path: str, value: Any, previous: list[Any]) -> Any:
        field = path.split(".", 1)[0]
        where = f"models.config.{path}"
        if field == "vertex_credentials":
            if not isinstance(value, str | dict):
                raise CredentialError(where, f"{where} must be a string or an object")
        elif not isinstance(value, str):
            raise CredentialError(where, f"{where} must be a string")
        if isinstance(value, str) and not value:
            raise CredentialError(where, f"{where} must not be empty")
        if _is_env_ref(value):
            problem = env_reference_error(value[len(ENV_PREFIX) :], self.extra_env_names)
            if problem:
                raise CredentialError(where, f"{where}: {problem}")
            return value
        if isinstance(value, str) and REDACTED in value:
            for old in previous:
                if _shown(field, old) == value:
                    if is_sealed(old):
                        return old
                    value = old  # a clear value stored before this rule: seal it below
                    break
            else:
                raise CredentialError(
                    where,
                    f"{where} is a redacted value that matches no stored secret of this model: "
                    "paste the secret again",
                )
        if field == API_BASE and not base_has_credentials(value):
            return value
        if self.box is None:
            raise CredentialError(
                where,
                f"{where}: a literal secret can only be stored when the gateway has an "
                'ENCRYPTION_KEY; reference an environment variable instead, like "os.environ/'
                'OPENAI_API_KEY"',
            )
        return self._seal(field, value)

    def _seal(self, field: str, value: Any) -> dict[str, str]:
        assert self.box is not None
        return {SEALED: self.box.seal(json.dumps(value).encode()), HINT: _hint(field, value)}

    def _check_plain_env_refs(self, config: Mapping[str, Any]) -> None:
        """Env references in the other settings (api_version, aws_region_name, ...) follow the
        same naming rule: LiteLLM resolves them too."""
        for key, value in config.items():
            if key in SECRET_FIELDS or key in (HEADERS, API_BASE) or not _is_env_ref(value):
                continue
            problem = env_reference_error(value[len(ENV_PREFIX) :], self.extra_env_names)
            if problem:
                raise CredentialError(f"models.config.{key}", f"models.config.{key}: {problem}")

    # Reads ------------------------------------------------------------------------------------

    @staticmethod
    def for_admin(config: Mapping[str, Any]) -> dict[str, Any]:
        """The config as the master key reads it: every secret as its hint."""
        out = dict(config)
        for path, value in _credential_values(config):
            _set(out, path, _shown(path.split(".", 1)[0], value))
        return out

    @staticmethod
    def for_team(config: Mapping[str, Any]) -> dict[str, Any]:
        """The config as a team key reads it: no credential fields at all."""
        out = {k: v for k, v in config.items() if k not in SECRET_FIELDS and k != HEADERS}
        base = out.get(API_BASE)
        if base is not None and (
            not isinstance(base, str) or _is_env_ref(base) or base_has_credentials(base)
        ):
            del out[API_BASE]
        return out

    # Calls ------------------------------------------------------------------------------------

    def for_call(self, model: ModelSpec) -> ModelSpec:
        """The model with its sealed secrets opened and its env references read, for one
        attempt; the model itself when it has neither. ProviderError when a secret cannot be
        had (the next model of the group may work: retryable, except an unset variable)."""
        config = model.config
        opened: dict[str, Any] | None = None
        for key, value in config.items():
            if key == HEADERS and isinstance(value, dict):
                if any(is_sealed(v) or _is_env_ref(v) for v in value.values()):
                    opened = opened if opened is not None else dict(config)
                    opened[key] = {h: self._clear(v) for h, v in value.items()}
            elif is_sealed(value) or _is_env_ref(value):
                opened = opened if opened is not None else dict(config)
                opened[key] = self._clear(value)
        return model if opened is None else replace(model, config=opened)

    def _clear(self, value: Any) -> Any:
        if is_sealed(value):
            if self.box is None:
                raise ProviderError(
                    "The model's pasted credentials cannot be opened: the gateway has no "
                    "ENCRYPTION_KEY",
                    retryable=True,
                )
            try:
                return json.loads(self.box.open(value[SEALED]))
            except EncryptionKeyError as exc:
                raise ProviderError(
                    f"The model's pasted credentials cannot be opened: {exc}", retryable=True
                ) from exc
        if _is_env_ref(value):
            return self.read_env(value[len(ENV_PREFIX) :])
        return value

    def read_env(self, name: str) -> str:
        return read_env_reference(name, self.extra_env_names)

    # Key management ---------------------------------------------------------------------------

    def verify(self, config: Mapping[str, Any]) -> int:
        """Open every sealed value of a config (EncryptionKeyError when one does not); how many."""
        n = 0
        for _path, value in _credential_values(config):
            if is_sealed(value):
                if self.box is None:
                    raise EncryptionKeyError(
                        "the database holds pasted provider credentials but ENCRYPTION_KEY is "
                        "not set"
                    )
                self.box.open(value[SEALED])
                n += 1
        return n

    def reseal(self, config: Mapping[str, Any]) -> dict[str, Any] | None:
        """The config with every sealed value sealed again with the current key, and every
        clear secret stored before these rules sealed; None when nothing changes."""
        assert self.box is not None
        out = dict(config)
        changed = False
        for path, value in _credential_values(config):
            field = path.split(".", 1)[0]
            if is_sealed(value):
                if self.box.sealed_with_current(value[SEALED]):
                    continue
                new: Any = {SEALED: self.box.reseal(value[SEALED]), HINT: value.get(HINT, "")}
            elif (
                value is None
                or _is_env_ref(value)
                or (
                    field == API_BASE
                    and not (isinstance(value, str) and base_has_credentials(value))
                )
            ):
                continue
            else:
                new = self._seal(field, value)
            _set(out, path, new)
            changed = True
        return out if changed else None


def _credential_values(
    config: Mapping[str, Any], *, incoming: bool = False
) -> Iterator[tuple[str, Any]]:
    """(path, value) of each credential-bearing value: "api_key", "extra_headers.<name>".
    `incoming`: a request's config, where extra_headers must be an object."""
    for field in SECRET_FIELDS:
        if config.get(field) is not None:
            yield field, config[field]
    base = config.get(API_BASE)
    if base is not None:
        yield API_BASE, base
    headers = config.get(HEADERS)
    if isinstance(headers, dict):
        for name, value in headers.items():
            yield f"{HEADERS}.{name}", value
    elif headers is not None and incoming:
        raise CredentialError(
            "models.config.extra_headers", "models.config.extra_headers must be an object"
        )


def _set(config: dict[str, Any], path: str, value: Any) -> None:
    field, _, header = path.partition(".")
    if field == HEADERS:
        config[HEADERS] = {**config[HEADERS], header: value}
    else:
        config[field] = value
