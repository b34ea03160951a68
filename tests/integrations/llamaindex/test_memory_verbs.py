"""The memory verbs through LlamaIndex: on `DeltaMemMemory`, on `DeltaMemMemoryBlock` inside a
stock `Memory`, and as tools an agent uses to read and correct what it remembers."""

from __future__ import annotations

import asyncio

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.llms import MockLLM
from llama_index.core.memory import Memory, StaticMemoryBlock
from llama_index.llms.deltamem import DeltaMemLLM
from llama_index.memory.deltamem import (
    DeltaMemMemory,
    DeltaMemMemoryBlock,
    memory_tools,
)
from llama_index.memory.deltamem.tools import TOOL_NAMES

from deltamem_agents.memory.textlog import TextLogError
from deltamem_agents.memory.verbs import MemoryConflictError, MemoryNotFoundError
from deltamem_agents.session import SessionKey
from tests.integrations.llamaindex.helpers import tool_call

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")

PORTO, LISBON = "I live in Porto.", "I live in Lisbon."


def said(runtime, session_id="s", user_id="ada"):
    return [(m.role, m.content) for m in runtime.session(session_id, user_id=user_id).messages
            if m.metadata.get("kind") is None and m.role != "system"]


def logged(textlog, session_id="s", user_id="ada"):
    return [e.text for e in textlog.list(user_id=user_id, session_id=session_id)]


def by_text(memory, text):
    [item] = [i for i in memory.list_memories() if i.text == text]
    return item


def tools_by_name(memory):
    return {t.metadata.name: t for t in memory_tools(memory)}


# -- the verbs on DeltaMemMemory ---------------------------------------------------------------------
def test_add_get_list_search_on_the_memory(hybrid, runtime):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    assert memory.get_all() == []  # the view is loaded, so `add` must extend it
    [porto] = memory.add(PORTO)
    locker, noted = memory.add(
        [ChatMessage(role="user", content="My locker code is 7312."), ChatMessage(role="assistant", content="Noted.")],
        metadata={"topic": "locker"},
    )
    assert len({porto, locker, noted}) == 3
    item = memory.get_memory(porto)
    assert (item.id, item.text, item.role, item.user_id, item.session_id) == (porto, PORTO, "user", "ada", "s")
    assert [i.text for i in memory.list_memories()] == [PORTO, "My locker code is 7312.", "Noted."]
    assert [i.id for i in memory.list_memories(metadata={"topic": "locker"})] == [locker, noted]
    assert [i.id for i in memory.list_memories(limit=1)] == [porto]
    assert memory.search("Where does the user live?", k=1)[0].text == PORTO
    # BaseMemory's meanings are untouched: get/get_all are the conversation, with the added messages
    assert [(m.role.value, m.content) for m in memory.get_all()] == said(runtime) == [
        ("user", PORTO), ("user", "My locker code is 7312."), ("assistant", "Noted."),
    ]
    [event] = memory.history(porto)
    assert (event.event, event.new_text, event.call) == ("ADD", PORTO, "llamaindex")


def test_update_corrects_log_state_and_the_memorys_view(hybrid, runtime, textlog):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    memory.set([ChatMessage(role="user", content=PORTO), ChatMessage(role="assistant", content="Noted.")])
    porto = by_text(memory, PORTO)
    item = memory.update(porto.id, LISBON)
    assert (item.id, item.text) == (porto.id, LISBON)  # the entry keeps its id
    assert memory.get_memory(porto.id).text == LISBON
    hits = memory.search("Where does the user live?", k=10)
    assert hits[0].text == LISBON and not any("Porto" in h.text for h in hits)
    assert not any("Porto" in t for t in logged(textlog))
    assert said(runtime) == [("user", LISBON), ("assistant", "Noted.")]
    assert [m.content for m in memory.get_all()] == [LISBON, "Noted."]
    # the state is what replaying the corrected conversation, message by message, gives (as rebuild does)
    twin = runtime.session("direct", user_id="ada")
    for message in runtime.store.require(SessionKey(user_id="ada", session_id="s")).messages:
        twin.ingest(message)
    assert runtime.session("s", user_id="ada").state.equal(twin.state)
    assert [(e.event, e.old_text, e.new_text) for e in memory.history(porto.id)] == [("UPDATE", PORTO, LISBON)]
    memory.add("I drink cardamom tea.")
    with pytest.raises(MemoryConflictError):
        memory.update(porto.id, "I drink cardamom tea.")  # the session already holds this user text
    with pytest.raises(TextLogError, match="empty"):
        memory.update(porto.id, "  ")


