"""Seed 003, "Direct OpenAI-Compatible Integration (Pattern B)": its Python, streaming and
Node.js examples with the official OpenAI SDKs, run unchanged (but for the key and base URL)
against the real gateway behind Envoy, with the seed's own model name (gpt-3.5-turbo, a model of
the team's ChatAgent group), and spending the team's budget, not its credits."""

from __future__ import annotations

import sys
from pathlib import Path

import aiohttp
import pytest

from tests.contract.conftest import (
    HERE,
    admin_of,
    assert_verbatim,
    node_or_skip,
    run_process,
    seed_text,
)
from tests.contract.test_seed_003 import seed_tenant
from tests.rest.real_service import RestService

pytestmark = pytest.mark.envoy

SEED_BASE = "https://llm.usegittie.com"
NODE_DIR = HERE / "node"


async def test_python_and_streaming_examples(
    service: RestService, http: aiohttp.ClientSession
) -> None:
    api = admin_of(http, service)
    key = await seed_tenant(api)
    code, out, err = await run_process(
        sys.executable,
        "seed003_pattern_b.py",
        env={"SAAS_API_KEY": key, "SAAS_LLM_BASE": service.base_url},
    )
    assert code == 0, err
    answer, stream = out.split("--- stream\n")
    assert answer == "Simulated response to: Hello!\n"
    assert stream == "Simulated response to: Tell me a story\n"
    balance = await api.ok("GET", "/api/credits/teams/team_engineering/balance")
    # The budget (1000 credits x $0.10) paid for the two calls; the credits did not.
    assert balance["budget_usd"] == 100.0 and 0 < balance["spend_usd"] < 0.01
    assert balance["credits_remaining"] == 1000


async def test_node_example(service: RestService, http: aiohttp.ClientSession) -> None:
    node = node_or_skip()
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("tests/contract/node/node_modules is missing: `make install` runs npm ci")
    api = admin_of(http, service)
    key = await seed_tenant(api)
    code, out, err = await run_process(
        node,
        "seed003_pattern_b.mjs",
        env={"SAAS_API_KEY": key, "SAAS_LLM_BASE": service.base_url},
        cwd=NODE_DIR,
    )
    assert code == 0, err
    assert out == "Simulated response to: Hello!\n", (out, err)
    usage = await api.ok("GET", "/api/teams/team_engineering/usage?period=" + _month())
    assert usage["direct_calls"]["total_calls"] == 1


def _month() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m")


@pytest.mark.parametrize(
    ("path", "replacements"),
    [
        (
            HERE / "seed003_pattern_b.py",
            [
                ("api_key=API_KEY", 'api_key="sk-xxx..."'),
                ("base_url=BASE_URL", f'base_url="{SEED_BASE}"'),
            ],
        ),
        (
            NODE_DIR / "seed003_pattern_b.mjs",
            [
                ("apiKey: API_KEY", "apiKey: 'sk-xxx...'"),
                ("baseURL: BASE_URL", f"baseURL: '{SEED_BASE}'"),
            ],
        ),
    ],
)
def test_examples_are_verbatim(path: Path, replacements: list[tuple[str, str]]) -> None:
    assert_verbatim(path, seed_text("003"), [replacements])
