/**
 * The typed wrapper against a running gateway (gRPC). `make test` runs it against the real
 * service and through Envoy's port (tests/clients/test_node_client.py sets the variables); by hand,
 * against `make run`:
 *
 *   MASTER_KEY=$(cat ../../data/master_key) npm test
 *
 * SAAS_GRPC_TARGET (default localhost:50051) is where it connects; it sets up its own
 * organization, model group (a built-in simulator model, no provider key needed) and teams with
 * MASTER_KEY.
 */
import { strict as assert } from "node:assert";
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { credentials, Metadata, status } from "@grpc/grpc-js";

import { GatewayClient, GatewayError, type Message } from "../src";
import { ModelGroupServiceClient, CreateModelGroupRequest } from "../src/gen/saas_llm/v1/model_group_service";
import { OrganizationServiceClient, CreateOrganizationRequest } from "../src/gen/saas_llm/v1/organization_service";
import { CreateTeamRequest, type CreateTeamResponse, TeamServiceClient } from "../src/gen/saas_llm/v1/team_service";

const TARGET = process.env.SAAS_GRPC_TARGET ?? "localhost:50051";

function masterKey(): string {
  if (process.env.MASTER_KEY) return process.env.MASTER_KEY;
  return readFileSync(join(__dirname, "..", "..", "..", "..", "data", "master_key"), "utf8").trim();
}

function promised<Req, Res>(call: (r: Req, m: Metadata, cb: (e: Error | null, r: Res) => void) => unknown, request: Req, md: Metadata): Promise<Res> {
  return new Promise((resolve, reject) => call(request, md, (e, r) => (e ? reject(e) : resolve(r))));
}

interface TeamKey {
  teamId: string;
  key: string;
}

const uid = (prefix: string) => `${prefix}_${randomUUID().slice(0, 8)}`;
const admin = new Metadata();
let groups: string[] = [];
let team: TeamKey;
let broke: TeamKey;

async function setUp(): Promise<void> {
  admin.set("authorization", `Bearer ${masterKey()}`);
  const creds = credentials.createInsecure();
  const orgs = new OrganizationServiceClient(TARGET, creds);
  const modelGroups = new ModelGroupServiceClient(TARGET, creds);
  const teams = new TeamServiceClient(TARGET, creds);
  const org = uid("node_org");
  await promised(orgs.createOrganization.bind(orgs), CreateOrganizationRequest.fromPartial({ organizationId: org, name: "Node" }), admin);
  groups = [uid("node_group"), uid("node_other")];
  for (const groupName of groups) {
    const models = [{ modelName: "simulator/node", priority: 0, config: { tokens_per_second: 0 } }];
    await promised(modelGroups.createModelGroup.bind(modelGroups), CreateModelGroupRequest.fromPartial({ groupName, models }), admin);
  }
  const makeTeam = async (credits: number): Promise<TeamKey> => {
    const teamId = uid("node_team");
    const request = CreateTeamRequest.fromPartial({ organizationId: org, teamId, modelGroups: [groups[0]], creditsAllocated: credits });
    const created = (await promised(teams.createTeam.bind(teams), request, admin)) as CreateTeamResponse;
    return { teamId, key: created.virtualKey };
  };
  team = await makeTeam(5);
  broke = await makeTeam(0);
  orgs.close();
  modelGroups.close();
  teams.close();
}

const hello: Message[] = [{ role: "user", content: "Hello from Node" }];

describe("GatewayClient", () => {
  let client: GatewayClient;
  before(async () => {
    await setUp();
    client = new GatewayClient(TARGET, { teamId: team.teamId, apiKey: team.key });
  });
  after(() => client.close());

  test("job flow: create, call, stream, complete", async () => {
    const job = await client.createJob("node_flow", { metadata: { source: "node" } });
    assert.equal(job.status, "pending");
    assert.ok(job.createdAt instanceof Date);

    const answer = await client.llmCall(job.jobId, hello, { purpose: "greet" });
    assert.equal(answer.response?.content, "Simulated response to: Hello from Node");
    assert.equal(answer.metadata?.modelGroup, groups[0]);

    const chunks = [];
    for await (const chunk of client.llmCallStream(job.jobId, [{ role: "user", content: "stream these words" }])) {
      chunks.push(chunk);
    }
    assert.equal(chunks.map((c) => c.content).join(""), "Simulated response to: stream these words");
    assert.ok(chunks.filter((c) => c.content).length > 1, "one message per chunk");
    const last = chunks[chunks.length - 1];
    assert.equal(last.finishReason, "stop");
    assert.ok((last.usage?.totalTokens ?? 0) > 0);

    const done = await client.completeJob(job.jobId, "completed");
    assert.equal(done.costs?.creditApplied, true);
    assert.equal(done.costs?.creditsRemaining, 4);
    const stored = await client.getJob(job.jobId);
    assert.deepEqual(stored.metadata, { source: "node" });
    assert.deepEqual(stored.calls.map((c) => c.purpose), ["greet", ""]);
    assert.equal((await client.getBalance()).creditsRemaining, 4);
  });

  test("content parts go through as the content Value", async () => {
    const parts: Message[] = [{ role: "user", content: [{ type: "text", text: "two" }, { type: "text", text: "parts" }] }];
    const answer = await client.createAndCall("node_parts", parts);
    assert.equal(answer.response?.content, "Simulated response to: two parts");
    assert.equal(answer.status, "completed");
  });

  test("errors carry the ErrorInfo reason", async () => {
    const job = await client.createJob("node_errors");
    await assert.rejects(client.llmCall(job.jobId, hello, { modelGroup: groups[1] }), (error: unknown) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.code, status.PERMISSION_DENIED);
      assert.equal(error.reason, "MODEL_GROUP_ACCESS_DENIED");
      assert.equal(error.message, `Team '${team.teamId}' does not have access to model group '${groups[1]}'`);
      return true;
    });
    await assert.rejects(client.getJob(randomUUID()), (error: unknown) => {
      assert.ok(error instanceof GatewayError);
      assert.equal(error.reason, "JOB_NOT_FOUND");
      return true;
    });
    const poor = new GatewayClient(TARGET, { teamId: broke.teamId, apiKey: broke.key });
    try {
      await assert.rejects(poor.createJob("node_poor"), (error: unknown) => {
        assert.ok(error instanceof GatewayError);
        assert.equal(error.code, status.FAILED_PRECONDITION);
        assert.equal(error.reason, "INSUFFICIENT_CREDITS");
        assert.equal(error.message, "Insufficient credits. Required: 1, Available: 0");
        return true;
      });
    } finally {
      poor.close();
    }
    await client.completeJob(job.jobId, "failed");
  });
});
