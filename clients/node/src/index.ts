/**
 * TypeScript client of the SaaS LLM gateway over native gRPC (@grpc/grpc-js).
 *
 * The stubs in ./gen are generated from proto/ by ts-proto (`make gen`); this file is a small typed
 * wrapper for the job flow: promises instead of callbacks, server streaming as an async iterator,
 * the key sent as `authorization` metadata, and errors decoded into GatewayError with the
 * google.rpc.ErrorInfo reason (INSUFFICIENT_CREDITS, MODEL_GROUP_ACCESS_DENIED, ...).
 *
 *   const client = new GatewayClient("localhost:50051", { teamId: "acme-corp", apiKey: "sk-..." });
 *   const job = await client.createJob("document_analysis");
 *   const answer = await client.llmCall(job.jobId, [{ role: "user", content: "Hello" }]);
 *   for await (const chunk of client.llmCallStream(job.jobId, messages)) process.stdout.write(chunk.content);
 *   const done = await client.completeJob(job.jobId, "completed");
 *   console.log(done.costs?.creditsRemaining);
 */
import {
  type CallOptions,
  type ChannelCredentials,
  type ClientReadableStream,
  credentials,
  Metadata,
  type ServiceError,
  status as GrpcStatus,
} from "@grpc/grpc-js";

import { ErrorInfo } from "./gen/google/rpc/error_details";
import { Status } from "./gen/google/rpc/status";
import { ChatMessage } from "./gen/saas_llm/v1/common";
import {
  CreditServiceClient,
  GetCreditBalanceRequest,
  type GetCreditBalanceResponse,
} from "./gen/saas_llm/v1/credit_service";
import {
  CompleteJobRequest,
  type CompleteJobResponse,
  CreateAndCallRequest,
  type CreateAndCallResponse,
  CreateJobRequest,
  type CreateJobResponse,
  GetJobRequest,
  type Job,
  JobServiceClient,
  LlmCallRequest,
  type LlmCallResponse,
  type LlmCallStreamResponse,
} from "./gen/saas_llm/v1/job_service";

export * as common from "./gen/saas_llm/v1/common";
export * as credits from "./gen/saas_llm/v1/credit_service";
export * as health from "./gen/saas_llm/v1/health_service";
export * as jobs from "./gen/saas_llm/v1/job_service";
export * as modelGroups from "./gen/saas_llm/v1/model_group_service";
export * as organizations from "./gen/saas_llm/v1/organization_service";
export * as teams from "./gen/saas_llm/v1/team_service";

const ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo";

/** A failed call: the gRPC status and the ErrorInfo the gateway attached. */
export class GatewayError extends Error {
  constructor(
    message: string,
    /** gRPC status code (9 = FAILED_PRECONDITION, ...). */
    readonly code: GrpcStatus,
    /** ErrorInfo.reason (proto/saas_llm/v1/errors.proto), "" when there is none. */
    readonly reason: string,
    /** ErrorInfo.metadata, e.g. {field: "messages"}. */
    readonly metadata: Record<string, string>,
  ) {
    super(message);
    this.name = "GatewayError";
  }
}

/** The GatewayError of a grpc-js error, decoded from its grpc-status-details-bin trailer. */
export function decodeError(error: ServiceError): GatewayError {
  let reason = "";
  let metadata: Record<string, string> = {};
  const [details] = error.metadata?.get("grpc-status-details-bin") ?? [];
  if (details instanceof Buffer) {
    for (const any of Status.decode(details).details) {
      if (any.typeUrl === ERROR_INFO_TYPE) {
        const info = ErrorInfo.decode(any.value);
        reason = info.reason;
        metadata = info.metadata;
        break;
      }
    }
  }
  return new GatewayError(error.details || error.message, error.code, reason, metadata);
}

/**
 * A chat message. `content` is a string (sent as the typed `text` field) or a list of OpenAI
 * content parts (sent as the `content` google.protobuf.Value, as REST clients send it).
 */
export interface Message {
  role: "system" | "user" | "assistant" | "tool";
  content: string | Array<Record<string, unknown>> | null;
  name?: string;
  toolCallId?: string;
}

/** Sampling and routing options of one LLM call (passed through to the provider when set). */
export interface CallOptionsLlm {
  modelGroup?: string;
  purpose?: string;
  temperature?: number;
  maxTokens?: number;
  topP?: number;
  seed?: number;
  /** OpenAI response_format, e.g. {type: "json_schema", json_schema: {...}}. */
  responseFormat?: Record<string, unknown>;
}

export interface GatewayClientOptions {
  /** The team the key belongs to. */
  teamId: string;
  /** The team's virtual key ("sk-..."), sent as `authorization: Bearer <key>`. */
  apiKey: string;
  /** Default: insecure (plaintext h2c), as the service and Envoy listen by default. */
  channelCredentials?: ChannelCredentials;
  /** Deadline of each unary call, ms (default 60000). Streams have none. */
  timeoutMs?: number;
}

