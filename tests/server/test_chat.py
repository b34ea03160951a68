"""POST /v1/chat/completions in-process (httpx ASGITransport) on a tiny model: answers, streams,
sessions from the header or `user`, stateless requests, tools, and the served schema."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.session import SessionKey
from tests.server.conftest import client_for

pytestmark = pytest.mark.anyio

ASK = {"model": "deltamem", "messages": [{"role": "user", "content": "Hello, I live in Porto."}]}


def sse_events(text: str) -> list[dict | str]:
    events = []
    for block in text.split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


async def test_a_turn_is_answered_and_committed_to_the_session(make_app, runtime):
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json=ASK, headers={"X-Session-Id": "trip"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert response.headers["x-session-id"] == "trip"
    assert body["object"] == "chat.completion" and body["model"] == "deltamem"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert body["usage"]["completion_tokens"] <= 4 and body["usage"]["total_tokens"] == (
        body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]
    )
    assert body["deltamem"]["session_id"] == "trip" and body["deltamem"]["turn"] == 1
    record = runtime.store.load(SessionKey(session_id="trip"))
    assert [(m.role, m.content) for m in record.messages] == [
        ("user", "Hello, I live in Porto."), ("assistant", choice["message"]["content"])
    ]
    assert record.state is not None and record.metadata.turn_count == 1


async def test_the_user_field_names_the_session_and_a_whole_conversation_adds_only_its_new_part(make_app, runtime):
    async with client_for(make_app()) as http:
        first = (await http.post("/v1/chat/completions", json={**ASK, "user": "chat-7"})).json()
        history = [*ASK["messages"], first["choices"][0]["message"], {"role": "user", "content": "Where do I live?"}]
        second = await http.post("/v1/chat/completions", json={**ASK, "messages": history, "user": "chat-7"})
        assert second.status_code == 200, second.text
    record = runtime.store.load(SessionKey(session_id="chat-7"))
    assert [m.role for m in record.messages] == ["user", "assistant", "user", "assistant"]
    assert second.json()["deltamem"]["turn"] == 2


async def test_header_and_user_field_must_agree(make_app):
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json={**ASK, "user": "a"}, headers={"X-Session-Id": "b"})
    assert response.status_code == 400 and "different sessions" in response.json()["error"]["message"]


async def test_a_request_without_a_session_is_stateless(make_app, runtime):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
        {"role": "user", "content": "What is my name?"},
    ]
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json={**ASK, "messages": conversation})
        listed = (await http.get("/v1/sessions")).json()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["deltamem"]["session_id"] is None and body["deltamem"]["turn"] is None
    assert body["usage"]["prompt_tokens"] > 10  # the whole conversation was read
    assert listed["data"] == [] and runtime.store.list() == []


async def test_a_streamed_answer_is_openai_server_sent_events(make_app, runtime):
    request = {**ASK, "stream": True, "stream_options": {"include_usage": True}}
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json=request, headers={"X-Session-Id": "s"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({c["id"] for c in chunks}) == 1 and all(c["object"] == "chat.completion.chunk" for c in chunks)
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert len(finals) == 1 and finals[0]["deltamem"]["turn"] == 1
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == [] and usage["completion_tokens"] <= 4
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    record = runtime.store.load(SessionKey(session_id="s"))
    assert record.messages[-1].content == text


async def test_an_error_found_by_the_turn_is_a_status_before_the_stream_opens(make_app, runtime):
    # The ingest limit is checked inside the turn (against what the session has not seen yet).
    history = [{"role": "user", "content": "x" * 3000}, {"role": "assistant", "content": "ok"}] * 2
    request = {**ASK, "stream": True, "messages": [*history, *ASK["messages"]]}
    async with client_for(make_app()) as http:
        refused = await http.post("/v1/chat/completions", json=request, headers={"X-Session-Id": "long"})
    assert refused.status_code == 413 and refused.headers["content-type"].startswith("application/json")
    assert "--max-ingest-chars" in refused.json()["error"]["message"]
    assert runtime.store.load(SessionKey(session_id="long")).messages == []  # nothing was committed


async def test_tools_are_described_and_a_tool_result_can_be_sent_back(make_app, runtime):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
    app = make_app()
    async with client_for(app) as http:
        first = await http.post(
            "/v1/chat/completions", json={**ASK, "tools": tools, "tool_choice": "auto"}, headers={"X-Session-Id": "tools"}
        )
        assert first.status_code == 200, first.text
        conversation = [
            {"role": "user", "content": "Weather in Oslo?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"sky": "sunny"}'},
        ]
        second = await http.post(
            "/v1/chat/completions", json={**ASK, "messages": conversation, "tools": tools}, headers={"X-Session-Id": "tools"}
        )
        assert second.status_code == 200, second.text
        unknown = await http.post(
            "/v1/chat/completions",
            json={**ASK, "tools": tools, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        )
    assert unknown.status_code == 400 and "not among the tools" in unknown.json()["error"]["message"]
    messages = runtime.store.load(SessionKey(session_id="tools")).messages
    assert any(m.role == "tool" and m.tool_call_id == "call_1" for m in messages)
    assert any(m.role == "assistant" and m.tool_calls and m.tool_calls[0]["function"]["name"] == "get_weather" for m in messages)
    stats = app.state.context.scheduler.stats()
    assert stats.batch_joins >= 2 and stats.serial_decodes == 0  # tool turns join the batch too


async def test_models_health_and_the_openapi_schema(make_app):
    async with client_for(make_app()) as http:
        models = (await http.get("/v1/models")).json()
        health = (await http.get("/health")).json()
        schema = (await http.get("/openapi.json")).json()
    assert models["data"][0]["id"] == "deltamem" and models["object"] == "list"
    assert health["status"] == "ok" and health["batching"] is True and health["auth_required"] is False
    paths = schema["paths"]
    for path in ("/v1/chat/completions", "/v1/models", "/health", "/v1/sessions", "/v1/sessions/{session_id}",
                 "/v1/sessions/{session_id}/ingest", "/v1/sessions/{session_id}/forget", "/v1/sessions/{session_id}/state"):
        assert path in paths, path
    assert "ChatCompletionRequest" in schema["components"]["schemas"]
    assert "HTTPBearer" in schema["components"]["securitySchemes"]


async def test_an_unknown_model_is_404_with_the_served_one_named(make_app):
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json={**ASK, "model": "gpt-4o"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "model_not_found" and "'deltamem'" in response.json()["error"]["message"]
