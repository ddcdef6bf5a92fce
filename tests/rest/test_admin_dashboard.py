"""The admin dashboard (gateway/admin/, served by Envoy at /admin/) in a real browser: Debian's
Chromium driven by Playwright against the real service behind the real Envoy, with the fake
upstream as the provider. One service and one browser for the module; screenshots of each step
go to test-artifacts/admin/ (gitignored)."""

from __future__ import annotations

import asyncio
import os
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import expect

from service.encryption import generate_key
from tests.rest.real_service import RestService, serve_real, uid
from tests.support.upstream import FakeUpstream

ROOT = Path(__file__).resolve().parents[2]
ADMIN = ROOT / "gateway" / "admin"
ARTIFACTS = ROOT / "test-artifacts" / "admin"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Seconds a page may take to show what a step waits for.
WAIT_MS = 10_000


def test_every_admin_file_is_routed_with_the_security_headers() -> None:
    """envoy.yaml serves each file of gateway/admin/ (and nothing else) with a route of its
    own, the page with its CSP; no file builds HTML from strings or runs inline code."""
    text = (ROOT / "envoy.yaml").read_text()
    served = set(re.findall(r"filename: gateway/admin/([^}\s]+)\}", text))
    files = {
        str(p.relative_to(ADMIN))
        for p in ADMIN.rglob("*")
        if p.is_file() and not p.name.endswith(".md")
    }
    assert served == files
    assert "script-src 'self'; style-src 'self'" in text
    for p in ADMIN.glob("*.js"):
        code = p.read_text()
        for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert banned not in code, (p.name, banned)
    page = (ADMIN / "index.html").read_text()
    assert re.findall(r"<script[^>]*>", page) == [
        '<script src="vendor/chart.umd.min.js" defer>',
        '<script type="module" src="app.js">',
    ]
    assert "style=" not in page


@pytest.fixture(scope="module")
async def upstream() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as fake:
        fake.set_behavior("fine", content="fine answer")
        yield fake


@pytest.fixture(scope="module")
async def service(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RestService]:
    async with serve_real(
        "sqlite", tmp_path_factory.mktemp("admin"), encryption_key=generate_key()
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
async def browser(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"{CHROMIUM} is missing (the Makefile installs Debian's chromium)")
        pytest.skip(f"{CHROMIUM} is missing: `make test` installs it")
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900},
        )
        try:
            yield context
        finally:
            await context.close()


class Page:
    """A tab that records what must never happen: console errors (CSP violations are reported
    there), uncaught exceptions and dialogs (an injected script would open one)."""

    def __init__(self, page: Any, base_url: str) -> None:
        self.page = page
        self.base_url = base_url
        self.problems: list[str] = []
        page.on(
            "console",
            lambda m: (
                self.problems.append(f"console {m.type}: {m.text}")
                if m.type in ("error", "warning")
                else None
            ),
        )
        page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        page.on("dialog", self._dialog)

    async def _dialog(self, dialog: Any) -> None:
        self.problems.append(f"dialog: {dialog.message}")
        await dialog.dismiss()

    async def open(self, route: str = "") -> None:
        url = f"{self.base_url}/admin/{route}"
        if self.page.url == url:
            await self.page.reload()  # the same hash again would not render anew
        else:
            await self.page.goto(url)

    async def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        await self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def by(self, testid: str) -> Any:
        return self.page.get_by_test_id(testid)


