"""The memory verbs over HTTP (/v1/memories): add, list with filters, get, update, delete,
history and reset, each scoped to the API key's user; a real embedded Chroma log."""

from __future__ import annotations

import json

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.server import close_app, create_app
from deltamem_agents.session import SessionKey
from tests.memory.hashing import HashingEmbedding
from tests.memory.test_retention import clock  # noqa: F401 - fixture
from tests.server.conftest import API_KEYS, client_for, settings

pytestmark = pytest.mark.anyio

ALICE, BOB = (f"Bearer {key}" for key in API_KEYS)


@pytest.fixture
def app(runtime, tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"), embedding_function=HashingEmbedding())
    app = create_app(settings(api_keys=API_KEYS), memory=HybridMemory(runtime, log, MemoryRouter(policies=[NeverRetrieve()])))
    yield app
    close_app(app)
    log.close()


async def test_every_verb_over_http(app, runtime):
    async with client_for(app, Authorization=ALICE) as http:
        added = await http.post("/v1/memories", json={"session_id": "pets", "text": "My ferret is Tomas.", "metadata": {"topic": "pets"}})
        assert added.status_code == 200, added.text
        [memory_id] = added.json()["ids"]
        assert added.json()["data"][0]["text"] == "My ferret is Tomas."
        more = await http.post("/v1/memories", json={
            "session_id": "home", "messages": [{"role": "user", "content": "I live in Oslo."}, {"role": "assistant", "content": "Noted."}],
        })
        assert len(more.json()["ids"]) == 2
        everything = (await http.get("/v1/memories")).json()["data"]
        pets = (await http.get("/v1/memories", params={"metadata": json.dumps({"topic": "pets"})})).json()["data"]
        home = (await http.get("/v1/memories", params={"session_id": "home", "limit": 1})).json()["data"]
        later = (await http.get("/v1/memories", params={"since": "2999-01-01T00:00:00Z"})).json()["data"]
        one = (await http.get(f"/v1/memories/{memory_id}")).json()
        patched = await http.patch(f"/v1/memories/{memory_id}", json={"text": "My ferret is Quillon."})
        assert patched.status_code == 200, patched.text
        history = (await http.get(f"/v1/memories/{memory_id}/history")).json()
        session = (await http.get("/v1/sessions/pets")).json()
        deleted = await http.delete(f"/v1/memories/{memory_id}")
        gone = await http.get(f"/v1/memories/{memory_id}")
        after_delete = (await http.get(f"/v1/memories/{memory_id}/history")).json()
        reset = await http.post("/v1/memories/reset")
        empty = (await http.get("/v1/memories")).json()["data"]
    assert len(everything) == 3 and [m["text"] for m in pets] == ["My ferret is Tomas."]
    assert [m["text"] for m in home] == ["I live in Oslo."] and later == []
    assert one["id"] == memory_id and one["user_id"] == "alice" and one["metadata"] == {"topic": "pets"}
    assert patched.json()["id"] == memory_id and patched.json()["text"] == "My ferret is Quillon."
    assert [m["content"] for m in session["messages"]] == ["My ferret is Quillon."]
    assert [(e["event"], e["call"]) for e in history["events"]] == [("ADD", "POST /v1/memories"), ("UPDATE", "PATCH /v1/memories/{id}")]
    assert history["events"][1]["old_text"] == "My ferret is Tomas."
    assert deleted.status_code == 200 and deleted.json()["state_rebuilt"] and deleted.json()["messages_removed"] == 1
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "not_found_error"
    assert [e["event"] for e in after_delete["events"]] == ["ADD", "UPDATE", "DELETE"]
    assert reset.status_code == 200 and reset.json()["sessions_deleted"] == 2 and empty == []
    assert runtime.sessions("alice") == []


async def test_another_users_memory_is_unknown_and_bad_input_is_refused(app, runtime):
    async with client_for(app, Authorization=ALICE) as alice, client_for(app, Authorization=BOB) as bob:
        [memory_id] = (await alice.post("/v1/memories", json={"session_id": "s", "text": "My locker code is 7312."})).json()["ids"]
        before = runtime.store.head(SessionKey(user_id="alice", session_id="s"))
        answers = [
            await bob.get(f"/v1/memories/{memory_id}"),
            await bob.patch(f"/v1/memories/{memory_id}", json={"text": "hacked"}),
            await bob.delete(f"/v1/memories/{memory_id}"),
            await bob.get(f"/v1/memories/{memory_id}/history"),
            await alice.get("/v1/memories/no-such-memory"),
        ]
        bob_list = (await bob.get("/v1/memories")).json()["data"]
        bob_reset = (await bob.post("/v1/memories/reset")).json()
        both = await alice.post("/v1/memories", json={"session_id": "s", "text": "x", "messages": [{"role": "user", "content": "y"}]})
        bad_filter = await alice.get("/v1/memories", params={"metadata": "[1, 2]"})
        bad_session = await alice.post("/v1/memories", json={"session_id": "../etc", "text": "x"})
        empty_text = await alice.patch(f"/v1/memories/{memory_id}", json={"text": ""})
    async with client_for(app) as anonymous:
        unauthorized = await anonymous.get("/v1/memories")
    assert [a.status_code for a in answers] == [404] * 5
    assert all("no memory" in a.json()["error"]["message"] for a in answers)
    assert bob_list == [] and bob_reset["sessions_deleted"] == 0
    assert runtime.store.head(SessionKey(user_id="alice", session_id="s")) == before  # nothing changed
    assert both.status_code == 422 and bad_filter.status_code == 400 and bad_session.status_code in (400, 422)
    assert empty_text.status_code == 422 and unauthorized.status_code == 401


async def test_without_a_text_log_the_verbs_say_so(make_app):
    async with client_for(make_app()) as http:
        added = await http.post("/v1/memories", json={"session_id": "solo", "text": "Hi."})
    assert added.status_code == 400 and "text log" in added.json()["error"]["message"]


async def test_ttl_retention_and_prune_over_http(app, runtime, clock):

    async with client_for(app, Authorization=ALICE) as http:
        short = await http.post("/v1/memories", json={"session_id": "s", "text": "Door code 4417.", "ttl_seconds": 20})
        assert short.status_code == 200 and short.json()["data"][0]["expires_at"] is not None
        await http.post("/v1/memories", json={"session_id": "s", "text": "One."})
        await http.post("/v1/memories", json={"session_id": "s", "text": "Two."})
        bad = await http.post("/v1/memories", json={"session_id": "s", "text": "x", "ttl_seconds": 0})
        default = (await http.get("/v1/memories/retention")).json()
        policy = await http.put("/v1/memories/retention", json={"max_entries": 1})
        bad_policy = await http.put("/v1/memories/retention", json={"max_age": "-3d"})
        clock.advance(30)
        dry = (await http.post("/v1/memories/prune", params={"dry_run": "true"})).json()
        pruned = (await http.post("/v1/memories/prune")).json()
        left = (await http.get("/v1/memories")).json()["data"]
    async with client_for(app, Authorization=BOB) as http:
        bobs = (await http.get("/v1/memories/retention")).json()
    assert bad.status_code in (400, 422) and bad_policy.status_code in (400, 422)
    assert default == {"max_age": None, "max_entries": None} and bobs == default
    assert policy.status_code == 200 and policy.json()["max_entries"] == 1
    assert dry["dry_run"] and dry["log_entries_removed"] == 0 and len(dry["entries"]) == 2
    assert sorted(e["reason"] for e in pruned["entries"]) == ["max_entries", "ttl"]
    assert pruned["sessions_rebuilt"] == ["alice/s"] and pruned["log_entries_removed"] == 2
    assert [m["text"] for m in left] == ["Two."]
    assert [m.content for m in runtime.store.require(SessionKey(user_id="alice", session_id="s")).messages] == ["Two."]
