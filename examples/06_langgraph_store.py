"""Long-term memory for a LangGraph graph: DeltaMemStore as the graph's store.

One graph, two threads. In thread chat-1 a node writes what the user says into the store
(namespace ("ada", "memories")); in thread chat-2 another node searches the store and recalls
it. Each item goes into the verbatim text log (searched here) and into the δ-mem state of the
session ada/lg-store.memories. Rewriting an item replays that session's state.

Run:  .venv/bin/python examples/06_langgraph_store.py
Data: $DELTAMEM_HOME (default: <tmp>/deltamem-examples).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TypedDict

HOME = os.environ.setdefault("DELTAMEM_HOME", str(Path(tempfile.gettempdir()) / "deltamem-examples"))

from langgraph.checkpoint.memory import InMemorySaver  # noqa: E402
from langgraph.graph import END, START, StateGraph  # noqa: E402
from langgraph.store.base import BaseStore  # noqa: E402

from langchain_deltamem.store import DeltaMemStore  # noqa: E402

NS = ("ada", "memories")


class State(TypedDict, total=False):
    fact: str
    question: str
    answer: str


def remember(state: State, *, store: BaseStore) -> State:
    if state.get("fact"):
        store.put(NS, f"fact-{len(store.search(NS, limit=100))}", {"text": state["fact"]})
    return {}


def recall(state: State, *, store: BaseStore) -> State:
    if not state.get("question"):
        return {}
    hits = store.search(NS, query=state["question"], limit=1)
    return {"answer": hits[0].value["text"] if hits else "nothing stored"}


store = DeltaMemStore.from_defaults()
for key in [item.key for item in store.search(NS, limit=100)]:  # start afresh
    store.delete(NS, key)

graph = StateGraph(State)
graph.add_node("remember", remember)
graph.add_node("recall", recall)
graph.add_edge(START, "remember")
graph.add_edge("remember", "recall")
graph.add_edge("recall", END)
app = graph.compile(store=store, checkpointer=InMemorySaver())

for fact in ["Ada is vegetarian and avoids mushrooms.", "Ada's train leaves at 7:40."]:
    app.invoke({"fact": fact}, {"configurable": {"thread_id": "chat-1"}})
out = app.invoke({"question": "What food does Ada avoid?"}, {"configurable": {"thread_id": "chat-2"}})
print(f"thread chat-2 recalls: {out['answer']!r}")
print(f"namespaces: {store.list_namespaces()}")

store.put(NS, "fact-1", {"text": "Ada's train leaves at 8:10."})  # a rewrite: the state is replayed
print(f"items after the rewrite: {len(store.search(NS))}")
scope = store.scope(NS)
record = store.memory.runtime.store.load(scope)
print(f"δ-state of {scope} holds {len(record.messages) if record else 0} messages (data in {HOME})")
