"""Hostile input. Schemathesis generates requests from the OpenAPI document
(gateway/openapi.json) for every operation, valid and invalid, and sends them through a real Envoy
to a real service process: no answer may be a 5xx, every answer is JSON, and afterwards the server
is healthy and the ledger audits clean. Hypothesis also fuzzes the request validators directly."""

from __future__ import annotations

import json
import re
import string
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.devrun import _grpc_serving
from service.domain import validation as v
from service.domain.errors import InvalidArgument
from service.storage.migrate import migrate
from tests.conftest import MASTER_KEY
from tests.reliability.harness import run_audit_cli
from tests.support.envoy import Envoy, start_envoy_sync
from tests.support.procs import ROOT, ServiceProc

pytestmark = pytest.mark.envoy

SCHEMA = schemathesis.openapi.from_path(str(ROOT / "gateway" / "openapi.json"))
SCHEMA.config.generation.update(max_examples=25, deterministic=True, database="none")


@dataclass
class Target:
    envoy: Envoy
    service: ServiceProc
    url: str
    team: str = ""
    team_key: str = ""
    job: str = ""
    group: str = ""
    org: str = ""
    session: requests.Session = field(default_factory=requests.Session)
    counts: dict[int, int] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return self.envoy.base_url


def _rest(t: Target, method: str, path: str, body: object = None, key: str = MASTER_KEY) -> dict:
    r = t.session.request(
        method, t.base_url + path, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=10
    )
    assert r.status_code == 200, (path, r.status_code, r.text)
    return dict(r.json())


@pytest.fixture(scope="module")
def fuzz_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    tmp = tmp_path_factory.mktemp("fuzz")
    url = f"sqlite+aiosqlite:///{tmp / 'fuzz.db'}"
    migrate(url)
    svc = ServiceProc(url, tmp, settings={"LOG_LEVEL": "WARNING"}, name="service-fuzz")
    svc.start()
    deadline = time.monotonic() + 30
    while not _grpc_serving(svc.port):
        assert svc.proc is not None and svc.proc.poll() is None, svc.log()[-3000:]
        assert time.monotonic() < deadline, svc.log()[-3000:]
        time.sleep(0.05)
    envoy = start_envoy_sync([svc.port], direct_hosts=[svc.direct_port])
    t = Target(envoy, svc, url)
    try:
        # Real resources, so that part of the generated requests reach past "not found".
        t.org = "fuzz_org"
        t.group = "fuzz_group"
        t.team = "fuzz_team"
        _rest(t, "POST", "/api/organizations/create", {"organization_id": t.org, "name": "F"})
        _rest(
            t,
            "POST",
            "/api/model-groups/create",
            {"group_name": t.group, "models": [{"model_name": "simulator/ok", "priority": 0}]},
        )
        created = _rest(
            t,
            "POST",
            "/api/teams/create",
            {
                "organization_id": t.org,
                "team_id": t.team,
                "model_groups": [t.group],
                "credits_allocated": 100000,
            },
        )
        t.team_key = created["virtual_key"]
        t.job = _rest(t, "POST", "/api/jobs/create", {"team_id": t.team, "job_type": "f"})["job_id"]
        yield t
    finally:
        envoy.stop_sync()
        svc.signal(15)
        try:
            assert svc.proc is not None
            svc.proc.wait(15)
        finally:
            if svc.proc is not None and svc.proc.poll() is None:
                svc.proc.kill()


_KNOWN = {"team_id": "team", "job_id": "job", "group_name": "group", "organization_id": "org"}


def _aim(case: schemathesis.Case, t: Target) -> str:
    """Point about half of the generated path ids at real resources (chosen from the generated
    value, so that runs are reproducible), and pick the caller the same way."""
    params = case.path_parameters or {}
    for name, attr in _KNOWN.items():
        value = params.get(name)
        if isinstance(value, str) and zlib.crc32(value.encode()) % 2 == 0:
            params[name] = getattr(t, attr)
    if isinstance(case.body, dict):
        for name, attr in _KNOWN.items():
            value = case.body.get(name)
            if isinstance(value, str) and zlib.crc32(value.encode()) % 3 == 0:
                case.body[name] = getattr(t, attr)
    seed = zlib.crc32(repr((params, case.query, case.body)).encode("utf-8", "replace"))
    return [MASTER_KEY, MASTER_KEY, t.team_key, "sk-bogus-" + "x" * 40][seed % 4]


