"""DeltaMemMemory: the session as LlamaIndex memory, written once whichever LLM answers."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import ChatMessage, ToolCallBlock
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.llms.deltamem import ConversationForkError, DeltaMemLLM
from llama_index.memory.deltamem import DeltaMemMemory

from deltamem_agents.memory.hybrid import SNIPPET_HEADER
from deltamem_agents.session import SessionKey
from tests.integrations.llamaindex.helpers import tool_call


@pytest.fixture
def ingests(hybrid, monkeypatch):
    """Every `HybridMemory.ingest` the memory makes (the LLM never calls it)."""
    calls: list[list[tuple[str, str]]] = []
    original = hybrid.ingest

    def spy(messages, **kwargs):
        calls.append([(m.role, m.content) for m in messages])
        return original(messages, **kwargs)

    monkeypatch.setattr(hybrid, "ingest", spy)
    return calls


def said(runtime, session_id="s"):
    return [(m.role, m.content) for m in runtime.session(session_id).messages if m.metadata.get("kind") is None]


def seen(messages):
    return [(m.role.value, m.content) for m in messages]


def test_a_new_session_is_empty_and_reading_it_creates_nothing(hybrid, runtime):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    assert memory.get() == [] and memory.get_all() == []
    assert not runtime.store.exists(SessionKey(session_id="s"))


def test_from_defaults_shares_the_llms_session_without_loading_it(hybrid):
    llm = DeltaMemLLM(session_id="trip", user_id="ada")
    memory = DeltaMemMemory.from_defaults(llm=llm)
    assert (memory.session_id, memory.user_id) == ("trip", "ada")
    assert llm._hybrid is None  # nothing loaded yet
    llm._hybrid = hybrid
    assert memory.hybrid is hybrid
    assert DeltaMemMemory.from_defaults(llm=llm, session_id="other").session_id == "other"
    assert memory.to_dict() == {
        "session_id": "trip", "user_id": "ada", "history_limit": None, "recall_k": 0, "class_name": "DeltaMemMemory",
    }


def test_a_chat_engine_with_the_deltamem_llm_writes_each_message_once(hybrid, runtime, textlog, script, ingests):
    script.say("Hello Ada.", "You live in Porto.", "Noted.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    memory = DeltaMemMemory.from_defaults(llm=llm)
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory, system_prompt="Be brief.")
    assert str(engine.chat("I'm Ada from Porto.")) == "Hello Ada."
    assert str(engine.chat("Where do I live?")) == "You live in Porto."
    assert str(asyncio.run(engine.achat("I like tea."))) == "Noted."
    assert said(runtime) == [
        ("system", "Be brief."), ("user", "I'm Ada from Porto."), ("assistant", "Hello Ada."),
        ("user", "Where do I live?"), ("assistant", "You live in Porto."), ("user", "I like tea."), ("assistant", "Noted."),
    ]
    assert seen(memory.get_all()) == [(r, c) for r, c in said(runtime) if r != "system"]
    assert ingests == []  # the model wrote everything; the memory found nothing new
    assert textlog.count(user_id="default", session_id="s") == 6


def test_a_stale_memory_object_fails_clearly_instead_of_writing_twice(hybrid, runtime, script):
    script.say("A1.", "A2.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    first = DeltaMemMemory.from_defaults(llm=llm)
    SimpleChatEngine.from_defaults(llm=llm, memory=first).chat("Q1.")
    stale = DeltaMemMemory.from_defaults(llm=llm)
    assert len(stale.get_all()) == 2
    SimpleChatEngine.from_defaults(llm=llm, memory=first).chat("Q2.")  # the session moves on without `stale`
    with pytest.raises(ConversationForkError, match="does not continue from the session's end"):
        SimpleChatEngine.from_defaults(llm=llm, memory=stale).chat("Q3.")
    assert [c for _, c in said(runtime)] == ["Q1.", "A1.", "Q2.", "A2."]


def test_with_another_llm_the_memory_writes_the_turn_itself(hybrid, runtime, textlog, ingests):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    engine = SimpleChatEngine.from_defaults(llm=MockLLM(max_tokens=3), memory=memory)
    answer = str(engine.chat("I'm Ada from Porto."))
    assert ingests == [[("user", "I'm Ada from Porto."), ("assistant", answer)]]
    assert said(runtime) == [("user", "I'm Ada from Porto."), ("assistant", answer)]
    assert runtime.session("s").state is not None and textlog.count(user_id="default", session_id="s") == 2
    engine.chat("Where do I live?")
    assert len(ingests) == 2 and ingests[1][0] == ("user", "Where do I live?") and len(said(runtime)) == 4


def test_a_question_is_left_to_the_llm_and_only_complete_turns_are_written(hybrid, ingests):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    memory.put(ChatMessage(role="user", content="Hello?"))
    assert ingests == []
    memory.put_messages([
        ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="clock", tool_kwargs={})]),
        ChatMessage(role="tool", content="09:00", additional_kwargs={"tool_call_id": "c1"}),
    ])
    assert ingests == []  # a tool call does not end a turn
    memory.put(ChatMessage(role="assistant", content="It is nine."))
    [written] = ingests
    assert [role for role, _ in written] == ["user", "assistant", "tool", "assistant"]


def test_the_conversation_comes_back_in_a_new_process(hybrid, runtime, script):
    script.say("Sure. " + tool_call("clock", zone="UTC"), "It is nine.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    question = ChatMessage(role="user", content="Time?")
    call = llm.chat([ChatMessage(role="system", content="Be brief."), question], tools=[_clock()]).message
    [sent] = [b for b in call.blocks if isinstance(b, ToolCallBlock)]
    result = ChatMessage(role="tool", content="09:00", additional_kwargs={"tool_call_id": sent.tool_call_id})
    llm.chat([question, call, result], tools=[_clock()])
    runtime.close("s")  # as if the process had ended: everything comes from the store

    restored = DeltaMemMemory(hybrid=hybrid, session_id="s").get_all()
    assert seen(restored) == [("user", "Time?"), ("assistant", "Sure."), ("tool", "09:00"), ("assistant", "It is nine.")]
    [block] = [b for b in restored[1].blocks if isinstance(b, ToolCallBlock)]
    assert block.tool_name == "clock" and block.tool_kwargs == {"zone": "UTC"}
    assert restored[2].additional_kwargs["tool_call_id"] == block.tool_call_id


def test_set_writes_a_history_once_and_leaves_a_trailing_question(hybrid, runtime, ingests):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    history = [ChatMessage(role="user", content="I'm Ada."), ChatMessage(role="assistant", content="Hi Ada.")]
    memory.set(history)
    memory.set(history)  # the session has it already
    assert ingests == [[("user", "I'm Ada."), ("assistant", "Hi Ada.")]]
    memory.set([*history, ChatMessage(role="user", content="Who am I?")])
    assert len(ingests) == 1 and seen(memory.get())[-1] == ("user", "Who am I?")
    assert said(runtime) == [("user", "I'm Ada."), ("assistant", "Hi Ada.")]


def test_from_defaults_accepts_what_chat_engines_pass_as_memory_cls(hybrid, ingests):
    history = [ChatMessage(role="user", content="Hi."), ChatMessage(role="assistant", content="Hello.")]
    memory = DeltaMemMemory.from_defaults(chat_history=history, token_limit=768, hybrid=hybrid, session_id="s")
    assert seen(memory.get_all()) == [("user", "Hi."), ("assistant", "Hello.")] and len(ingests) == 1


def test_reset_forgets_the_session(hybrid, runtime, textlog, script):
    script.say("Hello.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    memory = DeltaMemMemory.from_defaults(llm=llm)
    SimpleChatEngine.from_defaults(llm=llm, memory=memory).chat("Remember 7312.")
    assert textlog.count(user_id="default", session_id="s") == 2
    memory.reset()
    assert memory.get_all() == [] and not runtime.store.exists(SessionKey(session_id="s"))
    assert textlog.count(user_id="default", session_id="s") == 0


def test_history_limit_returns_recent_turns_from_a_user_message_on(hybrid):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", history_limit=3)
    turns = []
    for i in range(3):
        turns += [ChatMessage(role="user", content=f"Q{i}"), ChatMessage(role="assistant", content=f"A{i}")]
    memory.set(turns)
    assert seen(memory.get()) == [("user", "Q2"), ("assistant", "A2")]  # 3 would start at an answer
    assert len(memory.get_all()) == 6


def test_a_windowed_memory_still_adds_each_message_once(hybrid, runtime, script):
    script.say("A0.", "A1.", "A2.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    engine = SimpleChatEngine.from_defaults(
        llm=llm, memory=DeltaMemMemory.from_defaults(llm=llm, history_limit=2), system_prompt="Be brief."
    )
    for i in range(3):
        engine.chat(f"Q{i}.")
    assert said(runtime) == [("system", "Be brief."), *[(r, f"{p}{i}.") for i in range(3) for r, p in (("user", "Q"), ("assistant", "A"))]]


def test_recall_adds_text_log_notes_for_the_input(hybrid):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", recall_k=2)
    memory.set([ChatMessage(role="user", content="My locker code is 7312."), ChatMessage(role="assistant", content="Noted.")])
    messages = memory.get(input="What is my locker code?")
    assert messages[0].role.value == "system" and messages[0].content.startswith(SNIPPET_HEADER)
    assert "- My locker code is 7312." in messages[0].content
    assert seen(messages[1:]) == [("user", "My locker code is 7312."), ("assistant", "Noted.")]
    assert memory.get() == messages[1:]  # no input, no notes
    assert [hit.text for hit in memory.search("locker", k=1)] == ["My locker code is 7312."]


def _clock():
    return {"type": "function", "function": {"name": "clock", "description": "The time.", "parameters": {
        "type": "object", "properties": {"zone": {"type": "string"}}}}}



def test_a_tool_call_turn_written_by_the_memory_is_logged_with_its_call_and_can_be_forgotten(hybrid, runtime, textlog):
    # HybridMemory.ingest logs a message as the model reads it (tool calls included), like a chat
    # turn, so a tool-call-only message is in the log and forgetting it by log id finds it.
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    memory.put_messages([
        ChatMessage(role="user", content="Time in Lisbon?"),
        ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_call_id="c1", tool_name="clock", tool_kwargs={"zone": "WET"})]),
        ChatMessage(role="tool", content="09:00", additional_kwargs={"tool_call_id": "c1"}),
        ChatMessage(role="assistant", content="It is nine in Lisbon."),
    ])
    entries = textlog.list(user_id="default", session_id="s")
    assert len(entries) == 4
    [call] = [e for e in entries if e.metadata["role"] == "assistant" and "<tool_call>" in e.text]
    assert '"name": "clock"' in call.text and '"zone": "WET"' in call.text
    report = hybrid.forget(session_id="s", ids=[call.id], progress=False)
    assert report.messages_removed == 1 and report.log_entries_removed == 1
    assert [m.role for m in runtime.session("s").messages] == ["user", "tool", "assistant"]
