"""The TypeScript client (clients/node) against the real service: `npm test` (tsc, then node's test
runner on test/client.test.ts: the job flow, a stream, content parts and the ErrorInfo reasons)
with the service's own gRPC port, then the same compiled tests through Envoy's port."""

from __future__ import annotations

import re

import pytest

from tests.clients.conftest import ROOT, envoy_target, grpc_target
from tests.contract.conftest import node_or_skip, run_process
from tests.rest.real_service import RestService

pytestmark = pytest.mark.envoy

NODE_CLIENT = ROOT / "clients" / "node"


async def test_npm_test_against_the_service_and_through_envoy(gateway: RestService) -> None:
    node = node_or_skip()
    if not (NODE_CLIENT / "node_modules").exists():
        pytest.fail("clients/node/node_modules is missing: `make install` runs npm ci")
    env = {"MASTER_KEY": gateway.master_key, "SAAS_GRPC_TARGET": grpc_target(gateway)}
    code, out, err = await run_process("npm", "test", env=env, cwd=NODE_CLIENT, timeout=180)
    assert code == 0, out + err
    assert re.search(r"\bpass 3\n", out) and re.search(r"\bfail 0\n", out), out

    env["SAAS_GRPC_TARGET"] = envoy_target(gateway)
    code, out, err = await run_process(
        node, "--test", "dist/test/", env=env, cwd=NODE_CLIENT, timeout=120
    )
    assert code == 0, out + err
    assert re.search(r"\bpass 3\n", out), out
