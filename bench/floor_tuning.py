"""The floor's price, Envoy variant by variant: one service, several Envoys (each a variant of
envoy.yaml) in front of it, all pinned to the gateway CPU, measured in alternating rounds with the
empty call (`GET /health/live`) and the llm-call through Envoy REST at concurrency 32. A variant
is kept in envoy.yaml only when its gain over the current config holds across the rounds
(docs/decisions.md, issue 20).

    python -m bench.floor_tuning [--rounds 8] [--requests 4000] [--only current,lua,...]
                                 [--scenarios floor,llm-call]

Prints a table and writes bench/results/floor_tuning.json: per variant, the median over rounds of
(service + Envoy) CPU ms per request, and the median of the per-round difference to `current`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench import loadgen, pinning, procs, run
from service.devrun import envoy_command

# The Lua filter envoy.yaml used before issue 20 (replaced by a header_mutation regex).
LUA_FILTER = """          - name: envoy.filters.http.lua
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua
              default_source_code:
                inline_string: |
                  function envoy_on_request(request)
                    local headers = request:headers()
                    local bad = nil
                    for name, _ in pairs(headers) do
                      if string.sub(name, 1, 1) ~= ":" and string.find(name, "[^0-9a-z_.%-]") then
                        bad = bad or {}
                        bad[#bad + 1] = name
                      end
                    end
                    if bad then
                      for _, name in ipairs(bad) do headers:remove(name) end
                    end
                  end
"""


def _drop_filter(name: str) -> Callable[[str], str]:
    """Remove the HTTP filter `- name: <name>` (up to the next filter at the same indent)."""

    def edit(text: str) -> str:
        pattern = re.compile(
            rf"^          - name: {re.escape(name)}\n(?:(?!          - name: ).*\n)*", re.M
        )
        new, n = pattern.subn("", text, count=1)
        if n != 1:
            raise ValueError(f"filter {name} not found")
        return new

    return edit


def _lua(text: str) -> str:
    return _drop_filter("drop_header_names_invalid_in_grpc")(text).replace(
        "          - name: request_body_limit\n",
        LUA_FILTER + "          - name: request_body_limit\n",
    )


def _no_request_id(text: str) -> str:
    return text.replace("generate_request_id: true", "generate_request_id: false")


# name -> (edit of the rendered envoy.yaml, extra Envoy arguments)
VARIANTS: dict[str, tuple[Callable[[str], str], list[str]]] = {
    "current": (lambda t: t, []),
    "lua": (_lua, []),
    "workers-1": (lambda t: t, ["--concurrency", "1"]),
    "no-header-filter": (_drop_filter("drop_header_names_invalid_in_grpc"), []),
    "no-strip-grpc-headers": (_drop_filter("strip_grpc_response_headers"), []),
    "no-body-limit": (_drop_filter("request_body_limit"), []),
    "no-request-id": (_no_request_id, []),
}


async def amain(args: argparse.Namespace) -> dict[str, Any]:
    layout, why = pinning.plan()
    if layout is not None:
        pinning.pin_self(layout)
    prefix = pinning.prefix(layout)
    workdir = Path(tempfile.mkdtemp(prefix="bench-floor-"))
    run.LAYOUT = layout
    upstream, up_port = await run.start_upstream(workdir)
    gw = await run.start_gateway(f"sqlite+aiosqlite:///{workdir / 'bench.db'}", workdir, "tune")
    await run.setup_tenant(gw, f"http://127.0.0.1:{up_port}/v1")
    from gateway.envoy_config import render

    envoys: dict[str, tuple[procs.Child, run.Gateway]] = {}
    try:
        for name in args.only:
            edit, extra = VARIANTS[name]
            http_port, admin_port = procs.free_port(), procs.free_port()
            config = workdir / f"envoy-{name}.yaml"
            config.write_text(
                edit(
                    render(
                        http_port=http_port,
                        grpc_port=gw.grpc_port,
                        admin_port=admin_port,
                        descriptor_path=run.DESCRIPTOR,
                        direct_hosts=[gw.direct_port],
                        listen_address="127.0.0.1",
                    )
                )
            )
            child = procs.spawn(
                f"envoy-{name}",
                envoy_command(config, *extra),
                env=dict(os.environ),
                cwd=workdir,
                log_dir=workdir,
                prefix=prefix,
            )
            await run._envoy_ready(admin_port, http_port, child)
            view = run.Gateway(**{**gw.__dict__, "envoy": child, "http_port": http_port})
            envoys[name] = (child, view)
        samples: dict[str, dict[str, list[float]]] = {
            s: {n: [] for n in args.only} for s in args.scenarios
        }
        # Envoy's CPU alone: the variants change only Envoy, and the service's share is noise.
        envoy_samples: dict[str, dict[str, list[float]]] = {
            s: {n: [] for n in args.only} for s in args.scenarios
        }
        async with loadgen.Session() as session:
            ops: dict[tuple[str, str], loadgen.Op] = {}
            for name, (_, view) in envoys.items():
                gops = run.GatewayOps(view, session, None)
                for scenario in args.scenarios:
                    method = {"floor": gops.rest_floor, "llm-call": gops.rest_call}[scenario]
                    ops[name, scenario] = await method(32)
            for i in range(args.rounds):
                order = args.only if i % 2 == 0 else list(reversed(args.only))
                for scenario in args.scenarios:
                    for name in order:
                        child, view = envoys[name]
                        row = await run.measure(
                            system=f"envoy:{name}",
                            scenario=scenario,
                            via="Envoy REST",
                            stream=False,
                            concurrency=32,
                            budget=run.Budget(args.requests, 6.0, 200, 1.0),
                            make_op=ops[name, scenario],
                            targets=[
                                run.Measured("service", gw.service.pid),
                                run.Measured("envoy", child.pid),
                            ],
                            upstream_pid=upstream.pid,
                        )
                        samples[scenario][name].append(row["cpu_ms_per_req_total"])
                        envoy_samples[scenario][name].append(row["cpu_ms_per_req"]["envoy"])
    finally:
        for child, _ in envoys.values():
            child.stop()
        gw.stop()
        upstream.stop()
    result: dict[str, Any] = {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "pinning": layout.describe() if layout else {"off": why},
        "rounds": args.rounds,
        "requests": args.requests,
        "concurrency": 32,
        "scenarios": {},
    }

    def diff_us(v: list[float], base: list[float], name: str) -> float | None:
        if not base or name == "current":
            return None
        return round(statistics.median(a - b for a, b in zip(v, base, strict=True)) * 1000, 1)

    for scenario, per in samples.items():
        base = per.get("current", [])
        ebase = envoy_samples[scenario].get("current", [])
        result["scenarios"][scenario] = {
            name: {
                "cpu_ms_per_req_median": round(statistics.median(v), 3),
                "cpu_ms_per_req": v,
                "diff_to_current_us_median": diff_us(v, base, name),
                "envoy_cpu_ms_per_req_median": round(
                    statistics.median(envoy_samples[scenario][name]), 3
                ),
                "envoy_cpu_ms_per_req": envoy_samples[scenario][name],
                "envoy_diff_to_current_us_median": diff_us(
                    envoy_samples[scenario][name], ebase, name
                ),
            }
            for name, v in per.items()
        }
    return result


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_tuning", description=__doc__)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--only", default=",".join(VARIANTS), type=lambda v: v.split(","))
    parser.add_argument("--scenarios", default="floor", type=lambda v: v.split(","))
    args = parser.parse_args()
    result = asyncio.run(amain(args))
    (run.RESULTS / "floor_tuning.json").write_text(
        orjson.dumps(result, option=orjson.OPT_INDENT_2).decode() + "\n"
    )
    for scenario, per in result["scenarios"].items():
        print(
            f"\n{scenario}, c=32, CPU ms/req (service + Envoy | Envoy alone), "
            f"median of {args.rounds} rounds; median paired difference to current"
        )
        for name, r in per.items():
            diff, ediff = r["diff_to_current_us_median"], r["envoy_diff_to_current_us_median"]
            print(
                f"  {name:24} {r['cpu_ms_per_req_median']:.3f} | "
                f"{r['envoy_cpu_ms_per_req_median']:.3f}"
                + ("" if diff is None else f"   {diff:+.1f} us | {ediff:+.1f} us")
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
