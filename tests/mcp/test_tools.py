"""The MCP server in process: the SDK's own client (either major, through `sdk_client`), the tiny
model behind."""

from __future__ import annotations

import json
from contextlib import asynccontextmanager

import pytest

from deltamem_agents.cli._runtime import state_digest
from deltamem_agents.mcp_server import build_mcp_server
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.memory.routing import MemoryRouter, NeverRetrieve
from deltamem_agents.session import SessionKey
from tests.mcp.sdk_client import McpError, in_process

pytestmark = pytest.mark.anyio

TOOLS = {
    "remember", "recall", "forget", "list_sessions", "session_stats",
    "add_memory", "get_memory", "list_memories", "search_memories", "update_memory", "delete_memory", "memory_history",
    "reset_memories",
}


@asynccontextmanager
async def connect(hybrid, **options):
    server = build_mcp_server(hybrid, max_new_tokens=4, **options)
    async with in_process(server) as client:
        yield client


async def call(client, tool: str, **arguments) -> dict:
    result = await client.call_tool(tool, arguments)
    assert not result.get("isError"), result["content"][0]["text"]
    assert result.get("structuredContent") is not None
    # the text content is the same object as JSON, for clients that read text only
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    return result["structuredContent"]


async def error(client, tool: str, **arguments) -> str:
    result = await client.call_tool(tool, arguments)
    assert result.get("isError") is True
    return result["content"][0]["text"]


def snapshot(hybrid, user_id: str, session_id: str) -> tuple:
    """Everything a write could change: the committed record, the open session, the log."""
    key = SessionKey(user_id=user_id, session_id=session_id)
    record = hybrid.runtime.store.load(key)
    session = hybrid.runtime.session(session_id, user_id=user_id)
    return (
        record.metadata.turn_count, record.metadata.message_count, record.metadata.tokens_written,
        state_digest(record.state), [m.content for m in record.messages],
        state_digest(session.state), len(session.messages),
        sorted(h.id for h in hybrid.textlog.list(user_id=user_id, session_id=session_id)),
    )


async def test_tools_and_resource_are_listed_with_schemas(hybrid):
    async with connect(hybrid) as client:
        tools = {t["name"]: t for t in await client.list_tools()}
        assert set(tools) == TOOLS
        for tool in tools.values():
            assert tool.get("outputSchema") is not None and tool["description"]
        recall = tools["recall"]["inputSchema"]
        assert set(recall["required"]) == {"query", "user_id", "session_id"}
        assert recall["properties"]["write"]["default"] is False
        assert tools["forget"]["annotations"] == {
            "title": "Forget", "readOnlyHint": False, "destructiveHint": True, "idempotentHint": False,
        }
        assert tools["list_sessions"]["annotations"] == {"title": "List sessions", "readOnlyHint": True}
        assert set(tools["forget"]["inputSchema"]["properties"]["scope"]["enum"]) == {"entries", "session", "user"}
        templates = await client.list_resource_templates()
        assert [t["uriTemplate"] for t in templates] == ["deltamem://sessions/{user_id}/{session_id}/log"]
        assert templates[0]["mimeType"] == "application/json"
        assert "remember" in (client.instructions or "")


async def test_remember_writes_state_and_log_and_returns_the_entry_ids(hybrid):
    async with connect(hybrid) as client:
        out = await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        assert out["created_session"] is True and out["tokens_written"] > 0
        assert out["turn_count"] == 1 and out["message_count"] == 1  # a remember is one commit
        [entry] = out["log_entry_ids"]
        assert hybrid.textlog.get([entry])[0].text == "My locker code is 7312."
        record = hybrid.runtime.store.load(SessionKey(user_id="ada", session_id="gym"))
        assert record.state is not None and record.messages[-1].content == "My locker code is 7312."

        again = await call(client, "remember", text="I swim on Tuesdays.", user_id="ada", session_id="gym", role="assistant")
        assert again["created_session"] is False and again["message_count"] == 2
        assert hybrid.textlog.get(again["log_entry_ids"])[0].metadata["role"] == "assistant"
        system = await call(client, "remember", text="Be brief.", user_id="ada", session_id="gym", role="system")
        assert system["log_entry_ids"] == [] and system["tokens_written"] > 0  # state only


