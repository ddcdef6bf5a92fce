"""Seed 004's "Type-Safe Python Client" and "Structured Outputs" examples, run as printed (base URL
and key aside) with the saas_litellm_client package (clients/python) against the real gateway
behind Envoy."""

from __future__ import annotations

import aiohttp
import pytest

from saas_litellm_client import SaasLiteLLMClient
from tests.contract import seed004_typed_client
from tests.contract.conftest import HERE, admin_of, assert_verbatim, seed_text
from tests.contract.test_seed_004 import SEED_URL, give_acme_a_model_group, step_1
from tests.rest.real_service import UUID_RE, RestService

pytestmark = pytest.mark.envoy


async def test_type_safe_python_client(
    service: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    key = await step_1(service)
    api = admin_of(http, service)
    await give_acme_a_model_group(api)

    job, response, result = await seed004_typed_client.type_safe_python_client(
        service.base_url, key
    )
    assert capsys.readouterr().out == "Credits remaining: 999\n"
    assert UUID_RE.match(job.job_id) and job.status == "pending"
    assert response.response.content == "Simulated response to: Analyze..."
    assert response.metadata.model_group == "ChatAgent"
    assert (result.status, result.costs.credit_applied, result.credits_remaining) == (
        "completed",
        True,
        999,
    )
    stored = await api.ok("GET", f"/api/jobs/{job.job_id}")
    assert stored["job_type"] == "document_analysis"
    assert [c["status"] for c in stored["calls"]] == ["success"]


async def test_structured_outputs(
    service: RestService, http: aiohttp.ClientSession, capsys: pytest.CaptureFixture[str]
) -> None:
    """The simulator answers json_schema requests with a JSON object of the schema's required
    properties, so the printed person is the simulator's."""
    key = await step_1(service)
    await give_acme_a_model_group(admin_of(http, service))
    async with SaasLiteLLMClient(
        base_url=service.base_url, team_id="acme-corp", virtual_key=key
    ) as client:
        job = await client.create_job("extraction")
        person = await seed004_typed_client.structured_outputs(client, job.job_id)
        await client.complete_job(job.job_id, "completed")
    assert capsys.readouterr().out == "Name: simulated, Age: 0\n"
    assert type(person).__name__ == "Person"
    assert person.model_dump() == {"name": "simulated", "age": 0, "email": "simulated"}


def test_examples_are_verbatim_from_the_seed() -> None:
    assert_verbatim(
        HERE / "seed004_typed_client.py",
        seed_text("004"),
        [
            [
                ("base_url=base_url,", f'base_url="{SEED_URL}",'),
                ("virtual_key=virtual_key", 'virtual_key="sk-your-key"'),
            ]
        ],
    )