function toChatMessage(message: Message): ChatMessage {
  const base = { role: message.role, name: message.name ?? "", toolCallId: message.toolCallId ?? "" };
  return typeof message.content === "string"
    ? ChatMessage.fromPartial({ ...base, text: message.content })
    : ChatMessage.fromPartial({ ...base, content: message.content });
}

function llmFields(messages: Message[], options: CallOptionsLlm): Partial<LlmCallRequest> {
  return {
    messages: messages.map(toChatMessage),
    modelGroup: options.modelGroup ?? "",
    purpose: options.purpose ?? "",
    temperature: options.temperature,
    maxTokens: options.maxTokens,
    topP: options.topP,
    seed: options.seed,
    responseFormat: options.responseFormat,
  };
}

/** Promise of a unary grpc-js call whose callback is the last argument. */
function unary<Req, Res>(
  method: (req: Req, md: Metadata, opts: Partial<CallOptions>, cb: (e: ServiceError | null, r: Res) => void) => unknown,
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    method(request, metadata, options, (error, response) => {
      if (error) reject(decodeError(error));
      else resolve(response);
    });
  });
}

async function* iterate<T>(stream: ClientReadableStream<T>): AsyncGenerator<T> {
  try {
    for await (const message of stream) yield message as T;
  } catch (error) {
    throw decodeError(error as ServiceError);
  } finally {
    stream.cancel();
  }
}

/** The job flow of one team over native gRPC. */
export class GatewayClient {
  private readonly jobs: JobServiceClient;
  private readonly credits: CreditServiceClient;
  private readonly metadata = new Metadata();
  private readonly teamId: string;
  private readonly timeoutMs: number;

  constructor(target: string, options: GatewayClientOptions) {
    const creds = options.channelCredentials ?? credentials.createInsecure();
    this.jobs = new JobServiceClient(target, creds);
    this.credits = new CreditServiceClient(target, creds, {});
    this.metadata.set("authorization", `Bearer ${options.apiKey}`);
    this.teamId = options.teamId;
    this.timeoutMs = options.timeoutMs ?? 60_000;
  }

  private options(): Partial<CallOptions> {
    return { deadline: Date.now() + this.timeoutMs };
  }

  /** Creates a job (reserves 1 credit). */
  createJob(
    jobType: string,
    extra: { userId?: string; metadata?: Record<string, unknown>; requestId?: string } = {},
  ): Promise<CreateJobResponse> {
    const request = CreateJobRequest.fromPartial({ teamId: this.teamId, jobType, ...extra });
    return unary(this.jobs.createJob.bind(this.jobs), request, this.metadata, this.options());
  }

  /** One LLM call within an open job. */
  llmCall(jobId: string, messages: Message[], options: CallOptionsLlm = {}): Promise<LlmCallResponse> {
    const request = LlmCallRequest.fromPartial({ jobId, ...llmFields(messages, options) });
    return unary(this.jobs.llmCall.bind(this.jobs), request, this.metadata, this.options());
  }

  /** The same call streamed: one message per chunk; the last carries finishReason and usage. */
  llmCallStream(jobId: string, messages: Message[], options: CallOptionsLlm = {}): AsyncGenerator<LlmCallStreamResponse> {
    const request = LlmCallRequest.fromPartial({ jobId, ...llmFields(messages, options) });
    return iterate(this.jobs.llmCallStream(request, this.metadata));
  }

  /** Ends a job: "completed" charges its credit unless a call failed; "failed" releases it. */
  completeJob(
    jobId: string,
    status: "completed" | "failed",
    extra: { metadata?: Record<string, unknown>; errorMessage?: string } = {},
  ): Promise<CompleteJobResponse> {
    const request = CompleteJobRequest.fromPartial({ jobId, status, ...extra });
    return unary(this.jobs.completeJob.bind(this.jobs), request, this.metadata, this.options());
  }

  /** A job with its costs and calls. */
  getJob(jobId: string): Promise<Job> {
    const request = GetJobRequest.fromPartial({ jobId });
    return unary(this.jobs.getJob.bind(this.jobs), request, this.metadata, this.options());
  }

  /** Creates a job, makes one call and completes the job in one request. */
  createAndCall(jobType: string, messages: Message[], options: CallOptionsLlm & { requestId?: string } = {}): Promise<CreateAndCallResponse> {
    const request = CreateAndCallRequest.fromPartial({
      teamId: this.teamId,
      jobType,
      requestId: options.requestId ?? "",
      ...llmFields(messages, options),
    });
    return unary(this.jobs.createAndCall.bind(this.jobs), request, this.metadata, this.options());
  }

  /** The team's credits. */
  getBalance(): Promise<GetCreditBalanceResponse> {
    const request = GetCreditBalanceRequest.fromPartial({ teamId: this.teamId });
    return unary(this.credits.getCreditBalance.bind(this.credits), request, this.metadata, this.options());
  }

  close(): void {
    this.jobs.close();
    this.credits.close();
  }
}
