"""The memory-verb tools (add_memory, get_memory, list_memories, search_memories, update_memory,
delete_memory, memory_history, reset_memories) through the SDK's own client, either major, on the
tiny model with a real Chroma log."""

from __future__ import annotations

import pytest

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.session import SessionKey
from tests.mcp.test_tools import call, connect, error, snapshot

pytestmark = pytest.mark.anyio

VERBS = {
    "add_memory", "get_memory", "list_memories", "search_memories", "update_memory", "delete_memory",
    "memory_history", "reset_memories",
}


async def test_the_verb_tools_are_listed_with_schemas_and_annotations(hybrid):
    async with connect(hybrid) as client:
        tools = {t["name"]: t for t in await client.list_tools()}
    assert VERBS <= set(tools)
    for name in VERBS:
        assert tools[name]["description"] and tools[name].get("outputSchema") is not None, name
    for name in ("get_memory", "list_memories", "search_memories", "memory_history"):
        assert tools[name]["annotations"]["readOnlyHint"] is True, name
    for name in ("update_memory", "delete_memory", "reset_memories"):
        assert tools[name]["annotations"]["destructiveHint"] is True and tools[name]["annotations"]["readOnlyHint"] is False
    assert tools["add_memory"]["annotations"]["destructiveHint"] is False
    reset = tools["reset_memories"]["inputSchema"]
    assert reset["properties"]["confirm"]["default"] is False
    assert set(tools["update_memory"]["inputSchema"]["required"]) == {"memory_id", "text", "user_id"}
    assert set(tools["list_memories"]["inputSchema"]["properties"]) == {"user_id", "session_id", "since", "until", "metadata", "limit"}
    item = tools["get_memory"]["outputSchema"]
    assert {"id", "text", "session_id", "chunk_ids", "metadata"} <= set(item["properties"])
    assert "add_memory" in (client.instructions or "")


async def test_each_verb_round_trips(hybrid):
    async with connect(hybrid) as client:
        added = await call(client, "add_memory", user_id="ada", session_id="pets", text="My ferret is Tomas.",
                           metadata={"topic": "pets"})
        assert added["created_session"] is True
        [ferret] = added["ids"]
        assert added["memories"][0]["id"] == ferret and added["memories"][0]["metadata"] == {"topic": "pets"}
        more = await call(client, "add_memory", user_id="ada", session_id="home", messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "I live in Oslo."},
            {"role": "assistant", "content": "Noted, Oslo."},
        ])
        assert len(more["ids"]) == 2  # the system message goes into the state, not the log
        assert [m["role"] for m in more["memories"]] == ["user", "assistant"]

        one = await call(client, "get_memory", memory_id=ferret, user_id="ada")
        assert (one["text"], one["session_id"], one["user_id"], one["kind"]) == ("My ferret is Tomas.", "pets", "ada", "message")
        everything = await call(client, "list_memories", user_id="ada")
        assert everything["count"] == 3 and everything["truncated"] is False
        pets = await call(client, "list_memories", user_id="ada", metadata={"topic": "pets"})
        assert [m["id"] for m in pets["memories"]] == [ferret]
        home = await call(client, "list_memories", user_id="ada", session_id="home", limit=1)
        assert [m["text"] for m in home["memories"]] == ["I live in Oslo."] and home["truncated"] is True
        later = await call(client, "list_memories", user_id="ada", since="2999-01-01T00:00:00Z")
        assert later["memories"] == [] and later["count"] == 0
        assert (await call(client, "list_memories", user_id="bob"))["memories"] == []

        found = await call(client, "search_memories", query="ferret Tomas", user_id="ada", k=1)
        assert [(h["memory_id"], h["session_id"]) for h in found["hits"]] == [(ferret, "pets")]
        # a chunk id from search is accepted wherever a memory id is
        assert (await call(client, "get_memory", memory_id=found["hits"][0]["id"], user_id="ada"))["id"] == ferret

        updated = await call(client, "update_memory", memory_id=ferret, text="My ferret is Quillon.", user_id="ada")
        assert updated["id"] == ferret and updated["text"] == "My ferret is Quillon."
        assert updated["metadata"] == {"topic": "pets"}
        hits = (await call(client, "search_memories", query="ferret", user_id="ada", session_id="pets"))["hits"]
        assert [h["text"] for h in hits] == ["My ferret is Quillon."]  # the old text left the log
        record = hybrid.runtime.store.load(SessionKey(user_id="ada", session_id="pets"))
        assert [m.content for m in record.messages] == ["My ferret is Quillon."]
        twin = hybrid.runtime.session("twin", user_id="ada")  # the state is what the corrected text writes
        twin.ingest(record.messages[0])
        assert twin.state.equal(record.state)

        history = await call(client, "memory_history", memory_id=ferret, user_id="ada")
        assert history["id"] == ferret
        assert [(e["event"], e["call"]) for e in history["events"]] == [("ADD", "MCP add_memory"), ("UPDATE", "MCP update_memory")]
        assert (history["events"][1]["old_text"], history["events"][1]["new_text"]) == ("My ferret is Tomas.", "My ferret is Quillon.")

        deleted = await call(client, "delete_memory", memory_id=ferret, user_id="ada")
        assert deleted["deleted"] is True and deleted["state_rebuilt"] is True and deleted["messages_removed"] == 1
        assert (deleted["id"], deleted["session_id"]) == (ferret, "pets")
        assert "no memory" in await error(client, "get_memory", memory_id=ferret, user_id="ada")
        after = await call(client, "memory_history", memory_id=ferret, user_id="ada")
        assert [e["event"] for e in after["events"]] == ["ADD", "UPDATE", "DELETE"]
        assert hybrid.runtime.store.load(SessionKey(user_id="ada", session_id="pets")).messages == []


