"""Memory routes and authentication: list, read, ingest, search, forget, state, delete; API keys
map to users and a key never sees another user's sessions."""

from __future__ import annotations

import pytest

from deltamem_agents.session import SessionKey
from tests.server.conftest import API_KEYS, client_for

pytestmark = pytest.mark.anyio

ALICE, BOB = (f"Bearer {key}" for key in API_KEYS)


def ask(text: str) -> dict:
    return {"model": "deltamem", "messages": [{"role": "user", "content": text}]}


async def test_list_read_state_and_delete_a_session(make_app, runtime):
    async with client_for(make_app()) as http:
        await http.post("/v1/chat/completions", json=ask("I drink cardamom tea."), headers={"X-Session-Id": "tea"})
        listed = (await http.get("/v1/sessions")).json()["data"]
        detail = (await http.get("/v1/sessions/tea", params={"limit": 1})).json()
        state = (await http.get("/v1/sessions/tea/state")).json()
        committed = runtime.store.head(SessionKey(session_id="tea"))
        deleted = await http.delete("/v1/sessions/tea")
        after = await http.get("/v1/sessions/tea")
        again = await http.delete("/v1/sessions/tea")
    assert [s["id"] for s in listed] == ["tea"] and listed[0]["turn_count"] == 1 and listed[0]["message_count"] == 2
    assert detail["messages_total"] == 2 and [m["role"] for m in detail["messages"]] == ["assistant"]
    assert detail["messages"][0]["index"] == 1
    assert state["empty"] is False and state["layers"] == len(runtime.handle.layers) and state["finite"] is True
    assert state["rank"] == runtime.handle.config.rank and state["norm"] > 0
    assert state["state_sha256"] == committed.state_sha256 and state["tokens_written"] == committed.tokens_written
    assert len(state["per_layer"]) == state["layers"] and "tensor" not in str(state).lower()
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert after.status_code == 404 and again.status_code == 404
    assert not runtime.store.exists(SessionKey(session_id="tea"))


async def test_ingest_messages_and_a_document_then_search_and_forget(make_app, runtime):
    app = make_app(textlog=True)
    async with client_for(app) as http:
        ingested = await http.post(
            "/v1/sessions/notes/ingest",
            json={"messages": [{"role": "user", "content": "My locker code is 7312."}, {"role": "user", "content": "I like green tea."}]},
        )
        assert ingested.status_code == 200, ingested.text
        assert ingested.json()["tokens_written"] > 0 and ingested.json()["message_count"] == 2
        document = await http.post("/v1/sessions/notes/ingest", json={"document": "The itinerary: Lisbon on Friday.", "source": "trip.md"})
        assert document.status_code == 200 and document.json()["log_ids"]
        hits = (await http.post("/v1/sessions/notes/search", json={"query": "locker code", "k": 2})).json()["hits"]
        secret = next(h for h in hits if "7312" in h["text"])
        state_before = (await http.get("/v1/sessions/notes/state")).json()
        forgot = await http.post("/v1/sessions/notes/forget", json={"ids": [secret["id"]]})
        assert forgot.status_code == 200, forgot.text
        messages = (await http.get("/v1/sessions/notes")).json()["messages"]
        state_after = (await http.get("/v1/sessions/notes/state")).json()
        unknown = await http.post("/v1/sessions/notes/forget", json={"ids": ["no-such-entry"]})
    assert forgot.json()["state_rebuilt"] and forgot.json()["log_entries_removed"] == 1 and forgot.json()["messages_removed"] == 1
    assert all("7312" not in m["content"] for m in messages)
    assert any(m["kind"] == "document" for m in messages)
    assert state_after["state_sha256"] != state_before["state_sha256"]
    assert unknown.status_code == 400 and "no-such-entry" in unknown.json()["error"]["message"]


