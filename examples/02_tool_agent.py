"""A 23-step tool workflow whose task state lives in DeltaMemLLM's memory.

The task: audit the stock of seven products, price each one, reorder what runs low, and submit
a report. That is 23 tool calls: list_products, then check_stock, get_price and reorder for each
product, then submit_report.

How it runs, honestly:

- A deterministic driver walks the plan. At each step it sends DeltaMemLLM *only the new
  messages* (the call and the tool's result), never the conversation so far: the session
  carries the task state from step to step (in its attention context, its δ-mem state and its
  verbatim text log). The context window is smaller than the whole run, so older steps are
  dropped from attention and kept by the state and the log.
- The tools are bound with ``bind_tools(..., tool_choice="any")``, so at every step the model is
  shown the tool schemas and asked to call one. When its reply holds a call that is the next
  step of the plan, that call is used. The embedded SmolLM2-135M-Instruct is too small to do
  this (it answers in prose, and that prose stays in the session); the driver then makes the
  planned call itself, as an AIMessage with ``tool_calls``. The summary counts both.
- The report is not built from the driver's variables: it is read back from the session's text
  log (the tool results, verbatim, through DeltaMemChatMessageHistory). Then the model is asked
  about the run; its answer is printed, not trusted.

Run:  .venv/bin/python examples/02_tool_agent.py
Data: $DELTAMEM_HOME (default: <tmp>/deltamem-examples); this example starts its session afresh.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from pathlib import Path

from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

HOME = os.environ.setdefault("DELTAMEM_HOME", str(Path(tempfile.gettempdir()) / "deltamem-examples"))

from langchain_deltamem import DeltaMemChatMessageHistory, DeltaMemLLM  # noqa: E402

SESSION = {"configurable": {"session_id": "restock-audit", "user_id": "warehouse"}}
INVENTORY = {  # product: (units in stock, unit price)
    "apples": (40, 0.5), "pears": (6, 0.7), "plums": (12, 0.9), "figs": (3, 2.1),
    "dates": (25, 3.4), "limes": (8, 0.3), "kiwis": (19, 0.6),
}
LOW_STOCK, TARGET = 10, 30


@tool
def list_products() -> dict:
    """List the products to audit."""
    return {"products": list(INVENTORY)}


@tool
def check_stock(product: str) -> dict:
    """Units of a product in stock."""
    return {"product": product, "units": INVENTORY[product][0]}


@tool
def get_price(product: str) -> dict:
    """Unit price of a product, in euros."""
    return {"product": product, "price": INVENTORY[product][1]}


@tool
def reorder(product: str, units: int) -> dict:
    """Order units of a product (0 orders nothing)."""
    return {"product": product, "ordered": units, "order_id": f"PO-{product[:3].upper()}-{units:03d}" if units else None}


@tool
def submit_report(report: str) -> str:
    """Submit the audit report."""
    return f"report accepted ({len(report)} characters)"


TOOLS = {t.name: t for t in (list_products, check_stock, get_price, reorder, submit_report)}


def plan_for(products: list[str]) -> list[tuple[str, dict]]:
    """The audit plan after list_products (the amounts to reorder are decided when their turn comes)."""
    steps: list[tuple[str, dict]] = []
    for product in products:
        steps += [("check_stock", {"product": product}), ("get_price", {"product": product}), ("reorder", {"product": product})]
    return steps


def stock_from_memory(history: DeltaMemChatMessageHistory) -> dict[str, dict]:
    """What the session's text log says about each product (the tool results, verbatim)."""
    facts: dict[str, dict] = {}
    for message in history.messages:
        if isinstance(message, ToolMessage) and message.content.startswith('{"product"'):
            result = json.loads(message.content)
            facts.setdefault(result["product"], {}).update(result)
    return facts


def decide(name: str, args: dict, facts: dict[str, dict]) -> dict:
    """The arguments that depend on earlier results, taken from what the memory holds."""
    if name == "reorder":
        units = facts[args["product"]]["units"]
        return {**args, "units": TARGET - units if units < LOW_STOCK else 0}
    if name == "submit_report":
        lines = [f"{p}: {f['units']} units at {f['price']} EUR, ordered {f.get('ordered', 0)}" for p, f in facts.items()]
        return {"report": "\n".join(lines)}
    return args


llm = DeltaMemLLM(max_tokens=12)
memory = llm.hybrid_memory
memory.forget(session_id="restock-audit", user_id="warehouse")  # start afresh on every run
agent = llm.bind_tools(list(TOOLS.values()), tool_choice="any")
history = DeltaMemChatMessageHistory.from_llm(llm, session_id="restock-audit", user_id="warehouse")
task = (
    "Audit the stock: list the products; for each one check its stock, get its price and reorder it "
    f"up to {TARGET} units if fewer than {LOW_STOCK} are left (else reorder 0); then submit a report."
)


pending: list = [HumanMessage(task)]  # only what the session has not seen yet
steps: list[tuple[str, dict]] = [("list_products", {})]
calls = model_calls = rebuilds = 0
first_reply = None
while steps:
    name, planned = steps.pop(0)
    # The session reads the last result and is asked for the next call ...
    reply = agent.invoke(pending, config=SESSION)
    rebuilds += reply.response_metadata["deltamem"]["stats"]["window_rebuilt"]
    first_reply = reply if first_reply is None else first_reply
    # ... and the arguments that depend on earlier steps come from the session's log.
    planned = decide(name, planned, stock_from_memory(history))
    made = [c for c in reply.tool_calls if c["name"] == name and c["args"] == planned]
    if made:
        call, pending = made[0], []  # the model's own call is already in the session
        model_calls += 1
    else:
        call = {"name": name, "args": planned, "id": f"call_{uuid.uuid4().hex[:12]}", "type": "tool_call"}
        pending = [AIMessage(content="", tool_calls=[call])]  # the driver makes the planned call
    result = TOOLS[name].invoke(call)
    pending.append(result)
    calls += 1
    shown = json.dumps(planned) if name != "submit_report" else f"<{len(planned['report'].splitlines())} lines>"
    print(f"{calls:2d}. [{'model' if made else 'driver'}] {name}({shown}) -> {result.content}")
    if name == "list_products":
        steps = plan_for(json.loads(result.content)["products"]) + [("submit_report", {})]

question = "Which product had the fewest units in stock?"
final = llm.invoke([*pending, HumanMessage(question)], config=SESSION, max_tokens=32)
meta = final.response_metadata["deltamem"]
facts = stock_from_memory(history)
print(f"\nthe model's own reply at step 1: {first_reply.content!r} ({len(first_reply.tool_calls)} tool calls)")
print(f"model, asked {question!r}: {final.content!r} (route={meta.get('route')!r})")
print(f"tool calls: {calls} ({model_calls} written by the model, {calls - model_calls} by the driver)")
entries = memory.textlog.count(user_id="warehouse", session_id="restock-audit")
print(f"context-window rebuilds: {rebuilds}; text-log entries: {entries}")
print(f"products read back from the log: {len(facts)}; lowest stock: {min(facts, key=lambda p: facts[p]['units'])}")