async def test_reset_needs_confirm_and_touches_only_that_user(hybrid):
    async with connect(hybrid) as client:
        await call(client, "add_memory", user_id="ada", session_id="a", text="Ada's note.")
        await call(client, "add_memory", user_id="ada", session_id="b", text="Ada's other note.")
        await call(client, "add_memory", user_id="bob", session_id="a", text="Bob's note.")
        before = snapshot(hybrid, "ada", "a")
        refused = await error(client, "reset_memories", user_id="ada")
        assert "confirm=true" in refused and "2 session(s)" in refused and "nothing was deleted" in refused
        assert snapshot(hybrid, "ada", "a") == before and len(hybrid.runtime.sessions("ada")) == 2
        out = await call(client, "reset_memories", user_id="ada", confirm=True)
        assert out == {"user_id": "ada", "sessions_deleted": 2, "log_entries_removed": 2, "audit_events_removed": 2}
        assert (await call(client, "list_memories", user_id="ada"))["memories"] == []
        assert [m["text"] for m in (await call(client, "list_memories", user_id="bob"))["memories"]] == ["Bob's note."]
        assert hybrid.runtime.sessions("ada") == []


async def test_errors_are_clear_tool_errors_and_change_nothing(hybrid):
    async with connect(hybrid) as client:
        [memory_id] = (await call(client, "add_memory", user_id="ada", session_id="gym", text="My locker code is 7312."))["ids"]
        await call(client, "add_memory", user_id="ada", session_id="gym", text="I swim on Tuesdays.")
        before = snapshot(hybrid, "ada", "gym")
        # another user's id reads as unknown, for every verb that takes one
        for tool, extra in (("get_memory", {}), ("update_memory", {"text": "hacked"}), ("delete_memory", {}), ("memory_history", {})):
            message = await error(client, tool, memory_id=memory_id, user_id="bob", **extra)
            assert f"no memory {memory_id!r} for user 'bob'" in message and "list_memories" in message, message
        assert "no memory 'nope'" in await error(client, "get_memory", memory_id="nope", user_id="ada")
        assert "already holds this text" in await error(
            client, "update_memory", memory_id=memory_id, text="I swim on Tuesdays.", user_id="ada",
        )
        assert "empty" in await error(client, "update_memory", memory_id=memory_id, text="   ", user_id="ada")
        assert "exactly one of" in await error(client, "add_memory", user_id="ada", session_id="gym")
        assert "exactly one of" in await error(
            client, "add_memory", user_id="ada", session_id="gym", text="x", messages=[{"role": "user", "content": "y"}],
        )
        assert "set by the log itself" in await error(
            client, "add_memory", user_id="ada", session_id="gym", text="x", metadata={"session_id": "other"},
        )
        assert "invalid user_id" in await error(client, "list_memories", user_id="../etc")
        assert "invalid session_id" in await error(client, "add_memory", user_id="ada", session_id="a/b", text="x")
        assert "empty" in await error(client, "search_memories", query="  ", user_id="ada")
        assert snapshot(hybrid, "ada", "gym") == before
        assert [e["event"] for e in (await call(client, "memory_history", memory_id=memory_id, user_id="ada"))["events"]] == ["ADD"]


async def test_without_a_text_log_the_verbs_say_so(chat_tokenizer, tmp_path):
    from tests.tiny_models import tiny_runtime

    memory = HybridMemory(tiny_runtime(chat_tokenizer, tmp_path / "store"), None)
    async with connect(memory) as client:
        for tool, arguments in (
            ("add_memory", {"user_id": "ada", "session_id": "s", "text": "Hi."}),
            ("list_memories", {"user_id": "ada"}),
            ("search_memories", {"user_id": "ada", "query": "hi"}),
            ("reset_memories", {"user_id": "ada", "confirm": True}),
        ):
            assert "no text log" in await error(client, tool, **arguments), tool
    assert not memory.runtime.store.exists(SessionKey(user_id="ada", session_id="s"))
