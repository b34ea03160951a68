"""DeltaMemChatMessageHistory: LangChain's chat-history interface over the text log."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_deltamem import DeltaMemChatMessageHistory, DeltaMemLLM
from langchain_deltamem.chat_history import merge_chunks

from deltamem_agents.memory import TextLog, TextLogConfig


def test_messages_come_back_in_order_with_their_roles_and_tool_calls(textlog):
    history = DeltaMemChatMessageHistory("s", user_id="ada", textlog=textlog)
    history.add_messages([
        SystemMessage("Be brief."),
        HumanMessage("What is 3 + 2?"),
        AIMessage("", tool_calls=[{"name": "add", "args": {"a": 3, "b": 2}, "id": "call-1"}]),
        ToolMessage("5", tool_call_id="call-1"),
        AIMessage("It is 5."),
    ])
    history.add_user_message("Thanks.")
    messages = history.messages
    assert [type(m).__name__ for m in messages] == [
        "SystemMessage", "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "HumanMessage",
    ]
    assert messages[2].tool_calls == [{"name": "add", "args": {"a": 3, "b": 2}, "id": "call-1", "type": "tool_call"}]
    assert messages[3].tool_call_id == "call-1" and messages[3].content == "5"
    assert [m.content for m in messages[4:]] == ["It is 5.", "Thanks."]
    turns = [hit.metadata["turn"] for hit in textlog.list(user_id="ada", session_id="s")]
    assert turns == [0, 0, 0, 0, 0, 1]
    assert DeltaMemChatMessageHistory("other", user_id="ada", textlog=textlog).messages == []


def test_a_long_message_is_reassembled_from_its_chunks(tmp_path):
    log = TextLog(TextLogConfig(path=tmp_path / "small", chunk_chars=120, chunk_overlap=40, chunk_tokens=None))
    text = " ".join(f"Sentence number {i} talks about item {i * 7}." for i in range(12))
    history = DeltaMemChatMessageHistory("long", textlog=log)
    history.add_user_message(text)
    assert log.count(user_id="default", session_id="long") > 3  # stored in overlapping chunks
    assert history.messages[0].content == text
    log.close()


def test_merge_chunks_removes_whole_sentence_overlaps_only():
    assert merge_chunks(["One. Two.", "Two. Three."]) == "One. Two. Three."
    assert merge_chunks(["First paragraph.", "Second paragraph."]) == "First paragraph.\n\nSecond paragraph."
    assert merge_chunks(["It ends with a", "a new start."]) == "It ends with a\n\na new start."  # "a" is no sentence


def test_clear_removes_the_session_from_the_log(textlog):
    history = DeltaMemChatMessageHistory("gone", textlog=textlog)
    history.add_messages([HumanMessage("Hello."), AIMessage("Hi.")])
    history.clear()
    assert history.messages == [] and textlog.count(user_id="default", session_id="gone") == 0


def test_text_the_model_already_logged_is_kept_once(memory, script, textlog):
    llm = DeltaMemLLM(memory=memory, session_id="both", max_tokens=8)
    script.say("Welcome.")
    answer = llm.invoke("Hello there.")
    history = DeltaMemChatMessageHistory.from_llm(llm)
    history.add_messages([HumanMessage("Hello there."), answer])
    assert textlog.count(user_id="default", session_id="both") == 2
    assert [m.content for m in history.messages] == ["Hello there.", "Welcome."]


# langchain-core 1.x deprecates RunnableWithMessageHistory in favour of LangGraph (whose
# ``thread_id`` DeltaMemLLM reads too), but existing chains still use it.
@pytest.mark.filterwarnings("ignore:RunnableWithMessageHistory is deprecated")
def test_runnable_with_message_history_and_the_model_agree_on_the_conversation(memory, script, tiny_runtime, textlog):
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are terse."), MessagesPlaceholder("history"), ("human", "{question}")]
    )
    chain = RunnableWithMessageHistory(
        prompt | DeltaMemLLM(memory=memory, max_tokens=8),
        lambda session_id: DeltaMemChatMessageHistory(session_id, textlog=textlog),
        input_messages_key="question",
        history_messages_key="history",
    )
    script.say("Hi Ada.", "Porto.", "Yes.", "Yes.")
    config = {"configurable": {"session_id": "rwmh"}}
    for question in ["I am Ada.", "I live in Porto.", "ok", "ok"]:  # a repeated message is logged once
        chain.invoke({"question": question}, config=config)
    held = [(m.role, m.content) for m in tiny_runtime.session("rwmh").messages]
    assert held == [
        ("system", "You are terse."), ("user", "I am Ada."), ("assistant", "Hi Ada."),
        ("user", "I live in Porto."), ("assistant", "Porto."), ("user", "ok"), ("assistant", "Yes."),
        ("user", "ok"), ("assistant", "Yes."),
    ]
    logged = [m.content for m in DeltaMemChatMessageHistory("rwmh", textlog=textlog).messages]
    assert logged == ["I am Ada.", "Hi Ada.", "I live in Porto.", "Porto.", "ok", "Yes."]


def test_ids_are_checked(textlog):
    with pytest.raises(ValueError, match="session_id"):
        DeltaMemChatMessageHistory("no/slashes", textlog=textlog)