@pytest.mark.parametrize("llm_kind", ["deltamem", "other"])
def test_the_next_turn_after_an_update_neither_forks_nor_brings_the_old_text_back(hybrid, runtime, script, llm_kind):
    if llm_kind == "deltamem":
        script.say("Noted.", "You live in Lisbon.")
        llm = DeltaMemLLM(hybrid=hybrid, session_id="s", user_id="ada")
        memory = DeltaMemMemory.from_defaults(llm=llm)
    else:
        llm = MockLLM(max_tokens=3)
        memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    engine = SimpleChatEngine.from_defaults(llm=llm, memory=memory)
    first = str(engine.chat(PORTO))
    memory.update(by_text(memory, PORTO).id, LISBON)
    second = str(engine.chat("Where do I live?"))
    assert said(runtime) == [("user", LISBON), ("assistant", first), ("user", "Where do I live?"), ("assistant", second)]


def test_delete_and_reset_user(hybrid, runtime, textlog):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    memory.set([ChatMessage(role="user", content=PORTO), ChatMessage(role="assistant", content="Noted.")])
    porto = by_text(memory, PORTO)
    report = memory.delete(porto.id)
    assert report.messages_removed == 1 and report.log_entries_removed == 1
    with pytest.raises(MemoryNotFoundError):
        memory.get_memory(porto.id)
    assert [e.event for e in memory.history(porto.id)] == ["DELETE"]  # a deleted entry keeps its history
    assert said(runtime) == [("assistant", "Noted.")] and [m.content for m in memory.get_all()] == ["Noted."]

    DeltaMemMemory(hybrid=hybrid, session_id="t", user_id="ada").add("Another session.")
    bob = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="bob")
    bob.add("Bob stays.")
    reset = memory.reset_user()
    assert (reset.user_id, reset.sessions_deleted) == ("ada", 2)
    assert memory.list_memories() == [] and memory.get_all() == []
    assert [i.text for i in bob.list_memories()] == ["Bob stays."]
    memory.reset()  # BaseMemory's reset still works (nothing left to forget)


def test_the_async_twins(hybrid):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")

    async def go():
        [porto] = await memory.aadd(PORTO)
        assert (await memory.aget_memory(porto)).text == PORTO
        assert [i.id for i in await memory.alist_memories(limit=5)] == [porto]
        assert (await memory.asearch("where", k=1))[0].text == PORTO
        assert (await memory.aupdate(porto, LISBON)).text == LISBON
        assert [e.event for e in await memory.ahistory(porto)] == ["ADD", "UPDATE"]
        await memory.adelete(porto)
        assert await memory.alist_memories() == []
        return await memory.areset_user()

    assert asyncio.run(go()).sessions_deleted == 1


def test_another_user_or_session_cannot_read_or_change_an_entry(hybrid):
    ada = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    [porto] = ada.add(PORTO)
    ada.update(porto, LISBON)
    others = [DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="bob"),
              DeltaMemMemory(hybrid=hybrid, session_id="t", user_id="ada")]
    for other in others:
        other.add("Something else.")
        for verb in (other.get_memory, other.delete, other.history, lambda i, o=other: o.update(i, "Hacked.")):
            with pytest.raises(MemoryNotFoundError):
                verb(porto)
        assert all("Lisbon" not in h.text for h in other.search("Where does Ada live?", k=10))
        out = tools_by_name(other)["update_memory"].call(memory_id=porto, text="Hacked.")
        assert out.is_error and "no memory" in out.content
    assert ada.get_memory(porto).text == LISBON
    assert [e.event for e in ada.history(porto)] == ["ADD", "UPDATE"]


# -- the block inside LlamaIndex's Memory ------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.split()


