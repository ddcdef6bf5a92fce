"""The RPCs the client calls, with their REST route (through Envoy) and gRPC method."""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Operation:
    """One RPC. `path` is the REST template; its {fields} come from the request."""

    http_method: str
    path: str
    service: str
    rpc: str

    @property
    def path_fields(self) -> list[str]:
        return re.findall(r"\{(\w+)\}", self.path)

    @property
    def grpc_method(self) -> str:
        return f"/saas_llm.v1.{self.service}/{self.rpc}"


CREATE_JOB = Operation("POST", "/api/jobs/create", "JobService", "CreateJob")
LLM_CALL = Operation("POST", "/api/jobs/{job_id}/llm-call", "JobService", "LlmCall")
LLM_CALL_STREAM = Operation(
    "POST", "/api/jobs/{job_id}/llm-call-stream", "JobService", "LlmCallStream"
)
COMPLETE_JOB = Operation("POST", "/api/jobs/{job_id}/complete", "JobService", "CompleteJob")
GET_JOB = Operation("GET", "/api/jobs/{job_id}", "JobService", "GetJob")
CREATE_AND_CALL = Operation("POST", "/api/jobs/create-and-call", "JobService", "CreateAndCall")
CREATE_AND_CALL_STREAM = Operation(
    "POST", "/api/jobs/create-and-call-stream", "JobService", "CreateAndCallStream"
)
GET_BALANCE = Operation(
    "GET", "/api/credits/teams/{team_id}/balance", "CreditService", "GetCreditBalance"
)
GET_TEAM_USAGE = Operation("GET", "/api/teams/{team_id}/usage", "TeamService", "GetTeamUsage")