async def test_recall_probe_answers_with_the_decision_and_writes_nothing(hybrid):
    async with connect(hybrid) as client:
        await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        await call(client, "remember", text="I like green tea.", user_id="ada", session_id="gym")
        before = snapshot(hybrid, "ada", "gym")
        out = await call(client, "recall", query="What is my locker code?", user_id="ada", session_id="gym")
        assert out["wrote"] is False and out["completion_tokens"] >= 1 and out["finish_reason"] in ("stop", "length")
        decision = out["decision"]
        assert decision["route"] in ("retrieve", "both") and decision["retrieval_wanted"] is True
        assert decision["votes"][0]["policy"] == "always" and decision["reason"]
        assert out["state_confidence"] is not None and out["state_confidence"] > 0
        ids = [s["id"] for s in out["snippets"]]
        assert ids == decision["retrieved_ids"] and any("7312" in s["text"] for s in out["snippets"])
        assert all(s["role"] == "user" and s["distance"] is not None for s in out["snippets"])
        assert snapshot(hybrid, "ada", "gym") == before
        # the same probe twice gives the same answer: nothing it did stayed behind
        twice = await call(client, "recall", query="What is my locker code?", user_id="ada", session_id="gym")
        assert twice["reply"] == out["reply"] and twice["snippets"] == out["snippets"]
        assert snapshot(hybrid, "ada", "gym") == before


async def test_recall_with_write_is_a_saved_and_logged_turn(hybrid):
    async with connect(hybrid) as client:
        await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        before = hybrid.textlog.count(user_id="ada", session_id="gym")
        out = await call(
            client, "recall", query="What is my locker code?", user_id="ada", session_id="gym", write=True, max_new_tokens=3,
        )
        assert out["wrote"] is True and out["turn_count"] == 2 and out["completion_tokens"] <= 3
        assert out["decision"]["retrieved_ids"]
        record = hybrid.runtime.store.load(SessionKey(user_id="ada", session_id="gym"))
        assert [m.role for m in record.messages][-2:] == ["user", "assistant"]
        assert hybrid.textlog.count(user_id="ada", session_id="gym") > before


async def test_recall_without_a_text_log_answers_from_the_state(chat_tokenizer, tmp_path):
    from tests.tiny_models import tiny_runtime

    memory = HybridMemory(tiny_runtime(chat_tokenizer, tmp_path / "store"), None)
    async with connect(memory) as client:
        out = await call(client, "remember", text="I live in Porto.", user_id="ada", session_id="s")
        assert out["log_entry_ids"] == []
        answer = await call(client, "recall", query="Where do I live?", user_id="ada", session_id="s")
        assert answer["decision"] is None and answer["snippets"] == [] and answer["state_confidence"] > 0
        stats = await call(client, "session_stats", user_id="ada", session_id="s")
        assert stats["log_entries"] is None
        assert "no text log" in await error(client, "forget", scope="entries", user_id="ada", session_id="s", entry_ids=["x"])


async def test_the_router_can_keep_to_the_state(chat_tokenizer, tmp_path, textlog):
    from tests.tiny_models import tiny_runtime

    memory = HybridMemory(tiny_runtime(chat_tokenizer, tmp_path / "store"), textlog, MemoryRouter(policies=[NeverRetrieve()]))
    async with connect(memory) as client:
        await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        out = await call(client, "recall", query="What is my locker code?", user_id="ada", session_id="gym")
        assert out["decision"]["route"] == "state" and out["snippets"] == []
        assert out["decision"]["votes"][0] == {
            "policy": "never", "wants_retrieval": False, "score": 0.0, "reason": out["decision"]["votes"][0]["reason"],
        }


async def test_forget_entries_rebuilds_the_state_from_what_remains(hybrid):
    async with connect(hybrid) as client:
        secret = await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        await call(client, "remember", text="I like green tea.", user_id="ada", session_id="gym")
        out = await call(
            client, "forget", scope="entries", user_id="ada", session_id="gym", entry_ids=secret["log_entry_ids"],
        )
        assert out["state_rebuilt"] is True and out["messages_removed"] == 1 and out["log_entries_removed"] == 1
        assert "rebuilt" in out["note"] and out["sessions_deleted"] == 0
        record = hybrid.runtime.store.load(SessionKey(user_id="ada", session_id="gym"))
        assert [m.content for m in record.messages] == ["I like green tea."]
        # the rebuilt state is what writing the remaining message into a fresh session gives
        twin = hybrid.runtime.session("twin", user_id="ada")
        twin.ingest(record.messages[0])
        assert twin.state.equal(record.state)
        answer = await call(client, "recall", query="What is my locker code?", user_id="ada", session_id="gym")
        assert all("7312" not in s["text"] for s in answer["snippets"])


async def test_forget_a_session_and_a_user(hybrid):
    async with connect(hybrid) as client:
        for session in ("a", "b"):
            await call(client, "remember", text=f"Note for {session}.", user_id="ada", session_id=session)
        await call(client, "remember", text="Bob's note.", user_id="bob", session_id="a")
        out = await call(client, "forget", scope="session", user_id="ada", session_id="a")
        assert out["sessions_deleted"] == 1 and out["messages_removed"] == 1 and out["log_entries_removed"] == 1
        assert out["state_rebuilt"] is False
        listed = await call(client, "list_sessions")
        assert {(s["user_id"], s["session_id"]) for s in listed["sessions"]} == {("ada", "b"), ("bob", "a")}
        out = await call(client, "forget", scope="user", user_id="ada")
        assert out["sessions_deleted"] == 1 and out["log_entries_removed"] == 1
        listed = await call(client, "list_sessions")
        assert [(s["user_id"], s["session_id"]) for s in listed["sessions"]] == [("bob", "a")]
        assert hybrid.textlog.count(user_id="ada") == 0 and hybrid.textlog.count(user_id="bob") == 1


