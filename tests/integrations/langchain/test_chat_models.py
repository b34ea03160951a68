"""DeltaMemLLM on a tiny scripted backbone: memory per session, streaming, async, tools, errors."""

from __future__ import annotations

import threading
import warnings

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langchain_deltamem import DeltaMemLLM

from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.session import (
    DeltaMemRuntime,
    InvalidSessionIdError,
    SessionError,
    SessionKey,
    SessionLockTimeout,
)
from deltamem_agents.session.session import SessionConfig
from tests.integrations.langchain.conftest import ScriptedBackbone
from tests.tiny_models import tiny_model


class Tokens(BaseCallbackHandler):
    def __init__(self) -> None:
        self.tokens: list[str] = []

    def on_llm_new_token(self, token: str, **kwargs) -> None:
        self.tokens.append(token)


def said(runtime: DeltaMemRuntime, session_id: str = "default", user_id: str = "default") -> list[tuple[str, str]]:
    """(role, content) of what a session holds, tool and retrieval notes left out."""
    session = runtime.session(session_id, user_id=user_id)
    return [(m.role, m.content) for m in session.messages if m.metadata.get("kind") not in ("tools", "retrieved")]


@tool
def magic_function(input: int) -> int:
    """Apply a magic function to an input."""
    return input + 2


def test_invoke_answers_and_reports_usage_and_the_memory(memory, script, tiny_runtime, textlog):
    llm = DeltaMemLLM(memory=memory, max_tokens=16)
    script.say("Hello there, friend.")
    answer = llm.invoke("My locker code is 7312.")
    assert isinstance(answer, AIMessage) and answer.content == "Hello there, friend."
    usage = answer.usage_metadata
    assert usage["output_tokens"] == answer.response_metadata["deltamem"]["stats"]["decode_tokens"] > 0
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] and usage["input_tokens"] > 0
    meta = answer.response_metadata
    assert meta["model_name"] == "tiny-llama" and meta["finish_reason"] == "stop"
    assert meta["deltamem"]["session_id"] == "default" and meta["deltamem"]["turn"] == 1
    assert meta["deltamem"]["route"] == "state" and "route_reason" in meta["deltamem"]
    assert said(tiny_runtime) == [("user", "My locker code is 7312."), ("assistant", "Hello there, friend.")]
    committed = tiny_runtime.store.load(SessionKey(session_id="default"))
    assert committed.metadata.turn_count == 1 and committed.metadata.tokens_written > 0
    assert committed.state is not None and committed.state.equal(tiny_runtime.session("default").state)
    assert textlog.count(user_id="default", session_id="default") == 2
    assert "7312" in textlog.search("locker", user_id="default", session_id="default", k=1)[0].text


def test_each_session_from_the_config_keeps_its_own_conversation(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, session_id="fallback", max_tokens=8)
    script.say("one", "two", "three", "four", "five")
    llm.invoke("to a", config={"configurable": {"session_id": "a"}})
    llm.invoke("to b", config={"configurable": {"session_id": "b", "user_id": "ada"}})
    llm.invoke("to thread", config={"configurable": {"thread_id": "t-1"}})  # LangGraph's key
    llm.invoke("to fallback")
    llm.invoke("explicit", session_id="kw", config={"configurable": {"session_id": "ignored"}})
    assert said(tiny_runtime, "a") == [("user", "to a"), ("assistant", "one")]
    assert said(tiny_runtime, "b", "ada") == [("user", "to b"), ("assistant", "two")]
    assert said(tiny_runtime, "t-1") == [("user", "to thread"), ("assistant", "three")]
    assert said(tiny_runtime, "fallback") == [("user", "to fallback"), ("assistant", "four")]
    assert said(tiny_runtime, "kw")[0] == ("user", "explicit")
    assert not tiny_runtime.store.exists(SessionKey(session_id="ignored"))
    assert sorted((m.key.user_id, m.key.session_id) for m in tiny_runtime.sessions()) == [
        ("ada", "b"), ("default", "a"), ("default", "fallback"), ("default", "kw"), ("default", "t-1"),
    ]


def test_a_chain_config_reaches_the_model_inside_an_lcel_chain(memory, script, tiny_runtime):
    prompt = ChatPromptTemplate.from_messages([("system", "Be brief."), ("human", "{question}")])
    chain = prompt | DeltaMemLLM(memory=memory, max_tokens=8)
    script.say("Porto.", "You live in Porto.")
    chain.invoke({"question": "I live in Porto."}, config={"configurable": {"session_id": "chain"}})
    chain.invoke({"question": "Where do I live?"}, config={"configurable": {"session_id": "chain"}})
    # the second call sent the system prompt again and the new question: the prompt is already in
    # the session, so only the question is new
    assert [role for role, _ in said(tiny_runtime, "chain")] == ["system", "user", "assistant", "user", "assistant"]
    assert said(tiny_runtime, "chain")[1] == ("user", "I live in Porto.")


