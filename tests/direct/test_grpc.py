"""OpenAIService over native gRPC: the same capability as the REST paths, typed."""

from __future__ import annotations

import grpc
import pytest

from saas_llm.v1 import common_pb2
from saas_llm.v1 import openai_service_pb2 as pb
from saas_llm.v1 import openai_service_pb2_grpc as pb_grpc
from tests.conftest import Client, admin, bearer
from tests.flows import make_group, make_team


async def test_chat_stream_models_embeddings(client: Client) -> None:
    group = await make_group(client, [("simulator/gpt-4o", {}), ("simulator/embed", {})])
    team, key = await make_team(client, credits=10, groups=[group])
    stub = pb_grpc.OpenAIServiceStub(client.channel)
    md = bearer(key)
    hello = [common_pb2.ChatMessage(role="user", text="Hello there")]

    done = await stub.CreateChatCompletion(
        pb.ChatCompletionRequest(model="gpt-4o", messages=hello, max_tokens=50, n=2), metadata=md
    )
    assert done.object == "chat.completion" and done.model == "gpt-4o"
    assert [c.index for c in done.choices] == [0, 1]
    assert done.choices[0].message.text == "Simulated response to: Hello there"
    assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens

    chunks = [
        c
        async for c in stub.StreamChatCompletion(
            pb.ChatCompletionRequest(model=group, messages=hello), metadata=md
        )
    ]
    assert "".join(ch.content for c in chunks for ch in c.choices) == (
        "Simulated response to: Hello there"
    )
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].usage.total_tokens > 0
    assert len({c.id for c in chunks}) == 1

    listed = await stub.ListModels(pb.ListModelsRequest(), metadata=md)
    assert [m.id for m in listed.data] == ["simulator/gpt-4o", "simulator/embed", group]

    emb = await stub.CreateEmbeddings(
        pb.CreateEmbeddingsRequest(model="embed", input=["a", "b"], dimensions=4), metadata=md
    )
    assert [len(e.embedding) for e in emb.data] == [4, 4] and emb.usage.prompt_tokens > 0

    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.CreateChatCompletion(
            pb.ChatCompletionRequest(model="nope", messages=hello), metadata=md
        )
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as master:
        await stub.ListModels(pb.ListModelsRequest(), metadata=admin())
    assert master.value.code() == grpc.StatusCode.UNAUTHENTICATED
    budget = await client.app.ledger.budget_state(team)
    assert budget is not None and budget[1].spent_nanos > 0 and budget[1].reserved_nanos == 0
