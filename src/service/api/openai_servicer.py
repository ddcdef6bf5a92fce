"""Servicer of OpenAIService: the OpenAI-compatible API for native gRPC clients. Rules live in
domain/direct.py; REST clients get the same through api/service_http.py."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from saas_llm.v1 import common_pb2
from saas_llm.v1 import openai_service_pb2 as pb
from saas_llm.v1 import openai_service_pb2_grpc as pb_grpc
from service.api.context import Ctx, deadline, principal
from service.api.convert import chat_message, from_struct, params_of, struct
from service.api.openai_wire import OWNER, choices_of
from service.domain.direct import ChatDelta, ChatEnd, DirectService
from service.providers.base import ChatRequest, ChatResult, Choice, TokenUsage


def _usage(u: TokenUsage) -> pb.CompletionUsage:
    return pb.CompletionUsage(
        prompt_tokens=u.prompt_tokens,
        completion_tokens=u.completion_tokens,
        total_tokens=u.total_tokens,
    )


def _chat_request(r: pb.ChatCompletionRequest) -> ChatRequest:
    params: dict[str, Any] = from_struct(r.extra)
    params.update(params_of(r))
    if r.HasField("n"):
        params["n"] = r.n
    return ChatRequest(messages=[chat_message(m) for m in r.messages], params=params)


def _choice(i: int, c: ChatResult | Choice) -> pb.ChatChoice:
    message = common_pb2.ChatMessage(role="assistant", text=c.content)
    message.tool_calls.extend(struct(t) for t in c.tool_calls)
    return pb.ChatChoice(index=i, message=message, finish_reason=c.finish_reason)


class OpenAIServicer(pb_grpc.OpenAIServiceServicer):
    def __init__(self, direct: DirectService) -> None:
        self.direct = direct

    async def CreateChatCompletion(
        self, request: pb.ChatCompletionRequest, context: Ctx
    ) -> pb.ChatCompletion:
        answer = await self.direct.chat(
            principal(), request.model, _chat_request(request), deadline(context)
        )
        r = answer.result
        return pb.ChatCompletion(
            id=f"chatcmpl-{answer.call_id}",
            object="chat.completion",
            created=answer.created,
            model=answer.model,
            choices=[_choice(i, c) for i, c in enumerate(choices_of(r))],
            usage=_usage(r.usage),
        )

    async def StreamChatCompletion(
        self, request: pb.ChatCompletionRequest, context: Ctx
    ) -> AsyncIterator[pb.ChatCompletionChunk]:
        opened = await self.direct.chat_stream(
            principal(), request.model, _chat_request(request), deadline(context)
        )

        def chunk() -> pb.ChatCompletionChunk:
            return pb.ChatCompletionChunk(
                id=f"chatcmpl-{opened.call_id}",
                object="chat.completion.chunk",
                created=opened.created,
                model=opened.model,
            )

        async with contextlib.aclosing(opened.events) as events:
            async for event in events:
                out = chunk()
                if isinstance(event, ChatDelta):
                    choice = out.choices.add(index=0, content=event.content)
                    if event.tool_calls:
                        choice.tool_calls.extend(struct(t) for t in event.tool_calls)
                elif isinstance(event, ChatEnd):
                    out.choices.add(index=0, finish_reason=event.finish_reason)
                    out.usage.CopyFrom(_usage(event.usage))
                else:
                    out.error.CopyFrom(pb.StreamFailure(code=event.code, message=event.message))
                yield out

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Ctx
    ) -> pb.ListModelsResponse:
        listed = await self.direct.models(principal())
        return pb.ListModelsResponse(
            object="list",
            data=[
                pb.ListedModel(id=m.id, object="model", created=m.created, owned_by=OWNER)
                for m in listed
            ],
        )

    async def CreateEmbeddings(
        self, request: pb.CreateEmbeddingsRequest, context: Ctx
    ) -> pb.CreateEmbeddingsResponse:
        params: dict[str, Any] = {}
        if request.HasField("dimensions"):
            params["dimensions"] = request.dimensions
        if request.user:
            params["user"] = request.user
        inputs: Any = list(request.input)
        answer = await self.direct.embed(
            principal(), request.model, inputs, params, deadline(context)
        )
        u = answer.result.usage
        return pb.CreateEmbeddingsResponse(
            data=[pb.Embedding(index=i, embedding=v) for i, v in enumerate(answer.result.vectors)],
            model=answer.model,
            usage=pb.CompletionUsage(prompt_tokens=u.prompt_tokens, total_tokens=u.prompt_tokens),
        )