def test_a_resent_conversation_adds_only_its_new_messages(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=8)
    script.say("Noted.", "Porto.", "Blue.")
    history = [SystemMessage("Be brief."), HumanMessage("I live in Porto.")]
    history.append(llm.invoke(history))
    history.append(HumanMessage("Where do I live?"))
    history.append(llm.invoke(history))
    assert len(said(tiny_runtime)) == 5
    # trimmed history (as trim_messages leaves it) behind the system prompt: still no repeats
    trimmed = [SystemMessage("Be brief."), history[-2], history[-1], HumanMessage("Favourite colour?")]
    assert llm.invoke(trimmed).content == "Blue."
    assert said(tiny_runtime) == [
        ("system", "Be brief."), ("user", "I live in Porto."), ("assistant", "Noted."),
        ("user", "Where do I live?"), ("assistant", "Porto."), ("user", "Favourite colour?"), ("assistant", "Blue."),
    ]
    with pytest.raises(SessionError, match="nothing new"):
        llm.invoke([HumanMessage("Favourite colour?"), AIMessage("Blue.")])  # the last exchange, nothing after it


def test_stream_yields_text_pieces_then_a_closing_chunk_and_fires_token_callbacks(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=16)
    script.say("Streaming works fine.")
    handler = Tokens()
    chunks = list(llm.stream("Say something.", config={"callbacks": [handler]}))
    assert all(isinstance(c, AIMessageChunk) for c in chunks) and len(chunks) >= 3
    assert "".join(c.content for c in chunks) == "Streaming works fine."
    assert chunks[-1].chunk_position == "last" and chunks[-1].usage_metadata["output_tokens"] > 0
    assert sum(1 for c in chunks if c.usage_metadata) == 1  # input tokens counted once
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert full.response_metadata["finish_reason"] == "stop" and full.response_metadata["model_name"] == "tiny-llama"
    assert "".join(handler.tokens) == "Streaming works fine." and len(handler.tokens) >= 3
    assert said(tiny_runtime)[-1] == ("assistant", "Streaming works fine.")


def test_invoke_fires_token_callbacks_too(memory, script):
    script.say("Tokens on invoke.")
    handler = Tokens()
    answer = DeltaMemLLM(memory=memory, max_tokens=16).invoke("Go.", config={"callbacks": [handler]})
    assert "".join(handler.tokens) == answer.content == "Tokens on invoke." and len(handler.tokens) > 1


def test_a_stream_closed_early_commits_nothing_and_releases_the_session(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=16)
    script.say("First answer.", "This answer is abandoned halfway.", "Third.")
    llm.invoke("First question.")
    stream = llm.stream("Second question.")
    next(stream)
    stream.close()
    assert tiny_runtime.store.head(SessionKey(session_id="default")).turn_count == 1
    assert llm.invoke("Third question.").content == "Third."
    assert said(tiny_runtime) == [
        ("user", "First question."), ("assistant", "First answer."),
        ("user", "Third question."), ("assistant", "Third."),
    ]


async def test_async_calls_run_each_turn_in_one_worker_thread(memory, script, tiny_runtime, monkeypatch):
    llm = DeltaMemLLM(memory=memory, max_tokens=16)
    store = tiny_runtime.store
    holders: list[tuple[int, int]] = []  # (thread that took the lock, thread that let it go)
    original = type(store).lock

    def recording_lock(self, key, timeout=None):
        import contextlib

        @contextlib.contextmanager
        def cm():
            taken = threading.get_ident()
            with original(self, key, timeout):
                yield key
            holders.append((taken, threading.get_ident()))

        return cm()

    monkeypatch.setattr(type(store), "lock", recording_lock)
    script.say("Async one.", "Async streamed reply.", "Batch a.", "Batch b.")
    assert (await llm.ainvoke("One?")).content == "Async one."
    handler = Tokens()
    pieces = [c.content async for c in llm.astream("Two?", config={"callbacks": [handler]})]
    assert "".join(pieces) == "Async streamed reply." == "".join(handler.tokens)
    configs = [{"configurable": {"session_id": "x"}}, {"configurable": {"session_id": "y"}}]
    answers = await llm.abatch(["A?", "B?"], config=configs)
    assert sorted(a.content for a in answers) == ["Batch a.", "Batch b."]
    assert holders and all(taken == released for taken, released in holders)
    assert holders[0][0] != threading.get_ident()  # not on the event loop's thread
    assert len(said(tiny_runtime)) == 4 and len(said(tiny_runtime, "x")) == len(said(tiny_runtime, "y")) == 2


