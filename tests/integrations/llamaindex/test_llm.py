"""DeltaMemLLM on a tiny model: one turn per call, nothing written twice, streaming, async, tools."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.tools import FunctionTool
from llama_index.llms.deltamem import ConversationForkError, DeltaMemLLM

from deltamem_agents.session import InvalidSessionIdError, SessionError, SessionKey
from tests.integrations.llamaindex.helpers import tool_call


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def said(runtime, session_id="s"):
    """(role, content) of a session's messages, per-turn notes left out."""
    return [(m.role, m.content) for m in runtime.session(session_id).messages if m.metadata.get("kind") is None]


def test_metadata_says_chat_and_function_calling_without_loading_a_backbone():
    llm = DeltaMemLLM(max_new_tokens=64)
    meta = llm.metadata
    assert meta.is_chat_model and meta.is_function_calling_model
    assert meta.num_output == 64 and meta.context_window == 1024 and meta.model_name == "smollm2-135m-instruct"
    assert llm._hybrid is None  # metadata alone never loads the backbone
    assert DeltaMemLLM(context_window=300).metadata.context_window == 300


def test_metadata_follows_an_injected_runtime(hybrid):
    meta = DeltaMemLLM(hybrid=hybrid).metadata
    assert meta.context_window == 512 and meta.model_name == "tiny-llama"


def test_bad_session_ids_fail_at_construction():
    with pytest.raises(InvalidSessionIdError, match="session_id"):
        DeltaMemLLM(session_id="../etc")


