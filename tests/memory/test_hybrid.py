"""HybridMemory: a session, a real Chroma text log and the router, on a tiny model."""

from __future__ import annotations

import pytest

from deltamem_agents.memory import TextLog, TextLogConfig, TextLogError
from deltamem_agents.memory.hybrid import SNIPPET_HEADER, HybridMemory
from deltamem_agents.memory.routing import AlwaysRetrieve, MemoryRouter, NeverRetrieve
from deltamem_agents.session import (
    SessionError,
    SessionKey,
)
from tests.tiny_models import tiny_runtime


@pytest.fixture
def runtime(chat_tokenizer, tmp_path):
    return tiny_runtime(chat_tokenizer, tmp_path / "store")


@pytest.fixture
def textlog(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "log"))
    yield log
    log.close()


def test_turns_go_into_both_memories_and_the_decision_is_exposed(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    first = memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=4)
    assert first.decision.route == "state" and not first.decision.snippets
    assert textlog.count(user_id="default", session_id="s") == 2  # the question and the answer
    assert runtime.store.head(SessionKey(session_id="s")).turn_count == 1


def test_retrieved_snippets_enter_the_context_without_being_written(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[AlwaysRetrieve()]))
    memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=3)
    session = runtime.session("s")
    written_before = session.state.clone()
    answer = memory.reply("What is my locker code?", session_id="s", max_new_tokens=3)
    assert answer.decision.route in ("retrieve", "both") and answer.decision.retrieved_ids
    notes = [m for m in session.messages if m.role == "system" and m.content.startswith(SNIPPET_HEADER)]
    assert len(notes) == 1 and "7312" in notes[0].content
    assert notes[0].metadata["retrieved_ids"] == answer.decision.retrieved_ids
    assert answer.state_confidence is not None and answer.state_confidence > 0
    assert not session.state.equal(written_before)  # the new turn itself was written


def test_state_confidence_is_zero_for_an_empty_memory(runtime):
    session = runtime.session("empty")
    assert session.state_confidence("Anything?") == 0.0
    assert session.messages == [] and session.state is None


def test_forgetting_removes_the_entries_and_rebuilds_the_state_by_replay(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("My locker code is 7312.", session_id="s", max_new_tokens=3)
    memory.reply("I like green tea.", session_id="s", max_new_tokens=3)
    secret = textlog.search("locker code", user_id="default", session_id="s", k=1)[0]
    assert "7312" in secret.text
    report = memory.forget(session_id="s", ids=[secret.id], progress=False)
    assert report.state_rebuilt and report.messages_removed == 1 and report.log_entries_removed == 1

    session = runtime.session("s")
    assert all("7312" not in m.content for m in session.messages)
    assert all("7312" not in hit.text for hit in textlog.search("locker code", user_id="default", session_id="s", k=5))
    # the rebuilt state is exactly what replaying the remaining messages, one by one, writes
    twin = runtime.session("twin")
    for message in session.messages:
        twin.ingest(message)
    assert twin.state.equal(session.state)
    reloaded = runtime.store.load(SessionKey(session_id="s"))
    assert reloaded.state.equal(session.state) and len(reloaded.messages) == len(session.messages)


def test_forgetting_a_whole_session(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("Hello.", session_id="gone", max_new_tokens=2)
    report = memory.forget(session_id="gone")
    assert report.log_entries_removed == 2 and not report.state_rebuilt
    assert not runtime.store.exists(SessionKey(session_id="gone"))
    assert textlog.count(user_id="default", session_id="gone") == 0


def test_a_client_that_resends_the_whole_conversation_adds_each_message_once(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    history = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "I live in Porto."}]
    first = memory.chat(history, session_id="resend", max_new_tokens=3)
    history += [{"role": "assistant", "content": first.text}, {"role": "user", "content": "Where do I live?"}]
    second = memory.chat(history, session_id="resend", max_new_tokens=3)
    said = [(m.role, m.content) for m in runtime.session("resend").messages]
    assert said[:4] == [(m["role"], m["content"]) for m in history]
    assert said[4] == ("assistant", second.text) and len(said) == 5
    assert second.turn == 2 and second.usage.completion_tokens == second.stats.decode_tokens
    assert textlog.count(user_id="default", session_id="resend") == 4  # system prompts are not logged
    with pytest.raises(SessionError, match="nothing new"):
        memory.chat(history[:4] + [{"role": "assistant", "content": second.text}], session_id="resend")


def test_without_a_text_log_the_state_alone_answers(runtime):
    memory = HybridMemory(runtime, textlog=None)
    reply = memory.chat("Hello there.", session_id="solo", max_new_tokens=2)
    assert reply.decision is None and reply.metadata()["session_id"] == "solo"
    assert runtime.store.head(SessionKey(session_id="solo")).turn_count == 1
    with pytest.raises(TextLogError, match="no text log"):
        memory.search("hello")


def test_a_turn_that_fails_commits_nothing_and_the_session_reloads(runtime, textlog, monkeypatch):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[NeverRetrieve()]))
    memory.reply("First fact.", session_id="crash", max_new_tokens=2)
    committed = runtime.store.load(SessionKey(session_id="crash"))

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(runtime, "save", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        memory.chat([{"role": "user", "content": "Second fact."}, {"role": "user", "content": "Anything?"}], session_id="crash", max_new_tokens=2)
    monkeypatch.undo()
    session = runtime.session("crash")  # reloaded from the store: the failed turn left no trace
    assert [m.content for m in session.messages] == [m.content for m in committed.messages]
    assert session.state.equal(committed.state)


def test_streaming_yields_text_then_the_reply(runtime, textlog):
    memory = HybridMemory(runtime, textlog, MemoryRouter(policies=[AlwaysRetrieve()]))
    memory.reply("My cat is called Miso.", session_id="stream", max_new_tokens=2)
    chunks = list(memory.stream_chat("What is my cat called?", session_id="stream", max_new_tokens=4))
    final = chunks[-1].reply
    assert final is not None and chunks[-1].text == "" and all(c.reply is None for c in chunks[:-1])
    assert "".join(c.text for c in chunks) == final.text
    assert final.metadata()["route"] == final.decision.route and final.metadata()["retrieved_ids"]
