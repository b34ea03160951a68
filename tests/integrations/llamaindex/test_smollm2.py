"""The real embedded backbone: a FunctionAgent end to end, and the example as a user runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.llms.deltamem import DeltaMemLLM
from llama_index.memory.deltamem import DeltaMemMemory

from deltamem_agents.memory import TextLog, TextLogConfig
from deltamem_agents.memory.hybrid import HybridMemory
from deltamem_agents.runtime import DeltaMemRuntime, UntrainedMemoryWarning

pytestmark = [pytest.mark.smollm2, pytest.mark.filterwarnings("ignore::DeprecationWarning:inspect")]

ROOT = Path(__file__).resolve().parents[3]


def hotel_cost(nights: int, euros_per_night: int) -> int:
    """Total hotel cost in euros."""
    return nights * euros_per_night


def test_a_function_agent_runs_on_smollm2_and_its_memory_persists(smollm2, tmp_path):
    model, tokenizer = smollm2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedMemoryWarning)
        runtime = DeltaMemRuntime("smollm2-135m-instruct", model=model, tokenizer=tokenizer, adapter=None,
                                  store=tmp_path / "store")
    log = TextLog(TextLogConfig(path=tmp_path / "log"))
    try:
        hybrid = HybridMemory(runtime, log)
        llm = DeltaMemLLM(hybrid=hybrid, session_id="trip", max_new_tokens=8)
        agent = FunctionAgent(tools=[hotel_cost], llm=llm, system_prompt="You are a travel assistant.")

        async def ask(question, memory):
            return await agent.run(user_msg=question, memory=memory)

        first = asyncio.run(ask("I land in Lisbon on Friday.", DeltaMemMemory.from_defaults(llm=llm)))
        assert first.response.role.value == "assistant" and first.raw["session_id"] == "trip"
        # whatever the small model said (a tool call or text), the turn was written once
        session = runtime.session("trip")
        spoken = [m for m in session.messages if m.metadata.get("kind") is None]
        assert [m.role for m in spoken][:2] == ["system", "user"] and spoken[1].content == "I land in Lisbon on Friday."
        assert sum(m.content == "I land in Lisbon on Friday." for m in session.messages) == 1
        assert session.state is not None and log.count(user_id="default", session_id="trip") >= 1

        runtime.close("trip")
        memory = DeltaMemMemory.from_defaults(llm=llm)
        before = len(memory.get_all())
        assert before == len(spoken) - 1  # everything but the system prompt came back from the store
        asyncio.run(ask("Where do I land?", memory))
        assert len(memory.get_all()) > before
        assert sum(m.content == "I land in Lisbon on Friday." for m in runtime.session("trip").messages) == 1
    finally:
        log.close()
        runtime.handle.detach()  # the backbone is shared by the whole test session


def test_the_example_runs_end_to_end_offline(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DELTAMEM_HOME": str(tmp_path), "DELTAMEM_EXAMPLE_MAX_TOKENS": "8"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "04_llamaindex_agent.py")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert out.count("tool calls:") == 3 and out.count("memory route:") == 3
    assert "reopened: the memory holds 4 messages" in out
    assert "text log, closest entry to 'dietary preference'" in out
    assert "3 turns committed" in out
    # everything stayed in DELTAMEM_HOME
    assert (tmp_path / "sessions" / "ada" / "trip").is_dir() and (tmp_path / "textlog").is_dir()