def test_a_chat_is_one_turn_written_into_the_state_and_the_log(hybrid, runtime, textlog, script):
    script.say("Noted: Lisbon on Friday.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    response = llm.chat([ChatMessage(role="user", content="I land in Lisbon on Friday.")])
    assert response.message.role == "assistant" and response.message.content == "Noted: Lisbon on Friday."
    assert said(runtime) == [("user", "I land in Lisbon on Friday."), ("assistant", "Noted: Lisbon on Friday.")]
    assert runtime.store.head(SessionKey(session_id="s")).turn_count == 1
    assert textlog.count(user_id="default", session_id="s") == 2
    assert runtime.session("s").state is not None
    raw = response.raw
    assert raw["session_id"] == "s" and raw["turn"] == 1 and raw["route"] == "state"
    assert raw["usage"]["completion_tokens"] == raw["stats"]["decode_tokens"] > 0
    assert raw["usage"]["total_tokens"] == raw["usage"]["prompt_tokens"] + raw["usage"]["completion_tokens"]


def test_the_whole_conversation_sent_again_adds_only_the_new_message(hybrid, runtime, script):
    script.say("Hello Ada.", "You live in Porto.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    history = [ChatMessage(role="system", content="Be brief."), ChatMessage(role="user", content="I'm Ada from Porto.")]
    first = llm.chat(history)
    history += [first.message, ChatMessage(role="user", content="Where do I live?")]
    llm.chat(history)
    assert said(runtime) == [
        ("system", "Be brief."), ("user", "I'm Ada from Porto."), ("assistant", "Hello Ada."),
        ("user", "Where do I live?"), ("assistant", "You live in Porto."),
    ]


def test_a_system_prompt_in_front_of_a_window_of_history_is_not_a_new_conversation(hybrid, runtime, script):
    # Agents put their system prompt before whatever part of the history their memory returns.
    script.say("One.", "Two.", "Three.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    system = ChatMessage(role="system", content="Count.")
    a = llm.chat([system, ChatMessage(role="user", content="First?")]).message
    b = llm.chat([system, ChatMessage(role="user", content="First?"), a, ChatMessage(role="user", content="Second?")]).message
    # only the last exchange of the history, and a new system prompt in front
    llm.chat([ChatMessage(role="system", content="Count in English."), ChatMessage(role="user", content="Second?"), b,
              ChatMessage(role="user", content="Third?")])
    assert said(runtime) == [
        ("system", "Count."), ("user", "First?"), ("assistant", "One."), ("user", "Second?"), ("assistant", "Two."),
        ("system", "Count in English."), ("user", "Third?"), ("assistant", "Three."),
    ]


def test_a_conversation_that_rewinds_the_session_is_refused_not_duplicated(hybrid, runtime, script):
    script.say("A1.", "A2.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    u1, u2 = ChatMessage(role="user", content="Q1."), ChatMessage(role="user", content="Q2.")
    a1 = llm.chat([u1]).message
    llm.chat([u1, a1, u2])
    before = said(runtime)
    with pytest.raises(ConversationForkError, match="messages 1-2 of 4.*only grows"):
        llm.chat([u1, a1, ChatMessage(role="user", content="Q2, asked differently.")])
    assert said(runtime) == before
    script.say("A3.")
    llm.chat([ChatMessage(role="user", content="Q1.")])  # one message is a new question, not a rewind
    assert said(runtime)[-2:] == [("user", "Q1."), ("assistant", "A3.")]


def test_nothing_new_is_refused_with_the_fix(hybrid, script):
    script.say("Hi.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    history = [ChatMessage(role="user", content="Hello.")]
    history.append(llm.chat(history).message)
    with pytest.raises(SessionError, match="send a new user message"):
        llm.chat(history)


def test_stream_chat_yields_deltas_then_the_whole_reply(hybrid, runtime, script):
    script.say("Porto is lovely.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    chunks = list(llm.stream_chat([ChatMessage(role="user", content="Tell me about Porto.")]))
    assert "".join(c.delta for c in chunks) == "Porto is lovely." == chunks[-1].message.content
    assert [c.message.content for c in chunks[:-1]][-1] == "Porto is lovely."
    assert chunks[-1].raw["turn"] == 1 and all(c.raw is None for c in chunks[:-1])
    assert said(runtime)[-1] == ("assistant", "Porto is lovely.")


def test_a_stream_closed_early_commits_nothing(hybrid, runtime, script):
    script.say("First answer.", "A long second answer that nobody reads to the end.", "Third.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    llm.chat([ChatMessage(role="user", content="One.")])
    stream = llm.stream_chat([ChatMessage(role="user", content="Two.")])
    next(stream)
    stream.close()
    assert runtime.store.head(SessionKey(session_id="s")).turn_count == 1
    script.current = None  # the abandoned answer ends here
    llm.chat([ChatMessage(role="user", content="Three.")])  # the session lock was released
    assert said(runtime) == [("user", "One."), ("assistant", "First answer."), ("user", "Three."), ("assistant", "Third.")]


def test_complete_and_stream_complete_are_chats_of_one_user_message(hybrid, runtime, script):
    script.say("Four.", "Five.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    assert llm.complete("Two plus two?").text == "Four."
    pieces = list(llm.stream_complete("Two plus three?"))
    assert "".join(p.delta for p in pieces) == "Five." == pieces[-1].text
    assert said(runtime) == [("user", "Two plus two?"), ("assistant", "Four."), ("user", "Two plus three?"), ("assistant", "Five.")]


def test_generation_options_per_call_and_unknown_options_refused(hybrid, runtime, script):
    script.say("abcdefghijklmnopqrstuvwxyz")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    response = llm.chat([ChatMessage(role="user", content="Alphabet?")], max_new_tokens=3)
    assert response.raw["finish_reason"] == "length" and response.raw["stats"]["decode_tokens"] == 3
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['frequency_penalty'\\]"):
        llm.chat([ChatMessage(role="user", content="Again?")], frequency_penalty=1.0)


def test_stop_strings_end_the_answer(hybrid, script):
    script.say("Yes. And more.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s", stop=[" And"])
    assert llm.complete("Sure?").text == "Yes."


def test_async_chat_stream_and_complete(hybrid, runtime, script):
    script.say("Async one.", "Async two.", "Async three.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")

    async def run():
        first = await llm.achat([ChatMessage(role="user", content="One?")])
        stream = await llm.astream_chat([ChatMessage(role="user", content="Two?")])
        chunks = [chunk async for chunk in stream]
        third = await llm.acomplete("Three?")
        return first, chunks, third

    first, chunks, third = asyncio.run(run())
    assert first.message.content == "Async one." and third.text == "Async three."
    assert "".join(c.delta for c in chunks) == "Async two." == chunks[-1].message.content
    assert runtime.store.head(SessionKey(session_id="s")).turn_count == 3


def test_an_async_stream_closed_early_commits_nothing_and_releases_the_session(hybrid, runtime, script):
    script.say("Kept.", "Dropped answer, long enough to be cut.", "Later.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")

    def wait_for_session():
        with runtime.store.lock(SessionKey(session_id="s")):
            pass

    async def run():
        await llm.achat([ChatMessage(role="user", content="Keep?")])
        stream = await llm.astream_chat([ChatMessage(role="user", content="Drop?")])
        await stream.__anext__()
        await stream.aclose()
        # the worker stops at its next piece and closes the turn in its own thread, releasing the lock
        await asyncio.to_thread(wait_for_session)
        script.current = None  # the abandoned answer ends here
        return await llm.achat([ChatMessage(role="user", content="Later?")])

    assert asyncio.run(run()).message.content == "Later."
    assert said(runtime) == [("user", "Keep?"), ("assistant", "Kept."), ("user", "Later?"), ("assistant", "Later.")]


def test_errors_inside_an_async_stream_reach_the_caller(hybrid):
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")

    async def run():
        stream = await llm.astream_chat([ChatMessage(role="assistant", content="Only me.")])
        return [chunk async for chunk in stream]

    with pytest.raises(SessionError, match="must be from the user or a tool"):
        asyncio.run(run())


def test_media_blocks_are_refused_with_the_fix(hybrid):
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    message = ChatMessage(role="user", blocks=[TextBlock(text="What is this?"), ImageBlock(url="https://example.org/a.png")])
    with pytest.raises(ValueError, match="read text only.*ImageBlock"):
        llm.chat([message])


# -- function calling ---------------------------------------------------------------------------------
def test_a_tool_call_comes_back_as_a_tool_selection(hybrid, runtime, script):
    script.say("Let me compute. " + tool_call("multiply", a=6, b=7))
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    tool = FunctionTool.from_defaults(multiply)
    response = llm.chat_with_tools([tool], user_msg="What is 6 times 7?")
    [selection] = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "multiply" and selection.tool_kwargs == {"a": 6, "b": 7}
    assert response.message.content == "Let me compute."
    [block] = [b for b in response.message.blocks if isinstance(b, ToolCallBlock)]
    assert block.tool_call_id == selection.tool_id and response.raw["finish_reason"] == "tool_calls"
    [note] = [m for m in runtime.session("s").messages if m.metadata.get("kind") == "tools"]
    assert '"name": "multiply"' in note.content and "You must" not in note.content
    stored = runtime.session("s").messages[-1]
    assert stored.tool_calls[0]["id"] == selection.tool_id


def test_no_tool_call_is_an_error_only_when_asked(hybrid, script):
    script.say("It is 42.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    response = llm.chat_with_tools([FunctionTool.from_defaults(multiply)], user_msg="6 times 7?")
    assert llm.get_tool_calls_from_response(response, error_on_no_tool_call=False) == []
    with pytest.raises(ValueError, match="without calling a tool"):
        llm.get_tool_calls_from_response(response)


@pytest.mark.parametrize(
    ("options", "demand"),
    [
        ({"tool_required": True}, "You must call at least one tool now."),
        ({"tool_choice": "add"}, "You must call the tool 'add' now."),
        ({"tool_choice": {"type": "function", "function": {"name": "add"}}}, "You must call the tool 'add' now."),
    ],
    ids=["required", "by-name", "openai-dict"],
)
def test_tool_choice_reaches_the_model(hybrid, runtime, script, options, demand):
    script.say(tool_call("add", a=1, b=2))
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    tools = [FunctionTool.from_defaults(multiply), FunctionTool.from_defaults(add)]
    llm.chat_with_tools(tools, user_msg="1 plus 2?", **options)
    [note] = [m for m in runtime.session("s").messages if m.metadata.get("kind") == "tools"]
    assert note.content.endswith(demand)


def test_tool_choice_none_sends_no_tools(hybrid, runtime, script):
    script.say("Three.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    llm.chat_with_tools([FunctionTool.from_defaults(add)], user_msg="1 plus 2?", tool_choice="none")
    assert not [m for m in runtime.session("s").messages if m.metadata.get("kind") == "tools"]


def test_one_call_kept_without_parallel_calls_and_the_turn_still_matches(hybrid, runtime, script):
    script.say(tool_call("add", a=1, b=2) + tool_call("multiply", a=3, b=4), "Done: 3.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    tools = [FunctionTool.from_defaults(multiply), FunctionTool.from_defaults(add)]
    question = ChatMessage(role="user", content="Add 1 and 2.")
    response = llm.chat_with_tools(tools, chat_history=[question], allow_parallel_tool_calls=False)
    [selection] = llm.get_tool_calls_from_response(response)
    assert selection.tool_name == "add"
    result = ChatMessage(role="tool", content="3", additional_kwargs={"tool_call_id": selection.tool_id})
    final = llm.chat_with_tools(tools, chat_history=[question, response.message, result])
    assert final.message.content == "Done: 3."
    # the session holds both calls the model made; the agent's one-call copy was not added again
    roles = [role for role, _ in said(runtime)]
    assert roles == ["user", "assistant", "tool", "assistant"]
    assert len(runtime.session("s").messages[-3].tool_calls) == 2


def test_tool_calls_built_elsewhere_with_json_string_arguments_are_read():
    from llama_index.core.base.llms.types import ChatResponse

    llm = DeltaMemLLM()
    good = ChatResponse(message=ChatMessage(role="assistant", blocks=[
        ToolCallBlock(tool_call_id="c1", tool_name="add", tool_kwargs='{"a": 1, "b": 2}')]))
    [selection] = llm.get_tool_calls_from_response(good)
    assert (selection.tool_id, selection.tool_kwargs) == ("c1", {"a": 1, "b": 2})
    bad = ChatResponse(message=ChatMessage(role="assistant", blocks=[ToolCallBlock(tool_name="add", tool_kwargs="{a: 1")]))
    with pytest.raises(ValueError, match="'add' has arguments that are not JSON"):
        llm.get_tool_calls_from_response(bad)