def _check(case: schemathesis.Case, t: Target) -> None:
    key = _aim(case, t)
    response = case.call(
        base_url=t.base_url,
        session=t.session,
        headers={"Authorization": f"Bearer {key}"},
        timeout=30,
    )
    t.counts[response.status_code] = t.counts.get(response.status_code, 0) + 1
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:500]}\n"
        f"{case.as_curl_command()}"
    )
    if response.status_code != 200 or not case.path.endswith("-stream"):
        body = response.content
        assert body, (case.formatted_path, response.status_code)
        parsed = json.loads(body)  # every answer, errors included, is JSON
        if response.status_code >= 400:
            assert {"code", "message"} <= set(parsed), parsed


@SCHEMA.parametrize()
@settings(database=None, max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_openapi_fuzz_no_5xx(case: schemathesis.Case, fuzz_target: Target) -> None:
    _check(case, fuzz_target)


@pytest.mark.soak
@pytest.mark.timeout(3600)
@SCHEMA.parametrize()
@settings(database=None, max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
def test_soak_openapi_fuzz_no_5xx(case: schemathesis.Case, fuzz_target: Target) -> None:
    _check(case, fuzz_target)


def test_header_names_invalid_in_grpc_are_not_5xx(fuzz_target: Target) -> None:
    # HTTP allows them, gRPC metadata does not: Envoy drops them (envoy.yaml, drop_header_names_invalid_in_grpc).
    for name in ("x|y", "a!b", "q#", "~"):
        r = fuzz_target.session.get(
            fuzz_target.base_url + "/health", headers={name: "1"}, timeout=5
        )
        assert r.status_code < 500, (name, r.status_code, r.text)


def test_zz_server_healthy_after_fuzzing(fuzz_target: Target) -> None:
    """Runs after the fuzz tests of this module (pytest keeps file order)."""
    t = fuzz_target
    assert t.service.proc is not None and t.service.proc.poll() is None, "the service died"
    r = t.session.get(t.base_url + "/health", timeout=5)
    assert r.status_code == 200 and r.json()["status"] == "healthy", r.text
    # Still fully working: a new team (the fuzzer may have suspended the first one or rotated
    # its key) and a job flow end to end.
    _rest(
        t,
        "POST",
        "/api/model-groups/create",
        {"group_name": "after_fuzz", "models": [{"model_name": "simulator/ok", "priority": 0}]},
    )
    team = _rest(
        t,
        "POST",
        "/api/teams/create",
        {
            "organization_id": t.org,
            "team_id": "after_fuzz",
            "model_groups": ["after_fuzz"],
            "credits_allocated": 1,
        },
    )
    key = team["virtual_key"]
    job = _rest(t, "POST", "/api/jobs/create", {"team_id": "after_fuzz", "job_type": "a"}, key)
    _rest(
        t,
        "POST",
        f"/api/jobs/{job['job_id']}/llm-call",
        {"messages": [{"role": "user", "content": "still alive?"}]},
        key,
    )
    done = _rest(t, "POST", f"/api/jobs/{job['job_id']}/complete", {"status": "completed"}, key)
    assert done["costs"]["credit_applied"] is True
    audit = run_audit_cli(t.url, "--no-check-stale")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "Traceback" not in t.service.log(), t.service.log()[-3000:]
    print("fuzz status codes:", dict(sorted(t.counts.items())), audit.stdout.strip())


# --- Hypothesis on the request validators ------------------------------------------------------

ID_CHARS = string.ascii_letters + string.digits + "_.:-"
ID_RE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
hostile_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=300
) | st.sampled_from(
    ["", "\x00", "a\x00b", "../../etc/passwd", "' OR 1=1 --", "%00", "\u202e", "🙂" * 200]
)


@given(st.one_of(hostile_text, st.text(alphabet=ID_CHARS, min_size=0, max_size=140)))
@settings(database=None, max_examples=400)
def test_require_id_accepts_exactly_the_documented_charset(value: str) -> None:
    if ID_RE.fullmatch(value):
        assert v.require_id(value, "team_id") == value
    else:
        with pytest.raises(InvalidArgument) as e:
            v.require_id(value, "team_id")
        assert e.value.metadata == {"field": "team_id"}


@given(hostile_text, st.integers(1, 300), st.booleans())
@settings(database=None, max_examples=300)
def test_text_bounds_length_and_nul(value: str, max_len: int, required: bool) -> None:
    ok = len(value) <= max_len and "\x00" not in value and (not required or value.strip())
    if ok:
        assert v.text(value, "f", max_len=max_len, required=required) == value
    else:
        with pytest.raises(InvalidArgument):
            v.text(value, "f", max_len=max_len, required=required)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False, allow_infinity=False) | hostile_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(hostile_text, children, max_size=4)
    ),
    max_leaves=12,
)