async def test_an_async_stream_abandoned_early_rolls_back_in_its_thread(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=16)
    script.say("Kept.", "This one is dropped after its first piece.", "After.")
    await llm.ainvoke("Keep this.")
    stream = llm.astream("Drop this.")
    async for _ in stream:
        break
    await stream.aclose()
    assert (await llm.ainvoke("And now?")).content == "After."
    assert [content for _, content in said(tiny_runtime)] == ["Keep this.", "Kept.", "And now?", "After."]


def test_batch_runs_each_input_in_its_configured_session(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=8)
    script.say("r1", "r2")
    answers = llm.batch(["q1", "q2"], config=[{"configurable": {"session_id": "s1"}}, {"configurable": {"session_id": "s2"}}])
    assert sorted(a.content for a in answers) == ["r1", "r2"]
    assert {said(tiny_runtime, "s1")[0][1], said(tiny_runtime, "s2")[0][1]} == {"q1", "q2"}


def test_stop_sequences_from_the_call_replace_the_default_ones(memory, script):
    llm = DeltaMemLLM(memory=memory, max_tokens=16, stop=["beta"])
    script.say("alpha beta gamma", "alpha beta gamma")
    default = llm.invoke("One.")
    assert default.content == "alpha " and default.response_metadata["finish_reason"] == "stop"
    assert llm.invoke("Two.", stop=["gamma"]).content == "alpha beta "


def test_generation_options_reach_the_decoder(memory, script):
    script.say("one two three four five six seven eight")
    short = DeltaMemLLM(memory=memory, max_tokens=2).invoke("Count.")
    assert short.usage_metadata["output_tokens"] == 2 and short.response_metadata["finish_reason"] == "length"
    sampled = DeltaMemLLM(memory=memory, temperature=1.5, top_p=0.9, seed=7, max_tokens=6)
    first = sampled.invoke("Anything.", session_id="seed-a")  # the random tiny model samples freely
    again = sampled.invoke("Anything.", session_id="seed-b")
    assert first.content == again.content  # same seed, same fresh state: same sample
    assert sampled._get_ls_params(stop=["x"]) == {
        "ls_provider": "deltamem", "ls_model_name": "tiny-llama", "ls_model_type": "chat",
        "ls_temperature": 1.5, "ls_max_tokens": 6, "ls_stop": ["x"],
    }


def test_bound_tools_are_shown_to_the_model_and_its_calls_parsed(memory, script, tiny_runtime):
    call = '<tool_call>{"name": "magic_function", "arguments": {"input": 3}}</tool_call>'
    script.say(call, call, "The answer is 5.")
    llm = DeltaMemLLM(memory=memory, max_tokens=40).bind_tools([magic_function], tool_choice="any")
    answer = llm.invoke("What is magic_function(3)?")
    assert answer.content == "" and answer.response_metadata["finish_reason"] == "tool_calls"
    assert [(c["name"], c["args"]) for c in answer.tool_calls] == [("magic_function", {"input": 3})]
    note = [m for m in tiny_runtime.session("default").messages if m.metadata.get("kind") == "tools"]
    assert len(note) == 1 and '"name": "magic_function"' in note[0].content
    assert "You must call the tool 'magic_function' now." in note[0].content  # one tool: "any" names it

    chunks = list(llm.stream("Again, please."))
    assert all("<tool_call>" not in c.content for c in chunks)  # no markup reaches the stream
    full = chunks[0]
    for chunk in chunks[1:]:
        full += chunk
    assert [(c["name"], c["args"]) for c in full.tool_calls] == [("magic_function", {"input": 3})]

    result = magic_function.invoke(full.tool_calls[0])
    assert isinstance(result, ToolMessage)
    # tool_choice="any" forces a call on every turn (the answer starts as one), as OpenAI's
    # "required" does; the answer after the tool result comes from the model bound without it
    answering = DeltaMemLLM(memory=memory, max_tokens=40).bind_tools([magic_function])
    final = answering.invoke([HumanMessage("Again, please."), full, result])
    assert final.content == "The answer is 5." and not final.tool_calls
    tool_messages = [m for m in tiny_runtime.session("default").messages if m.role == "tool"]
    assert [(m.content, m.tool_call_id) for m in tool_messages] == [("5", full.tool_calls[0]["id"])]


