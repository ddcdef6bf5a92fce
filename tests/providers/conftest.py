"""Fixtures for the provider tests: one fake upstream server for the session
(reset before each test) and a fresh fast-path provider per test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.providers.openai_compat import OpenAICompatProvider
from tests.support.upstream import FakeUpstream


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
