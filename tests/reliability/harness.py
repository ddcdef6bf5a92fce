"""The auditor CLI and a log scanner for the reliability and security suites. The processes
they start (service replicas, Envoy) come from the shared launcher: tests.support.procs and
tests.support.envoy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tests.support.procs import ROOT, base_env

# --- The auditor CLI -------------------------------------------------------------------------


@dataclass
class AuditResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def violations(self) -> list[str]:
        return [line for line in self.stdout.splitlines() if line.startswith("VIOLATION")]


def run_audit_cli(database_url: str, *args: str, module: str = "service.audit") -> AuditResult:
    """`python -m service.audit --database-url URL ...` (module "service" runs
    `python -m service audit`, what `make audit` does)."""
    argv = [sys.executable, "-m", module]
    if module == "service":
        argv.append("audit")
    r = subprocess.run(
        [*argv, "--database-url", database_url, *args],
        env=base_env(),
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    return AuditResult(r.returncode, r.stdout, r.stderr)


async def audit_cli(database_url: str, *args: str, module: str = "service.audit") -> AuditResult:
    return await asyncio.to_thread(run_audit_cli, database_url, *args, module=module)


# --- Log scanning ----------------------------------------------------------------------------


def leaked(texts: Iterable[str], secrets: Iterable[str]) -> list[tuple[str, str]]:
    """(secret, context) for each secret found in any text. Secrets shorter than 8 characters
    are ignored (they would match by chance)."""
    found: list[tuple[str, str]] = []
    wanted = [s for s in secrets if s and len(s) >= 8]
    for text in texts:
        for s in wanted:
            i = text.find(s)
            if i >= 0:
                found.append((s, text[max(0, i - 200) : i + len(s) + 50]))
    return found


def parse_json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out
