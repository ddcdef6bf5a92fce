"""Go from the contract alone: `buf generate` with the Go plugins (Debian's protoc-gen-go and
protoc-gen-go-grpc, installed by `make install`), then a Go program (tests/clients/go/main.go)
built against Debian's grpc-go and genproto in GOPATH mode (no module download) calls the real
service: a job, a call with the typed `text` content, its completion, and an ErrorInfo reason."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.clients.conftest import ROOT, Team, grpc_target, new_team
from tests.contract.conftest import run_process
from tests.rest.real_service import RestClient, RestService

pytestmark = pytest.mark.envoy

GODEPS = Path("/usr/share/gocode")
GO_PACKAGE = "saas-llm.gateway/gen/go/saas_llm/v1"
TEMPLATE = {
    "version": "v2",
    "plugins": [
        {"local": "protoc-gen-go", "out": "go", "opt": "paths=source_relative"},
        {"local": "protoc-gen-go-grpc", "out": "go", "opt": "paths=source_relative"},
    ],
}


def _tools_or_skip() -> str:
    go = shutil.which("go")
    missing = [t for t in ("go", "protoc-gen-go", "protoc-gen-go-grpc") if not shutil.which(t)]
    if missing or not (GODEPS / "src" / "google.golang.org" / "grpc").exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Go toolchain missing ({missing}): `make install` installs it")
        pytest.skip(f"Go toolchain missing: {missing}")
    assert go is not None
    return go


async def test_buf_generate_and_a_go_call(
    gateway: RestService, admin: RestClient, tmp_path: Path
) -> None:
    go = _tools_or_skip()
    team: Team = await new_team(admin, credits=3)
    out = tmp_path / "gen"
    buf = str(Path(sys.executable).parent / "buf")
    code, _, err = await run_process(
        buf, "generate", "--template", json.dumps(TEMPLATE), "--path", "proto/saas_llm",
        "-o", str(out), env={}, cwd=ROOT,
    )  # fmt: skip
    assert code == 0, err
    gopath = tmp_path / "gopath"
    package = gopath / "src" / GO_PACKAGE
    shutil.copytree(out / "go" / "saas_llm" / "v1", package)
    shutil.copytree(ROOT / "tests" / "clients" / "go", gopath / "src" / "gocall")
    env = {
        "GO111MODULE": "off",
        "GOPATH": f"{gopath}:{GODEPS}",
        "GOCACHE": str(ROOT / "build" / "go-cache"),  # kept between runs: the first build is slow
        "GOFLAGS": "",
    }
    code, stdout, err = await run_process(
        go, "run", "gocall", grpc_target(gateway), team.team_id, team.key,
        env=env, cwd=gopath, timeout=300,
    )  # fmt: skip
    assert code == 0, err
    assert stdout.splitlines() == [
        "content: Simulated response to: Hello from Go",
        "credits_remaining: 2",
        "reason: JOB_NOT_FOUND",
    ]