async def test_list_sessions_and_stats(hybrid):
    async with connect(hybrid) as client:
        assert (await call(client, "list_sessions"))["sessions"] == []
        await call(client, "remember", text="I live in Porto.", user_id="ada", session_id="trip")
        await call(client, "recall", query="Where do I live?", user_id="ada", session_id="trip", write=True)
        [summary] = (await call(client, "list_sessions", user_id="ada"))["sessions"]
        assert summary["turns"] == 2 and summary["messages"] == 4  # + the retrieved-snippets note
        assert summary["log_uri"] == "deltamem://sessions/ada/trip/log"
        assert (await call(client, "list_sessions", user_id="nobody"))["sessions"] == []
        stats = await call(client, "session_stats", user_id="ada", session_id="trip")
        assert stats["turns"] == 2 and stats["messages"] == 4
        assert stats["messages_by_role"] == {"user": 2, "system": 1, "assistant": 1}
        assert stats["tokens_written"] == summary["tokens_written"] > 0
        state = stats["state"]
        assert state["layers"] == 2 and state["bytes"] > 0 and state["norm"] > 0 and state["dtype"] == "float32"
        assert stats["log_entries"] == 3 and stats["fingerprint_matches"] is True
        assert stats["fingerprint"]["backbone"] == "tiny-llama"


async def test_the_session_log_resource(hybrid):
    async with connect(hybrid) as client:
        await call(client, "remember", text="I live in Porto.", user_id="ada", session_id="trip")
        await call(client, "remember", text="Noted.", user_id="ada", session_id="trip", role="assistant")
        result = await client.read_resource("deltamem://sessions/ada/trip/log")
        [content] = result["contents"]
        assert content["mimeType"] == "application/json"
        log = json.loads(content["text"])
        assert [(m["index"], m["role"], m["content"]) for m in log["messages"]] == [
            (0, "user", "I live in Porto."), (1, "assistant", "Noted."),
        ]
        with pytest.raises(McpError, match="no session ada/elsewhere"):
            await client.read_resource("deltamem://sessions/ada/elsewhere/log")
        with pytest.raises(McpError, match="invalid session_id"):
            await client.read_resource("deltamem://sessions/ada/..hidden/log")


async def test_errors_are_clear_tool_errors_and_lose_nothing(hybrid):
    async with connect(hybrid) as client:
        first = await call(client, "remember", text="My locker code is 7312.", user_id="ada", session_id="gym")
        before = snapshot(hybrid, "ada", "gym")
        message = await error(client, "recall", query="Anything?", user_id="ada", session_id="nope")
        assert "no session ada/nope" in message and "gym" in message
        assert "no session ada/nope" in await error(client, "session_stats", user_id="ada", session_id="nope")
        assert "no session ada/nope" in await error(client, "forget", scope="session", user_id="ada", session_id="nope")
        assert "nothing to forget" in await error(client, "forget", scope="user", user_id="nobody")
        assert "invalid user_id" in await error(client, "remember", text="x", user_id="../etc", session_id="gym")
        assert "invalid session_id" in await error(client, "recall", query="x", user_id="ada", session_id="a/b")
        assert "no log entries with ids" in await error(
            client, "forget", scope="entries", user_id="ada", session_id="gym", entry_ids=["not-an-id"],
        )
        assert "needs session_id and entry_ids" in await error(client, "forget", scope="entries", user_id="ada")
        assert "leave session_id out" in await error(client, "forget", scope="user", user_id="ada", session_id="gym")
        assert "only for scope 'entries'" in await error(
            client, "forget", scope="session", user_id="ada", session_id="gym", entry_ids=first["log_entry_ids"],
        )
        assert "empty" in await error(client, "remember", text="   ", user_id="ada", session_id="gym")
        assert "max_new_tokens" in await error(
            client, "recall", query="x", user_id="ada", session_id="gym", max_new_tokens=100_000,
        )
        # an entry of another session is refused, not forgotten
        other = await call(client, "remember", text="Elsewhere.", user_id="ada", session_id="other")
        assert "another session" in await error(
            client, "forget", scope="entries", user_id="ada", session_id="gym", entry_ids=other["log_entry_ids"],
        )
        assert snapshot(hybrid, "ada", "gym") == before
        assert not hybrid.runtime.store.exists(SessionKey(user_id="ada", session_id="nope"))
