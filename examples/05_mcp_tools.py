"""The δ-mem memory as MCP tools, used from LangChain through langchain-mcp-adapters.

This program starts `deltamem mcp` as a child process (stdio transport, the way an MCP client such
as Claude Desktop or an IDE starts it), loads its tools with `load_mcp_tools`, and calls them as
LangChain tools: `remember` two facts, `recall` a question (a probe: memory is unchanged, which
`session_stats` confirms), read the session's log resource, `forget` one fact (the δ-mem state is
rebuilt by replaying what remains) and `recall` again. It ends with an error on purpose, to show
how a tool error reaches LangChain.

Who chooses the tool calls: a capable tool-calling model would get these tools with
`model.bind_tools(tools)` and decide by itself. The embedded backbone, SmolLM2-135M-Instruct, is
too small to choose tools reliably, so the calls below are scripted, in the same message format
an agent loop uses (AIMessage.tool_calls -> ToolMessage). The model does answer inside `recall`:
its reply is printed as it is, right or wrong.

Run:  .venv/bin/python examples/05_mcp_tools.py
Data: $DELTAMEM_HOME (default: <tmp>/deltamem-examples); each run starts the demo session afresh.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

HOME = os.environ.setdefault("DELTAMEM_HOME", str(Path(tempfile.gettempdir()) / "deltamem-examples"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage  # noqa: E402
from langchain_core.tools import BaseTool  # noqa: E402
from langchain_mcp_adapters.client import MultiServerMCPClient  # noqa: E402
from langchain_mcp_adapters.resources import load_mcp_resources  # noqa: E402
from langchain_mcp_adapters.tools import load_mcp_tools  # noqa: E402

USER_ID, SESSION_ID = "ada", "mcp-demo"
FACTS = ["My gym locker code is 7312.", "My sister Ines lives in Porto."]
QUESTION = "What is my gym locker code?"
LOG_URI = f"deltamem://sessions/{USER_ID}/{SESSION_ID}/log"

SERVER = {
    "transport": "stdio",
    "command": sys.executable,
    "args": ["-m", "deltamem_agents.cli", "mcp", "--max-new-tokens", "24"],
    # the SDK passes only a few variables to the child by default: DELTAMEM_HOME must reach it
    "env": {**os.environ},
}


class ScriptedAgent:
    """Runs tool calls the way an agent loop does, keeping the message history; the calls are
    given (see the module docstring), the tools are the MCP server's, called through LangChain."""

    def __init__(self, tools: list[BaseTool]) -> None:
        self.tools = {tool.name: tool for tool in tools}
        self.messages: list[Any] = []
        self.calls = 0

    async def call(self, name: str, **args: Any) -> dict[str, Any] | str:
        """One tool call: the structured result (a dict), or the error text for a failed call."""
        self.calls += 1
        call = {"name": name, "args": args, "id": f"call-{self.calls}", "type": "tool_call"}
        self.messages.append(AIMessage(content="", tool_calls=[call]))
        result: ToolMessage = await self.tools[name].ainvoke(call)
        self.messages.append(result)
        if result.status == "error":
            return result.text
        return (result.artifact or {})["structured_content"]


async def main() -> None:
    client = MultiServerMCPClient({"deltamem": SERVER})
    print(f"starting `deltamem mcp` over stdio (data in {HOME}) ...")
    async with client.session("deltamem") as session:
        tools = await load_mcp_tools(session, server_name="deltamem")
        print(f"{len(tools)} MCP tools loaded as LangChain tools:")
        for tool in tools:
            print(f"  {tool.name}({', '.join(tool.args)}): {(tool.description or '').splitlines()[0]}")
        agent = ScriptedAgent(tools)
        agent.messages.append(HumanMessage(content=f"Remember these facts, then: {QUESTION}"))

        listed = await agent.call("list_sessions", user_id=USER_ID)
        if any(s["session_id"] == SESSION_ID for s in listed["sessions"]):
            done = await agent.call("forget", scope="session", user_id=USER_ID, session_id=SESSION_ID)
            print(f"\nstarting afresh: {done['note']}")

        print("\n== remember ==")
        entries: dict[str, list[str]] = {}
        for fact in FACTS:
            out = await agent.call("remember", text=fact, user_id=USER_ID, session_id=SESSION_ID)
            entries[fact] = out["log_entry_ids"]
            print(f"  {fact!r}: {out['tokens_written']} tokens into the δ-mem state, log entries {out['log_entry_ids']}")

        print("\n== recall (a probe: nothing is written) ==")
        before = await agent.call("session_stats", user_id=USER_ID, session_id=SESSION_ID)
        answer = await agent.call("recall", query=QUESTION, user_id=USER_ID, session_id=SESSION_ID)
        show_recall(answer)
        after = await agent.call("session_stats", user_id=USER_ID, session_id=SESSION_ID)
        same = (before["turns"], before["messages"], before["tokens_written"]) == (
            after["turns"], after["messages"], after["tokens_written"],
        )
        state = after["state"]
        print(
            f"  session_stats before/after: {after['turns']} commits, {after['messages']} messages, "
            f"{after['tokens_written']} tokens written -> {'unchanged' if same else 'CHANGED'}; "
            f"state {state['layers']} layers x {state['heads']} heads, rank {state['rank']} ({state['bytes']:,} bytes, fixed size)"
        )

        [log] = await load_mcp_resources(session, uris=LOG_URI)
        print(f"\n== resource {LOG_URI} ==\n  {log.as_string()[:160].strip()} ...")

        print("\n== forget the locker code ==")
        done = await agent.call(
            "forget", scope="entries", user_id=USER_ID, session_id=SESSION_ID, entry_ids=entries[FACTS[0]],
        )
        print(f"  {done['note']}")
        answer = await agent.call("recall", query=QUESTION, user_id=USER_ID, session_id=SESSION_ID)
        show_recall(answer)
        quoted = any("7312" in s["text"] for s in answer["snippets"])
        print(f"  the log still returns the code: {quoted}")

        print("\n== a tool error, as LangChain receives it ==")
        error = await agent.call("recall", query=QUESTION, user_id=USER_ID, session_id="no-such-session")
        print(f"  {error}")

        kinds = [type(m).__name__ for m in agent.messages]
        print(f"\ntool calls: {agent.calls}; message history: {kinds.count('AIMessage')} AIMessage with tool calls, "
              f"{kinds.count('ToolMessage')} ToolMessage")


def show_recall(answer: dict[str, Any]) -> None:
    decision = answer["decision"]
    print(f"  route: {decision['route']} ({decision['reason']})")
    for vote in decision["votes"]:
        print(f"    vote {vote['policy']}: wants retrieval {vote['wants_retrieval']}, score {vote['score']:.3g}")
    confidence = answer["state_confidence"]
    print(f"  state confidence: {'n/a' if confidence is None else f'{confidence:.3f}'}")
    for snippet in answer["snippets"]:
        print(f"  snippet {snippet['id']} (distance {snippet['distance']:.3f}): {snippet['text']!r}")
    print(f"  model reply (wrote={answer['wrote']}): {answer['reply'].strip()!r}")


if __name__ == "__main__":
    asyncio.run(main())
