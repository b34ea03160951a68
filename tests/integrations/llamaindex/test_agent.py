"""A LlamaIndex FunctionAgent driven by DeltaMemLLM with DeltaMemMemory: the tool loop runs, and
the session ends up with exactly what a direct HybridMemory conversation writes."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import (
    ChatMessage,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool
from llama_index.llms.deltamem import DeltaMemLLM
from llama_index.memory.deltamem import DeltaMemMemory

from tests.integrations.llamaindex.helpers import tool_call

# llama-index-workflows inspects agents with inspect.getmembers, which trips pydantic's deprecation warnings
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

SYSTEM = "You are a calculator. Use the tools."


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


@pytest.fixture
def ingests(hybrid, monkeypatch):
    calls: list[list[str]] = []
    original = hybrid.ingest

    def spy(messages, **kwargs):
        calls.append([m.role for m in messages])
        return original(messages, **kwargs)

    monkeypatch.setattr(hybrid, "ingest", spy)
    return calls


def run(agent, message, memory):
    async def go():
        return await agent.run(user_msg=message, memory=memory)

    return asyncio.run(go())


def conversation(runtime, session_id):
    """Role, visible text and tool calls of a session's messages (notes left out)."""
    out = []
    for m in runtime.session(session_id).messages:
        if m.metadata.get("kind") is None:
            out.append((m.role, m.content, [c["function"]["name"] for c in m.tool_calls or []], m.tool_call_id is not None))
    return out


