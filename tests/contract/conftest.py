"""Fixtures for the seeds' contract tests.

Each test gets the real service behind a real Envoy on a fresh database (`service`: SQLite;
`service_any`: SQLite, then PostgreSQL), because the seeds' examples use fixed ids
("org_your_company", "team_engineering", "ChatAgent", "acme-corp"). Starting the pair takes about
0.2 s. The service runs in the test's event loop, so the seeds' blocking `requests` code runs in a
thread (`asyncio.to_thread`) and their shell and Node.js examples in subprocesses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import textwrap
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp
import pytest
import requests

from service.devrun import envoy_binary
from tests.rest.real_service import RestClient, RestService, serve_real

HERE = Path(__file__).resolve().parent
# The seeds (API contract) live next to the repository in this workspace; the verbatim checks
# are skipped where they are not available.
SEEDS_DIR = Path(os.environ.get("SAAS_SEEDS_DIR", HERE.parents[2] / "shared" / "seeds"))

try:
    envoy_binary()
except FileNotFoundError as exc:  # pragma: no cover - only without the dev extras
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[RestService]:
    async with serve_real("sqlite", tmp_path) as svc:
        yield svc


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def service_any(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RestService]:
    async with serve_real(request.param, tmp_path) as svc:
        yield svc


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        yield session


def admin_of(http: aiohttp.ClientSession, svc: RestService) -> RestClient:
    return RestClient(http, svc.base_url, svc.master_key)


# --------------------------------------------------------------------------- running the seeds


@contextlib.contextmanager
def authorized(module: ModuleType, key: str) -> Iterator[requests.Session]:
    """Run a seed module whose code calls `requests.get/post` without a key: its `requests`
    becomes a Session that sends `Authorization: Bearer <key>` (same get/post signatures)."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    saved = module.requests
    module.requests = session
    try:
        yield session
    finally:
        module.requests = saved
        session.close()


async def in_thread(fn: Any, *args: Any, timeout: float = 30.0) -> Any:
    """Run a seed's blocking `requests` code in a thread (the service runs in this event loop),
    failing after `timeout` seconds instead of hanging the session."""
    return await asyncio.wait_for(asyncio.to_thread(fn, *args), timeout)


async def run_process(
    *argv: str, env: dict[str, str], cwd: Path = HERE, timeout: float = 30.0
) -> tuple[int, str, str]:
    """(returncode, stdout, stderr) of a command, without blocking the event loop."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=str(cwd),
        env={**os.environ, **env},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def run_script(name: str, **env: str) -> list[Any]:
    """Run one of the seeds' shell scripts; the JSON documents it printed, in order (curl prints
    each answer without a newline, so they are concatenated)."""
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    code, out, err = await run_process("bash", str(HERE / name), env=env)
    assert code == 0, err
    return json_documents(out)


def json_documents(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    i = 0
    while i < len(text):
        if text[i].isspace():
            i += 1
            continue
        doc, i = decoder.raw_decode(text, i)
        docs.append(doc)
    return docs


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI") == "true":
            pytest.fail("node is required in CI for the seeds' Node.js examples")
        pytest.skip("node is not installed")
    return node


# --------------------------------------------------------------------------- verbatim checks


def seed_text(name: str) -> str:
    matches = sorted(SEEDS_DIR.glob(f"{name}_*.txt"))
    if not matches:
        pytest.skip(f"seed {name} not found under {SEEDS_DIR}")
    return matches[0].read_text()


def seed_regions(path: Path) -> list[str]:
    """The texts between `seed-begin` and `seed-end` comment lines (# or //), dedented."""
    regions: list[str] = []
    current: list[str] | None = None
    for line in path.read_text().splitlines():
        mark = line.strip().lstrip("#/").strip()
        if mark == "seed-begin":
            current = []
        elif mark == "seed-end":
            assert current is not None, path
            regions.append(textwrap.dedent("\n".join(current)))
            current = None
        elif current is not None:
            current.append(line)
    assert current is None, f"{path}: unterminated seed-begin"
    return regions


def assert_verbatim(
    path: Path,
    seed: str,
    replacement_sets: list[list[tuple[str, str]]],
    added: str | None = None,
) -> None:
    """Every seed region of `path`, after undoing the documented changes, is text of the seed (at
    any indentation). `replacement_sets`: alternatives (one per kind of example in the file), each
    a list of (ours, the seed's); `added`: a regex of added text (the Authorization header)."""
    regions = seed_regions(path)
    assert regions, path
    for region in regions:
        text = region if added is None else re.sub(added, "", region)
        candidates = []
        for replacements in replacement_sets or [[]]:
            candidate = text
            for ours, theirs in replacements:
                candidate = candidate.replace(ours, theirs)
            candidates.append(candidate.strip("\n"))
        found = any(
            textwrap.indent(candidate, prefix) in seed
            for candidate in candidates
            for prefix in ("", "    ", "  ")
        )
        assert found, f"{path.name}: not verbatim from the seed:\n{candidates[0]}"
