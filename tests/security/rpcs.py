"""Every RPC the server exposes, from the service descriptors, with a generic invoker and a
request builder aimed at one tenant's resources (for the auth matrix and the secrets scans)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory, struct_pb2
from google.protobuf.descriptor import FieldDescriptor, MethodDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2 as reflection_v1alpha_pb2

from saas_llm.v1 import access_group_service_pb2 as ag_pb
from saas_llm.v1 import team_service_pb2 as team_pb
from service.api.reflection import V1_SERVICE as REFLECTION_V1
from service.server import SERVICE_NAMES
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, uid, user_msg

POOL = descriptor_pool.Default()
HEALTH = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
# v1alpha from grpcio-reflection, v1 mounted by service.api.reflection on the same servicer.
REFLECTION = [
    reflection_v1alpha_pb2.DESCRIPTOR.services_by_name["ServerReflection"].full_name,
    REFLECTION_V1,
]

# Every service App registers: ours, the standard health service, reflection.
EXPOSED_SERVICES = (*SERVICE_NAMES, HEALTH, *REFLECTION)


def all_methods() -> list[MethodDescriptor]:
    out = []
    for name in EXPOSED_SERVICES:
        out.extend(POOL.FindServiceByName(name).methods)
    return out


# RPCs that change the target for the calls after them (its models, key, status).
DESTRUCTIVE = (
    "UpdateModelGroup",
    "AssignModelGroups",
    "RotateTeamKey",
    "SuspendTeam",
    "ResumeTeam",
)


def ordered_methods() -> list[MethodDescriptor]:
    """all_methods(), those that change the target last (ResumeTeam after SuspendTeam)."""
    ms = all_methods()
    return sorted(ms, key=lambda m: DESTRUCTIVE.index(m.name) + 1 if m.name in DESTRUCTIVE else 0)


def path_of(m: MethodDescriptor) -> str:
    return f"/{m.containing_service.full_name}/{m.name}"


def message_class(desc: Any) -> Any:
    return message_factory.GetMessageClass(desc)


@dataclass
class World:
    """Tenant A (the target), tenant B (another team), and a revoked key of A."""

    org: str
    group: str  # assigned to A only
    other_group: str  # assigned to B only
    spare_group: str  # assigned to nobody (deletable)
    access_group: str
    team: str
    key: str
    revoked_key: str
    other_team: str
    other_key: str
    job: str  # an open job of A
    ids: list[str] = field(default_factory=list)  # A's identifiers, for leak checks


async def make_world(c: Client, credits: int = 100) -> World:
    org = uid("org")
    from saas_llm.v1 import organization_service_pb2 as org_pb

    await c.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(organization_id=org, name="Org A"), metadata=admin()
    )
    group = await make_group(c, [("simulator/ok", {})])
    other_group = await make_group(c, [("simulator/ok", {})])
    spare_group = await make_group(c, [("simulator/ok", {})])
    access_group = uid("acc")
    await c.channel.unary_unary(
        "/saas_llm.v1.ModelAccessGroupService/CreateModelAccessGroup",
        request_serializer=ag_pb.CreateModelAccessGroupRequest.SerializeToString,
        response_deserializer=ag_pb.ModelAccessGroup.FromString,
    )(
        ag_pb.CreateModelAccessGroupRequest(group_name=access_group, model_groups=[group]),
        metadata=admin(),
    )
    team = uid("team")
    created = await c.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id=org, team_id=team, model_groups=[group], credits_allocated=credits
        ),
        metadata=admin(),
    )
    rotated = await c.teams.RotateTeamKey(
        team_pb.RotateTeamKeyRequest(team_id=team), metadata=admin()
    )
    other_org = uid("org")
    await c.orgs.CreateOrganization(
        org_pb.CreateOrganizationRequest(organization_id=other_org, name="Org B"), metadata=admin()
    )
    other_team = uid("team")
    other = await c.teams.CreateTeam(
        team_pb.CreateTeamRequest(
            organization_id=other_org,
            team_id=other_team,
            model_groups=[other_group],
            credits_allocated=credits,
        ),
        metadata=admin(),
    )
    from saas_llm.v1 import job_service_pb2 as job_pb

    job = await c.jobs.CreateJob(
        job_pb.CreateJobRequest(team_id=team, job_type="matrix"),
        metadata=bearer(rotated.virtual_key),
    )
    return World(
        org=org,
        group=group,
        other_group=other_group,
        spare_group=spare_group,
        access_group=access_group,
        team=team,
        key=rotated.virtual_key,
        revoked_key=created.virtual_key,
        other_team=other_team,
        other_key=other.virtual_key,
        job=job.job_id,
        ids=[org, group, access_group, team, job.job_id],
    )


def _fresh(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def build_request(m: MethodDescriptor, w: World) -> Any:
    """A valid request of method m aimed at tenant A's resources (fresh ids for creations)."""
    cls = message_class(m.input_type)
    name = m.name
    creating = name.startswith("Create") and name not in (
        "CreateJob",
        "CreateAndCall",
        "CreateAndCallStream",
    )
    values: dict[str, Any] = {}
    for f in m.input_type.fields:
        v = _value_for(name, f, w, creating)
        if v is not None:
            values[f.name] = v
    req = cls(**{k: v for k, v in values.items() if not isinstance(v, _Setter)})
    for k, v in values.items():
        if isinstance(v, _Setter):
            v.apply(req, k)
    return req