def test_the_block_takes_flushed_messages_and_recalls_them_beside_another_block(hybrid, runtime):
    block = DeltaMemMemoryBlock(hybrid=hybrid, session_id="s", user_id="ada", priority=1)
    memory = Memory.from_defaults(
        session_id="li", token_limit=40, chat_history_token_ratio=0.5, token_flush_size=10, tokenizer_fn=_words,
        memory_blocks=[StaticMemoryBlock(static_content="The user prefers trains.", priority=0), block],
    )
    turns = [(PORTO, "Noted, Porto."), ("My locker code is 7312.", "Noted, 7312."),
             ("I like green tea with honey.", "Noted, tea."), ("What is the weather like today?", "Sunny.")]
    for question, answer in turns:
        memory.put_messages([ChatMessage(role="user", content=question), ChatMessage(role="assistant", content=answer)])
    flushed = said(runtime)
    assert flushed[:2] == [("user", PORTO), ("assistant", "Noted, Porto.")]  # the oldest went into the δ-mem session
    assert ("user", "What is the weather like today?") not in flushed  # the newest stayed short-term
    assert runtime.session("s", user_id="ada").state is not None

    [system, *rest] = memory.get(input="Where do I live?")
    assert system.role.value == "system"
    assert "<DeltaMemRecall>" in system.content and "The user prefers trains." in system.content
    porto = by_text(block, PORTO)
    assert f"- [{porto.id}] {PORTO}" in system.content
    assert rest[-1].content == "Sunny."

    # the block is corrected with the same verbs, and recalls the correction
    block.update(porto.id, LISBON)
    recalled = asyncio.run(block.aget([ChatMessage(role="user", content="Where do I live?")]))
    assert f"- [{porto.id}] {LISBON}" in recalled and "Porto." not in recalled.replace("Noted, Porto.", "")


def test_the_block_writes_each_message_once_and_reads_nothing_without_a_question(hybrid, runtime):
    block = DeltaMemMemoryBlock(hybrid=hybrid, session_id="s", user_id="ada", show_ids=False, top_k=1)
    hybrid.add([{"role": "user", "content": PORTO}], session_id="s", user_id="ada")  # e.g. a DeltaMemLLM wrote it
    asyncio.run(block.aput([ChatMessage(role="user", content=PORTO), ChatMessage(role="assistant", content="Noted.")]))
    asyncio.run(block.aput([ChatMessage(role="assistant", content="Noted.")]))
    assert said(runtime) == [("user", PORTO), ("assistant", "Noted.")]
    assert asyncio.run(block.aget([])) == ""
    assert asyncio.run(block.aget([ChatMessage(role="assistant", content="Hello.")])) == ""
    assert asyncio.run(block.aget([ChatMessage(role="user", content="Where do I live?")])) == f"- {PORTO}"
    assert asyncio.run(block.atruncate("- a\n- bb\n- ccc", 1)) == "- a\n- bb"
    assert asyncio.run(block.atruncate("- a", 10)) is None


def test_the_block_follows_a_deltamem_llms_session():
    llm = DeltaMemLLM(session_id="trip", user_id="ada")
    block = DeltaMemMemoryBlock(llm=llm)
    assert (block.session_id, block.user_id) == ("trip", "ada") and llm._hybrid is None
    with pytest.raises(Exception, match="session_id"):
        DeltaMemMemoryBlock(session_id="no/slashes")


# -- tools ---------------------------------------------------------------------------------------------
def test_the_tools_read_and_correct_memory_and_report_errors(hybrid):
    memory = DeltaMemMemory(hybrid=hybrid, session_id="s", user_id="ada")
    [porto] = memory.add(PORTO)
    tools = tools_by_name(memory)
    assert tuple(tools) == TOOL_NAMES
    schema = tools["update_memory"].metadata.get_parameters_dict()
    assert schema["required"] == ["memory_id", "text"] and schema["properties"]["text"]["minLength"] == 1
    assert tools["search_memory"].metadata.get_parameters_dict()["properties"]["k"]["maximum"] == 20

    assert f"[{porto}] (user) {PORTO}" in tools["search_memory"].call(query="where does the user live").content
    assert f"[{porto}] (user, " in tools["list_memories"].call().content
    assert tools["memory_history"].call(memory_id=porto).content.endswith(f"added: {PORTO!r}")
    out = asyncio.run(tools["update_memory"].acall(memory_id=porto, text=LISBON))
    assert not out.is_error and out.content == f"Memory {porto} now reads: {LISBON}"
    assert f"changed {PORTO!r} -> {LISBON!r}" in tools["memory_history"].call(memory_id=porto).content

    for name, kwargs in [("update_memory", {"memory_id": "nope", "text": "x"}), ("delete_memory", {"memory_id": "nope"}),
                         ("memory_history", {"memory_id": "nope"}), ("update_memory", {"memory_id": porto, "text": " "})]:
        for out in (tools[name].call(**kwargs), asyncio.run(tools[name].acall(**kwargs))):
            assert out.is_error and out.content.startswith("Error: "), (name, out.content)
    assert tools["delete_memory"].call(memory_id=porto).content == f"Memory {porto} is deleted."
    assert tools["list_memories"].call().content == "No memories."
    assert tools["search_memory"].call(query="anything").content == "No matching memories."