async def test_forget_and_search_without_a_text_log_say_so(make_app):
    async with client_for(make_app()) as http:
        await http.post("/v1/sessions/solo/ingest", json={"messages": [{"role": "user", "content": "Hi."}]})
        forget = await http.post("/v1/sessions/solo/forget", json={"ids": ["x"]})
        search = await http.post("/v1/sessions/solo/search", json={"query": "hi"})
    assert forget.status_code == 400 and "text log" in forget.json()["error"]["message"]
    assert search.status_code == 400 and "text log" in search.json()["error"]["message"]


async def test_unknown_sessions_are_404_on_every_route(make_app):
    async with client_for(make_app()) as http:
        for method, path, body in [
            ("GET", "/v1/sessions/ghost", None),
            ("DELETE", "/v1/sessions/ghost", None),
            ("GET", "/v1/sessions/ghost/state", None),
            ("POST", "/v1/sessions/ghost/forget", {"ids": ["a"]}),
            ("POST", "/v1/sessions/ghost/search", {"query": "a"}),
        ]:
            response = await http.request(method, path, json=body)
            assert response.status_code == 404, (method, path, response.text)
            assert response.json()["error"]["code"] == "session_not_found"


async def test_invalid_session_ids_are_400_naming_the_rule(make_app):
    async with client_for(make_app()) as http:
        by_header = await http.post("/v1/chat/completions", json=ask("hi"), headers={"X-Session-Id": "../etc"})
        by_user = await http.post("/v1/chat/completions", json={**ask("hi"), "user": "a b"})
        by_path = await http.get("/v1/sessions/.hidden")
        too_long = await http.get("/v1/sessions/" + "x" * 200 + "/state")
    for response in (by_header, by_user, by_path, too_long):
        assert response.status_code == 400, response.text
        assert "1-128 characters" in response.json()["error"]["message"]


async def test_keys_are_required_and_checked(make_app):
    app = make_app(api_keys=API_KEYS)
    async with client_for(app) as http:
        missing = await http.get("/v1/models")
        wrong = await http.get("/v1/models", headers={"Authorization": "Bearer key-mallory-0123456789abcdef"})
        basic = await http.get("/v1/models", headers={"Authorization": "Basic YWxpY2U6cHc="})
        chat = await http.post("/v1/chat/completions", json=ask("hi"))
        good = await http.get("/v1/models", headers={"Authorization": ALICE})
        health = await http.get("/health")
    for response in (missing, wrong, basic, chat):
        assert response.status_code == 401, response.text
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "authentication_error"
    assert good.status_code == 200 and health.status_code == 200 and health.json()["auth_required"] is True


async def test_a_key_sees_only_its_own_users_sessions(make_app, runtime):
    app = make_app(api_keys=API_KEYS)
    async with client_for(app, Authorization=ALICE) as alice, client_for(app, Authorization=BOB) as bob:
        said = await alice.post("/v1/chat/completions", json=ask("Alice's secret: 42."), headers={"X-Session-Id": "diary"})
        assert said.status_code == 200 and said.json()["deltamem"]["user_id"] == "alice"
        assert [s["id"] for s in (await alice.get("/v1/sessions")).json()["data"]] == ["diary"]
        assert (await bob.get("/v1/sessions")).json()["data"] == []
        for method, path, body in [
            ("GET", "/v1/sessions/diary", None),
            ("GET", "/v1/sessions/diary/state", None),
            ("DELETE", "/v1/sessions/diary", None),
            ("POST", "/v1/sessions/diary/forget", {"ids": ["a"]}),
        ]:
            assert (await bob.request(method, path, json=body)).status_code == 404, (method, path)
        # Bob's own "diary" is another session altogether
        mine = await bob.post("/v1/chat/completions", json=ask("Bob here."), headers={"X-Session-Id": "diary"})
        assert mine.json()["deltamem"]["turn"] == 1
    assert runtime.store.head(SessionKey(user_id="alice", session_id="diary")).turn_count == 1
    assert runtime.store.head(SessionKey(user_id="bob", session_id="diary")).turn_count == 1
    alice_log = runtime.store.load(SessionKey(user_id="alice", session_id="diary")).messages
    assert all("Bob" not in m.content for m in alice_log)
