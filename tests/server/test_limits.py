"""Limits and bad input: each is a 4xx with a message that says what to change, never a 500."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.session import SessionKey
from tests.server.conftest import client_for

pytestmark = pytest.mark.anyio

ASK = {"model": "deltamem", "messages": [{"role": "user", "content": "Hello."}]}


async def chunked(data: bytes, size: int = 4096):
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_the_limit_is_413_declared_or_streamed(make_app, runtime):
    big = {**ASK, "messages": [{"role": "user", "content": "x" * 70_000}]}  # limit: 64 000 bytes
    async with client_for(make_app()) as http:
        declared = await http.post("/v1/chat/completions", json=big, headers={"X-Session-Id": "big"})
        streamed = await http.post(
            "/v1/chat/completions", content=chunked(json.dumps(big).encode()),
            headers={"Content-Type": "application/json", "X-Session-Id": "big"},
        )
    for response in (declared, streamed):
        assert response.status_code == 413, response.text
        assert "--max-request-bytes" in response.json()["error"]["message"]
    assert not runtime.store.exists(SessionKey(session_id="big"))


async def test_max_tokens_over_the_server_limit_is_400(make_app):
    async with client_for(make_app()) as http:
        over = await http.post("/v1/chat/completions", json={**ASK, "max_tokens": 65})
        over_new = await http.post("/v1/chat/completions", json={**ASK, "max_completion_tokens": 1000})
        within = await http.post("/v1/chat/completions", json={**ASK, "max_tokens": 2})
    assert over.status_code == 400 and over.json()["error"]["param"] == "max_tokens"
    assert "--max-tokens" in over.json()["error"]["message"] and "(64)" in over.json()["error"]["message"]
    assert over_new.status_code == 400 and over_new.json()["error"]["param"] == "max_completion_tokens"
    assert within.status_code == 200 and within.json()["usage"]["completion_tokens"] <= 2


async def test_history_to_ingest_over_the_limit_is_413(make_app):
    async with client_for(make_app()) as http:
        document = await http.post("/v1/sessions/doc/ingest", json={"document": "y" * 5000})
        messages = await http.post("/v1/sessions/doc/ingest", json={"messages": [{"role": "user", "content": "z" * 5000}]})
        stateless = await http.post(
            "/v1/chat/completions", json={**ASK, "messages": [{"role": "user", "content": "w" * 5000}]}
        )
    for response in (document, messages, stateless):
        assert response.status_code == 413, response.text
        assert "--max-ingest-chars" in response.json()["error"]["message"]


async def test_malformed_json_and_wrong_types(make_app):
    async with client_for(make_app()) as http:
        broken = await http.post("/v1/chat/completions", content=b'{"model": "deltamem", "messages": [', headers={"Content-Type": "application/json"})
        not_object = await http.post("/v1/chat/completions", json=["model"])
        wrong_type = await http.post("/v1/chat/completions", json={**ASK, "max_tokens": "many"})
        wrong_role = await http.post("/v1/chat/completions", json={**ASK, "messages": [{"role": "wizard", "content": "hi"}]})
        no_messages = await http.post("/v1/chat/completions", json={**ASK, "messages": []})
        missing_model = await http.post("/v1/chat/completions", json={"messages": ASK["messages"]})
        tool_without_id = await http.post("/v1/chat/completions", json={**ASK, "messages": [{"role": "tool", "content": "{}"}]})
        bad_ingest = await http.post("/v1/sessions/s/ingest", json={"messages": [], "document": "both"})
        forget_nothing = await http.post("/v1/sessions/s/forget", json={"ids": []})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_json"
    for response in (not_object, wrong_type, wrong_role, no_messages, missing_model, tool_without_id, bad_ingest, forget_nothing):
        assert response.status_code == 422, response.text
        assert response.json()["error"]["message"].startswith("invalid request:")
    assert wrong_type.json()["error"]["param"] == "max_tokens"


async def test_empty_and_unanswerable_conversations_are_400(make_app):
    cases = {
        "empty user message": [{"role": "user", "content": "   "}],
        "empty content parts": [{"role": "user", "content": []}],
        "ends with the assistant": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        "image content": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}],
        "arguments not JSON": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "1"},
        ],
    }
    async with client_for(make_app()) as http:
        for name, messages in cases.items():
            response = await http.post("/v1/chat/completions", json={**ASK, "messages": messages}, headers={"X-Session-Id": "e"})
            assert response.status_code == 400, (name, response.text)
            assert response.json()["error"]["message"], name
        n = await http.post("/v1/chat/completions", json={**ASK, "n": 2})
        logprobs = await http.post("/v1/chat/completions", json={**ASK, "logprobs": True})
        stops = await http.post("/v1/chat/completions", json={**ASK, "stop": ["a", "b", "c", "d", "e"]})
        choice = await http.post("/v1/chat/completions", json={**ASK, "tool_choice": "required"})
    for response in (n, logprobs, stops, choice):
        assert response.status_code == 400, response.text


async def test_text_content_parts_and_developer_messages_are_read(make_app, runtime):
    messages = [
        {"role": "developer", "content": "Answer briefly."},
        {"role": "user", "content": [{"type": "text", "text": "Hello "}, {"type": "text", "text": "there."}]},
    ]
    async with client_for(make_app()) as http:
        response = await http.post("/v1/chat/completions", json={**ASK, "messages": messages}, headers={"X-Session-Id": "parts"})
    assert response.status_code == 200, response.text
    said = [(m.role, m.content) for m in runtime.store.load(SessionKey(session_id="parts")).messages]
    assert said[:2] == [("system", "Answer briefly."), ("user", "Hello there.")]


async def test_unknown_routes_and_methods_are_4xx_in_the_error_shape(make_app):
    async with client_for(make_app()) as http:
        missing = await http.get("/v1/nothing")
        method = await http.put("/v1/sessions")
    assert missing.status_code == 404 and "/docs" in missing.json()["error"]["message"]
    assert method.status_code == 405 and "error" in method.json()