def _agent_with_memory(hybrid, user_id="ada"):
    llm = DeltaMemLLM(hybrid=hybrid, session_id="s", user_id=user_id)
    memory = DeltaMemMemory.from_defaults(llm=llm)
    memory.set([ChatMessage(role="user", content=PORTO), ChatMessage(role="assistant", content="Noted.")])
    return FunctionAgent(tools=memory_tools(memory), llm=llm, system_prompt="Keep the memory right."), memory


def _run(agent, message, memory):
    async def go():
        return await agent.run(user_msg=message, memory=memory)

    return asyncio.run(go())


def test_an_agent_corrects_a_fact_with_update_memory(hybrid, runtime, textlog, script):
    agent, memory = _agent_with_memory(hybrid)
    porto = by_text(memory, PORTO)
    script.say(tool_call("update_memory", memory_id=porto.id, text=LISBON), "Fixed: you live in Lisbon now.")
    output = _run(agent, f"Memory {porto.id} is out of date: I moved.", memory)

    assert output.response.content == "Fixed: you live in Lisbon now."
    [call] = output.tool_calls
    assert call.tool_name == "update_memory" and not call.tool_output.is_error
    assert memory.get_memory(porto.id).text == LISBON
    hits = memory.search("Where does the user live?", k=20)
    assert LISBON in [h.text for h in hits[:3]]
    assert not any("Porto" in h.text for h in hits) and not any("Porto" in t for t in logged(textlog))
    roles = [role for role, _ in said(runtime)]
    assert roles == ["user", "assistant", "user", "assistant", "tool", "assistant"]  # each message once
    assert said(runtime)[0] == ("user", LISBON)
    assert [e.event for e in memory.history(porto.id)] == ["UPDATE"]

    # the next turn goes on from the corrected session
    script.say("You live in Lisbon.")
    assert _run(agent, "Where do I live?", memory).response.content == "You live in Lisbon."
    assert said(runtime)[-2:] == [("user", "Where do I live?"), ("assistant", "You live in Lisbon.")]


def test_an_agent_searches_then_corrects(hybrid, textlog, script):
    agent, memory = _agent_with_memory(hybrid)
    porto = by_text(memory, PORTO)
    script.say(tool_call("search_memory", query="where the user lives"),
               tool_call("update_memory", memory_id=porto.id, text=LISBON), "Updated.")
    output = _run(agent, "I moved, fix what you remember about my home.", memory)
    search, update = output.tool_calls
    assert porto.id in search.tool_output.content and not update.tool_output.is_error
    assert memory.get_memory(porto.id).text == LISBON
    # the entry is corrected; what still shows the old text is the search tool's own result,
    # logged as the turn's tool message (a transcript of what the agent read)
    stale = [e for e in textlog.list(user_id="ada", session_id="s") if "Porto" in e.text]
    assert [e.metadata["role"] for e in stale] == ["tool"]


def test_an_agent_gets_a_tool_error_for_an_unknown_id_and_goes_on(hybrid, script):
    agent, memory = _agent_with_memory(hybrid)
    script.say(tool_call("update_memory", memory_id="0" * 32, text=LISBON), "I could not find that memory.")
    output = _run(agent, "Fix memory 000.", memory)
    [call] = output.tool_calls
    assert call.tool_output.is_error and "no memory" in call.tool_output.content
    assert output.response.content == "I could not find that memory."
    assert memory.get_memory(by_text(memory, PORTO).id).text == PORTO
