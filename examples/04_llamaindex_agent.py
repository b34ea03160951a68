"""A LlamaIndex agent whose model remembers: `DeltaMemLLM` + `DeltaMemMemory`, embedded defaults.

    .venv/bin/python examples/04_llamaindex_agent.py

Everything runs offline on the CPU: the embedded SmolLM2-135M-Instruct with δ-mem, the session
store and the Chroma text log. They live in ``$DELTAMEM_HOME``; when it is not set, the example
uses a temporary folder and removes it at the end, so your own sessions are never touched.

What it shows:

* LlamaIndex's own `FunctionAgent` runs on `DeltaMemLLM`, streaming, with a tool offered;
* `DeltaMemMemory` is the agent's memory. Each message goes into the session's δ-mem state and
  its text log once (the model writes what it reads; the memory finds nothing left to write);
* the conversation persists: new objects on the same session (as after a restart) continue it,
  and the text log finds what was said, word for word.

What the small model does not do, honestly:

* SmolLM2-135M almost never emits a tool call, even when asked to. It answers in plain text,
  and the agent then stops after one step. The example prints the tool calls that were made
  (usually none). With a larger instruct backbone, e.g. ``DeltaMemLLM(backbone="Qwen/Qwen2.5-1.5B-Instruct")``,
  the same code calls the tool; the tool loop itself is tested with scripted answers.
* Its answers are short and often wrong or rambling.
* No trained δ-mem adapter ships yet: the state is written and saved but does not change
  answers (the runtime warns once). The second process below remembers through the persisted
  conversation and, when the router picks them, notes retrieved from the text log.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import warnings

HOME_GIVEN = "DELTAMEM_HOME" in os.environ
HOME = os.environ.setdefault("DELTAMEM_HOME", tempfile.mkdtemp(prefix="deltamem-example-"))

from llama_index.core.agent.workflow import AgentOutput, AgentStream, FunctionAgent, ToolCallResult  # noqa: E402
from llama_index.llms.deltamem import DeltaMemLLM  # noqa: E402
from llama_index.memory.deltamem import DeltaMemMemory  # noqa: E402

from deltamem_agents.session import SessionKey, UntrainedMemoryWarning  # noqa: E402

SESSION, USER = "trip", "ada"
SYSTEM = "You are a travel assistant. Answer in one or two short sentences."
# Small, so the example stays quick on a laptop CPU (the smoke test makes it smaller still).
MAX_TOKENS = int(os.environ.get("DELTAMEM_EXAMPLE_MAX_TOKENS", "40"))


def hotel_cost(nights: int, euros_per_night: int) -> int:
    """Total hotel cost in euros for a number of nights at a nightly price."""
    return nights * euros_per_night


async def ask(agent: FunctionAgent, memory: DeltaMemMemory, question: str) -> AgentOutput:
    """Run one agent turn, streaming its answer to the terminal."""
    print(f"\nuser> {question}\nagent> ", end="", flush=True)
    handler = agent.run(user_msg=question, memory=memory)
    async for event in handler.stream_events():
        if isinstance(event, AgentStream):
            print(event.delta, end="", flush=True)
        elif isinstance(event, ToolCallResult):
            print(f"\n  [tool {event.tool_name}({event.tool_kwargs}) -> {event.tool_output.content}]", flush=True)
    output: AgentOutput = await handler
    calls = [f"{c.tool_name}({c.tool_kwargs})" for c in output.tool_calls]
    print(f"\n  tool calls: {', '.join(calls) or 'none (the model answered in plain text)'}")
    raw = output.raw or {}
    if "route" in raw:
        print(f"  memory route: {raw['route']} ({raw['route_reason']})")
    return output


async def main() -> None:
    print(f"session store and text log in {HOME}")
    warnings.simplefilter("ignore", UntrainedMemoryWarning)  # said above: no trained adapter yet

    # -- first process: two turns -------------------------------------------------------------------
    llm = DeltaMemLLM(session_id=SESSION, user_id=USER, max_new_tokens=MAX_TOKENS)
    memory = DeltaMemMemory.from_defaults(llm=llm)  # the same session: each message is written once
    agent = FunctionAgent(tools=[hotel_cost], llm=llm, system_prompt=SYSTEM)
    await ask(agent, memory, "Hi, I'm Ada. I'm vegetarian and I land in Lisbon on Friday.")
    await ask(agent, memory, "What do 3 nights at 90 euros per night cost?")

    runtime = llm.hybrid.runtime
    head = runtime.store.head(SessionKey(user_id=USER, session_id=SESSION))
    print(f"\nsession {USER}/{SESSION}: {head.turn_count} turns committed, "
          f"{head.tokens_written} tokens written into the δ-mem state")

    # -- "second process": new objects, the session reopened from the store ---------------------------
    runtime.close(SESSION, user_id=USER)  # drop the open session: what follows reads the store
    llm = DeltaMemLLM(session_id=SESSION, user_id=USER, max_new_tokens=MAX_TOKENS)
    memory = DeltaMemMemory.from_defaults(llm=llm)
    print(f"\nreopened: the memory holds {len(memory.get_all())} messages of the earlier conversation")
    agent = FunctionAgent(tools=[hotel_cost], llm=llm, system_prompt=SYSTEM)
    await ask(agent, memory, "Which city do I land in, and on which day?")

    [hit] = memory.search("dietary preference", k=1)
    print(f"\ntext log, closest entry to 'dietary preference' "
          f"({hit.metadata['role']}, distance {hit.distance:.2f}):\n  {hit.text}")
    head = runtime.store.head(SessionKey(user_id=USER, session_id=SESSION))
    print(f"session {USER}/{SESSION}: {head.turn_count} turns committed, {head.tokens_written} tokens written")


if __name__ == "__main__":
    try:
        asyncio.run(main())
    finally:
        if not HOME_GIVEN:
            shutil.rmtree(HOME, ignore_errors=True)
