"""Concurrency: one turn per session at a time, different sessions decoded in one batch (with the
same answers as one by one), abandoned streams commit nothing, busy sessions answer 503."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest
import torch

from deltamem_agents.session import SessionKey
from tests.server.conftest import ThreadServer, client_for

PROMPTS = ["I live in Porto.", "My sister is Ines and she visits in August.", "Trains, not planes.", "Hi!"]


def ask(text: str, **fields) -> dict:
    return {"model": "deltamem", "messages": [{"role": "user", "content": text}], **fields}


def slow_model(runtime, monkeypatch, seconds: float = 0.05) -> None:
    """Every forward takes ``seconds`` longer, so a turn is still running when the test acts."""
    forward = runtime.model.forward

    def slowed(*args, **kwargs):
        time.sleep(seconds)
        return forward(*args, **kwargs)

    monkeypatch.setattr(runtime.model, "forward", slowed)


@pytest.mark.anyio
@pytest.mark.parametrize("batching", [True, False], ids=["batching", "serial"])
async def test_concurrent_turns_on_one_session_are_serialised(make_app, runtime, batching):
    async with client_for(make_app(batching=batching)) as http:
        requests = [
            http.post("/v1/chat/completions", json=ask(f"message {i}", stream=i % 2 == 0), headers={"X-Session-Id": "one"})
            for i in range(6)
        ]
        responses = await asyncio.gather(*requests)
    assert [r.status_code for r in responses] == [200] * 6
    replies = {}
    for i, response in enumerate(responses):
        if i % 2 == 0:
            events = [json.loads(line[6:]) for line in response.text.split("\n\n") if line.startswith("data: {")]
            replies[f"message {i}"] = "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"])
        else:
            replies[f"message {i}"] = response.json()["choices"][0]["message"]["content"]
    messages = runtime.store.load(SessionKey(session_id="one")).messages
    assert [m.role for m in messages] == ["user", "assistant"] * 6
    for user, answer in zip(messages[::2], messages[1::2], strict=True):
        assert answer.content == replies[user.content]  # each answer follows its own question
    assert runtime.store.head(SessionKey(session_id="one")).turn_count == 6


@pytest.mark.anyio
async def test_turns_of_different_sessions_are_decoded_in_one_batch_with_the_same_answers(make_app, runtime):
    batched_app = make_app(batching=True, max_batch_rows=4, batch_wait_ms=30_000)
    serial_app = make_app(batching=False)
    async with client_for(batched_app) as batched, client_for(serial_app) as serial:
        together = await asyncio.gather(
            *(batched.post("/v1/chat/completions", json=ask(p, max_tokens=6), headers={"X-Session-Id": f"b{i}"}) for i, p in enumerate(PROMPTS))
        )
        alone = [
            await serial.post("/v1/chat/completions", json=ask(p, max_tokens=6), headers={"X-Session-Id": f"s{i}"})
            for i, p in enumerate(PROMPTS)
        ]
    stats = batched_app.state.context.scheduler.stats()
    assert stats.batch_joins == 4 and stats.max_batch_rows == 4  # all four decoded side by side
    assert stats.batched_rows >= 4 * 5  # six tokens each: five batched forwards after the first
    assert serial_app.state.context.scheduler.stats().batches == 0
    for i, (b, s) in enumerate(zip(together, alone, strict=True)):
        assert b.status_code == s.status_code == 200
        assert b.json()["choices"][0]["message"]["content"] == s.json()["choices"][0]["message"]["content"], i
        state_b = runtime.store.load(SessionKey(session_id=f"b{i}")).state
        state_s = runtime.store.load(SessionKey(session_id=f"s{i}")).state
        for layer in state_s.layers:
            torch.testing.assert_close(state_b.layers[layer], state_s.layers[layer], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batching", [True, False], ids=["batching", "serial"])
def test_a_stream_whose_client_leaves_commits_nothing(make_app, runtime, monkeypatch, batching):
    slow_model(runtime, monkeypatch)
    app = make_app(batching=batching)
    with ThreadServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=ask("Tell me a long story.", stream=True, max_tokens=40),
                         headers={"X-Session-Id": "gone"}) as response:
            assert response.status_code == 200
            for line in response.iter_lines():
                if '"content":"' in line and '"content":""' not in line:
                    break  # the first piece of text: now hang up
        # the next turn waits for the abandoned one to stop, then runs on the committed session
        after = http.post("/v1/chat/completions", json=ask("Hello again."), headers={"X-Session-Id": "gone"})
        assert after.status_code == 200
    record = runtime.store.load(SessionKey(session_id="gone"))
    assert [m.content for m in record.messages if m.role == "user"] == ["Hello again."]
    assert record.metadata.turn_count == 1
    stats = app.state.context.scheduler.stats()
    assert (stats.turns_cancelled, stats.turns_failed, stats.turns_finished) == (1, 0, 1)


def test_a_session_locked_elsewhere_is_503_after_the_timeout(make_app, runtime):
    runtime.store.lock_timeout = 0.3
    key = SessionKey(session_id="held")
    holding, release = threading.Event(), threading.Event()

    def other_process():
        with runtime.store.lock(key):
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=other_process)
    holder.start()
    try:
        holding.wait(10)
        app = make_app()

        async def call():
            async with client_for(app) as http:
                return await http.post("/v1/chat/completions", json=ask("hi"), headers={"X-Session-Id": "held"})

        response = asyncio.run(call())
    finally:
        release.set()
        holder.join()
    assert response.status_code == 503 and response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "session_busy" and "locked" in response.json()["error"]["message"]


@pytest.mark.anyio
async def test_a_request_waiting_too_long_for_its_session_in_this_process_is_503(make_app, runtime, monkeypatch):
    slow_model(runtime, monkeypatch, seconds=0.05)
    app = make_app(lock_timeout_s=0.2, default_max_tokens=30)
    async with client_for(app) as http:
        first = asyncio.create_task(http.post("/v1/chat/completions", json=ask("one"), headers={"X-Session-Id": "q"}))
        while app.state.context.scheduler.stats().turns_started == 0:
            await asyncio.sleep(0.01)
        second = await http.post("/v1/chat/completions", json=ask("two"), headers={"X-Session-Id": "q"})
        assert (await first).status_code == 200
    assert second.status_code == 503 and "busy with other requests" in second.json()["error"]["message"]