async def test_operator_sets_up_the_quick_start_in_the_browser(
    service: RestService, upstream: FakeUpstream, browser: Any
) -> None:
    tab = Page(await browser.new_page(), service.base_url)
    page = tab.page
    await tab.open()
    await page.get_by_role("heading", name="Sign in").wait_for(timeout=WAIT_MS)
    await tab.shot("01-sign-in")

    # A wrong master key is refused and not kept.
    await tab.by("master-key").fill("sk-master-wrong-" + "x" * 20)
    await tab.by("signin").get_by_role("button", name="Sign in").click()
    await (
        page.get_by_role("alert")
        .filter(has_text="This master key was refused.")
        .wait_for(timeout=WAIT_MS)
    )
    assert await page.evaluate("sessionStorage.length") == 0
    await tab.shot("02-wrong-key")
    assert tab.problems == [
        "console error: Failed to load resource: the server responded with a status of 401 "
        "(Unauthorized)"
    ]
    tab.problems.clear()

    await tab.by("master-key").fill(service.master_key)
    await tab.by("signin").get_by_role("button", name="Sign in").click()
    await page.get_by_role("heading", name="Organizations").wait_for(timeout=WAIT_MS)
    assert service.master_key not in page.url

    # An organization, whose name is markup that must show as text.
    org = uid("org")
    hostile = '<img src=x onerror="alert(1)">Acme'
    create_org = tab.by("create-org")
    await create_org.get_by_label("Organization id").fill(org)
    await create_org.get_by_label("Name").fill(hostile)
    await create_org.get_by_role("button", name="Create organization").click()
    await tab.by("orgs-table").get_by_text(hostile, exact=True).wait_for(timeout=WAIT_MS)
    await tab.shot("03-organizations")

    # A model group whose provider key is pasted.
    provider_key = "sk-pasted-" + secrets.token_urlsafe(24)
    group = uid("ChatAgent")
    await tab.open("#/groups")
    editor = tab.by("group-editor")
    await editor.get_by_label("Group name").fill(group)
    await editor.get_by_label("Model", exact=True).fill("openai/fine")
    await editor.get_by_test_id("key-mode").select_option("paste")
    await editor.get_by_test_id("key-value").fill(provider_key)
    await editor.get_by_label("api_base").fill(upstream.base_url)
    await editor.get_by_label("$ per 1M input tokens").fill("2.5")
    await editor.get_by_label("$ per 1M output tokens").fill("10")
    await editor.get_by_label("Cache answers for (seconds, 0 = off)").fill("60")
    await editor.get_by_role("button", name="+ Add a fallback model").click()
    await editor.get_by_label("Model", exact=True).nth(1).fill("simulator/backup")
    await editor.get_by_role("button", name="Create group").click()
    hint = "****" + provider_key[-4:]
    await page.get_by_text(f"Keep stored key ({hint})").wait_for(state="attached", timeout=WAIT_MS)
    assert provider_key not in await page.content()
    await tab.shot("04-model-group")
    # Saving the group unchanged keeps the stored key (the hint goes back, not a key).
    await tab.by("group-editor").get_by_role("button", name="Save group").click()
    await page.get_by_text("Saved.").wait_for(timeout=WAIT_MS)
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{service.base_url}/api/model-groups/{group}",
            headers={"Authorization": f"Bearer {service.master_key}"},
        ) as resp,
    ):
        assert (await resp.json())["cache_ttl_seconds"] == 60
    await tab.open("#/groups")
    await tab.by("groups-table").get_by_text("60 s", exact=True).wait_for(timeout=WAIT_MS)

    # A team: its key is shown once.
    await tab.open(f"#/orgs/{org}")
    create_team = tab.by("create-team")
    team = uid("team")
    await create_team.get_by_label("Team id").fill(team)
    await create_team.get_by_label("Credits").fill("10")
    await create_team.get_by_label(group).check()
    await create_team.get_by_role("button", name="Create team").click()
    key_box = tab.by("virtual-key")
    await key_box.wait_for(timeout=WAIT_MS)
    team_key = await key_box.input_value()
    assert team_key.startswith("sk-") and len(team_key) > 40
    await tab.shot("05-team-key-once")
    await tab.open(f"#/orgs/{org}")
    await tab.by("teams-table").get_by_role("link", name=team).wait_for(timeout=WAIT_MS)
    assert team_key not in await page.content()

    # Credits.
    await tab.open(f"#/teams/{team}")
    add = tab.by("add-credits")
    await add.get_by_label("Credits to add").fill("5")
    await add.get_by_label("Reason").fill("top-up")
    await add.get_by_role("button", name="Add credits").click()
    await expect(tab.by("credits-remaining")).to_have_text("15", timeout=WAIT_MS)

    # Limits: the form shows the team's limits and saves them with PATCH .../limits.
    limits = tab.by("limits")
    await expect(limits.get_by_label("Calls per job")).to_have_value("100", timeout=WAIT_MS)
    await limits.get_by_label("Requests per minute").fill("120")
    await limits.get_by_label("Calls per job").fill("7")
    await limits.get_by_role("button", name="Save limits").click()
    await expect(tab.by("limits").get_by_label("Requests per minute")).to_have_value(
        "120", timeout=WAIT_MS
    )
    async with (
        aiohttp.ClientSession() as http,
        http.get(
            f"{service.base_url}/api/teams/{team}",
            headers={"Authorization": f"Bearer {service.master_key}"},
        ) as resp,
    ):
        shown = await resp.json()
    assert (shown["rpm_limit"], shown["max_calls_per_job"], shown["tpm_limit"]) == (120, 7, 0)

    # A job through the REST API with the team key: the pasted key reaches the provider.
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{service.base_url}/api/jobs/create-and-call",
            headers={"Authorization": f"Bearer {team_key}"},
            json={
                "team_id": team,
                "job_type": "document_analysis",
                "model_group": group,
                "messages": [{"role": "user", "content": "hello"}],
            },
        ) as resp,
    ):
        assert resp.status == 200, await resp.text()
        job_id = (await resp.json())["job_id"]
    assert upstream.requests[-1].authorization == f"Bearer {provider_key}"

    await tab.open(f"#/teams/{team}")
    jobs = tab.by("jobs-table")
    await jobs.get_by_text("document_analysis").wait_for(timeout=WAIT_MS)
    await tab.by("transactions-table").get_by_text("top-up").wait_for(timeout=WAIT_MS)
    # The margin of this month: the job's type, one credit charged ($0.10) beside its cost.
    margin_row = tab.by("margin-table").locator("tbody tr", has_text="document_analysis")
    await expect(margin_row.locator("td").nth(2)).to_have_text("1", timeout=WAIT_MS)
    await expect(margin_row.locator("td").nth(3)).to_have_text("$0.10")
    await _chart_drawn(page, "team-model-chart")
    await tab.shot("06-team")
    await jobs.get_by_role("link", name=job_id[:8]).click()
    calls = tab.by("calls-table")
    await calls.get_by_text(group).wait_for(timeout=WAIT_MS)
    assert await calls.locator("tbody tr").count() == 1
    await tab.shot("07-job-calls")

    # Usage per team over time.
    await tab.open(f"#/orgs/{org}")
    await _chart_drawn(page, "org-usage-chart")
    await tab.shot("08-org-usage")

    # Suspend, resume, rotate the key (shown once).
    await tab.open(f"#/teams/{team}")
    await tab.by("suspend").click()
    await expect(tab.by("team-status")).to_have_text("suspended", timeout=WAIT_MS)
    await tab.by("resume").click()
    await expect(tab.by("team-status")).to_have_text("active", timeout=WAIT_MS)
    await tab.by("rotate-key").click()
    await tab.by("confirm-rotate").click()
    new_key = await tab.by("virtual-key").input_value()
    assert new_key.startswith("sk-") and new_key != team_key
    await tab.shot("09-rotated-key")

    # Sign out forgets the key.
    await tab.by("signout").click()
    await page.get_by_role("heading", name="Sign in").wait_for(timeout=WAIT_MS)
    assert await page.evaluate("sessionStorage.length") == 0
    assert not tab.problems, tab.problems