@given(
    st.dictionaries(hostile_text, json_values, max_size=6),
    st.sampled_from([0, 1, 100, 16000, 16300, 16384, 20000]),
)
@settings(database=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])
def test_metadata_bounded_by_its_json_size(value: dict, pad: int) -> None:
    """Accepted when its JSON fits 16 KiB and (issue 21) no string or key in it holds a NUL,
    which PostgreSQL cannot store."""
    if pad:
        value = {**value, "pad": "x" * pad}
    size = len(orjson.dumps(value))
    if size <= v.MAX_METADATA_BYTES and not _holds_nul(value):
        assert v.metadata(value) == (value or {})
    else:
        with pytest.raises(InvalidArgument):
            v.metadata(value)


def _holds_nul(value: object) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(x) for k, x in value.items())
    if isinstance(value, list):
        return any(_holds_nul(x) for x in value)
    return False


@given(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**31), 2**31 - 1))
@settings(database=None, max_examples=300)
def test_page_limits(limit: int, offset: int) -> None:
    if 0 <= limit <= v.MAX_PAGE and 0 <= offset <= v.MAX_OFFSET:
        got_limit, got_offset = v.page(limit, offset, default_limit=50)
        assert 1 <= got_limit <= v.MAX_PAGE and got_offset == offset
    else:
        with pytest.raises(InvalidArgument):
            v.page(limit, offset, default_limit=50)


@given(st.integers(-(2**31), 2**31 - 1), st.booleans())
@settings(database=None)
def test_credit_amounts(value: int, allow_zero: bool) -> None:
    low = 0 if allow_zero else 1
    if low <= value <= v.MAX_CREDITS:
        assert v.credits(value, "c", allow_zero=allow_zero) == value
    else:
        with pytest.raises(InvalidArgument):
            v.credits(value, "c", allow_zero=allow_zero)


@given(hostile_text | st.from_regex(r"\d{4}-\d{2}", fullmatch=True))
@settings(database=None)
def test_period(value: str) -> None:
    m = re.fullmatch(r"(\d{4})-(\d{2})", value)
    if m and 1 <= int(m.group(2)) <= 12 and int(m.group(1)) >= 1970:
        assert v.period(value) == (int(m.group(1)), int(m.group(2)))
    else:
        with pytest.raises(InvalidArgument):
            v.period(value)


@given(
    messages=st.lists(
        st.fixed_dictionaries(
            {
                "role": st.sampled_from(["user", "system", "tool", "", "admin"]),
                "content": st.just("x"),
            }
        ),
        max_size=300,
    ).map(lambda ms: ms if len(ms) < 250 else ms + ms[:10]),
    temperature=st.none() | st.floats(allow_nan=True),
    top_p=st.none() | st.floats(allow_nan=True),
    max_tokens=st.none() | st.integers(-(2**31), 2**31 - 1),
    group=hostile_text,
)
@settings(database=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_llm_call_validation_never_crashes(
    messages: list,
    temperature: float | None,
    top_p: float | None,
    max_tokens: int | None,
    group: str,
) -> None:
    """validate_call either accepts the call or raises InvalidArgument, never anything else, and
    what it accepts respects the documented bounds."""
    from service.domain.jobs import VALID_ROLES, CallInput, validate_call
    from service.providers.base import ChatRequest

    params = {
        k: val
        for k, val in {"temperature": temperature, "top_p": top_p, "max_tokens": max_tokens}.items()
        if val is not None
    }
    call = CallInput(group, "", ChatRequest(messages=messages, params=params))
    try:
        validate_call(call)
    except InvalidArgument:
        return
    assert 1 <= len(messages) <= v.MAX_MESSAGES
    assert all(m["role"] in VALID_ROLES for m in messages)
    assert not group or ID_RE.fullmatch(group)
    if temperature is not None:
        assert 0 <= temperature <= 2
    if top_p is not None:
        assert 0 <= top_p <= 1
    if max_tokens is not None:
        assert 1 <= max_tokens <= 1_000_000