class _Setter:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def apply(self, msg: Any, field_name: str) -> None:
        self.fn(msg, field_name)


def _struct(d: dict[str, Any]) -> _Setter:
    def apply(msg: Any, f: str) -> None:
        getattr(msg, f).update(d)

    return _Setter(apply)


def _value_for(rpc: str, f: FieldDescriptor, w: World, creating: bool) -> Any:
    n = f.name
    if rpc == "ServerReflectionInfo":
        return None
    if n == "organization_id":
        return _fresh("org") if rpc == "CreateOrganization" else w.org
    if n == "team_id":
        return _fresh("team") if rpc == "CreateTeam" else w.team
    if n == "job_id":
        return w.job
    if n == "group_name":
        if rpc in ("CreateModelGroup", "CreateModelAccessGroup"):
            return _fresh("grp")
        if rpc == "GetModelAccessGroup":
            return w.access_group
        if rpc == "DeleteModelGroup":
            return w.spare_group
        return w.group
    if n == "model_groups":
        return [w.group]
    if n == "access_groups":
        return []
    if n == "models":
        mg = message_class(f.message_type)
        return [mg(model_name="simulator/ok", priority=0)]
    if n == "messages":
        return [user_msg("matrix prompt")]
    if n == "model_group":
        return w.group
    if n in ("name", "display_name", "description", "team_alias", "reason", "purpose"):
        return "x"
    if n == "job_type":
        return "matrix"
    if n == "status":
        return "completed" if rpc == "CompleteJob" else ""
    if n in ("credits_allocated", "credits_amount", "credits_required"):
        return 1
    if n == "period":
        return "2025-01"
    if (
        n == "metadata"
        and f.message_type is not None
        and f.message_type.full_name == struct_pb2.Struct.DESCRIPTOR.full_name
    ):
        return _struct({"k": "v"}) if rpc == "UpdateJobMetadata" else None
    if n == "service":  # grpc.health.v1
        return ""
    return None


async def invoke(
    channel: grpc.aio.Channel, m: MethodDescriptor, request: Any, metadata: Any, timeout: float = 10
) -> list[Any]:
    """Call any method generically; returns the response message(s)."""
    path = path_of(m)
    req_cls = message_class(m.input_type)
    resp_cls = message_class(m.output_type)
    ser, de = req_cls.SerializeToString, resp_cls.FromString
    if m.client_streaming:
        if m.name == "ServerReflectionInfo":
            request = req_cls(list_services="")
        call = channel.stream_stream(path, request_serializer=ser, response_deserializer=de)(
            iter([request]), metadata=metadata, timeout=timeout
        )
        out = []
        async for r in call:
            out.append(r)
            break
        call.cancel()
        return out
    if m.server_streaming:
        call = channel.unary_stream(path, request_serializer=ser, response_deserializer=de)(
            request, metadata=metadata, timeout=timeout
        )
        out = []
        async for r in call:
            out.append(r)
            if m.name == "Watch":  # never ends by itself
                break
        if m.name == "Watch":
            call.cancel()
        return out
    return [
        await channel.unary_unary(path, request_serializer=ser, response_deserializer=de)(
            request, metadata=metadata, timeout=timeout
        )
    ]


def principals(w: World, master_key: str) -> list[tuple[str, Any]]:
    """The six callers of the matrix, in the order they are tried (master last: it may change
    or delete the target)."""
    return [
        ("no key", ()),
        ("malformed key", (("authorization", "Token " + w.key),)),
        ("revoked key", bearer(w.revoked_key)),
        ("another team's key", bearer(w.other_key)),
        ("own team key", bearer(w.key)),
        ("master key", (("authorization", f"Bearer {master_key}"),)),
    ]