def test_tool_choice_forms(memory, script, tiny_runtime):
    @tool
    def other(x: str) -> str:
        """Another tool."""
        return x

    llm = DeltaMemLLM(memory=memory, max_tokens=4)
    script.say("a", "b", "c")
    llm.bind_tools([magic_function, other], tool_choice="required").invoke("1", session_id="any")
    named = {"type": "function", "function": {"name": "other"}}
    llm.bind_tools([magic_function, other], tool_choice=named).invoke("2", session_id="named")
    llm.bind_tools([magic_function, other], tool_choice="none").invoke("3", session_id="none")

    def notes(session_id):
        return [m.content for m in tiny_runtime.session(session_id).messages if m.metadata.get("kind") == "tools"]

    assert "You must call at least one tool now." in notes("any")[0]
    assert "You must call the tool 'other' now." in notes("named")[0]
    assert notes("none") == []
    with pytest.raises(ValueError, match="not among the bound tools"):
        llm.bind_tools([magic_function], tool_choice="missing")


def test_the_same_tool_twice_is_described_once_but_two_tools_cannot_share_a_name(memory):
    from pydantic import BaseModel, Field

    class PersonA(BaseModel):
        """Record attributes of a person."""

        name: str = Field(..., description="The name of the person.")

    llm = DeltaMemLLM(memory=memory)
    bound = llm.bind_tools([PersonA, PersonA.model_json_schema()])
    assert [t["function"]["name"] for t in bound.kwargs["tools"]] == ["PersonA"]
    with pytest.raises(ValueError, match="both named 'PersonA'"):
        llm.bind_tools([PersonA, {"title": "PersonA", "description": "else", "type": "object", "properties": {}}])
    with pytest.raises(ValueError, match="invalid tool"):
        llm.bind_tools([{"name": "has space", "parameters": {"type": "object", "properties": {}}}])


def test_state_only_memory_answers_without_routing(tiny_runtime, script):
    llm = DeltaMemLLM(memory=HybridMemory(tiny_runtime, textlog=None), max_tokens=8)
    script.say("Fine.")
    answer = llm.invoke("Hello.")
    assert answer.content == "Fine." and "route" not in answer.response_metadata["deltamem"]


def test_an_injected_runtime_gets_a_hybrid_memory_with_the_log_in_the_given_folder(tiny_runtime, script, tmp_path):
    llm = DeltaMemLLM(runtime=tiny_runtime, textlog_path=str(tmp_path / "own-log"), max_tokens=8)
    script.say("Logged.")
    llm.invoke("Log me.")
    memory = llm.hybrid_memory
    again = DeltaMemLLM(runtime=tiny_runtime, textlog_path=str(tmp_path / "own-log"))
    assert memory.runtime is tiny_runtime and again.hybrid_memory is memory  # shared, not opened twice
    assert memory.textlog.config.path == tmp_path / "own-log"
    assert memory.textlog.count(user_id="default", session_id="default") == 2
    assert DeltaMemLLM(runtime=tiny_runtime, hybrid=False).hybrid_memory.textlog is None


def test_a_second_process_resumes_the_session_from_the_store(chat_tokenizer, tmp_path):
    """Two runtimes on one store folder stand for two runs of a program."""

    def run(replies):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            runtime = DeltaMemRuntime(
                "tiny-llama", model=tiny_model("llama", vocab_size=len(chat_tokenizer), max_position_embeddings=4096),
                tokenizer=chat_tokenizer, adapter=None, store=tmp_path / "store",
                session_config=SessionConfig(context_window=512),
            )
        ScriptedBackbone(runtime.model, chat_tokenizer).say(*replies)
        return runtime, DeltaMemLLM(memory=HybridMemory(runtime, textlog=None), session_id="trip", max_tokens=8)

    first_runtime, first = run(["Noted."])
    first.invoke("I land on Friday.")
    state = first_runtime.session("trip").state
    second_runtime, second = run(["Friday."])
    resumed = second_runtime.session("trip")
    assert [m.content for m in resumed.messages] == ["I land on Friday.", "Noted."] and resumed.state.equal(state)
    second.invoke("When do I land?")
    assert second_runtime.store.head(SessionKey(session_id="trip")).turn_count == 2


def test_a_busy_session_times_out_after_the_retries(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, timeout=0.05, max_retries=1, max_tokens=4)
    taken, release = threading.Event(), threading.Event()

    def hold():
        with tiny_runtime.store.lock(SessionKey(session_id="busy")):
            taken.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    taken.wait(10)
    try:
        with pytest.raises(SessionLockTimeout, match="busy"):
            llm.invoke("Anyone?", session_id="busy")
    finally:
        release.set()
        holder.join()
    script.say("Free now.")
    assert llm.invoke("Anyone?", session_id="busy").content == "Free now."


