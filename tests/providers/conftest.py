"""Fixtures for the provider tests: one fake upstream server for the session
(reset before each test) and a fresh fast-path provider per test."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# `tests.fakes` must be importable when pytest is started as `.venv/bin/pytest`
# (then the repo root is not on sys.path, unlike with `python -m pytest`).
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from service.providers.openai_compat import OpenAICompatProvider  # noqa: E402
from tests.fakes.upstream import FakeUpstream  # noqa: E402


@pytest.fixture(scope="session")
async def upstream_server() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


@pytest.fixture
async def upstream(upstream_server: FakeUpstream) -> FakeUpstream:
    upstream_server.reset()
    return upstream_server


@pytest.fixture
async def provider() -> AsyncIterator[OpenAICompatProvider]:
    p = OpenAICompatProvider()
    yield p
    await p.aclose()
