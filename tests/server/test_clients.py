"""The official `openai` client and LangChain's `ChatOpenAI`, pointed at the server over loopback."""

from __future__ import annotations

import openai
import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_openai import ChatOpenAI

from deltamem_agents.session import SessionKey
from tests.server.conftest import API_KEYS, ThreadServer

KEY = next(iter(API_KEYS))


def test_openai_client_chat_stream_models_and_errors(live_server, runtime):
    client = openai.OpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    models = client.models.list()
    assert [m.id for m in models.data] == ["deltamem"]

    completion = client.chat.completions.create(
        model="deltamem", messages=[{"role": "user", "content": "I live in Porto."}], max_tokens=3,
        extra_headers={"X-Session-Id": "oa"},
    )
    assert completion.choices[0].message.role == "assistant" and completion.usage.completion_tokens <= 3
    assert completion.model_extra["deltamem"]["session_id"] == "oa"

    stream = client.chat.completions.create(
        model="deltamem", messages=[{"role": "user", "content": "Where do I live?"}], max_tokens=3, stream=True,
        stream_options={"include_usage": True}, user="oa",
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens <= 3
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    messages = runtime.store.load(SessionKey(session_id="oa")).messages
    assert [m.role for m in messages] == ["user", "assistant", "user", "assistant"] and messages[-1].content == text

    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="deltamem", messages=[{"role": "user", "content": "hi"}], max_tokens=10_000)
    with pytest.raises(openai.NotFoundError, match="not served here"):
        client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])


@pytest.mark.anyio
async def test_async_openai_client(live_server):
    client = openai.AsyncOpenAI(base_url=f"{live_server.url}/v1", api_key="unused", max_retries=0)
    completion = await client.chat.completions.create(
        model="deltamem", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, user="async-session"
    )
    assert completion.choices[0].finish_reason in ("stop", "length")
    await client.close()


def test_openai_client_with_an_api_key(make_app):
    with ThreadServer(make_app(api_keys=API_KEYS)) as server:
        good = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
        assert good.models.list().data[0].id == "deltamem"
        bad = openai.OpenAI(base_url=f"{server.url}/v1", api_key="not-a-key-0123456789", max_retries=0)
        with pytest.raises(openai.AuthenticationError, match="wrong API key"):
            bad.models.list()


def test_langchain_chat_openai_invoke_and_stream(live_server, runtime):
    chat = ChatOpenAI(
        model="deltamem", base_url=f"{live_server.url}/v1", api_key="unused", max_tokens=3, max_retries=0,
        default_headers={"X-Session-Id": "lc"},
    )
    history = [SystemMessage("Be brief."), HumanMessage("My name is Ada.")]
    first = chat.invoke(history)
    assert isinstance(first, AIMessage) and first.response_metadata["finish_reason"] in ("stop", "length")
    # LangChain sends the whole conversation each time; the session adds only its new part
    history += [first, HumanMessage("What is my name?")]
    pieces = list(chat.stream(history))
    streamed = "".join(piece.content for piece in pieces)
    messages = runtime.store.load(SessionKey(session_id="lc")).messages
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    assert messages[2].content == first.content and messages[4].content == streamed