def test_bad_input_is_refused_with_the_fix_named(memory):
    llm = DeltaMemLLM(memory=memory, max_tokens=4)
    with pytest.raises(TypeError, match="unexpected call arguments \\['frequency_penalty'\\]"):
        llm.invoke("hi", frequency_penalty=1.0)
    with pytest.raises(ValueError, match="create DeltaMemLLM\\(model='other'\\)"):
        llm.invoke("hi", model="other")
    with pytest.raises(InvalidSessionIdError, match="session_id"):
        llm.invoke("hi", config={"configurable": {"session_id": "../etc"}})
    with pytest.raises(ValueError, match="reads text only"):
        llm.invoke([HumanMessage(content=[{"type": "image", "url": "https://example.com/cat.png"}])])
    with pytest.raises(SessionError, match="last message must be from the user or a tool"):
        llm.invoke([HumanMessage("hi"), AIMessage("hello")])
    with pytest.warns(UserWarning, match="ignores the arguments \\['api_key'\\]"):
        DeltaMemLLM(api_key="sk-not-needed")


def test_bad_input_fails_before_the_backbone_is_loaded(monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("the backbone was loaded")

    monkeypatch.setattr("langchain_deltamem.chat_models.shared_runtime", no_loading)
    llm = DeltaMemLLM()
    with pytest.raises(ValueError, match="reads text only"):
        llm.invoke([HumanMessage(content=[{"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"}])])
    with pytest.raises(TypeError, match="unexpected call arguments"):
        llm.invoke("hi", logprobs=True)
    with pytest.raises(AssertionError, match="the backbone was loaded"):
        llm.invoke("hi")  # good input goes on to load it


async def test_astream_events_carry_the_session_from_the_config(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=8)
    script.say("Evented reply.")
    events = [e async for e in llm.astream_events("Events?", version="v2", config={"configurable": {"session_id": "ev"}})]
    streamed = "".join(e["data"]["chunk"].content for e in events if e["event"] == "on_chat_model_stream")
    assert streamed == "Evented reply." and said(tiny_runtime, "ev")[-1] == ("assistant", "Evented reply.")


def test_text_blocks_and_tool_errors_are_read_as_text(memory, script, tiny_runtime):
    llm = DeltaMemLLM(memory=memory, max_tokens=4)
    script.say("ok")
    llm.invoke([
        HumanMessage(content=[{"type": "text", "text": "Part one. "}, "Part two."]),
        AIMessage(content=[{"type": "text", "text": "Calling."}], tool_calls=[{"name": "f", "args": {}, "id": "c1"}]),
        ToolMessage("disk full", tool_call_id="c1", status="error"),
    ])
    assert said(tiny_runtime)[:3] == [("user", "Part one. Part two."), ("assistant", "Calling."), ("tool", "Error: disk full")]


def test_token_ids_come_from_the_backbone_tokenizer(memory, chat_tokenizer):
    llm = DeltaMemLLM(memory=memory)
    assert llm.get_token_ids("Hello world") == chat_tokenizer.encode("Hello world", add_special_tokens=False)
    assert llm.get_num_tokens("Hello world") == len(chat_tokenizer.encode("Hello world", add_special_tokens=False))


def test_constructing_a_model_loads_nothing():
    llm = DeltaMemLLM(temperature=0, max_tokens=100, timeout=60, stop=[], max_retries=2, streaming=True)
    assert llm.memory is None and llm.runtime is None and llm.model_name == "smollm2-135m-instruct"
    assert llm.cache is False  # a cached answer would skip the turn: memory models are never cached


@pytest.mark.filterwarnings("ignore:The function `load` is in beta")
def test_a_model_round_trips_through_langchain_serialization():
    from langchain_core.load import dumpd, load

    llm = DeltaMemLLM(session_id="trip", user_id="ada", temperature=0.2, max_tokens=64, stop=["\n\n"], hybrid=False)
    data = dumpd(llm)
    assert data["id"] == ["langchain_deltamem", "chat_models", "DeltaMemLLM"]
    assert "memory" not in data["kwargs"] and "runtime" not in data["kwargs"]
    again = load(data, valid_namespaces=["langchain_deltamem"], allowed_objects=[DeltaMemLLM])
    assert isinstance(again, DeltaMemLLM) and again.model_dump() == llm.model_dump()
