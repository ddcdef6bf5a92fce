"""GET /api/organizations (ListOrganizations, added for the admin dashboard): admin only, ordered
by id, paged, counted; on both databases through Envoy."""

from __future__ import annotations

from tests.rest.real_service import RestClient, uid


async def test_list_organizations(api_any: RestClient) -> None:
    api = api_any
    prefix = uid("orglist")
    ids = [f"{prefix}_{i}" for i in (2, 0, 1)]
    for org in ids:
        await api.ok(
            "POST", "/api/organizations/create", json={"organization_id": org, "name": org}
        )
    page = await api.ok("GET", "/api/organizations", params={"limit": 1000})
    listed = [o["organization_id"] for o in page["organizations"]]
    assert listed == sorted(listed)
    assert [o for o in listed if o.startswith(prefix)] == sorted(ids)
    assert page["total_organizations"] == len(listed)
    first = listed.index(f"{prefix}_0")
    one = await api.ok("GET", "/api/organizations", params={"limit": 1, "offset": first + 1})
    assert [o["organization_id"] for o in one["organizations"]] == [f"{prefix}_1"]
    assert one["total_organizations"] == page["total_organizations"]
    empty = await api.ok("GET", "/api/organizations", params={"offset": len(listed)})
    assert empty["organizations"] == []
    await api.err("GET", "/api/organizations", 400, "INVALID_ARGUMENT", params={"limit": 1001})
    team = await api.ok(
        "POST", "/api/teams/create", json={"organization_id": ids[0], "team_id": uid("team")}
    )
    await api.with_key(team["virtual_key"]).err("GET", "/api/organizations", 403, "ADMIN_REQUIRED")
    await api.with_key(None).err("GET", "/api/organizations", 401)