@pytest.mark.parametrize("streaming", [False, True], ids=["chat", "stream"])
def test_the_tool_loop_writes_what_a_direct_conversation_writes(hybrid, runtime, textlog, script, ingests, streaming):
    script.say(tool_call("multiply", a=6, b=7), "6 times 7 is 42.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="agent")
    memory = DeltaMemMemory.from_defaults(llm=llm)
    agent = FunctionAgent(tools=[multiply], llm=llm, system_prompt=SYSTEM, streaming=streaming)
    output = run(agent, "What is 6 times 7?", memory)

    assert output.response.content == "6 times 7 is 42."
    [call] = output.tool_calls
    assert call.tool_name == "multiply" and call.tool_kwargs == {"a": 6, "b": 7} and call.tool_output.content == "42"
    assert script.answers == 2 and ingests == []
    roles = [(m.role.value, bool([b for b in m.blocks if isinstance(b, ToolCallBlock)])) for m in memory.get_all()]
    assert roles == [("user", False), ("assistant", True), ("tool", False), ("assistant", False)]

    # The same turn, straight through HybridMemory: system prompt + question, then the tool result.
    script.say(tool_call("multiply", a=6, b=7), "6 times 7 is 42.")
    spec = FunctionTool.from_defaults(multiply).metadata.to_openai_tool(skip_length_check=True)
    first = hybrid.chat([{"role": "system", "content": SYSTEM}, {"role": "user", "content": "What is 6 times 7?"}],
                        session_id="direct", tools=[spec])
    hybrid.chat([{"role": "tool", "content": "42", "tool_call_id": first.tool_calls[0].id}], session_id="direct", tools=[spec])

    assert conversation(runtime, "agent") == conversation(runtime, "direct") == [
        ("system", SYSTEM, [], False), ("user", "What is 6 times 7?", [], False),
        ("assistant", tool_call("multiply", a=6, b=7), ["multiply"], False), ("tool", "42", [], True),
        ("assistant", "6 times 7 is 42.", [], False),
    ]
    assert runtime.session("agent").state.equal(runtime.session("direct").state)
    assert textlog.count(user_id="default", session_id="agent") == textlog.count(user_id="default", session_id="direct") == 4


def test_a_second_run_and_a_restart_add_only_the_new_turn(hybrid, runtime, script, ingests):
    script.say(tool_call("multiply", a=6, b=7), "It is 42.", tool_call("multiply", a=2, b=3), "It is 6.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    agent = FunctionAgent(tools=[multiply], llm=llm, system_prompt=SYSTEM)
    run(agent, "6 times 7?", DeltaMemMemory.from_defaults(llm=llm))
    runtime.close("s")
    # a new process: new objects on the same session; the memory comes back from the store
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    memory = DeltaMemMemory.from_defaults(llm=llm)
    assert len(memory.get_all()) == 4
    output = run(FunctionAgent(tools=[multiply], llm=llm, system_prompt=SYSTEM), "2 times 3?", memory)
    assert output.response.content == "It is 6." and ingests == []
    assert [(role, text) for role, text, _, _ in conversation(runtime, "s")] == [
        ("system", SYSTEM), ("user", "6 times 7?"), ("assistant", tool_call("multiply", a=6, b=7)), ("tool", "42"),
        ("assistant", "It is 42."), ("user", "2 times 3?"), ("assistant", tool_call("multiply", a=2, b=3)),
        ("tool", "6"), ("assistant", "It is 6."),
    ]
    assert len(memory.get_all()) == 8


def test_a_return_direct_tool_result_is_written_by_the_memory(hybrid, runtime, script, ingests):
    script.say(tool_call("multiply", a=6, b=7))
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    direct = FunctionTool.from_defaults(multiply, return_direct=True)
    output = run(FunctionAgent(tools=[direct], llm=llm), "6 times 7?", DeltaMemMemory.from_defaults(llm=llm))
    assert output.response.content == "42" and script.answers == 1
    # the model never saw the tool's result or the direct answer: the memory wrote them, once
    assert ingests == [["tool", "assistant"]]
    assert [(role, text) for role, text, _, _ in conversation(runtime, "s")] == [
        ("user", "6 times 7?"), ("assistant", tool_call("multiply", a=6, b=7)), ("tool", "42"), ("assistant", "42"),
    ]


def test_an_agent_on_another_llm_still_fills_the_session(hybrid, runtime, textlog, ingests):
    def answer(messages, **kwargs):
        if messages[-1].role == MessageRole.TOOL:
            return ChatMessage(role="assistant", content=f"The product is {messages[-1].content}.")
        return ChatMessage(role="assistant", blocks=[
            TextBlock(text="Computing."), ToolCallBlock(tool_call_id="call-1", tool_name="multiply", tool_kwargs={"a": 6, "b": 7}),
        ])

    memory = DeltaMemMemory(hybrid=hybrid, session_id="s")
    output = run(FunctionAgent(tools=[multiply], llm=MockFunctionCallingLLM(response_generator=answer)), "6 times 7?", memory)
    assert output.response.content == "The product is 42."
    assert ingests == [["user", "assistant", "tool", "assistant"]]
    assert conversation(runtime, "s") == [
        ("user", "6 times 7?", [], False), ("assistant", "Computing.", ["multiply"], False), ("tool", "42", [], True),
        ("assistant", "The product is 42.", [], False),
    ]
    assert runtime.session("s").state is not None and textlog.count(user_id="default", session_id="s") == 4


def test_llama_index_own_memory_with_the_deltamem_llm_also_writes_each_message_once(hybrid, runtime, script):
    from llama_index.core.memory import Memory

    script.say(tool_call("multiply", a=6, b=7), "It is 42.", "You asked about 6 times 7.")
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    memory = Memory.from_defaults(session_id="li", token_limit=4000)
    agent = FunctionAgent(tools=[multiply], llm=llm, system_prompt=SYSTEM)
    run(agent, "6 times 7?", memory)
    run(agent, "What did I ask?", memory)
    assert [(role, text) for role, text, _, _ in conversation(runtime, "s")] == [
        ("system", SYSTEM), ("user", "6 times 7?"), ("assistant", tool_call("multiply", a=6, b=7)), ("tool", "42"),
        ("assistant", "It is 42."), ("user", "What did I ask?"), ("assistant", "You asked about 6 times 7."),
    ]


def test_structured_output_goes_through_a_tool_call(hybrid, script):
    from llama_index.core.bridge.pydantic import BaseModel
    from llama_index.core.prompts import PromptTemplate

    class Trip(BaseModel):
        """A trip."""

        city: str
        nights: int

    script.say(tool_call("Trip", city="Lisbon", nights=3))
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s")
    trip = llm.structured_predict(Trip, PromptTemplate("Extract the trip: {text}"), text="Three nights in Lisbon.")
    assert trip == Trip(city="Lisbon", nights=3)
