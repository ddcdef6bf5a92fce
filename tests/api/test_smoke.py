from __future__ import annotations

from saas_llm.v1 import health_service_pb2
from saas_llm.v1 import organization_service_pb2 as org_pb
from tests.conftest import Client, admin


async def test_health_and_org(client: Client) -> None:
    h = await client.health.Check(health_service_pb2.CheckRequest())
    assert h.status == "healthy" and h.database == "ok"
    org = await client.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(organization_id="org_a", name="A"), metadata=admin()
    )
    assert org.status == "active"