async def _chart_drawn(page: Any, testid: str) -> None:
    """A Chart.js chart is attached to the canvas and has drawn at least one bar. (Polled with
    evaluate: wait_for_function evaluates a string in the page, which the CSP forbids.)"""
    check = f"""() => {{
        const c = document.querySelector('[data-testid={testid}]');
        const chart = c && window.Chart.getChart(c);
        return !!chart && c.width > 0
            && chart.getDatasetMeta(0).data.some((bar) => bar.height > 0);
    }}"""
    for _ in range(WAIT_MS // 100):
        if await page.evaluate(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"chart {testid} not drawn")


async def test_team_key_cannot_sign_in(service: RestService, browser: Any) -> None:
    async with aiohttp.ClientSession() as http:
        headers = {"Authorization": f"Bearer {service.master_key}"}
        org = uid("org")
        await http.post(
            f"{service.base_url}/api/organizations/create",
            headers=headers,
            json={"organization_id": org, "name": "x"},
        )
        async with http.post(
            f"{service.base_url}/api/teams/create",
            headers=headers,
            json={"organization_id": org, "team_id": uid("team")},
        ) as resp:
            team_key = (await resp.json())["virtual_key"]
    tab = Page(await browser.new_page(), service.base_url)
    await tab.open()
    await tab.by("master-key").fill(team_key)
    await tab.by("signin").get_by_role("button", name="Sign in").click()
    await (
        tab.page.get_by_role("alert")
        .filter(has_text="This is a team key")
        .wait_for(timeout=WAIT_MS)
    )
    assert await tab.page.evaluate("sessionStorage.length") == 0
    # The page's headers as Envoy serves them.
    resp = await tab.page.request.get(f"{service.base_url}/admin/")
    csp = resp.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert resp.headers["x-frame-options"] == "DENY"
    js = await tab.page.request.get(f"{service.base_url}/admin/app.js")
    assert js.headers["content-type"].startswith("text/javascript")
